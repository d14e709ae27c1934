"""RealForensics audio ResNet18 (Table 17): shapes, parameter count, BN modes, gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakedet import models
from fakedet.models import resnet_audio

TINY = dict(stage_blocks=(1, 1, 1, 1), width_multiplier=0.125)  # widths 8/16/32/64


def _make_test_model(**overrides):
  return resnet_audio.ResNetAudio(**{**TINY, **overrides})


def _abstract(model, shape, dtype=jnp.float32):
  """(variables, outputs, intermediates) as ShapeDtypeStructs: nothing is computed."""
  x = jax.ShapeDtypeStruct(shape, dtype)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  out, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]), variables, x)
  return variables, out, state["intermediates"]


def _num_params(variables):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


@pytest.fixture(scope="module")
def tiny():
  """A tiny model and its variables (shared: init compiles slowly on CPU)."""
  model = _make_test_model()
  # The rbg PRNG: threefry-based init takes ~15 s to compile on a small CPU.
  key = jax.random.key(0, impl="rbg")
  return model, jax.jit(lambda x: model.init(key, x, train=False))(jnp.zeros((1, 16, 24)))


def _eval_and_train(model):
  """One jitted call giving eval outputs, train outputs and the updated batch stats."""

  @jax.jit
  def run(variables, x):
    train_out, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return model.apply(variables, x, train=False), train_out, state["batch_stats"]

  return run


def test_registered():
  assert models.get("resnet18_audio") is resnet_audio.ResNetAudio


def test_paper_size_shapes_follow_table_17():
  variables, out, inter = _abstract(resnet_audio.ResNetAudio(), (2, 100, 80))
  shapes = {k: v[0].shape for k, v in inter.items()}
  assert shapes == {"stem": (2, 50, 40, 64), "pool1": (2, 25, 20, 64),
                    "res1": (2, 25, 20, 64), "res2": (2, 25, 10, 128),
                    "res3": (2, 25, 5, 256), "res4": (2, 25, 3, 512)}
  assert out["frames"].shape == (2, 25, 512)
  assert out["feature_map"].shape == (2, 25, 3, 512)
  # No conv biases anywhere: every conv has just a kernel.
  convs = [k for k in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
           if "conv" in jax.tree_util.keystr(k[0])]
  assert all(jax.tree_util.keystr(path).endswith("['kernel']") for path, _ in convs)


def test_paper_size_parameter_count_matches_authors():
  variables, _, _ = _abstract(resnet_audio.ResNetAudio(), (1, 100, 80))
  # torchvision ResNet18 (11,689,512) − fc (513,000) − conv1's 2 extra input channels (6,272).
  assert _num_params(variables) == 11_689_512 - 513_000 - 2 * 7 * 7 * 64 == 11_170_240


@pytest.mark.parametrize("ta", [20, 64])
def test_time_is_subsampled_by_exactly_four(ta):
  _, out, _ = _abstract(resnet_audio.ResNetAudio(), (3, ta, 80))
  assert out["frames"].shape == (3, ta // 4, 512)


def test_rejects_length_not_divisible_by_four():
  with pytest.raises(ValueError, match="divisible by 4"):
    _abstract(_make_test_model(), (1, 22, 80))


def test_width_multiplier_and_dtype_name():
  _, out, inter = _abstract(_make_test_model(dtype="bfloat16"), (2, 16, 24))
  assert [inter[f"res{i}"][0].shape[-1] for i in range(1, 5)] == [8, 16, 32, 64]
  assert out["frames"].shape == (2, 4, 64) and out["frames"].dtype == jnp.bfloat16


def test_tiny_forward_train_vs_eval_batchnorm(tiny):
  model, variables = tiny
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 16, 24)), jnp.float32)
  run = _eval_and_train(model)
  out, train1, stats = run(variables, x)
  assert out["frames"].shape == (3, 4, 64) and out["feature_map"].shape == (3, 4, 1, 64)
  np.testing.assert_allclose(out["frames"], out["feature_map"].mean(axis=2), rtol=1e-6)
  assert np.all(np.isfinite(out["frames"]))

  # Eval uses running averages: sample 0 does not depend on the rest of the batch. Train uses
  # batch statistics: it does, and the running averages move.
  out2, train2, _ = run(variables, x.at[1:].multiply(5.0))
  np.testing.assert_allclose(out["frames"][0], out2["frames"][0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(train1["frames"][0], train2["frames"][0], atol=1e-4)
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), variables["batch_stats"], stats)
  assert all(jax.tree.leaves(moved))

@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_gradient_reaches_every_parameter(tiny):
  model, variables = tiny
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 16, 24)), jnp.float32)
  probe = jnp.asarray(rng.normal(size=(2, 4, 64)), jnp.float32)

  def loss(params):
    out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    return jnp.sum(out["frames"] * probe)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  dead = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_flatten_with_path(grads)[0]
          if not np.any(np.abs(g) > 0)]
  assert not dead

"""CSN-101 video backbone: Table-16 shapes, the authors' param count, init, BN modes, gradients.

Paper-size checks use ``jax.eval_shape`` (no compute); real forwards run on a tiny config.
"""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakedet import models
from fakedet.models import csn
from fakedet.models import frame_conv

PAPER_PARAMS = 21_394_176  # the authors' PyTorch model (conv weights + BN scale/bias)
TINY_SHAPE = (2, 3, 28, 28, 3)  # 28 → 14 (stem) → 7 (pool) → 7, 4, 2, 1: odd sizes, ceil


def _make_test_model(**overrides) -> csn.CSN:
  kwargs = dict(stage_blocks=(1, 2, 1, 1), width_multiplier=1 / 8)
  kwargs.update(overrides)
  return csn.CSN(**kwargs)


def _video(shape=TINY_SHAPE, seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


def _abstract_init(model, shape):
  video = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), video)


def _init(model, video):
  return jax.jit(lambda v: model.init(jax.random.key(0), v, train=False))(video)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _blocks(params):
  return {k: v for k, v in params.items() if "_block" in k}


def test_registered():
  assert models.MODELS.get("csn") is csn.CSN


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_paper_size_shapes_match_table16():
  model = csn.CSN()
  shape = (2, 25, 112, 112, 3)
  variables = _abstract_init(model, shape)
  out, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]), variables,
      jax.ShapeDtypeStruct(shape, jnp.float32))
  stages = {k: v[0].shape for k, v in state["intermediates"].items()}
  assert stages == {
      "stem": (2, 25, 56, 56, 64),
      "pool1": (2, 25, 28, 28, 64),
      "res1": (2, 25, 28, 28, 256),
      "res2": (2, 25, 14, 14, 512),
      "res3": (2, 25, 7, 7, 1024),
      "res4": (2, 25, 4, 4, 2048),
  }
  assert out["frames"].shape == (2, 25, 2048)
  assert out["feature_map"].shape == (2, 25, 4, 4, 2048)


@pytest.mark.parametrize("channels", [3, 1])
def test_paper_size_param_count_matches_authors_model(channels):
  variables = _abstract_init(csn.CSN(), (1, 25, 112, 112, channels))
  # A greyscale stem (the authors' 1-channel configs) has 2/3 fewer stem weights.
  assert _count(variables["params"]) == PAPER_PARAMS - (3 - channels) * 64 * 3 * 7 * 7
  # Running stats are state, not params: one mean and one var per BN channel.
  flat = flax.traverse_util.flatten_dict(variables["params"])
  bn_channels = _count([v for k, v in flat.items() if k[-1] == "scale"])
  assert _count(variables["batch_stats"]) == 2 * bn_channels
  blocks = _blocks(variables["params"])
  assert len(blocks) == 3 + 4 + 23 + 3
  assert variables["params"]["res3_block1"]["conv_b"]["kernel"].shape == (3, 3, 3, 1, 256)


def _conv_macs_by_hand(t=25, size=112) -> int:
  """Multiply-accumulates of every conv of CSN-101 on one t×size×size clip, from Table 16."""
  h = (size - 1) // 2 + 1  # stem output
  macs = t * h * h * 64 * 3 * 7 * 7 * 3
  h, cin = (h - 1) // 2 + 1, 64  # max-pool
  for blocks, width, stride in ((3, 256, 1), (4, 512, 2), (23, 1024, 2), (3, 2048, 2)):
    inner = width // 4
    for b in range(blocks):
      out = (h - 1) // (stride if b == 0 else 1) + 1
      macs += t * h * h * cin * inner + t * out * out * inner * (27 + width)
      if b == 0:
        macs += t * out * out * cin * width  # projection shortcut
      h, cin = out, width
  return macs


def test_paper_size_forward_cost_is_about_27_7_gmacs():
  """XLA's own cost model of the forward agrees with the conv count and the paper's ~27.7 G."""
  model = csn.CSN(depthwise_impl="native", stem_impl="native")
  shape = (1, 25, 112, 112, 3)
  variables = _abstract_init(model, shape)
  lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
      variables, jax.ShapeDtypeStruct(shape, jnp.float32))
  xla_macs = lowered.cost_analysis()["flops"] / 2
  by_hand = _conv_macs_by_hand()
  assert by_hand == pytest.approx(27.45e9, rel=1e-3)
  assert xla_macs == pytest.approx(by_hand, rel=0.01)  # + BN, ReLU, pooling
  assert xla_macs == pytest.approx(27.7e9, rel=0.02)


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
@pytest.mark.parametrize("frames", [5, 16])
def test_temporal_dimension_is_preserved(frames):
  model = csn.CSN()
  shape = (1, frames, 112, 112, 3)
  variables = _abstract_init(model, shape)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                       jax.ShapeDtypeStruct(shape, jnp.float32))
  assert out["frames"].shape == (1, frames, 2048)
  assert out["feature_map"].shape == (1, frames, 4, 4, 2048)


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_last_bn_of_every_block_starts_at_zero():
  model = _make_test_model()
  params = _init(model, _video())["params"]
  for name, block in _blocks(params).items():
    np.testing.assert_array_equal(block["bn_c"]["scale"], 0.0, err_msg=name)
    for bn in ("bn_a", "bn_b"):
      np.testing.assert_array_equal(block[bn]["scale"], 1.0, err_msg=f"{name}/{bn}")
    if "shortcut_bn" in block:
      np.testing.assert_array_equal(block["shortcut_bn"]["scale"], 1.0, err_msg=name)


def test_block_with_identity_shortcut_is_identity_at_init():
  """γ = 0 on the last BN makes a block ReLU(x + 0) = x for the (non-negative) inputs it sees."""
  block = csn.Bottleneck(features=16, inner=4, depthwise_impl="shifted")
  x = jax.nn.relu(_video((2, 3, 5, 5, 16)))
  variables = jax.jit(lambda x: block.init(jax.random.key(0), x, train=False))(x)
  assert "shortcut_conv" not in variables["params"]
  y = jax.jit(lambda v, x: block.apply(v, x, train=False))(variables, x)
  np.testing.assert_array_equal(y, x)


@pytest.mark.integration
def test_cpu_and_native_conv_impls_give_same_outputs_and_grads():
  """Shifted depthwise + frame-stacked stem against the native convs, compared in float64: with batch-statistics BN over the 6 positions of the 1×1 last stage,
  float32 rounding alone differs by ~1e-3 between two exact implementations; float64 shows
  whether they compute the same function."""
  with jax.enable_x64(True):
    video = _video().astype(jnp.float64)
    shifted, native = (_make_test_model(depthwise_impl=dw, stem_impl=stem, dtype="float64")
                       for dw, stem in (("shifted", "frames"), ("native", "native")))
    variables = _init(shifted, video)
    params = jax.tree.map(lambda x: x.astype(jnp.float64), _perturbed(variables["params"]))
    cot = jax.random.normal(jax.random.key(1), (*TINY_SHAPE[:2], 256), jnp.float64)

    def loss_and_grads(model):
      def loss(params):
        out, _ = model.apply({**variables, "params": params}, video, train=True,
                             mutable=["batch_stats"])
        return jnp.vdot(out["frames"], cot), out["frames"]
      return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    (_, frames_s), grads_s = loss_and_grads(shifted)
    (_, frames_n), grads_n = loss_and_grads(native)
    assert frames_s.dtype == jnp.float64
    np.testing.assert_allclose(frames_s, frames_n, rtol=1e-9, atol=1e-10)
    flat_n = flax.traverse_util.flatten_dict(grads_n, sep="/")
    for path, g_s in flax.traverse_util.flatten_dict(grads_s, sep="/").items():
      g_n = flat_n[path]
      err = float(jnp.linalg.norm(g_s - g_n) / (jnp.linalg.norm(g_n) + 1e-30))
      assert err < 1e-8, (path, err)


def _perturbed(params):
  """Params with every last-block BN γ set to 1, so the residual branches are live."""
  def fix(path, x):
    return jnp.ones_like(x) if path[-2:] == ("bn_c", "scale") else x
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({k: fix(k, v) for k, v in flat.items()})


def _grads(model, variables, params, video):
  cot = jax.random.normal(jax.random.key(1), (*video.shape[:2], 256))

  def loss(params):
    out, _ = model.apply({**variables, "params": params}, video, train=True,
                         mutable=["batch_stats"])
    return jnp.vdot(out["frames"], cot)

  return flax.traverse_util.flatten_dict(jax.jit(jax.grad(loss))(params), sep="/")


@pytest.mark.integration
def test_gradients_reach_every_parameter():
  model = _make_test_model()
  video = _video()
  variables = _init(model, video)
  # At init γ(bn_c) = 0 cuts every residual branch off from the loss: its conv_a, bn_a,
  # conv_b, bn_b and conv_c get exactly zero gradient; everything else (stem, shortcuts,
  # bn_c itself) gets a finite non-zero one.
  residual_branch = ("conv_a/", "bn_a/", "conv_b/", "bn_b/", "conv_c/")
  for path, g in _grads(model, variables, variables["params"], video).items():
    assert bool(jnp.all(jnp.isfinite(g))), path
    if "_block" in path and any(part in path for part in residual_branch):
      assert not bool(jnp.any(g)), path
    else:
      assert bool(jnp.any(g)), path
  # Once γ(bn_c) ≠ 0 (after the first update), every parameter gets a gradient.
  for path, g in _grads(model, variables, _perturbed(variables["params"]), video).items():
    assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.any(g)), path


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_batch_norm_train_vs_eval():
  model = _make_test_model()
  video = _video()
  variables = _init(model, video)
  params = _perturbed(variables["params"])
  variables = {**variables, "params": params}
  train_apply = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=["batch_stats", "intermediates"],
      capture_intermediates=lambda mdl, _: mdl.name == "stem_conv"))
  eval_apply = jax.jit(lambda v, x: model.apply(v, x, train=False))

  # Train: batch statistics normalise, and running stats move by momentum 0.9 from (0, 1).
  out_train, state = train_apply(variables, video)
  stem = state["intermediates"]["stem_conv"]["__call__"][0]
  new_stats = state["batch_stats"]["stem_bn"]
  np.testing.assert_allclose(new_stats["mean"], 0.1 * stem.mean(axis=(0, 1, 2, 3)),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(new_stats["var"], 0.9 + 0.1 * stem.var(axis=(0, 1, 2, 3)),
                             rtol=1e-4)

  # Eval: running stats, so the output differs from train mode and a sample's output does
  # not depend on the rest of the batch (in train mode it does).
  out_eval = eval_apply(variables, video)
  assert not np.allclose(out_eval["frames"], out_train["frames"], atol=1e-3)
  alone_eval = eval_apply(variables, video[:1])
  np.testing.assert_allclose(alone_eval["frames"], out_eval["frames"][:1], rtol=1e-4,
                             atol=1e-5)
  alone_train, _ = train_apply(variables, video[:1])
  assert not np.allclose(alone_train["frames"], out_train["frames"][:1], atol=1e-3)


def test_greyscale_clips():
  """[B, T, H, W, 1] input: the stem kernel follows the channels, and the frame-stacked stem
  (kt·Cin = 3 stacked channels) equals the native 3D conv (the rest of the network does not
  see the input channels; tests/test_import_realforensics.py runs it against PyTorch)."""
  model = _make_test_model()
  shape = (1, 3, 28, 28, 1)
  variables = _abstract_init(model, shape)
  assert variables["params"]["stem_conv"]["kernel"].shape == (3, 7, 7, 1, 8)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                       jax.ShapeDtypeStruct(shape, jnp.float32))
  assert out["frames"].shape == (1, 3, 256)
  video, kernel = _video(shape), jax.random.normal(jax.random.key(2), (3, 7, 7, 1, 8))
  stems = [frame_conv.conv3d_t1(video, kernel, (2, 2), ((1, 1), (3, 3), (3, 3)), impl)
           for impl in ("frames", "native")]
  np.testing.assert_allclose(stems[0], stems[1], rtol=1e-5, atol=1e-5)


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_tiny_forward_shapes_and_dtype():
  model = _make_test_model(dtype="bfloat16")
  video = _video((1, 5, 32, 32, 3))
  variables = _init(model, video)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, video)
  assert out["frames"].shape == (1, 5, 256) and out["frames"].dtype == jnp.bfloat16
  assert out["feature_map"].shape == (1, 5, 1, 1, 256)
  assert bool(jnp.all(jnp.isfinite(out["frames"].astype(jnp.float32))))


def test_bad_configs_raise():
  with pytest.raises(ValueError, match="same length"):
    _abstract_init(_make_test_model(widths=(32, 64)), TINY_SHAPE)
  with pytest.raises(ValueError, match="divisible"):
    _abstract_init(_make_test_model(width_multiplier=0.01), TINY_SHAPE)
  with pytest.raises(ValueError, match="expected video"):
    jax.eval_shape(lambda v: _make_test_model().init(jax.random.key(0), v, train=False),
                   jax.ShapeDtypeStruct(TINY_SHAPE[1:], jnp.float32))

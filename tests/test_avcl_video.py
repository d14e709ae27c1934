"""AVCL video encoder (§3.2, Table 4): parameter counts, shapes, stem, gradients, dropout,
parameter names."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakedet import optim
from fakedet.models import MODELS
from fakedet.models import avcl
from fakedet.models import frame_conv
from fakedet.models import wav2vec2

TINY = dict(stage_blocks=(1, 1, 1, 1), width_multiplier=0.125, num_layers=2, width=32,
            num_heads=4, mlp_dim=64, max_len=8, num_tokens=3, head_hidden=32, proj_dim=16)
TINY_CLIP = (2, 6, 24, 24, 1)  # 6 frames of 24×24: stem 12×12, pool 6×6, res4 1×1
CLIP = (2, 50, 88, 88, 1)  # the paper's 2-s pre-training clip of 88×88 mouth crops

# Table 4, "Total parameters".
TABLE4 = {("resnet18", 4): 45.3e6, ("resnet18", 6): 62.1e6, ("resnet18", 8): 78.9e6,
          ("resnet50", 4): 162.1e6, ("resnet50", 6): 229.2e6, ("resnet50", 8): 296.3e6}
# Ours: everything but the contrastive head (see the test below).
OURS = {("resnet18", 4): 45_360_896, ("resnet18", 6): 62_160_640, ("resnet18", 8): 78_960_384,
        ("resnet50", 4): 162_125_056, ("resnet50", 6): 229_278_976,
        ("resnet50", 8): 296_432_896}


def _make_test_model(**overrides):
  return avcl.AVCLVideoEncoder(**{**TINY, **overrides})


def _abstract(model, shape):
  """(variables, outputs, intermediates) as ShapeDtypeStructs: nothing is computed."""
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  out, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]), variables, x)
  return variables, out, state["intermediates"]


def _count(tree) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def _paths(tree):
  return [optim.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _clip(seed=0, shape=TINY_CLIP):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_registered_and_head_symmetric_with_audio_encoder():
  assert MODELS.get("avcl_video") is avcl.AVCLVideoEncoder
  video, audio = avcl.AVCLVideoEncoder(), wav2vec2.AVCLAudioEncoder()
  for name in ("num_tokens", "head_hidden", "proj_dim"):
    assert getattr(video, name) == getattr(audio, name), name
  # §4.1: 6 layers of 1024 dims, 8 heads × 128 dims, MLP 2048, dropout 0.2.
  assert (video.num_layers, video.width, video.num_heads, video.mlp_dim, video.dropout) == (
      6, 1024, 8, 2048, 0.2)
  assert video.width // video.num_heads == 128
  assert avcl.config() == dict(frontend="resnet18", num_layers=6, width=1024, num_heads=8,
                               mlp_dim=2048)


@pytest.mark.parametrize("frontend,layers", sorted(TABLE4))
def test_table4_parameter_counts(frontend, layers):
  """Table 4 counts the encoder without the contrastive projection head. Millions, per reading:

    reading                                R18 L4  L6     L8     R50 L4  L6      L8
    Table 4                                45.3    62.1   78.9   162.1   229.2   296.3
    all but ``head`` (asserted: ours)      45.36   62.16  78.96  162.13  229.28  296.43
      without the position table           45.31   62.11  78.91  162.02  229.18  296.33
      without q/k/v biases (vit-pytorch)   45.35   62.14  78.94  162.10  229.24  296.38
    everything, ``head`` included          62.67   79.47  96.27  196.21  263.36  330.52

  Every head-less reading is within 0.13 % of every row; the 50-row position table (51k / 102k)
  and the q/k/v biases are below the table's 0.1M resolution, so whether the paper had them
  cannot be told. With the head (8·D → 2048 → 256: 17.3M / 34.1M) rows are 11–38 % over.
  """
  model = avcl.AVCLVideoEncoder(**avcl.config(frontend, layers))
  variables, _, _ = _abstract(model, (1, 2, 16, 16, 1))  # parameter shapes do not depend on it
  params = variables["params"]
  counted = _count(params) - _count(params["head"])
  assert counted == OURS[frontend, layers]
  assert abs(counted / TABLE4[frontend, layers] - 1) < 0.01
  d = model.width
  assert _count(params["head"]) == 8 * d * 2048 + 2048 + 2 * 2048 + 2048 * 256 + 256
  # Frontend: the 1-channel 5×7×7 stem (+ BN, PReLU) and the torchvision trunk without its
  # stem and fc (ResNet-18: 11,689,512 − 513,000 fc − 9,408 conv1 − 128 bn1).
  trunk = {"resnet18": 11_166_976, "resnet50": 23_498_496}[frontend]
  assert _count(params["frontend"]) == 5 * 7 * 7 * 64 + 2 * 64 + 64 + trunk


@pytest.mark.parametrize("frontend,c", [("resnet18", 512), ("resnet50", 2048)])
def test_full_size_shapes_for_two_second_clips(frontend, c):
  model = avcl.AVCLVideoEncoder(**avcl.config(frontend))
  variables, out, inter = _abstract(model, CLIP)
  d = model.width
  assert {k: v.shape for k, v in out.items()} == {
      "frames": (2, 50, c), "tokens": (2, 50, d), "pooled": (2, 8, d), "proj": (2, 256)}
  assert inter["frontend"]["stem"][0].shape == (2, 50, 44, 44, 64)
  assert [inter[f"layer_{i}_output"][0].shape for i in range(6)] == [(2, 50, d)] * 6
  assert set(variables["params"]) == {"frontend", "embed", "pos_embedding", "final_norm",
                                      "head"} | {f"layer_{i}" for i in range(6)}
  assert variables["params"]["pos_embedding"].shape == (50, d)
  assert set(variables["batch_stats"]) == {"frontend"}  # BN only in the frontend


def test_bfloat16_compute_keeps_float32_params():
  variables, out, _ = _abstract(_make_test_model(dtype="bfloat16"), TINY_CLIP)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  assert all(v.dtype == jnp.bfloat16 for v in out.values())


def test_fast_stem_equals_plain_conv3d():
  """The stem as a 2D conv over 5 stacked frames (what "auto" picks on CPU) equals flax's 3D
  ``nn.Conv`` with the same kernel: outputs and the gradients for input and kernel."""
  assert frame_conv.resolve_impl(avcl.AVCLVideoEncoder.stem_impl) == "frames"
  x = _clip(1, (2, 7, 22, 21, 1))
  ours = avcl.stem_conv(16, "frames")
  plain = nn.Conv(16, (5, 7, 7), strides=(1, 2, 2), padding=((2, 2), (3, 3), (3, 3)),
                  use_bias=False, precision=jax.lax.Precision.HIGHEST)
  params = ours.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      jnp.shape, jax.eval_shape(lambda: plain.init(jax.random.key(0), x)))
  cot = jax.random.normal(jax.random.key(3), (2, 7, 11, 11, 16))

  @jax.jit
  def run(params, x):
    def f(module):
      y, vjp = jax.vjp(lambda p, x: module.apply(p, x), params, x)
      return y, vjp(cot)
    return f(ours), f(plain)

  (y, (gp, gx)), (y_ref, (gp_ref, gx_ref)) = run(params, x)
  assert y.shape == (2, 7, 11, 11, 16)
  np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(gp["params"]["kernel"], gp_ref["params"]["kernel"], rtol=1e-4,
                             atol=1e-3)


def _random_variables(model, shape=TINY_CLIP, seed=0):
  """Variables of the right structure with N(0, 0.2) entries (running variances 1): the tests
  below need any non-degenerate parameters, and compiling the real initialisers would cost
  more than the tests themselves (the full-size tests trace ``init``)."""
  abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                            jax.ShapeDtypeStruct(shape, jnp.float32))
  rng = np.random.default_rng(seed)
  draw = lambda s: jnp.asarray(rng.normal(0.0, 0.2, s.shape), jnp.float32)
  stats = jax.tree_util.tree_map_with_path(
      lambda p, s: jnp.ones(s.shape) if optim.path_str(p).endswith("var") else draw(s),
      abstract["batch_stats"])
  return {"params": jax.tree.map(draw, abstract["params"]), "batch_stats": stats}


def _train_grads(model, variables, video, probe):
  """Gradients of sum(proj · probe) in train mode, and (outputs, updated batch stats)."""

  def loss(params):
    out, state = model.apply({**variables, "params": params}, video, train=True,
                             mutable=["batch_stats"],
                             rngs={"dropout": jax.random.key(2, impl="rbg")})
    return jnp.sum(out["proj"] * probe), (out, state["batch_stats"])

  return jax.grad(loss, has_aux=True)(variables["params"])


@pytest.mark.parametrize("frontend", [
    "resnet18",
    # The same checks on the bottleneck trunk: its gradient program compiles for ~15 s.
    pytest.param("resnet50", marks=pytest.mark.integration)])
@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_tiny_forward_and_every_parameter_gets_a_gradient(frontend):
  model = _make_test_model(frontend=frontend)
  variables = _random_variables(model)
  video = _clip(2)
  probe = jax.random.normal(jax.random.key(1), (2, 16))
  g, (out, stats) = jax.jit(_train_grads, static_argnums=0)(model, variables, video, probe)
  c = {"resnet18": 64, "resnet50": 256}[frontend]
  assert {k: v.shape for k, v in out.items()} == {
      "frames": (2, 6, c), "tokens": (2, 6, 32), "pooled": (2, 3, 32), "proj": (2, 16)}
  np.testing.assert_allclose(out["pooled"], wav2vec2.adaptive_avg_pool(out["tokens"], 3),
                             rtol=1e-5, atol=1e-6)
  assert all(np.all(np.isfinite(v)) for v in out.values())

  # Every parameter gets a gradient, except the key biases: adding k·b to every attention
  # logit of a query is a constant shift that softmax removes, so their gradient is exactly 0
  # in exact arithmetic (float rounding leaves noise at most).
  paths, leaves = _paths(g), jax.tree.leaves(g)
  dead = [p for p, x in zip(paths, leaves) if not np.any(np.abs(x) > 0)]
  assert set(dead) <= {p for p in paths if p.endswith("k_proj/bias")}
  for p, x in zip(paths, leaves):
    if p.endswith("k_proj/bias"):
      q = g[p.split("/")[0]]["attention"]["q_proj"]["bias"]
      assert np.max(np.abs(x)) <= 1e-4 * np.max(np.abs(q)), p
  # Train mode updates every running statistic of the frontend.
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), variables["batch_stats"], stats)
  assert all(jax.tree.leaves(moved))


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_frozen_frontend_gets_no_gradient_and_keeps_its_statistics():
  model = _make_test_model(freeze_frontend=True)
  variables = _random_variables(model)
  probe = jax.random.normal(jax.random.key(1), (2, 16))
  g, (_, stats) = jax.jit(_train_grads, static_argnums=0)(model, variables, _clip(2), probe)
  assert all(not np.any(x) for x in jax.tree.leaves(g["frontend"]))
  same = jax.tree.map(np.array_equal, variables["batch_stats"], stats)
  assert all(jax.tree.leaves(same))
  assert np.any(g["layer_0"]["attention"]["q_proj"]["kernel"])  # the backend still learns


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_dropout_only_with_train():
  model = _make_test_model(dropout=0.5)
  no_dropout = _make_test_model(dropout=0.0)
  variables = _random_variables(model)

  @jax.jit
  def run(video):
    evaluate = lambda m, **kw: m.apply(variables, video, train=False, **kw)["proj"]
    train = lambda m, seed: m.apply(variables, video, train=True, mutable=["batch_stats"],
                                    rngs={"dropout": jax.random.key(seed, impl="rbg")})[0]["proj"]
    return (evaluate(model), evaluate(model, rngs={"dropout": jax.random.key(7, impl="rbg")}),
            evaluate(no_dropout), train(model, 1), train(model, 2), train(no_dropout, 1),
            train(no_dropout, 2))

  ev, ev_rng, ev_none, t1, t2, t_none1, t_none2 = run(_clip(3))
  # Eval: no rng needed, an rng changes nothing, and the dropout rate does not matter.
  np.testing.assert_array_equal(ev, ev_rng)
  np.testing.assert_array_equal(ev, ev_none)
  # Train: the mask follows the rng; with rate 0 the rng has no effect, so the difference is
  # dropout's, not the BN batch statistics'.
  assert not np.allclose(t1, t2, atol=1e-3)
  np.testing.assert_array_equal(t_none1, t_none2)
  assert not np.allclose(t1, t_none1, atol=1e-3)


def test_layer_index_on_real_parameter_paths():
  variables, _, _ = _abstract(avcl.AVCLVideoEncoder(), (1, 2, 16, 16, 1))
  # As the optimizer sees them: '/'-joined, with the collection name, maybe inside a bigger
  # model.
  paths = _paths({"params": {"video": variables["params"]}})
  by_layer = {}
  for p in paths:
    by_layer.setdefault(avcl.layer_index(p), []).append(p)
  assert sorted(k for k in by_layer if k is not None) == list(range(6))
  for i in range(6):
    assert all(f"/layer_{i}/" in p for p in by_layer[i])
    assert by_layer[i] == [p for p in paths if re.fullmatch(avcl.layer_pattern(i), p)]
  others = {p.split("/")[2] for p in by_layer[None]}
  assert others == {"frontend", "embed", "pos_embedding", "final_norm", "head"}
  # The frontend's blocks (res{s}_block{b}) never look like a transformer layer.
  assert any("/frontend/res4_block2/" in p for p in by_layer[None])
  assert avcl.layer_index("layer_11/attention/q_proj/kernel") == 11
  assert avcl.layer_index("params/encoder/layers_3/attention/q_proj/kernel") is None
  # §3.3: the last layer 0.005, each earlier one ×0.9.
  lrs = [avcl.layer_lr(i, 6) for i in range(6)]
  np.testing.assert_allclose(lrs, [0.005 * 0.9 ** (5 - i) for i in range(6)])
  assert lrs[-1] == 0.005
  with pytest.raises(ValueError, match="outside"):
    avcl.layer_lr(6, 6)


def test_rejects_bad_inputs_and_settings():
  with pytest.raises(ValueError, match="max_len=8"):
    _abstract(_make_test_model(), (1, 9, 24, 24, 1))
  with pytest.raises(ValueError, match=r"expected video \[B, T, H, W, C\]"):
    _abstract(_make_test_model(), (1, 6, 24, 24))
  with pytest.raises(ValueError, match="unknown frontend 'resnet34'"):
    _abstract(_make_test_model(frontend="resnet34"), TINY_CLIP)
  with pytest.raises(ValueError, match="not divisible by num_heads"):
    _abstract(_make_test_model(num_heads=5), TINY_CLIP)
  with pytest.raises(ValueError, match="stem_act 'gelu'"):
    _abstract(_make_test_model(stem_act="gelu"), TINY_CLIP)
  with pytest.raises(KeyError, match="unknown frontend"):
    avcl.config("vit")

"""Per-frame projectors and predictors: registry, hand-counted params, BN modes, frame mixing."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakedet.models import heads

B, T, C = 4, 5, 12  # tiny batch, frames and input channels for real forwards

# Tiny configs of every head, by registry name.
TINY = {
    "conv_projector": dict(features=16),
    "transformer_predictor": dict(num_heads=2, head_dim=8, mlp_dim=32),
    "mlp_projector": dict(features=16, hidden_dim=32),
    "mlp_predictor": dict(hidden_dim=8),
}


def _make_test_head(name, **overrides):
  return heads.HEADS.get(name)(**{**TINY.get(name, {}), **overrides})


def _num_params(head, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(lambda x: head.init(jax.random.key(0), x, train=False), x)
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


@functools.cache  # heads are hashable dataclasses; compiles are the slow part on CPU
def _init(head):
  # The rbg PRNG: threefry-based init compiles slowly on a small CPU.
  key = jax.random.key(0, impl="rbg")
  return jax.jit(lambda x: head.init(key, x, train=False))(jnp.zeros((B, T, C)))


def _inputs(seed=0, shape=(B, T, C)):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@functools.cache
def _jitted_apply(head, train):
  """Jitted (variables, x) → (output, updated batch stats)."""

  def apply(variables, x):
    out, state = head.apply(variables, x, train=train, mutable=["batch_stats"])
    return out, state["batch_stats"]

  return jax.jit(apply)


def _apply(head, variables, train):
  """x → output, batch-stat updates discarded."""
  return lambda x: _jitted_apply(head, train)(variables, x)[0]


def test_registry_names():
  assert set(heads.HEADS.names()) >= set(TINY)
  assert heads.HEADS.get("conv_projector") is heads.ConvProjector
  assert heads.HEADS.get("transformer_predictor") is heads.TransformerPredictor
  assert heads.HEADS.get("mlp_projector") is heads.MLPProjector
  assert heads.HEADS.get("mlp_predictor") is heads.MLPPredictor


def _bn(d):
  return 2 * d  # scale + bias (running stats are not params)


def _dense(i, o, bias=True):
  return i * o + (o if bias else 0)


@pytest.mark.parametrize("head, in_dim, expected", [
    # Paper: 1×1 conv 512 → 256 (bias, as torch/the authors) + BN.
    (heads.ConvProjector(), 512, _dense(512, 256) + _bn(256)),
    (heads.ConvProjector(use_bias=False), 512, _dense(512, 256, False) + _bn(256)),
    # Authors' layout: embed 256 → 512, LN, qkv 512 → 3·8·64 (no bias), out, BN, MLP 2048,
    # head BN + Dense 512 → 256.
    (heads.TransformerPredictor(), 256,
     _dense(256, 512) + _bn(512) + _dense(512, 3 * 512, False) + _dense(512, 512) + _bn(512)
     + _dense(512, 2048) + _dense(2048, 512) + _bn(512) + _dense(512, 256)),
    # Minimal reading: block at width 256, qkv inner width still 8·64 = 512.
    (heads.TransformerPredictor(io_projections=False, qkv_bias=True, use_pos_emb=True), 256,
     _bn(256) + _dense(256, 3 * 512) + _dense(512, 256) + _bn(256) + _dense(256, 2048)
     + _dense(2048, 256) + 64 * 256),
    (heads.MLPProjector(), 512,
     _dense(512, 2048) + _bn(2048) + _dense(2048, 2048) + _bn(2048) + _dense(2048, 256)
     + _bn(256)),
    (heads.MLPPredictor(), 256, _dense(256, 512) + _bn(512) + _dense(512, 256)),
])
def test_paper_size_parameter_counts(head, in_dim, expected):
  assert _num_params(head, (2, 25, in_dim)) == expected


def test_paper_transformer_count():
  assert _num_params(heads.TransformerPredictor(), (2, 25, 256)) == 3_414_784


@pytest.mark.parametrize("head, in_dim, out_dim", [
    (heads.ConvProjector(), 2048, 256),
    (heads.TransformerPredictor(), 256, 256),
    (heads.TransformerPredictor(io_projections=False), 256, 256),
    (heads.TransformerPredictor(out_features=128), 256, 128),
    (heads.MLPProjector(), 512, 256),
    (heads.MLPPredictor(), 256, 256),
    (heads.MLPPredictor(out_features=2048), 2048, 2048),  # B.3's literal wording
])
def test_paper_size_shapes(head, in_dim, out_dim):
  x = jax.ShapeDtypeStruct((2, 25, in_dim), jnp.float32)
  out = jax.eval_shape(lambda x: head.init_with_output(jax.random.key(0), x, train=True)[0], x)
  assert out.shape == (2, 25, out_dim)


def test_invalid_configs_raise():
  with pytest.raises(ValueError, match="io_projections=False"):
    _num_params(heads.TransformerPredictor(io_projections=False, width=128), (1, 5, 256))
  with pytest.raises(ValueError, match="max_len"):
    _num_params(heads.TransformerPredictor(use_pos_emb=True, max_len=4), (1, 5, 256))
  with pytest.raises(ValueError, match=r"\[B, T, C\]"):
    _num_params(heads.ConvProjector(), (2, 256))


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_forward_shapes(name):
  head = _make_test_head(name)
  variables = _init(head)
  out = _apply(head, variables, train=True)(_inputs())
  expected = TINY[name].get("features", C)
  assert out.shape == (B, T, expected) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("io_projections", [True, False])
def test_predictor_batchnorm_train_uses_batch_eval_uses_running(io_projections):
  head = _make_test_head("transformer_predictor", io_projections=io_projections)
  variables = _init(head)
  x = _inputs()
  x2 = x.at[1:].multiply(3.0).at[1:].add(1.0)  # other samples change, sample 0 does not
  train, evaluate = _apply(head, variables, True), _apply(head, variables, False)
  assert not np.allclose(train(x)[0], train(x2)[0], atol=1e-4)
  np.testing.assert_allclose(evaluate(x)[0], evaluate(x2)[0], rtol=1e-5, atol=1e-6)
  # Train updates the running averages, and eval reads them.
  _, stats = _jitted_apply(head, True)(variables, x)
  assert not np.allclose(stats["mlp_norm"]["mean"], 0.0)
  moved = {**variables, "batch_stats": stats}
  assert not np.allclose(evaluate(x), _apply(head, moved, False)(x), atol=1e-4)


def _frame_dependence(head, variables, frame=3):
  """Eval mode: how much each output frame moves when only input `frame` changes, [T]."""
  x = _inputs()
  f = _apply(head, variables, train=False)
  return np.abs(np.asarray(f(x.at[:, frame].add(2.0)) - f(x))).max(axis=(0, 2))


def test_attention_mixes_frames():
  head = _make_test_head("transformer_predictor")
  assert np.all(_frame_dependence(head, _init(head)) > 1e-4)


@pytest.mark.parametrize("name", ["conv_projector", "mlp_projector", "mlp_predictor"])
def test_mlp_heads_are_per_frame(name):
  head = _make_test_head(name)
  moved = _frame_dependence(head, _init(head), frame=3)
  assert moved[3] > 1e-4 and np.all(np.delete(moved, 3) == 0.0)


@pytest.mark.parametrize("use_pos_emb", [False, True])
def test_position_embedding_breaks_frame_permutation_symmetry(use_pos_emb):
  head = _make_test_head("transformer_predictor", use_pos_emb=use_pos_emb)
  f = _apply(head, _init(head), train=False)
  x, perm = _inputs(), np.array([4, 2, 0, 1, 3])
  equivariant = np.allclose(f(x[:, perm]), f(x)[:, perm], atol=1e-5)
  assert equivariant != use_pos_emb


# Params with no training gradient: biases whose only effect is a constant shift that a
# following BN (batch statistics) removes — see the class docstrings.
BN_INERT = {
    "conv_projector": {"['dense']['bias']"},
    "transformer_predictor": {"['attn']['out']['bias']", "['mlp']['fc2']['bias']"},
    "mlp_projector": {f"['dense{i}']['bias']" for i in (1, 2, 3)},
    "mlp_predictor": {"['dense1']['bias']"},
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_gradient_reaches_every_param_but_bn_inert_biases(name):
  head = _make_test_head(name)
  variables = _init(head)
  x = _inputs(1)
  probe = _inputs(2, (B, T, TINY[name].get("features", C)))

  def loss(params):
    out, _ = head.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
    return jnp.sum(out * probe)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  flat = [(jax.tree_util.keystr(p), np.abs(np.asarray(g)).max())
          for p, g in jax.tree_util.tree_flatten_with_path(grads)[0]]
  scale = max(g for _, g in flat)
  assert {p for p, g in flat if g < 1e-5 * scale} == BN_INERT[name]

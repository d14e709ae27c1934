"""AdamP against a float64 NumPy transcription of the reference step; config-built optimisers,
schedules and parameter groups; EMA-teacher helpers."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fakedet import optim

LR, WD = 0.1, 0.1


def _np_adamp_step(p, g, m, v, t, lr, wd, b1=0.9, b2=0.999, eps=1e-8, delta=0.1, wd_ratio=0.1,
                   nesterov=False):
  """One reference (PyTorch) AdamP step on a flax-layout tensor; returns (p, m, v, branch).

  Written in PyTorch's layout (output channel first, one row per channel) so that a mistake in
  which axis is the output channel shows up.
  """
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g * g
  denom = np.sqrt(v) / np.sqrt(1 - b2**t) + eps
  perturb = ((b1 * m + (1 - b1) * g) if nesterov else m) / denom
  ratio, branch = 1.0, "none"
  if p.ndim > 1:
    out = p.shape[-1]
    views = (
        ("channel", lambda x: np.moveaxis(x, -1, 0).reshape(out, -1),
         lambda r: np.moveaxis(r.reshape((out,) + p.shape[:-1]), 0, -1)),
        ("layer", lambda x: x.reshape(1, -1), lambda r: r.reshape(p.shape)),
    )
    for name, view, unview in views:
      pv, gv, qv = view(p), view(g), view(perturb)
      norm_p = np.linalg.norm(pv, axis=1)
      norm_g = np.linalg.norm(gv, axis=1)
      cos = np.abs(np.sum(pv * gv, 1)) / (np.maximum(norm_p, eps) * np.maximum(norm_g, eps))
      if cos.max() < delta / np.sqrt(pv.shape[1]):
        pn = pv / (norm_p[:, None] + eps)
        perturb = unview(qv - pn * np.sum(pn * qv, 1, keepdims=True))
        ratio, branch = wd_ratio, name
        break
  p = p * (1 - lr * wd * ratio) - lr / (1 - b1**t) * perturb
  return p, m, v, branch


def _orthogonal_per_channel(w, g):
  """g with its component along each output channel (last axis) of w removed."""
  axes = tuple(range(w.ndim - 1))
  return g - w * np.sum(w * g, axes, keepdims=True) / np.sum(w * w, axes, keepdims=True)


def _cases():
  """Weights and grads chosen so each projection branch is taken (asserted by the tests)."""
  rng = np.random.default_rng(0)
  w_channel = rng.normal(size=(3, 2))
  w_parallel = rng.normal(size=(3, 2))
  w_layer = rng.normal(size=(4, 2))
  # Per channel g ∥ w (|cos| = 1) but the two channels' dots cancel: layer-wise orthogonal.
  n0, n1 = np.sum(w_layer[:, 0]**2), np.sum(w_layer[:, 1]**2)
  g_layer = np.stack([w_layer[:, 0] * n1, -w_layer[:, 1] * n0], axis=1)
  params = dict(w_channel=w_channel, w_parallel=w_parallel, w_layer=w_layer,
                bias=rng.normal(size=(2,)))
  grads = dict(w_channel=_orthogonal_per_channel(w_channel, rng.normal(size=(3, 2))),
               w_parallel=2 * w_parallel + 0.01 * rng.normal(size=(3, 2)),
               w_layer=g_layer, bias=rng.normal(size=(2,)))
  branches = dict(w_channel="channel", w_parallel="none", w_layer="layer", bias="none")
  return params, grads, branches


def _f32(tree):
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


@pytest.mark.parametrize("nesterov", [False, True])
def test_adamp_single_step_matches_reference(nesterov):
  params, grads, branches = _cases()
  tx = optim.adamp(LR, weight_decay=WD, nesterov=nesterov)
  updates, _ = jax.jit(tx.update)(_f32(grads), tx.init(_f32(params)), _f32(params))
  new = optax.apply_updates(_f32(params), updates)
  for k in params:
    zeros = np.zeros_like(params[k])
    want, _, _, branch = _np_adamp_step(params[k], grads[k], zeros, zeros, 1, LR, WD,
                                        nesterov=nesterov)
    assert branch == branches[k], k
    np.testing.assert_allclose(new[k], want, rtol=1e-5, atol=1e-6, err_msg=k)


def test_projection_changes_the_step():
  """Guards the reference test: without projection the channel case would differ."""
  params, grads, _ = _cases()
  p, g = params["w_channel"], grads["w_channel"]
  zeros = np.zeros_like(p)
  projected, _, _, _ = _np_adamp_step(p, g, zeros, zeros, 1, LR, WD)
  plain, _, _, branch = _np_adamp_step(p, g, zeros, zeros, 1, LR, WD, delta=0.0)
  assert branch == "none"
  assert np.max(np.abs(projected - plain)) > 1e-2


def test_adamp_two_steps_bias_correction():
  params, grads, _ = _cases()
  grads2 = jax.tree.map(lambda g: 0.5 * g[::-1] if g.ndim else g, grads)
  tx = optim.adamp(LR, weight_decay=WD)
  state = tx.init(_f32(params))
  got = _f32(params)
  update = jax.jit(tx.update)
  for g in (grads, grads2):
    updates, state = update(_f32(g), state, got)
    got = optax.apply_updates(got, updates)
  assert int(state[0].count) == 2
  for k in params:
    p, m, v = params[k], np.zeros_like(params[k]), np.zeros_like(params[k])
    for t, g in ((1, grads[k]), (2, grads2[k])):
      p, m, v, _ = _np_adamp_step(p, g, m, v, t, LR, WD)
    np.testing.assert_allclose(got[k], p, rtol=1e-5, atol=1e-6, err_msg=k)


def test_adamp_pytree_of_mixed_shapes_under_jit():
  rng = np.random.default_rng(1)
  shapes = {"conv": {"kernel": (3, 3, 2, 4), "bias": (4,)}, "conv3d": {"kernel": (2, 1, 1, 3, 2)},
            "dense": {"kernel": (5, 3)}, "scale": ()}
  params = jax.tree.map(lambda s: rng.normal(size=s), shapes,
                        is_leaf=lambda x: isinstance(x, tuple))
  grads = jax.tree.map(lambda p: rng.normal(size=p.shape), params)
  grads["conv"]["kernel"] = _orthogonal_per_channel(params["conv"]["kernel"],
                                                    grads["conv"]["kernel"])
  tx = optim.adamp(optax.linear_schedule(LR, 0.0, 10), weight_decay=WD)

  @jax.jit
  @chex.assert_max_traces(1)
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  first, state = step(_f32(params), tx.init(_f32(params)), _f32(grads))
  want = jax.tree.map(lambda p, g: _np_adamp_step(p, g, 0 * p, 0 * p, 1, LR, WD)[0], params, grads)
  chex.assert_trees_all_close(first, _f32(want), rtol=1e-5, atol=1e-6)
  second, _ = step(first, state, _f32(grads))  # Same structure: must not retrace.
  chex.assert_tree_all_finite(second)


def test_adamp_update_is_orthogonal_for_scale_invariant_weights():
  """A loss of w / ||w|| per channel has grads ⟂ w; AdamP's step (less decay) stays ⟂ w too."""
  rng = np.random.default_rng(2)
  w = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  x = jnp.asarray(rng.normal(size=(8, 6)), jnp.float32)

  def loss(w):
    w_hat = w / jnp.linalg.norm(w, axis=0, keepdims=True)
    return jnp.sum(jnp.sin(x @ w_hat))

  grads = jax.grad(loss)(w)
  radial = lambda u: jnp.abs(jnp.sum(u * w, axis=0)) / (jnp.linalg.norm(u, axis=0) *
                                                       jnp.linalg.norm(w, axis=0))
  assert float(jnp.max(radial(grads))) < 1e-5
  adamp = optim.adamp(LR, weight_decay=WD)
  updates, _ = jax.jit(adamp.update)(grads, adamp.init(w), w)
  decay = -LR * WD * 0.1 * w  # wd_ratio applies once the projection fires.
  assert float(jnp.max(radial(updates - decay))) < 1e-5
  adam = optax.adam(LR)
  adam_updates, _ = adam.update(grads, adam.init(w))
  assert float(jnp.max(radial(adam_updates))) > 1e-2  # Adam's step is not orthogonal.


def test_adamp_needs_params():
  tx = optim.scale_by_adamp()
  with pytest.raises(ValueError, match="params"):
    tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))


# ----------------------------------------------------------------------------------------------
# make_optimizer / learning_rates.


def _cfg(**overrides):
  cfg = optim.default_config()
  cfg.update(overrides)
  return cfg


def _params():
  return {"encoder": {"conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones(4)}},
          "video_predictor": {"dense": {"kernel": jnp.ones((4, 4))}},
          "head": {"kernel": jnp.ones((4, 2))}}


def test_schedules_at_specific_steps():
  cfg = _cfg(lr=1e-2, warmup_steps=10)
  cfg.groups.head = dict(pattern=r"head/.*", schedule="constant", warmup_steps=4, lr=2e-3)
  lrs = optim.learning_rates(cfg, total_steps=110)
  assert set(lrs) == {"default", "predictor", "head"}
  at = lambda name, step: float(lrs[name](step))
  np.testing.assert_allclose([at("default", s) for s in (0, 5, 10, 60, 110)],
                             [0.0, 5e-3, 1e-2, 5e-3, 0.0], atol=1e-8)  # 60: cosine midpoint.
  np.testing.assert_allclose([at("predictor", s) for s in (0, 10, 60, 110)], [7e-4] * 4)
  np.testing.assert_allclose([at("head", s) for s in (0, 2, 4, 60, 110)],
                             [0.0, 1e-3, 2e-3, 2e-3, 2e-3], atol=1e-8)
  frozen = _cfg()
  frozen.groups.predictor.freeze = True
  assert float(optim.learning_rates(frozen, 10)["predictor"](3)) == 0.0


def test_trapezoid_schedule_ramps_up_and_down_over_a_quarter():
  """PCL (§4.1): linear to the peak over the first quarter, flat, linear to 0 over the last."""
  lr = optim.learning_rates(_cfg(lr=5e-5, warmup_steps=25, schedule="trapezoid"), 100)["default"]
  np.testing.assert_allclose([float(lr(s)) for s in (0, 10, 25, 50, 75, 90, 100)],
                             [0.0, 2e-5, 5e-5, 5e-5, 5e-5, 2e-5, 0.0], atol=1e-12)
  with pytest.raises(ValueError, match="at most half"):
    optim.learning_rates(_cfg(warmup_steps=60, schedule="trapezoid"), 100)


def test_group_learning_rates_set_update_sizes():
  """Adam's first step is lr * sign(grad) (bias-corrected, eps ≪ |grad|): sizes = group LRs."""
  cfg = _cfg(name="adam", lr=1e-2, weight_decay=0.0)
  cfg.groups.head = dict(pattern=r"head/.*", lr=1e-3)
  tx = optim.make_optimizer(cfg, total_steps=100)
  params = _params()
  grads = jax.tree.map(lambda p: 0.3 * jnp.ones_like(p), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["encoder"]["conv"]["kernel"], -1e-2, rtol=1e-5)
  np.testing.assert_allclose(updates["video_predictor"]["dense"]["kernel"], -7e-4, rtol=1e-5)
  np.testing.assert_allclose(updates["head"]["kernel"], -1e-3, rtol=1e-5)


def test_sgd_step_is_momentum_and_l2_decay_by_hand():
  """Two SGD steps with momentum b1 and decay as L2: v₁ = g + λw, v₂ = b1·v₁ + g + λw₁."""
  cfg = _cfg(name="sgd", lr=0.1, weight_decay=0.5, b1=0.9, schedule="constant")
  cfg.groups = {}
  tx = optim.make_optimizer(cfg, total_steps=10)
  w0 = {"w": jnp.array([1.0, -2.0])}
  g = {"w": jnp.array([0.2, 0.4])}
  state = tx.init(w0)
  u1, state = tx.update(g, state, w0)
  v1 = np.array([0.2 + 0.5, 0.4 - 1.0])
  np.testing.assert_allclose(u1["w"], -0.1 * v1, rtol=1e-6)
  w1 = {"w": w0["w"] + u1["w"]}
  u2, _ = tx.update(g, state, w1)
  v2 = 0.9 * v1 + np.array([0.2, 0.4]) + 0.5 * np.asarray(w1["w"])
  np.testing.assert_allclose(u2["w"], -0.1 * v2, rtol=1e-6)


def test_group_weight_decay_override():
  cfg = _cfg(name="adamw", lr=0.1, weight_decay=0.5)
  cfg.groups.head = dict(pattern=r"head/.*", weight_decay=0.0, schedule="constant")
  tx = optim.make_optimizer(cfg, total_steps=10)
  params = _params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates["encoder"]["conv"]["bias"], -0.1 * 0.5)
  np.testing.assert_allclose(updates["head"]["kernel"], 0.0)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_frozen_group_does_not_move(name):
  cfg = _cfg(name=name, grad_clip_norm=1.0)
  cfg.groups.predictor.freeze = True
  tx = optim.make_optimizer(cfg, total_steps=10)
  params = _params()
  grads = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p), params)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  new, state = params, tx.init(params)
  for _ in range(3):
    new, state = step(new, state, grads)
  chex.assert_trees_all_equal(new["video_predictor"], params["video_predictor"])
  assert float(jnp.max(jnp.abs(new["head"]["kernel"] - params["head"]["kernel"]))) > 1e-5
  # Frozen gradients do not count in the clipping norm: a huge one changes nothing else.
  loud = dict(grads, video_predictor=jax.tree.map(lambda g: 1e6 * g, grads["video_predictor"]))
  update = jax.jit(tx.update)
  quiet_updates, _ = update(grads, tx.init(params), params)
  loud_updates, _ = update(loud, tx.init(params), params)
  chex.assert_trees_all_close(loud_updates, quiet_updates)


def test_grad_clipping():
  """With eps = 1 Adam's first step is -lr g / (|g| + 1), which shows the clipped g."""
  cfg = _cfg(name="adam", lr=0.1, weight_decay=0.0, eps=1.0, schedule="constant",
             grad_clip_norm=1.0)
  cfg.groups = ml_collections.ConfigDict()
  params = {"w": jnp.zeros(2)}
  grads = {"w": jnp.array([3.0, 4.0])}  # Global norm 5: clipped to [0.6, 0.8].
  tx = optim.make_optimizer(cfg, total_steps=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], [-0.1 * 0.6 / 1.6, -0.1 * 0.8 / 1.8], rtol=1e-5)
  cfg.grad_clip_norm = 0.0
  tx = optim.make_optimizer(cfg, total_steps=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], [-0.1 * 3 / 4, -0.1 * 4 / 5], rtol=1e-5)


@pytest.mark.parametrize("field,value,match", [
    ("name", "lamb", r"optim.name='lamb'.*adamp, adamw, adam, sgd"),
    ("schedule", "linear", r"optim.schedule='linear'.*cosine, constant"),
])
def test_bad_names_raise_with_allowed_values(field, value, match):
  with pytest.raises(ValueError, match=match):
    optim.make_optimizer(_cfg(**{field: value}), 10)


def test_bad_group_settings_raise():
  cfg = _cfg()
  cfg.groups.predictor.schedule = "step"
  with pytest.raises(ValueError, match=r"optim.groups.predictor.schedule='step'.*cosine"):
    optim.learning_rates(cfg, 10)
  cfg = _cfg()
  cfg.groups.typo = dict(pattern=r".*prdictor.*")
  tx = optim.make_optimizer(cfg, 10)
  with pytest.raises(ValueError, match=r"\['typo'\] match no parameter"):
    tx.init(_params())
  cfg = _cfg(warmup_steps=20)
  with pytest.raises(ValueError, match="warmup_steps"):
    optim.make_optimizer(cfg, 10)
  with pytest.raises(KeyError, match="optim.weight_decy"):
    optim.make_optimizer(_cfg(weight_decy=0.1), 10)
  cfg = _cfg()
  cfg.groups.default = dict(pattern="x")
  with pytest.raises(ValueError, match="'default'"):
    optim.make_optimizer(cfg, 10)


def test_first_group_in_name_order_wins():
  cfg = _cfg(name="adam", weight_decay=0.0)
  cfg.groups = ml_collections.ConfigDict()
  cfg.groups.a_head = dict(pattern=r"head/.*", lr=1e-3, schedule="constant")
  cfg.groups.b_all = dict(pattern=r".*", lr=5e-3, schedule="constant")
  tx = optim.make_optimizer(cfg, 10)
  params = _params()
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates["head"]["kernel"], -1e-3, rtol=1e-5)
  np.testing.assert_allclose(updates["encoder"]["conv"]["bias"], -5e-3, rtol=1e-5)
  np.testing.assert_allclose(updates["video_predictor"]["dense"]["kernel"], -5e-3, rtol=1e-5)
  cfg.groups.c_shadowed = dict(pattern=r".*predictor.*")  # b_all takes its parameters first.
  with pytest.raises(ValueError, match=r"\['c_shadowed'\] match no parameter"):
    optim.make_optimizer(cfg, 10).init(params)


def test_default_config_is_realforensics_stage1():
  cfg = optim.default_config()
  assert (cfg.name, cfg.lr, cfg.weight_decay) == ("adamp", 7e-4, 1e-2)
  assert cfg.groups.predictor.schedule == "constant"


# ----------------------------------------------------------------------------------------------
# EMA teacher.


def test_ema_update_exact():
  teacher = {"a": np.array([1.0, 2.0], np.float32), "b": {"c": np.array(3.0, np.float32)}}
  student = {"a": np.array([5.0, -2.0], np.float32), "b": {"c": np.array(0.0, np.float32)}}
  got = jax.jit(optim.ema_update)(teacher, student, 0.75)
  chex.assert_trees_all_close(got, {"a": np.array([2.0, 1.0]), "b": {"c": np.array(2.25)}})


def test_ema_momentum_schedules():
  assert float(optim.ema_momentum(7, 0.99, 100)) == pytest.approx(0.99)
  cosine = jax.jit(lambda s: optim.ema_momentum(s, 0.99, 100, "cosine"))
  np.testing.assert_allclose([cosine(0), cosine(50), cosine(100), cosine(150)],
                             [0.99, 0.995, 1.0, 1.0], atol=1e-7)
  with pytest.raises(ValueError, match="ema.schedule='linear'.*constant, cosine"):
    optim.ema_momentum(0, 0.99, 100, "linear")


def test_scale_momentum_for_batch():
  assert optim.scale_momentum_for_batch(0.999, 256) == pytest.approx(0.999)
  assert optim.scale_momentum_for_batch(0.999, 512) == pytest.approx(0.998)
  assert optim.scale_momentum_for_batch(0.999, 64) == pytest.approx(0.99975)
  assert optim.scale_momentum_for_batch(0.99, 32, reference_batch=64) == pytest.approx(0.995)
  with pytest.raises(ValueError, match="outside"):
    optim.scale_momentum_for_batch(0.9, 4096, 256)


def test_cosine_alpha_ends_at_that_fraction_of_the_rate():
  """FakeOut §4.1: cosine decay from 1e-5 with α = 0.95 ends at 0.95e-5 (optax's alpha)."""
  cfg = _cfg(name="adam", lr=1e-5, cosine_alpha=0.95)
  cfg.groups = {}
  lr = optim.learning_rates(cfg, total_steps=100)["default"]
  np.testing.assert_allclose([float(lr(s)) for s in (0, 50, 100)],
                             [1e-5, 0.975e-5, 0.95e-5], rtol=1e-6)
  with pytest.raises(ValueError, match=r"optim.cosine_alpha=1.5: expected the fraction"):
    optim.learning_rates(_cfg(cosine_alpha=1.5), total_steps=100)

"""Stage-2 loss pieces: hand-computed values, masks, logit adjustment's balancing property."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakedet.models import heads
from fakedet.objectives import detection, losses


def test_fake_prior_counts_valid_samples_only():
  labels = jnp.array([0, 1, 1, 0, 1])
  valid = jnp.array([True, True, True, True, False])
  assert float(detection.fake_prior(labels, valid)) == pytest.approx(0.5)
  assert float(detection.fake_prior(jnp.zeros(4, int), jnp.ones(4, bool))) == pytest.approx(1e-3)


def test_logit_adjusted_bce_matches_hand_computation():
  logits, labels = np.array([0.5, -1.0, 2.0]), np.array([1, 0, 1])
  prior = 0.25
  adj = logits + np.log(prior / (1 - prior))
  p = 1 / (1 + np.exp(-adj))
  expected = np.mean(-(labels * np.log(p) + (1 - labels) * np.log(1 - p))[:2])  # 3rd invalid
  got = detection.logit_adjusted_bce(jnp.asarray(logits), jnp.asarray(labels), jnp.float32(prior),
                                     jnp.array([True, True, False]))
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_logit_adjustment_makes_the_balanced_logit_optimal():
  """On a batch with 1 fake in 8, a constant predictor minimises the adjusted loss at raw
  logit 0 (the balanced decision), where plain BCE would push it to log(1/7)."""
  labels = jnp.array([1, 0, 0, 0, 0, 0, 0, 0])
  valid = jnp.ones(8, bool)
  prior = detection.fake_prior(labels, valid)
  loss = lambda c: detection.logit_adjusted_bce(jnp.full(8, c), labels, prior, valid)
  assert abs(float(jax.grad(loss)(0.0))) < 1e-6
  plain = lambda c: detection.logit_adjusted_bce(jnp.full(8, c), labels, jnp.float32(0.5), valid)
  assert abs(float(jax.grad(plain)(float(np.log(1 / 7))))) < 1e-6


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_masked_frame_byol_uses_selected_samples_only():
  rng = np.random.default_rng(0)
  target = jnp.asarray(rng.normal(size=(4, 5, 8)), jnp.float32)
  pred = jnp.asarray(rng.normal(size=(4, 5, 8)), jnp.float32)
  mask = jnp.array([True, False, True, False])
  got = detection.masked_frame_byol(target, pred, mask)
  ref = losses.byol_term(target[jnp.array([0, 2])], pred[jnp.array([0, 2])])
  assert float(got) == pytest.approx(float(ref), rel=1e-6)
  g_pred, g_target = jax.grad(detection.masked_frame_byol, argnums=(1, 0))(target, pred, mask)
  assert float(jnp.abs(g_pred[1]).sum()) == 0 and float(jnp.abs(g_pred[3]).sum()) == 0
  assert float(jnp.abs(g_pred[0]).sum()) > 0
  assert float(jnp.abs(g_target).sum()) == 0  # The frozen teacher's targets get no gradient.
  assert float(detection.masked_frame_byol(target, pred, jnp.zeros(4, bool))) == 0.0


def test_cosine_classifier_is_a_scaled_cosine_without_bias():
  head = heads.HEADS.get("cosine_classifier")()
  x = jnp.asarray(np.random.default_rng(1).normal(size=(6, 16)), jnp.float32)
  params = head.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, params) == {"params": {"weight": (16,)}}
  logits = head.apply(params, x)
  w = params["params"]["weight"]
  expected = 64 * (x @ w) / (jnp.linalg.norm(x, axis=-1) * jnp.linalg.norm(w))
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(head.apply(params, 3.7 * x), logits, rtol=1e-5, atol=1e-4)
  assert float(jnp.abs(logits).max()) <= 64.0 + 1e-4
  with pytest.raises(ValueError, match="pooled features"):
    head.apply(params, x[:, None])

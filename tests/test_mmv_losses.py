"""MMV losses: NCE_va and MIL-NCE_vt against hand-computed values, masking, retrieval stats,
and global-batch negatives (8 simulated devices = 1 device on the same global batch)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fakedet.objectives import mmv_nce

E = np.e


def test_nce_by_hand_two_orthogonal_pairs():
  x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  # s = I / τ with τ = 1: each direction −log(e / (e + 1)) for both rows.
  loss, aux = mmv_nce.nce_loss(x, x, jnp.ones(2, bool), temperature=1.0)
  np.testing.assert_allclose(float(loss), np.log((E + 1) / E), rtol=1e-6)
  np.testing.assert_allclose(float(aux["x_to_y"]), float(aux["y_to_x"]), rtol=1e-6)
  # τ = 0.5 doubles the logits; unnormalised inputs are l2-normalised first.
  loss, _ = mmv_nce.nce_loss(3 * x, x, jnp.ones(2, bool), temperature=0.5)
  np.testing.assert_allclose(float(loss), np.log((E ** 2 + 1) / E ** 2), rtol=1e-6)


def test_nce_asymmetric_directions_by_hand():
  # x0 = (1, 0), x1 = (0, 1); y0 = (1, 0), y1 = (1, 0)/… : s = [[1, 1], [0, 0]] (τ = 1).
  x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  y = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  _, aux = mmv_nce.nce_loss(x, y, jnp.ones(2, bool), temperature=1.0)
  # x→y rows: row 0: −log(e/(e+e)) = log 2; row 1: −log(1/(1+1)) = log 2.
  np.testing.assert_allclose(float(aux["x_to_y"]), np.log(2), rtol=1e-6)
  # y→x columns: col 0: −log(e/(e+1)); col 1: −log(1/(e+1)).
  np.testing.assert_allclose(float(aux["y_to_x"]),
                             0.5 * (np.log((E + 1) / E) + np.log(E + 1)), rtol=1e-6)


def _mil_example():
  v = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  t = jnp.array([[[1.0, 0.0], [0.0, 1.0]],  # clip 0: one matching, one like clip 1
                 [[0.0, 1.0], [0.0, 1.0]]])  # clip 1: both matching
  return v, t


def test_mil_nce_by_hand():
  v, t = _mil_example()
  loss, aux = mmv_nce.mil_nce_loss(v, t, jnp.ones((2, 2), bool), jnp.ones(2, bool), 1.0)
  # s[i, j, k] = v_i·t_jk. Video 0: positives (1, 0), all (1, 0, 0, 0);
  # video 1: positives (1, 1), all (0, 1, 1, 1).
  v2t = [np.log((E + 3) / (E + 1)), np.log((1 + 3 * E) / (2 * E))]
  # Narrations of clip 0 vs videos 0, 1: (1, 0) and (0, 1); of clip 1: (0, 0) and (1, 1).
  t2v = [np.log(2.0), np.log((2 + 2 * E) / (2 * E))]
  np.testing.assert_allclose(float(aux["v_to_t"]), np.mean(v2t), rtol=1e-6)
  np.testing.assert_allclose(float(aux["t_to_v"]), np.mean(t2v), rtol=1e-6)
  np.testing.assert_allclose(float(loss), 0.5 * (np.mean(v2t) + np.mean(t2v)), rtol=1e-6)


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_mil_nce_ignores_invalid_narrations_and_padded_clips():
  v, t = _mil_example()
  ref = mmv_nce.mil_nce_loss(v, t, jnp.ones((2, 2), bool), jnp.ones(2, bool), 1.0)[0]
  # A third, padded clip and a third, invalid narration per clip change nothing.
  v3 = jnp.concatenate([v, jnp.array([[1.0, 1.0]])])
  t3 = jnp.concatenate([t, jnp.ones((1, 2, 2))])
  t3 = jnp.concatenate([t3, jnp.ones((3, 1, 2))], axis=1)
  t_valid = jnp.array([[True, True, False], [True, True, False], [True, True, True]])
  valid = jnp.array([True, True, False])
  got = mmv_nce.mil_nce_loss(v3, t3, t_valid, valid, 1.0)[0]
  np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)
  grads = jax.grad(lambda v: mmv_nce.mil_nce_loss(v, t3, t_valid, valid, 1.0)[0])(v3)
  assert np.isfinite(np.asarray(grads)).all()
  np.testing.assert_array_equal(grads[2], 0)
  # With one positive per clip, MIL-NCE reduces to NCE.
  one = mmv_nce.mil_nce_loss(v, v[:, None], jnp.ones((2, 1), bool), jnp.ones(2, bool), 0.3)[0]
  nce = mmv_nce.nce_loss(v, v, jnp.ones(2, bool), 0.3)[0]
  np.testing.assert_allclose(float(one), float(nce), rtol=1e-6)


def _numpy_losses(v, a, t, t_valid, tau):
  """Reference with explicit exponentials and loops (float64), no logsumexp."""
  n = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  v, a, t = n(v.astype(np.float64)), n(a.astype(np.float64)), n(t.astype(np.float64))
  b = len(v)
  s = np.exp(v @ a.T / tau)
  nce = 0.5 * (np.mean([-np.log(s[i, i] / s[i].sum()) for i in range(b)])
               + np.mean([-np.log(s[i, i] / s[:, i].sum()) for i in range(b)]))
  st = np.exp(np.einsum("id,jkd->ijk", v, t) / tau) * t_valid[None]
  v2t = [-np.log(st[i, i].sum() / st[i].sum()) for i in range(b)]
  t2v = [-np.log(st[i, i].sum() / st[:, i].sum()) for i in range(b)]
  return nce, 0.5 * (np.mean(v2t) + np.mean(t2v))


def _random_batch(b=16, d=8, k=3, seed=0):
  rng = np.random.default_rng(seed)
  v, a = rng.normal(size=(b, d)), rng.normal(size=(b, d))
  t = rng.normal(size=(b, k, d))
  t_valid = rng.random((b, k)) < 0.7
  t_valid[:, 0] = True
  return [x.astype(np.float32) if x.dtype != bool else x for x in (v, a, t, t_valid)]


def _losses(v, a, t, t_valid):
  valid = jnp.ones(v.shape[:1], bool)
  return (mmv_nce.nce_loss(v, a, valid, 0.07)[0],
          mmv_nce.mil_nce_loss(v, t, t_valid, valid, 0.07)[0])


def test_losses_match_a_numpy_reference_at_tau_0_07():
  v, a, t, t_valid = _random_batch()
  nce, mil = jax.jit(_losses)(v, a, t, t_valid)
  ref_nce, ref_mil = _numpy_losses(v, a, t, t_valid, 0.07)
  np.testing.assert_allclose(float(nce), ref_nce, rtol=2e-5)
  np.testing.assert_allclose(float(mil), ref_mil, rtol=2e-5)


def test_sharded_global_batch_loss_equals_single_device():
  """Every clip of the global batch is a negative: on 8 devices, each holding 2 clips, the loss
  is the single-device loss of all 16 (not a mean of per-device 2-clip losses)."""
  assert len(jax.devices()) == 8, "conftest sets 8 simulated CPU devices"
  batch = _random_batch()
  mesh8 = Mesh(np.array(jax.devices()), ("data",))
  sharded = [jax.device_put(x, NamedSharding(mesh8, PartitionSpec("data"))) for x in batch]
  assert len(sharded[0].sharding.device_set) == 8
  nce8, mil8 = jax.jit(_losses)(*sharded)
  one = [jax.device_put(x, jax.devices()[0]) for x in batch]
  nce1, mil1 = jax.jit(_losses)(*one)
  np.testing.assert_allclose(float(nce8), float(nce1), rtol=1e-6)
  np.testing.assert_allclose(float(mil8), float(mil1), rtol=1e-6)
  # …and differs from the average of per-device losses with local negatives only.
  local = np.mean([float(_losses(*[x[2 * i:2 * i + 2] for x in batch])[0]) for i in range(8)])
  assert abs(local - float(nce1)) > 0.1


def test_retrieval_stats_top1_top5_and_chance():
  keys = jnp.eye(6)
  valid = jnp.array([True] * 5 + [False])
  perfect = mmv_nce.retrieval_stats(keys, keys, valid, "r")
  assert float(perfect["r_top1"]) == 5 and float(perfect["r_top5"]) == 5
  np.testing.assert_allclose(float(perfect["r_chance_top1"]), 1.0, rtol=1e-6)  # 5 · 1/5
  np.testing.assert_allclose(float(perfect["r_chance_top5"]), 5.0, rtol=1e-6)  # 5 · 5/5
  # Queries rotated by one: every true key is ranked 2nd → top-1 0, top-5 all.
  rolled = jnp.roll(keys, 1, axis=0) * 0.9 + keys * 0.1
  stats = mmv_nce.retrieval_stats(rolled[:, :6], keys, jnp.ones(6, bool), "r")
  assert float(stats["r_top1"]) == 0 and float(stats["r_top5"]) == 6

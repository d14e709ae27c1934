"""AV contrastive transformer objectives: symmetric InfoNCE (Eq. 1–3) by hand and over the
global batch (8 simulated devices = 1 device), the pre-training evaluation metrics, and the
fine-tuned detector (frozen frontend, new head, BCE, per-layer learning rates)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fakedet import optim, warm_start
from fakedet.objectives import avcl, is_detector
from fakedet.train_state import TrainState
from tests.tiny_configs import config_module

TAU = 0.1


def _eq123(zv, za, tau):
  """Eq. 1–3 written out: explicit exponentials over positives and negatives (float64)."""
  n = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  zv, za = n(np.asarray(zv, np.float64)), n(np.asarray(za, np.float64))
  b = len(zv)
  l_va, l_av = [], []
  for i in range(b):
    pos = np.exp(zv[i] @ za[i] / tau)
    neg = sum(np.exp(zv[i] @ za[j] / tau) for j in range(b) if j != i)
    l_va.append(-np.log(pos / (pos + neg)))
    neg = sum(np.exp(za[i] @ zv[j] / tau) for j in range(b) if j != i)
    l_av.append(-np.log(pos / (pos + neg)))
  return 0.5 * np.mean(l_av) + 0.5 * np.mean(l_va), np.mean(l_va), np.mean(l_av)


def test_info_nce_by_hand_at_tau_0_1():
  # Video i matches audio i; audio 1 also points at video 0: Eq. 1 and 2 differ.
  zv = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  za = jnp.array([[1.0, 0.0], [0.6, 0.8]])
  loss, parts = avcl.info_nce(zv, za, jnp.ones(2, bool), TAU)
  e = np.exp
  # L_va: video 0: sims (1, 0.6); video 1: (0, 0.8). L_av: audio 0: (1, 0); audio 1: (0.8, 0.6).
  l_va = 0.5 * (np.log(e(10) + e(6)) - 10 + np.log(1 + e(8)) - 8)
  l_av = 0.5 * (np.log(e(10) + 1) - 10 + np.log(e(8) + e(6)) - 8)
  np.testing.assert_allclose(float(parts["va"]), l_va, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(parts["av"]), l_av, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(loss), 0.5 * (l_va + l_av), rtol=1e-4, atol=1e-6)
  # Padded rows are neither queries nor keys.
  pad = avcl.info_nce(jnp.concatenate([zv, za[:1]]), jnp.concatenate([za, zv[1:]]),
                      jnp.array([True, True, False]), TAU)[0]
  np.testing.assert_allclose(float(pad), float(loss), rtol=1e-6)


def _batch(b=16, d=8, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(b, d)).astype(np.float32) for _ in range(2)]


def _loss(zv, za):
  return avcl.info_nce(zv, za, jnp.ones(zv.shape[:1], bool), TAU)[0]


def test_info_nce_matches_equations_1_to_3():
  zv, za = _batch()
  np.testing.assert_allclose(float(jax.jit(_loss)(zv, za)), _eq123(zv, za, TAU)[0], rtol=2e-5)


def test_negatives_come_from_the_whole_global_batch():
  """On 8 devices holding 2 clips each, every clip is a negative of every other: the loss and
  its gradients equal one device's on all 16 clips, not a mean of 8 two-clip losses."""
  assert len(jax.devices()) == 8, "conftest sets 8 simulated CPU devices"
  zv, za = _batch()
  mesh = Mesh(np.array(jax.devices()), ("data",))
  shard = lambda x: jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
  fn = jax.jit(jax.value_and_grad(_loss, argnums=(0, 1)))
  loss8, grads8 = fn(shard(zv), shard(za))
  assert len(loss8.sharding.device_set) == 8 or loss8.ndim == 0
  one = jax.devices()[0]
  loss1, grads1 = fn(jax.device_put(zv, one), jax.device_put(za, one))
  np.testing.assert_allclose(float(loss8), float(loss1), rtol=1e-6)
  for g8, g1 in zip(grads8, grads1):
    np.testing.assert_allclose(np.asarray(g8), np.asarray(g1), rtol=1e-5, atol=1e-7)
  local = np.mean([_eq123(zv[2 * i:2 * i + 2], za[2 * i:2 * i + 2], TAU)[0] for i in range(8)])
  assert abs(local - float(loss1)) > 0.5


# ------------------------------------------------------------------------------ tiny models
B, FRAMES, SIZE = 4, 4, 16


def _tiny_video(config):
  config.model.video.update(width_multiplier=1 / 16, num_layers=2, width=16, num_heads=2,
                            mlp_dim=32, num_tokens=2, head_hidden=16, proj_dim=8, max_len=FRAMES)


def _pretrain_config():
  config = config_module("avcl").get_config("demo")
  _tiny_video(config)
  config.model.audio.update(conv_dim=(8,) * 7, hidden_size=16, num_attention_heads=2,
                            intermediate_size=32, num_conv_pos_embeddings=8,
                            num_conv_pos_embedding_groups=2, num_tokens=2, head_hidden=16,
                            proj_dim=8)
  return config


def _finetune_config():
  config = config_module("avcl_finetune").get_config("demo")
  _tiny_video(config)
  config.model.video.with_head = False
  config.model.hidden = 8
  config.optim = config_module("avcl_finetune")._optim(config.model.video.num_layers)
  return config


def _clips(seed=0, b=B):
  rng = np.random.default_rng(seed)
  return {"video": rng.integers(0, 256, (b, FRAMES, SIZE, SIZE, 3), dtype=np.uint8),
          "waveform": rng.uniform(-0.5, 0.5, (b, FRAMES * 640)).astype(np.float32),
          "label": np.array([0, 1] * (b // 2), np.int32), "valid": np.ones(b, bool)}


def _state(objective, batch):
  variables = jax.jit(objective.init)(jax.random.key(0), batch)
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                    batch_stats=variables.get("batch_stats", {}), opt_state=(), ema_params={},
                    ema_batch_stats={})


@pytest.mark.integration  # Compiles a tiny model's init/loss/eval (> 6 s on 2 cores).
def test_pretraining_loss_and_held_out_metrics():
  config = _pretrain_config()
  objective = avcl.AVContrastive(config)
  assert not is_detector(objective)
  batch = {k: jnp.asarray(v) for k, v in _clips().items()}
  state = _state(objective, batch)
  assert set(state.params) == {"video", "audio"}
  loss, (metrics, updated) = jax.jit(objective.loss)(state.params, state, batch,
                                                     jax.random.key(1))
  assert np.isfinite(float(loss)) and set(metrics) == {"nce_va", "nce_av"}
  np.testing.assert_allclose(float(loss), 0.5 * float(metrics["nce_va"] + metrics["nce_av"]),
                             rtol=1e-6)
  assert "video" in updated["batch_stats"]
  stats = jax.jit(objective.eval_step)(state, batch)
  import re
  for key in set(stats) - {"count"}:
    assert any(re.fullmatch(p, f"eval/{key}") for p in objective.eval_metric_patterns), key
  assert float(stats["count"]) == B
  np.testing.assert_allclose(float(stats["retrieval_va_chance_top1"]), 1.0, rtol=1e-6)  # Σ 1/B
  assert 0 <= float(stats["retrieval_va_top1"]) <= B
  assert 0 < float(stats["collapse_std_video"]) / B < 1.5


@pytest.mark.integration  # Compiles a tiny model's init/loss/eval (> 6 s on 2 cores).
def test_detector_freezes_the_frontend_and_scores_clips():
  config = _finetune_config()
  objective = avcl.AVCLDetection(config)
  assert is_detector(objective)
  batch = {k: jnp.asarray(v) for k, v in _clips().items()}
  state = _state(objective, batch)
  assert set(state.params) == {"video", "classifier"}
  assert "head" not in state.params["video"]  # The contrastive head is not fine-tuned.
  logits = jax.jit(objective.predict)(state, batch)
  assert logits.shape == (B,) and logits.dtype == jnp.float32
  grads, (metrics, updated) = jax.jit(jax.grad(objective.loss, has_aux=True))(
      state.params, state, batch, jax.random.key(2))
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["video"]["frontend"]))
  assert float(jnp.abs(grads["classifier"]["dense2"]["kernel"]).max()) > 0
  # Frozen BatchNorms keep their statistics (running averages even in training).
  for new, old in zip(jax.tree.leaves(updated["batch_stats"]), jax.tree.leaves(state.batch_stats)):
    np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
  assert np.isfinite(float(metrics["bce"])) and 0 <= float(metrics["accuracy"]) <= 1
  # The fine-tuning init rules take the pre-trained encoder (and leave its head behind).
  pretrained = _state(avcl.AVContrastive(_pretrain_config()), batch)
  grafted = warm_start.graft(state, {"params": pretrained.params,
                                     "batch_stats": pretrained.batch_stats},
                             avcl.PRETRAIN_INIT_RULES)
  for a, b in zip(jax.tree.leaves(grafted.params["video"]),
                  jax.tree.leaves({k: v for k, v in pretrained.params["video"].items()
                                   if k != "head"})):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_layer_wise_learning_rates_reach_the_right_parameters():
  """Adam's first step is lr · sign(grad): each parameter moves by its group's rate (§3.3)."""
  config = _finetune_config()
  cfg = ml_collections.ConfigDict(config.optim.to_dict())
  cfg.update(name="adam", weight_decay=0.0, schedule="constant")
  objective = avcl.AVCLDetection(config)
  params = jax.jit(objective.init)(jax.random.key(0),
                                   {k: jnp.asarray(v) for k, v in _clips().items()})["params"]
  tx = optim.make_optimizer(cfg, total_steps=10)
  grads = jax.tree.map(lambda p: 0.3 * jnp.ones_like(p), params)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  size = lambda tree: float(np.max(np.abs(np.asarray(jax.tree.leaves(tree)[0]))))
  video = updates["video"]
  np.testing.assert_allclose(size(updates["classifier"]), 0.01, rtol=1e-4)
  np.testing.assert_allclose(size(video["layer_1"]), 0.005, rtol=1e-4)
  np.testing.assert_allclose(size(video["layer_0"]), 0.0045, rtol=1e-4)
  np.testing.assert_allclose(size(video["final_norm"]), 0.005, rtol=1e-4)
  np.testing.assert_allclose(size(video["embed"]), 0.005 * 0.9 ** 2, rtol=1e-4)
  assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(video["frontend"]))


def test_finetune_groups_at_paper_size():
  lr, groups = avcl.finetune_groups(6)
  rates = {name: g.lr for name, g in groups.items()}
  np.testing.assert_allclose([rates[f"layer_{i:02d}"] for i in range(6)],
                             [0.005 * 0.9 ** (5 - i) for i in range(6)], rtol=1e-9)
  assert rates["classifier"] == 0.01 and groups.frontend.freeze
  np.testing.assert_allclose(lr, 0.005 * 0.9 ** 6, rtol=1e-9)


def test_checks_name_the_missing_key():
  config = _pretrain_config()
  del config.objective["temperature"]
  with pytest.raises(KeyError, match="temperature"):
    avcl.AVContrastive.check(config)
  config = _finetune_config()
  del config.model["pool_tokens"]
  with pytest.raises(KeyError, match="pool_tokens"):
    avcl.AVCLDetection.check(config)

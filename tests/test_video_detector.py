"""Stage-2 / baseline detector: heads, frozen teacher, warm start from a stage-1 state."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fakedet import models, optim, warm_start
from fakedet.objectives import video_detector
from fakedet.train_state import TrainState

BACKBONE = dict(name="csn", stage_blocks=(1, 1, 1, 1), width_multiplier=1 / 16)
PROJ = dict(name="conv_projector", features=8)
PRED = dict(name="transformer_predictor", num_heads=2, head_dim=4, mlp_dim=16)


def _config(stage2=True):
  model = dict(backbone=BACKBONE, classifier="cosine" if stage2 else "linear",
               pixel_mean=(0.4,) * 3, pixel_std=(0.2,) * 3)
  if stage2:
    model.update(aux_projector=PROJ, aux_predictor=PRED, teacher=True)
  return ml_collections.ConfigDict(dict(
      model=model, objective=dict(name="video_detector", logit_adjustment=stage2,
                                  aux_weight=1.0 if stage2 else 0.0)))


def _batch(n=4, t=4, size=32):
  rng = np.random.default_rng(0)
  return {"video": jnp.asarray(rng.integers(0, 256, (n, t, size, size, 3)), jnp.uint8),
          "label": jnp.array([0, 1, 0, 1][:n]), "valid": jnp.ones(n, bool)}


def _state(obj, batch):
  variables = obj.init(jax.random.key(0), batch)
  return variables, TrainState(step=0, params=variables["params"],
                               batch_stats=variables["batch_stats"], opt_state=None,
                               ema_params={}, ema_batch_stats={})


def test_outputs_and_the_frozen_teacher_gets_no_gradient():
  obj = video_detector.VideoDetection(_config())
  batch = _batch()
  variables, state = _state(obj, batch)
  out = obj.model.apply(variables, obj._video(batch["video"]), train=False)
  assert out["logit"].shape == (4,) and out["pooled"].ndim == 2
  assert out["aux_prediction"].shape == out["teacher_target"].shape == (4, 4, 8)
  grads, (metrics, _) = jax.grad(obj.loss, has_aux=True)(state.params, state, batch, None)
  norm = lambda tree: float(optax.global_norm(tree))
  assert norm(grads["teacher_backbone"]) == 0 and norm(grads["teacher_projector"]) == 0
  for name in ("backbone", "classifier", "aux_projector", "aux_predictor"):
    assert norm(grads[name]) > 0, name
  assert float(metrics["fake_prior"]) == pytest.approx(0.5)
  assert {"supervised_loss", "aux_loss", "accuracy"} <= set(metrics)


def test_aux_loss_sees_real_samples_only():
  obj = video_detector.VideoDetection(_config())
  batch = _batch()
  _, state = _state(obj, batch)

  def aux_of(b):  # The aux term's dependence on the fakes' pixels, BN coupling aside:
    out = obj.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                          obj._video(b["video"]), train=False)
    from fakedet.objectives import detection
    return detection.masked_frame_byol(out["teacher_target"], out["aux_prediction"],
                                       b["label"] == 0)
  changed = dict(batch, video=batch["video"].at[1].set(0).at[3].set(255))  # Fakes only.
  assert float(aux_of(changed)) == pytest.approx(float(aux_of(batch)), rel=1e-6)


def test_baseline_is_plain_bce_and_config_is_checked():
  obj = video_detector.VideoDetection(_config(stage2=False))
  batch = _batch()
  variables, state = _state(obj, batch)
  loss, (metrics, _) = obj.loss(state.params, state, batch, None)
  out = obj.model.apply(variables, obj._video(batch["video"]), train=True, mutable=["batch_stats"])[0]
  expected = optax.sigmoid_binary_cross_entropy(out["logit"], batch["label"].astype(jnp.float32))
  assert float(loss) == pytest.approx(float(expected.mean()), rel=1e-5)
  assert "aux_loss" not in metrics and "teacher_backbone" not in variables["params"]
  bad = _config(stage2=False)
  bad.objective.aux_weight = 1.0
  with pytest.raises(ValueError, match="aux_weight > 0 needs"):
    video_detector.VideoDetection.check(bad)


def test_stage1_rules_warm_start_student_backbone_and_frozen_teacher():
  """The rule table fits the real stage-1 architecture, and the teacher group stays frozen."""
  batch = _batch()
  av = models.get("av_byol")(video_backbone=BACKBONE, audio_backbone=dict(
      name="resnet18_audio", stage_blocks=(1, 1, 1, 1), width_multiplier=1 / 16),
      projector=PROJ, predictor=PRED)
  s1 = av.init(jax.random.key(1), jnp.zeros((4, 4, 32, 32, 3)), jnp.zeros((4, 16, 80)),
               train=False)
  bump = lambda tree, c: jax.tree.map(lambda x: x + c, tree)
  stage1 = {"params": s1["params"], "batch_stats": s1["batch_stats"],
            "ema_params": bump(s1["params"], 1.0), "ema_batch_stats": bump(s1["batch_stats"], 2.0)}
  obj = video_detector.VideoDetection(_config())
  variables, _ = _state(obj, batch)
  out = warm_start.graft(dict(variables), stage1, video_detector.STAGE1_INIT_RULES)
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a, b)))
  assert same(out["params"]["backbone"], s1["params"]["video_backbone"])
  assert same(out["params"]["teacher_backbone"], stage1["ema_params"]["video_backbone"])
  assert same(out["params"]["teacher_projector"], stage1["ema_params"]["video_projector"])
  assert same(out["batch_stats"]["teacher_backbone"], stage1["ema_batch_stats"]["video_backbone"])
  # A "teacher" optimiser group with freeze=True leaves the teacher exactly where it was.
  cfg = optim.default_config()
  cfg.groups.teacher = dict(pattern=r"teacher_.*", lr=0.0, schedule="constant",
                            warmup_steps=0, freeze=True)
  tx = optim.make_optimizer(cfg, 10)
  params = out["params"]
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(optax.global_norm(updates["teacher_backbone"])) == 0
  assert float(optax.global_norm(updates["backbone"])) > 0

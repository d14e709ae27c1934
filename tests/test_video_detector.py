"""Stage-2 / baseline detector: heads, frozen teacher, warm start from a stage-1 state.

Model calls are jitted: op-by-op execution of a whole CSN / TSM-ResNet is minutes on CPU."""
import functools

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
  variables = jax.jit(obj.init)(jax.random.key(0), batch)
  return variables, TrainState(step=0, params=variables["params"],
                               batch_stats=variables["batch_stats"], opt_state=None,
                               ema_params={}, ema_batch_stats={})


def _apply(obj, variables, *inputs):
  return jax.jit(functools.partial(obj.model.apply, train=False))(variables, *inputs)


def _grad(obj):
  return jax.jit(jax.grad(obj.loss, has_aux=True))


@pytest.mark.integration  # Compiles whole detectors: tens of seconds.
def test_outputs_and_the_frozen_teacher_gets_no_gradient():
  obj = video_detector.VideoDetection(_config())
  batch = _batch()
  variables, state = _state(obj, batch)
  out = _apply(obj, variables, obj._video(batch["video"]))
  assert out["logit"].shape == (4,) and out["pooled"].ndim == 2
  assert out["aux_prediction"].shape == out["teacher_target"].shape == (4, 4, 8)
  grads, (metrics, _) = _grad(obj)(state.params, state, batch, None)
  norm = lambda tree: float(optax.global_norm(tree))
  assert norm(grads["teacher_backbone"]) == 0 and norm(grads["teacher_projector"]) == 0
  for name in ("backbone", "classifier", "aux_projector", "aux_predictor"):
    assert norm(grads[name]) > 0, name
  assert float(metrics["fake_prior"]) == pytest.approx(0.5)
  assert {"supervised_loss", "aux_loss", "accuracy"} <= set(metrics)


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_aux_loss_sees_real_samples_only():
  obj = video_detector.VideoDetection(_config())
  batch = _batch()
  _, state = _state(obj, batch)

  @jax.jit
  def aux_of(b):  # The aux term's dependence on the fakes' pixels, BN coupling aside:
    out = obj.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                          obj._video(b["video"]), train=False)
    from fakedet.objectives import detection
    return detection.masked_frame_byol(out["teacher_target"], out["aux_prediction"],
                                       b["label"] == 0)
  changed = dict(batch, video=batch["video"].at[1].set(0).at[3].set(255))  # Fakes only.
  assert float(aux_of(changed)) == pytest.approx(float(aux_of(batch)), rel=1e-6)


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_baseline_is_plain_bce_and_config_is_checked():
  obj = video_detector.VideoDetection(_config(stage2=False))
  batch = _batch()
  variables, state = _state(obj, batch)
  loss, (metrics, _) = jax.jit(obj.loss)(state.params, state, batch, None)
  out = jax.jit(lambda v, x: obj.model.apply(v, x, train=True, mutable=["batch_stats"])[0])(
      variables, obj._video(batch["video"]))
  expected = optax.sigmoid_binary_cross_entropy(out["logit"], batch["label"].astype(jnp.float32))
  assert float(loss) == pytest.approx(float(expected.mean()), rel=1e-5)
  assert "aux_loss" not in metrics and "teacher_backbone" not in variables["params"]
  bad = _config(stage2=False)
  bad.objective.aux_weight = 1.0
  with pytest.raises(ValueError, match="aux_weight > 0 needs"):
    video_detector.VideoDetection.check(bad)


@pytest.mark.integration  # Compiles whole detectors: tens of seconds.
def test_stage1_rules_warm_start_student_backbone_and_frozen_teacher():
  """The rule table fits the real stage-1 architecture, and the teacher group stays frozen."""
  batch = _batch()
  av = models.get("av_byol")(video_backbone=BACKBONE, audio_backbone=dict(
      name="resnet18_audio", stage_blocks=(1, 1, 1, 1), width_multiplier=1 / 16),
      projector=PROJ, predictor=PRED)
  s1 = jax.jit(functools.partial(av.init, train=False))(
      jax.random.key(1), jnp.zeros((4, 4, 32, 32, 3)), jnp.zeros((4, 16, 80)))
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
  updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
  assert float(optax.global_norm(updates["teacher_backbone"])) == 0
  assert float(optax.global_norm(updates["backbone"])) > 0


# ----------------------------------------------------------------------------- FakeOut
def _fakeout(video_only=False):
  """configs/fakeout.py:demo shrunk: MMV-shaped backbones at width 1/16, MLP head."""
  from tests import tiny_configs
  config = tiny_configs.config_module("fakeout").get_config(
      "demo,video_only" if video_only else "demo")
  for name in ("backbone", "audio_backbone"):
    if config.model[name] is not None:
      config.model[name].width_multiplier = 1 / 16
  config.model.classifier, config.model.mlp_hidden = "mlp", (8, 4)
  return config


def _av_batch(n=4, t=4, size=32):
  rng = np.random.default_rng(1)
  return dict(_batch(n, t, size), audio=jnp.asarray(rng.normal(size=(n, 4 * t, 80)), jnp.float32))


@pytest.mark.integration  # Compiles whole detectors: tens of seconds.
@pytest.mark.parametrize("video_only", [False, True])
def test_fakeout_concatenates_video_and_audio_into_an_mlp(video_only):
  obj = video_detector.VideoDetection(_fakeout(video_only))
  batch = _av_batch()
  variables, state = _state(obj, batch)
  assert obj.input_keys == (("video", "label") if video_only else ("video", "audio", "label"))
  out = _apply(obj, variables, *obj._inputs(batch))
  video_dim = 2048 // 16  # TSM-ResNet-50 (and audio ResNet-50) at width 1/16.
  assert out["pooled"].shape == (4, video_dim * (1 if video_only else 2))
  head = variables["params"]["classifier"]
  assert [head[k]["kernel"].shape for k in ("hidden0", "hidden1", "out")] == [
      (out["pooled"].shape[1], 8), (8, 4), (4, 1)]
  grads, _ = _grad(obj)(state.params, state, batch, None)
  for name in ("backbone", "classifier") + (() if video_only else ("audio_backbone",)):
    assert float(optax.global_norm(grads[name])) > 0, name  # Full fine-tuning.
  # The audio changes the video+audio score only.
  louder = dict(batch, audio=batch["audio"] + 3.0)
  predict = jax.jit(obj.predict)
  moved = float(jnp.max(jnp.abs(predict(state, louder) - predict(state, batch))))
  assert (moved == 0.0) == video_only


@pytest.mark.integration  # Compiles whole detectors: tens of seconds.
def test_mmv_rules_warm_start_fakeout_from_an_mmv_state():
  from tests import test_mmv  # The tiny MMV config: the architecture FakeOut inherits.
  mmv_config = test_mmv.mmv_tiny()
  mmv = objectives_get("mmv")(mmv_config)
  mmv_vars = jax.jit(mmv.init)(jax.random.key(2), test_mmv.fake_batch())
  config = _fakeout()
  config.model.backbone = mmv_config.model.video_backbone
  config.model.audio_backbone = mmv_config.model.audio_backbone
  obj = video_detector.VideoDetection(config)
  variables, _ = _state(obj, _av_batch())
  out = warm_start.graft(dict(variables), dict(mmv_vars), video_detector.MMV_AUDIO_INIT_RULES)
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a, b)))
  assert same(out["params"]["backbone"], mmv_vars["params"]["video_backbone"])
  assert same(out["params"]["audio_backbone"], mmv_vars["params"]["audio_backbone"])
  assert same(out["batch_stats"]["backbone"], mmv_vars["batch_stats"]["video_backbone"])
  assert same(out["params"]["classifier"], variables["params"]["classifier"])  # Fresh head.


def objectives_get(name):
  from fakedet import objectives
  return objectives.get(name)


@pytest.mark.integration  # Compiles a detector with its teacher twice: ~15 s on 2 cores.
def test_teacher_sees_the_clean_view_with_real_clip_batch_statistics():
  """The authors' stage 2: the frozen teacher gets its own clean view (never the student's
  masked one), its BatchNorm runs on the batch statistics of the REAL clips, and its running
  statistics stay as loaded."""
  config = _config()
  config.objective.train_view = "video_masked"
  obj = video_detector.VideoDetection(config)
  assert obj.input_keys == ("video_masked", "video", "label")
  batch = _batch()
  batch["video_masked"] = 255 - batch["video"]
  _, state = _state(obj, batch)
  variables = {"params": state.params, "batch_stats": state.batch_stats}

  @jax.jit
  def targets(b):
    out, _ = obj.model.apply(variables, obj._video(b["video_masked"]), train=True,
                             teacher_video=obj._video(b["video"]),
                             teacher_real=b["label"] == 0, mutable=["batch_stats"])
    return out["teacher_target"]

  reals = np.asarray(batch["label"]) == 0
  base = np.asarray(targets(batch))
  student_changed = dict(batch, video_masked=jnp.zeros_like(batch["video_masked"]))
  np.testing.assert_array_equal(np.asarray(targets(student_changed)), base)
  fakes_changed = dict(batch, video=batch["video"].at[1].set(0).at[3].set(255))
  np.testing.assert_allclose(np.asarray(targets(fakes_changed))[reals], base[reals],
                             rtol=1e-5, atol=1e-6)
  reals_changed = dict(batch, video=batch["video"].at[0].set(7))
  assert not np.allclose(np.asarray(targets(reals_changed))[2], base[2])  # Shared statistics.
  running = jax.jit(functools.partial(obj.model.apply, train=False))(
      variables, obj._video(batch["video_masked"]), teacher_video=obj._video(batch["video"]))
  assert not np.allclose(np.asarray(running["teacher_target"]), base, atol=1e-3)

  _, (_, new_vars) = _grad(obj)(state.params, state, batch, None)
  for name, stats in new_vars["batch_stats"].items():
    same = jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), stats,
                                     state.batch_stats[name]))
    assert same == name.startswith("teacher_"), name


@pytest.mark.integration  # Compiles a FakeOut-shaped detector: ~10 s on 2 cores.
def test_linear_probe_trains_only_the_head_and_keeps_backbone_statistics():
  """FakeOut App. F.2 (configs/fakeout.py:linear_probe): frozen backbones are fixed feature
  extractors — no gradient reaches them and their BatchNorm statistics do not move."""
  config = _fakeout(video_only=True)
  config.model.frozen_backbones = True
  obj = video_detector.VideoDetection(config)
  batch = _av_batch()
  _, state = _state(obj, batch)
  grads, (_, new_vars) = _grad(obj)(state.params, state, batch, None)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)),
                                   new_vars["batch_stats"], state.batch_stats))
  assert float(optax.global_norm(grads["classifier"])) > 0
  out_frozen = obj.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                               obj._video(batch["video"]), train=True, mutable=["batch_stats"])[0]
  out_eval = obj.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                             obj._video(batch["video"]), train=False)
  np.testing.assert_allclose(out_frozen["logit"], out_eval["logit"], rtol=1e-5, atol=1e-6)


def test_every_stage2_variant_initialises_from_its_own_training_keys():
  """The trainer initialises on a batch holding only ``input_keys``: the student's masked view
  (and the teacher's clean one when there is a teacher); the baseline has no ``video``. The
  evaluator initialises on ``eval_keys`` (``video`` only): the same variables."""
  from tests import tiny_configs
  for variant in ("demo", "demo,baseline"):
    config = tiny_configs.config_module("stage2").get_config(variant)
    config.model.backbone.update(stage_blocks=(1, 1, 1, 1), width_multiplier=1 / 16)
    obj = video_detector.VideoDetection(config)
    batch = {k: jax.ShapeDtypeStruct((2, 4, 32, 32, 3) if "video" in k else (2,),
                                     jnp.uint8 if "video" in k else jnp.int32)
             for k in obj.input_keys}
    assert ("video" in batch) == (variant == "demo") and "video_masked" in batch
    shapes = jax.eval_shape(obj.init, jax.random.key(0), batch)
    assert "backbone" in shapes["params"]
    # The evaluator restores into a state initialised on an evaluation batch (eval_keys).
    eval_batch = {k: batch.get(k, batch["video_masked"]) for k in obj.eval_keys}
    assert jax.tree.map(lambda x: x.shape, jax.eval_shape(
        obj.init, jax.random.key(0), eval_batch)) == jax.tree.map(lambda x: x.shape, shapes)

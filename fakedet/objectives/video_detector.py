"""Supervised forgery detection: RealForensics stage 2, the scratch baseline, FakeOut.

    L = Ls + w · La                                        (paper Eq. 4, w = aux_weight)
    Ls = BCE(σ(logit + log(π / (1 − π))), label)           (Eq. 5, π = batch fake fraction)
    La = ½‖sg(norm(teacher)) − norm(aux prediction)‖²      (Eq. 3, real samples only)

``objective.logit_adjustment=False`` gives plain BCE (π = ½) and ``aux_weight=0`` with no
auxiliary head gives the "only CSN" baseline; MMV's backbones (plus ``audio_backbone``) with the
"mlp" classifier give FakeOut's fine-tuning (§3.2; class balance comes from the sampler). Clips
of the extra real corpus carry label 0, so they count as reals in both losses (footnote 2).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from fakedet import models
from fakedet.objectives import OBJECTIVES, Objective, detection, normalize_video


# config.init.rules that start stage 2 from a stage-1 (``byol_av``) run: the backbone from the
# video student, a frozen copy of the video teacher (backbone + projector) for the targets.
STAGE1_INIT_RULES = (
    ("params/video_backbone", "params/backbone"),
    ("batch_stats/video_backbone", "batch_stats/backbone"),
    ("ema_params/video_backbone", "params/teacher_backbone"),
    ("ema_params/video_projector", "params/teacher_projector"),
    ("ema_batch_stats/video_backbone", "batch_stats/teacher_backbone"),
    ("ema_batch_stats/video_projector", "batch_stats/teacher_projector"),
)

# config.init.rules that start FakeOut from an MMV (``mmv``) run: its video backbone, and its
# audio backbone for the video+audio detector (MMV_AUDIO_INIT_RULES).
MMV_INIT_RULES = (
    ("params/video_backbone", "params/backbone"),
    ("batch_stats/video_backbone", "batch_stats/backbone"),
)
MMV_AUDIO_INIT_RULES = MMV_INIT_RULES + (
    ("params/audio_backbone", "params/audio_backbone"),
    ("batch_stats/audio_backbone", "batch_stats/audio_backbone"),
)


@OBJECTIVES.register("video_detector")
class VideoDetection(Objective):
  input_keys = ("video", "label")
  eval_keys = ("video", "label")

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> None:
    for key in ("logit_adjustment", "aux_weight"):
      if key not in config.objective:
        raise KeyError(f"objective 'video_detector' needs config.objective.{key}; has "
                       f"{sorted(config.objective)}")
    for key in ("backbone", "classifier", "pixel_mean", "pixel_std"):
      if key not in config.model:
        raise KeyError(f"objective 'video_detector' needs config.model.{key}; has "
                       f"{sorted(config.model)}")
    has_aux = config.model.get("aux_projector") is not None
    if config.objective.aux_weight > 0 and not (has_aux and config.model.get("teacher", False)):
      raise ValueError("objective.aux_weight > 0 needs model.aux_projector/aux_predictor and "
                       "model.teacher=True (the frozen stage-1 teacher that makes the targets)")

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m = config.model.to_dict()
    self.mean, self.std = tuple(m.pop("pixel_mean")), tuple(m.pop("pixel_std"))
    self.model = models.get("video_detector")(**m)
    self.with_audio = m.get("audio_backbone") is not None
    self.eval_keys = ("video", "audio", "label") if self.with_audio else ("video", "label")
    # The batch key the student trains on: "video_masked" for RealForensics stage 2 (its own
    # crop, flip, grey, erasing and time mask) while the teacher sees the clean ``video``; the
    # default "video" is for configs written before the key (e.g. imported workdirs).
    self.train_view = config.objective.get("train_view", "video")
    self.with_teacher = bool(m.get("teacher")) and float(config.objective.aux_weight) > 0
    keys = (self.train_view,) + (("video",) if self.with_teacher else ())
    keys = tuple(dict.fromkeys(keys))
    self.input_keys = keys + (("audio", "label") if self.with_audio else ("label",))
    self.logit_adjustment = bool(config.objective.logit_adjustment)
    self.aux_weight = float(config.objective.aux_weight)

  def _video(self, x):
    return normalize_video(x, self.mean, self.std)

  def _inputs(self, batch, key: str = "video"):
    return (self._video(batch[key]), batch["audio"] if self.with_audio else None)

  def init(self, rng, batch):
    """Initialised on a training batch (``input_keys``: the student's view is the only video a
    detector without a teacher gets) or an evaluation one (``eval_keys``: ``video``, which the
    evaluator restores into); both views have one shape, so either gives the same variables."""
    key = self.train_view if self.train_view in batch else "video"
    return dict(self.model.init(rng, *self._inputs(batch, key), train=False))

  def loss(self, params, state, batch, rng) -> Tuple[jax.Array, Tuple[Dict[str, Any], Dict[str, Any]]]:
    del rng
    labels = batch["label"]
    kw = {}
    if self.with_teacher:
      kw = dict(teacher_video=self._video(batch["video"]), teacher_real=labels == 0)
    audio = batch["audio"] if self.with_audio else None
    out, new_vars = self.apply(self.model, {"params": params, "batch_stats": state.batch_stats},
                               self._video(batch[self.train_view]), audio, train=True,
                               mutable=["batch_stats"], **kw)
    # The teacher is frozen, its running statistics included (train-mode BN would move them).
    new_stats = {k: (state.batch_stats[k] if k.startswith("teacher_") else v)
                 for k, v in new_vars["batch_stats"].items()}
    everyone = jnp.ones(labels.shape, bool)
    prior = (detection.fake_prior(labels, everyone) if self.logit_adjustment
             else jnp.float32(0.5))
    sup = detection.logit_adjusted_bce(out["logit"], labels, prior, everyone)
    metrics = {"supervised_loss": sup, "fake_prior": prior,
               "accuracy": jnp.mean(((out["logit"] > 0) == (labels == 1)).astype(jnp.float32))}
    total = sup
    if self.aux_weight > 0:
      aux = detection.masked_frame_byol(out["teacher_target"], out["aux_prediction"], labels == 0)
      metrics["aux_loss"] = aux
      total = total + self.aux_weight * aux
    return total, (metrics, {"batch_stats": new_stats})

  def _forward(self, state, batch):
    return self.apply(self.model, {"params": state.params, "batch_stats": state.batch_stats},
                      *self._inputs(batch), train=False)

  def predict(self, state, batch):
    """The raw (unadjusted) clip logits: logit adjustment only shifts the training loss."""
    return self._forward(state, batch)["logit"]

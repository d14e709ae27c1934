"""Video forgery detector: backbone → time-pooled feature → classifier, plus optional heads.

One module covers RealForensics stage 2 (§3.2) and the "only CSN" scratch baseline (Table 5):

  stage 2   classifier "cosine"; auxiliary projector + predictor predicting, per frame, the
            targets of a frozen copy of the stage-1 video teacher (``teacher_*`` sub-modules,
            loaded by a warm start and frozen by an optimiser group)
  baseline  classifier "linear"; no auxiliary head, no teacher

Every spec is ``{"name": registered_name, **kwargs}`` (models for the backbone, heads for the
rest), so the backbone and heads are config choices, as in ``av_byol``.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from fakedet.models import MODELS


class VideoDetector(nn.Module):
  backbone: Mapping[str, Any]
  classifier: str = "cosine"  # "cosine" (Eq. 5, s = cosine_scale) or "linear" (Dense → 1).
  cosine_scale: float = 64.0
  aux_projector: Optional[Mapping[str, Any]] = None
  aux_predictor: Optional[Mapping[str, Any]] = None
  teacher: bool = False  # A frozen stage-1 teacher (backbone + aux_projector's architecture).

  def setup(self):
    from fakedet import models
    from fakedet.models import heads
    if self.classifier not in ("cosine", "linear"):
      raise ValueError(f"video_detector classifier={self.classifier!r}; allowed: cosine, linear")
    if (self.aux_projector is None) != (self.aux_predictor is None):
      raise ValueError("video_detector needs both aux_projector and aux_predictor, or neither")
    if self.teacher and self.aux_projector is None:
      raise ValueError("video_detector teacher=True needs the auxiliary head it supervises")
    self.backbone_net = models.build(self.backbone, "backbone")
    if self.classifier == "cosine":
      self.classifier_head = heads.CosineClassifier(scale=self.cosine_scale, name="classifier")
    else:
      self.classifier_head = nn.Dense(1, name="classifier")
    head = lambda spec, name: models.build(spec, name, heads.HEADS.get)
    if self.aux_projector is not None:
      self.aux_projector_net = head(self.aux_projector, "aux_projector")
      self.aux_predictor_net = head(self.aux_predictor, "aux_predictor")
    if self.teacher:
      self.teacher_backbone = models.build(self.backbone, "teacher_backbone")
      self.teacher_projector = head(self.aux_projector, "teacher_projector")

  def __call__(self, video: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """video [B, T, H, W, 3] → ``frames`` [B, T, C], ``pooled`` [B, C], ``logit`` [B] and,
    with the auxiliary head, ``aux_prediction`` [B, T, D]; with the teacher (in inference
    mode: its BatchNorm uses the stage-1 statistics) ``teacher_target`` [B, T, D]."""
    frames = self.backbone_net(video, train=train)["frames"]
    pooled = jnp.mean(frames, axis=1)
    logit = self.classifier_head(pooled)
    out = {"frames": frames, "pooled": pooled,
           "logit": logit if logit.ndim == 1 else logit[:, 0]}
    if self.aux_projector is not None:
      out["aux_prediction"] = self.aux_predictor_net(
          self.aux_projector_net(frames, train=train), train=train)
    if self.teacher:
      t = self.teacher_backbone(video, train=False)["frames"]
      out["teacher_target"] = jax.lax.stop_gradient(self.teacher_projector(t, train=False))
    return out


MODELS.register("video_detector")(VideoDetector)

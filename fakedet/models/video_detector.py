"""Forgery detector: backbone(s) → pooled feature → classifier, plus optional heads.

One module covers RealForensics stage 2 (§3.2), the "only CSN" scratch baseline (Table 5) and
FakeOut's fine-tuned detector (§3.2):

  stage 2   classifier "cosine"; auxiliary projector + predictor predicting, per frame, the
            targets of a frozen copy of the stage-1 video teacher (``teacher_*`` sub-modules,
            loaded by a warm start and frozen by an optimiser group)
  baseline  classifier "linear"; no auxiliary head, no teacher
  FakeOut   classifier "mlp" (``mlp_hidden`` ReLU layers → 1) on the concatenated pooled video
            and (with ``audio_backbone``) audio features of MMV's backbones

Every spec is ``{"name": registered_name, **kwargs}`` (models for the backbone, heads for the
rest), so the backbone and heads are config choices, as in ``av_byol``.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fakedet.models import MODELS, build, heads


class VideoDetector(nn.Module):
  backbone: Mapping[str, Any]
  classifier: str = "cosine"  # "cosine" (Eq. 5, s = cosine_scale), "linear" or "mlp".
  cosine_scale: float = 64.0
  mlp_hidden: Tuple[int, ...] = (512, 512)  # classifier "mlp": hidden widths (ReLU).
  audio_backbone: Optional[Mapping[str, Any]] = None  # Log-mel branch; its pooled feature is
  # concatenated to the video's (FakeOut's video+audio detector).
  aux_projector: Optional[Mapping[str, Any]] = None
  aux_predictor: Optional[Mapping[str, Any]] = None
  teacher: bool = False  # A frozen stage-1 teacher (backbone + aux_projector's architecture).

  def setup(self):
    if self.classifier not in ("cosine", "linear", "mlp"):
      raise ValueError(f"video_detector classifier={self.classifier!r}; allowed: cosine, "
                       "linear, mlp")
    if (self.aux_projector is None) != (self.aux_predictor is None):
      raise ValueError("video_detector needs both aux_projector and aux_predictor, or neither")
    if self.teacher and self.aux_projector is None:
      raise ValueError("video_detector teacher=True needs the auxiliary head it supervises")
    self.backbone_net = build(self.backbone, "backbone")
    if self.audio_backbone is not None:
      self.audio_net = build(self.audio_backbone, "audio_backbone")
    if self.classifier == "cosine":
      self.classifier_head = heads.CosineClassifier(scale=self.cosine_scale, name="classifier")
    elif self.classifier == "mlp":
      self.classifier_head = MLPClassifier(hidden=tuple(self.mlp_hidden), name="classifier")
    else:
      self.classifier_head = nn.Dense(1, name="classifier")
    head = lambda spec, name: build(spec, name, heads.HEADS.get)
    if self.aux_projector is not None:
      self.aux_projector_net = head(self.aux_projector, "aux_projector")
      self.aux_predictor_net = head(self.aux_predictor, "aux_predictor")
    if self.teacher:
      self.teacher_backbone = build(self.backbone, "teacher_backbone")
      self.teacher_projector = head(self.aux_projector, "teacher_projector")

  def __call__(self, video: jax.Array, audio: Optional[jax.Array] = None, *,
               train: bool) -> Dict[str, jax.Array]:
    """video [B, T, H, W, 3] (and, with an audio backbone, log-mels ``audio`` [B, Ta, F]) →
    ``frames`` [B, T, C], ``pooled`` [B, C] (video, + audio features concatenated), ``logit``
    [B] and, with the auxiliary head, ``aux_prediction`` [B, T, D]; with the teacher (in
    inference mode: its BatchNorm uses the stage-1 statistics) ``teacher_target`` [B, T, D]."""
    if (audio is None) != (self.audio_backbone is None):
      raise ValueError("video_detector: pass log-mels exactly when model.audio_backbone is set "
                       f"(audio {'missing' if audio is None else 'given'})")
    frames = self.backbone_net(video, train=train)["frames"]
    pooled = jnp.mean(frames, axis=1)
    if audio is not None:
      a = self.audio_net(audio, train=train)
      a = a["pooled"] if "pooled" in a else jnp.mean(a["frames"], axis=1)  # Per-frame nets.
      pooled = jnp.concatenate([pooled, a], axis=-1)
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


class MLPClassifier(nn.Module):
  """FakeOut's classification head: Dense-ReLU per hidden width, then Dense → one logit."""
  hidden: Tuple[int, ...] = (512, 512)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"hidden{i}")(x))
    return nn.Dense(1, name="out")(x)


MODELS.register("video_detector")(VideoDetector)

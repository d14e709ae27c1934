"""Forgery detector: backbone(s) → pooled feature → classifier, plus optional heads.

One module covers RealForensics stage 2 (§3.2), the "only CSN" scratch baseline (Table 5) and
FakeOut's fine-tuned detector (§3.2):

  stage 2   classifier "cosine"; auxiliary projector + predictor predicting, per frame, the
            targets of a frozen copy of the stage-1 video teacher (``teacher_*`` sub-modules,
            loaded by a warm start and frozen by an optimiser group)
  baseline  classifier "linear"; no auxiliary head, no teacher
  FakeOut   classifier "fakeout" (the authors' released head: linear 512 → linear 128 →
            linear 2, no activations) or "mlp" (``mlp_hidden`` ReLU layers → 1) on the
            concatenated pooled video and (with ``audio_backbone``) audio features of MMV's
            backbones

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
  classifier: str = "cosine"  # "cosine" (Eq. 5, s = cosine_scale), "linear", "mlp", "fakeout".
  cosine_scale: float = 64.0
  mlp_hidden: Tuple[int, ...] = (512, 512)  # classifier "mlp": hidden widths (ReLU).
  audio_backbone: Optional[Mapping[str, Any]] = None  # Log-mel branch; its pooled feature is
  # concatenated to the video's (FakeOut's video+audio detector).
  aux_projector: Optional[Mapping[str, Any]] = None
  aux_predictor: Optional[Mapping[str, Any]] = None
  teacher: bool = False  # A frozen stage-1 teacher (backbone + aux_projector's architecture).
  # How the teacher's BatchNorm normalises in training: "batch" — statistics of the batch's real
  # clips (the authors' code: the teacher module stays in train mode, fed only the real clips);
  # "running" — the stage-1 running statistics (inference mode).
  teacher_bn: str = "batch"
  # Linear probing (FakeOut App. F.2): the backbones are fixed feature extractors, so their
  # BatchNorm keeps its loaded statistics in training too (the optimiser freezes the weights).
  frozen_backbones: bool = False

  def setup(self):
    if self.classifier not in ("cosine", "linear", "mlp", "fakeout"):
      raise ValueError(f"video_detector classifier={self.classifier!r}; allowed: cosine, "
                       "linear, mlp, fakeout")
    if (self.aux_projector is None) != (self.aux_predictor is None):
      raise ValueError("video_detector needs both aux_projector and aux_predictor, or neither")
    if self.teacher and self.aux_projector is None:
      raise ValueError("video_detector teacher=True needs the auxiliary head it supervises")
    if self.teacher_bn not in ("batch", "running"):
      raise ValueError(f"video_detector teacher_bn={self.teacher_bn!r}; allowed: batch, running")
    self.backbone_net = build(self.backbone, "backbone")
    if self.audio_backbone is not None:
      self.audio_net = build(self.audio_backbone, "audio_backbone")
    if self.classifier == "cosine":
      self.classifier_head = heads.CosineClassifier(scale=self.cosine_scale, name="classifier")
    elif self.classifier == "mlp":
      self.classifier_head = MLPClassifier(hidden=tuple(self.mlp_hidden), name="classifier")
    elif self.classifier == "fakeout":
      self.classifier_head = FakeOutClassifier(name="classifier")
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
               train: bool, teacher_video: Optional[jax.Array] = None,
               teacher_real: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    """video [B, T, H, W, Cin] (Cin = 3 RGB or 1 greyscale, the backbone's stem; and, with an
    audio backbone, log-mels ``audio`` [B, Ta, F]) →
    ``frames`` [B, T, C], ``pooled`` [B, C] (video, + audio features concatenated), ``logit``
    [B] and, with the auxiliary head, ``aux_prediction`` [B, T, D]; with the teacher
    ``teacher_target`` [B, T, D] of ``teacher_video`` (the clean view of the same clips; the
    student's ``video`` when not given). In training with ``teacher_bn="batch"`` the teacher's
    BatchNorm uses the statistics of the clips where ``teacher_real`` [B] is True (all clips
    when none is); its targets are only used for real clips (Eq. 3), so fakes never shape them.
    """
    if (audio is None) != (self.audio_backbone is None):
      raise ValueError("video_detector: pass log-mels exactly when model.audio_backbone is set "
                       f"(audio {'missing' if audio is None else 'given'})")
    backbone_train = train and not self.frozen_backbones
    frames = self.backbone_net(video, train=backbone_train)["frames"]
    pooled = jnp.mean(frames, axis=1)
    if audio is not None:
      a = self.audio_net(audio, train=backbone_train)
      a = a["pooled"] if "pooled" in a else jnp.mean(a["frames"], axis=1)  # Per-frame nets.
      pooled = jnp.concatenate([pooled, a], axis=-1)
    logit = self.classifier_head(pooled)
    out = {"frames": frames, "pooled": pooled,
           "logit": logit if logit.ndim == 1 else logit[:, 0]}
    if self.aux_projector is not None:
      out["aux_prediction"] = self.aux_predictor_net(
          self.aux_projector_net(frames, train=train), train=train)
    if self.teacher:
      out["teacher_target"] = self._teacher(video if teacher_video is None else teacher_video,
                                            train, teacher_real)
    return out

  def _teacher(self, video: jax.Array, train: bool, real: Optional[jax.Array]) -> jax.Array:
    batch_mode = train and self.teacher_bn == "batch"
    kw = {}
    if batch_mode and real is not None:
      # A batch without reals has no statistics to take; its targets are unused (Eq. 3).
      kw["bn_mask"] = jnp.where(jnp.any(real), real, True)
    t = self.teacher_backbone(video, train=batch_mode, **kw)["frames"]
    return jax.lax.stop_gradient(self.teacher_projector(t, train=batch_mode, **kw))


class MLPClassifier(nn.Module):
  """FakeOut's classification head: Dense-ReLU per hidden width, then Dense → one logit."""
  hidden: Tuple[int, ...] = (512, 512)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"hidden{i}")(x))
    return nn.Dense(1, name="out")(x)


class FakeOutClassifier(nn.Module):
  """FakeOut's released fine-tuning head (gilikn/FakeOut ``fakeout/inference.py``,
  ``mlp_builder``): linear 512 → linear 128 → linear 2 on [B, D], with NO activation between
  the layers (so it is one affine map of rank ≤ 128) and weights drawn from a normal truncated
  at ±2σ, σ = 0.02 (Haiku ``TruncatedNormal(0.02)``, no σ correction), zero biases. The paper
  says "a multi-layer perceptron implemented with 2 hidden layers" (§4.1) and does not mention
  the missing activations; the code is what produced the published checkpoint.

  fakedet predicts one fake logit; the authors take ``softmax(logits)[1]`` as the fake score
  (class 1 = fake), so the logit is ``logits[1] − logits[0]``: sigmoid of it equals that
  softmax probability, and binary cross-entropy on it equals their 2-way cross-entropy. The
  2-way layer is kept so the released weights load unchanged.
  """
  hidden: Tuple[int, ...] = (512, 128)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, D] → fake logit [B] (logit_fake − logit_real)."""
    init = nn.initializers.truncated_normal(stddev=0.02)
    for i, width in enumerate(self.hidden):
      x = nn.Dense(width, kernel_init=init, name=f"hidden{i}")(x)
    logits = nn.Dense(2, kernel_init=init, name="out")(x)
    return logits[..., 1] - logits[..., 0]


MODELS.register("video_detector")(VideoDetector)

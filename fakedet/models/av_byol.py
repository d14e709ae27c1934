"""RealForensics stage-1 network: per-modality backbone → projector → predictor.

Students and teachers share this module; the teacher is the same module applied to the EMA
params with ``method="targets"`` (no predictor), so the two always have identical architecture.
Components are chosen by name from the model and head registries, so the Table-12 ablations
(MLP projector / predictor) are config changes.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

import flax.linen as nn
import jax.numpy as jnp

from fakedet.models import MODELS, build, heads


class AVByol(nn.Module):
  """Video and audio branches; each ``spec`` is ``{"name": registered_name, **kwargs}``."""
  video_backbone: Mapping[str, Any]
  audio_backbone: Mapping[str, Any]
  projector: Mapping[str, Any]
  predictor: Mapping[str, Any]

  def setup(self):
    self.video_net = build(self.video_backbone, "video_backbone")
    self.audio_net = build(self.audio_backbone, "audio_backbone")
    self.video_projector = build(self.projector, "video_projector", heads.HEADS.get)
    self.audio_projector = build(self.projector, "audio_projector", heads.HEADS.get)
    self.video_predictor = build(self.predictor, "video_predictor", heads.HEADS.get)
    self.audio_predictor = build(self.predictor, "audio_predictor", heads.HEADS.get)

  def targets(self, video: jnp.ndarray, audio: jnp.ndarray, *, train: bool) -> Dict[str, Any]:
    """Unnormalised projections: video [B, T, H, W, C] (C = 3 RGB or 1 greyscale) →
    ``video_z`` [B, T, D];
    log-mel audio [B, 4T, F] → ``audio_z`` [B, T, D]."""
    v = self.video_net(video, train=train)["frames"]
    a = self.audio_net(audio, train=train)["frames"]
    return {"video_z": self.video_projector(v, train=train),
            "audio_z": self.audio_projector(a, train=train),
            "video_frames": v}

  def __call__(self, video: jnp.ndarray, audio: jnp.ndarray, *, train: bool) -> Dict[str, Any]:
    """Student outputs: ``targets`` plus predictions ``video_p``/``audio_p`` [B, T, D]."""
    out = self.targets(video, audio, train=train)
    out["video_p"] = self.video_predictor(out["video_z"], train=train)
    out["audio_p"] = self.audio_predictor(out["audio_z"], train=train)
    return out


MODELS.register("av_byol")(AVByol)

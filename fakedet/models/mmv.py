"""MMV multimodal network with fine-and-coarse (FAC) spaces (Alayrac et al., NeurIPS 2020, §3.1).

Backbones (by registry name): video (TSM-ResNet-50), audio (ResNet-50 on log-mel), text
(word2vec → linear + ReLU → max-pool). FAC projection heads:

  video → va  (linear, 512)        audio → va  (linear, 512)          fine space S_va
  video va → vat (MLP: linear, BN, ReLU, linear; 256)   text → vat (linear, 256)   coarse S_vat

Video reaches the coarse space *through* the fine one, so audio–video detail is kept in S_va
while S_vat holds only what text can describe. Losses (``fakedet/objectives/mmv_nce.py``):
NCE on S_va (video, audio), MIL-NCE on S_vat (video, text). The MLP hidden size follows the
output size (``vat_hidden``); the FakeOut paper does not give it.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from fakedet.models import MODELS, build


class MMV(nn.Module):
  """Each backbone spec is ``{"name": registered_name, **kwargs}``."""
  video_backbone: Mapping[str, Any]
  audio_backbone: Mapping[str, Any]
  text_backbone: Mapping[str, Any]
  va_dim: int = 512
  vat_dim: int = 256
  vat_hidden: int = 512

  def setup(self):
    self.video_net = build(self.video_backbone, "video_backbone")
    self.audio_net = build(self.audio_backbone, "audio_backbone")
    self.text_net = build(self.text_backbone, "text_backbone")
    self.video_to_va = nn.Dense(self.va_dim, name="video_to_va")
    self.audio_to_va = nn.Dense(self.va_dim, name="audio_to_va")
    self.va_to_vat_hidden = nn.Dense(self.vat_hidden, name="va_to_vat_hidden")
    self.va_to_vat_bn = nn.BatchNorm(momentum=0.9, epsilon=1e-5, name="va_to_vat_bn")
    self.va_to_vat_out = nn.Dense(self.vat_dim, name="va_to_vat_out")
    self.text_to_vat = nn.Dense(self.vat_dim, name="text_to_vat")

  def embed_video(self, video: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Video [B, T, H, W, 3] → ``video_pooled`` [B, Dv], ``video_va`` [B, 512],
    ``video_vat`` [B, 256] (unnormalised)."""
    pooled = self.video_net(video, train=train)["pooled"]
    va = self.video_to_va(pooled)
    h = nn.relu(self.va_to_vat_bn(self.va_to_vat_hidden(va), use_running_average=not train))
    return {"video_pooled": pooled, "video_va": va, "video_vat": self.va_to_vat_out(h)}

  def embed_audio(self, audio: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Log-mel [B, Ta, F] → ``audio_pooled`` [B, Da], ``audio_va`` [B, 512]."""
    pooled = self.audio_net(audio, train=train)["pooled"]
    return {"audio_pooled": pooled, "audio_va": self.audio_to_va(pooled)}

  def embed_text(self, text: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Token ids [B, K, L] (K narrations per clip) → ``text_pooled`` [B, K, Dt],
    ``text_vat`` [B, K, 256]."""
    pooled = self.text_net(text, train=train)["pooled"]
    return {"text_pooled": pooled, "text_vat": self.text_to_vat(pooled)}

  def __call__(self, video: jax.Array, audio: Optional[jax.Array] = None,
               text: Optional[jax.Array] = None, *, train: bool) -> Dict[str, jax.Array]:
    """Every available modality's outputs (see ``embed_*``); audio / text may be None."""
    out = self.embed_video(video, train=train)
    if audio is not None:
      out.update(self.embed_audio(audio, train=train))
    if text is not None:
      out.update(self.embed_text(text, train=train))
    return out


MODELS.register("mmv")(MMV)

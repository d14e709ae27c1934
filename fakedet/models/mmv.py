"""MMV multimodal network with fine-and-coarse (FAC) spaces (Alayrac et al., NeurIPS 2020, §3.1).

Backbones (by registry name): video (TSM-ResNet-50), audio (ResNet-50 on log-mel), text
(word2vec → linear + ReLU → max-pool). FAC projection heads, as DeepMind's released model builds
them (deepmind-research ``mmv/config.py`` + ``mmv/models/mm_embeddings.py``, graph ``fac_relu``;
FakeOut fine-tunes those checkpoints, ``fakedet/importers/mmv.py`` converts them):

  video → va   MLP: linear 512 (bias), BN, ReLU, linear 512 (no bias), BN      fine space S_va
  audio → va   linear 512 (bias)
  ReLU between the spaces (``fac_relu``), then
  va → vat     linear 256 (bias), BN                                        coarse space S_vat
  text → vat   linear 256 (bias)

Video reaches the coarse space *through* the fine one, so audio–video detail is kept in S_va
while S_vat holds only what text can describe. The FakeOut paper does not describe the heads
("representations are embedded, via projection heads, into a shared space", §3.1); an earlier
version of this module put the MLP on the va → vat side (video → va linear; va → vat linear, BN,
ReLU, linear, no output BN, no ReLU between the spaces), the reverse of the released model. BN
in the heads: decay 0.9, ε 1e-5, scale and offset. The released model also projects audio into
S_vat through the va → vat head at evaluation only and text into S_va; neither is used by the
FAC losses, so neither is built here (the importer drops those weights). Losses
(``fakedet/objectives/mmv_nce.py``): NCE on S_va (video, audio), MIL-NCE on S_vat (video, text).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fakedet.models import MODELS, build


def _bn(name: str) -> nn.BatchNorm:
  return nn.BatchNorm(momentum=0.9, epsilon=1e-5, name=name)


class Projection(nn.Module):
  """A FAC projection head: [..., Din] → [..., features].

  ``hidden`` widths give linear (bias) → BN → ReLU layers first (the released "mlp@512"); the
  output linear drops its bias only when an MLP ends in an output BN, as the released heads do
  (a linear head keeps its bias even before BN: at evaluation the BN's running mean does not
  cancel it).
  """
  features: int
  hidden: Tuple[int, ...] = ()
  bn_out: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for i, width in enumerate(self.hidden):
      x = nn.Dense(width, name=f"hidden{i}")(x)
      x = nn.relu(_bn(f"hidden{i}_bn")(x, use_running_average=not train))
    x = nn.Dense(self.features, use_bias=not (self.hidden and self.bn_out), name="proj")(x)
    if self.bn_out:
      x = _bn("proj_bn")(x, use_running_average=not train)
    return x


class MMV(nn.Module):
  """Each backbone spec is ``{"name": registered_name, **kwargs}``.

  Attributes:
    va_dim, vat_dim: sizes of S_va (512) and S_vat (256).
    va_hidden: hidden width of the video → va MLP (512, the released "mlp@512"; 0 = linear).
  """
  video_backbone: Mapping[str, Any]
  audio_backbone: Mapping[str, Any]
  text_backbone: Mapping[str, Any]
  va_dim: int = 512
  vat_dim: int = 256
  va_hidden: int = 512

  def setup(self):
    self.video_net = build(self.video_backbone, "video_backbone")
    self.audio_net = build(self.audio_backbone, "audio_backbone")
    self.text_net = build(self.text_backbone, "text_backbone")
    self.video_to_va = Projection(self.va_dim, (self.va_hidden,) if self.va_hidden else (),
                                  bn_out=True, name="video_to_va")
    self.audio_to_va = Projection(self.va_dim, name="audio_to_va")
    self.va_to_vat = Projection(self.vat_dim, bn_out=True, name="va_to_vat")
    self.text_to_vat = Projection(self.vat_dim, name="text_to_vat")

  def embed_video(self, video: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Video [B, T, H, W, 3] → ``video_pooled`` [B, Dv], ``video_va`` [B, 512],
    ``video_vat`` [B, 256] (unnormalised; S_vat is reached from relu(video_va))."""
    pooled = self.video_net(video, train=train)["pooled"]
    va = self.video_to_va(pooled, train=train)
    vat = self.va_to_vat(nn.relu(va), train=train)
    return {"video_pooled": pooled, "video_va": va, "video_vat": vat}

  def embed_audio(self, audio: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Log-mel [B, Ta, F] → ``audio_pooled`` [B, Da], ``audio_va`` [B, 512]."""
    pooled = self.audio_net(audio, train=train)["pooled"]
    return {"audio_pooled": pooled, "audio_va": self.audio_to_va(pooled, train=train)}

  def embed_text(self, text: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Token ids [B, K, L] (K narrations per clip) → ``text_pooled`` [B, K, Dt],
    ``text_vat`` [B, K, 256]."""
    pooled = self.text_net(text, train=train)["pooled"]
    return {"text_pooled": pooled, "text_vat": self.text_to_vat(pooled, train=train)}

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

"""MMV's audio backbone: ResNet-50 (v2, pre-activation) on a log-mel spectrogram.

The log-mel [B, Ta, F] is a 1-channel image (time = height, mel bins = width) — the released MMV
model's layout (deepmind-research ``mmv/models/resnet.py`` ``ResNetV2`` fed ``[B, T', F, 1]``;
FakeOut adds the channel axis the same way) — run through the same pre-activation body as the
video's TSM-ResNet (``tsm_resnet.ResNetV2Body``, no temporal shift): 7×7/2 stem conv + 3×3/2
max-pool (SAME), bottleneck stages with strides 1, 2, 2, 2, a final BN-ReLU, then the mean over
time and frequency. The released audio network is always width ×1, also in the TSM-ResNet-50×2
checkpoint. 23,494,080 parameters at paper size: TSM-ResNet-50 v2's 23,500,352 minus the 6,272
the 7×7 stem saves on 1 input channel instead of 3 (7·7·2·64).
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fakedet.models import MODELS
from fakedet.models.tsm_resnet import ResNetV2Body


class ResNet50Audio(nn.Module):
  """Attributes as ``TSMResNet``: stage_blocks (3, 4, 6, 3) = ResNet-50, width_multiplier."""
  stage_blocks: Sequence[int] = (3, 4, 6, 3)
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Log-mel audio [B, Ta, F] → dict of

      feature_map: [B, Ta/32, F/32, D] (ceil division) after the final BN-ReLU;
      pooled: [B, D] averaged over time and frequency;
    with D = 2048 · width_multiplier.
    """
    if audio.ndim != 3:
      raise ValueError(f"expected log-mel audio [B, Ta, F]; got shape {audio.shape}")
    x = ResNetV2Body(self.stage_blocks, width_multiplier=self.width_multiplier, num_frames=0,
                     dtype=self.dtype, name="body")(audio[..., None], train=train)
    x = x.astype(jnp.float32)
    return {"feature_map": x, "pooled": jnp.mean(x, axis=(1, 2))}


MODELS.register("resnet50_audio")(ResNet50Audio)

"""RealForensics audio backbone: ResNet18 on log-mels that keeps 1 frame per 4 (Table 17).

The log-mel [B, Ta, F] is a 1-channel image with time as height and mel bins as width. The stem
(7×7/2 conv, 3×3/2 max-pool) subsamples time by 4; after it only frequency is strided, so the
output has Ta/4 frames, one per video frame (the paper ensures Ta = 4·Tv). Paper size, 100×80:

  stem   7×7, 64, /2×2          50×40
  pool1  max 3×3, /2×2          25×20
  res1   [3×3, 64]·2  × 2       25×20
  res2   [3×3, 128]·2 × 2, /1×2 25×10
  res3   [3×3, 256]·2 × 2, /1×2 25×5
  res4   [3×3, 512]·2 × 2, /1×2 25×3
  pool2  mean over frequency    25×1   → ``frames`` [B, 25, 512]

Padding is explicit and torch-style (3 for 7×7, 1 for 3×3, -inf for the pool) rather than
"SAME": the two differ on even inputs, and this keeps shapes and weights interchangeable with the
authors' torchvision-derived model. 11,170,240 params at paper size (torchvision ResNet18 without
fc, 1-channel conv1). Per-stage outputs are sown into the ``intermediates`` collection.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fakedet.models import MODELS

# He init on fan-out, as torchvision initialises ResNet convolutions.
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_FREQ_STRIDE = (1, 2)  # stages 2.. halve frequency only (time stays Ta/4)


def _conv(features: int, kernel: int, stride: Tuple[int, int], dtype: Any, name: str) -> nn.Conv:
  pad = (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                 use_bias=False, kernel_init=_CONV_INIT, dtype=dtype, name=name)


def _bn(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)


class BasicBlock(nn.Module):
  """Two 3×3 conv-BN layers with a residual; 1×1 conv-BN shortcut when the shape changes.

  [B, T, F, Cin] → [B, T / stride[0], F / stride[1], features].
  """
  features: int
  stride: Tuple[int, int] = (1, 1)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = _conv(self.features, 3, self.stride, self.dtype, "conv1")(x)
    y = nn.relu(_bn(train, self.dtype, "bn1")(y))
    y = _conv(self.features, 3, (1, 1), self.dtype, "conv2")(y)
    y = _bn(train, self.dtype, "bn2")(y)
    if self.stride != (1, 1) or x.shape[-1] != self.features:
      x = _conv(self.features, 1, self.stride, self.dtype, "proj_conv")(x)
      x = _bn(train, self.dtype, "proj_bn")(x)
    return nn.relu(x + y)


class ResNetAudio(nn.Module):
  """Modified ResNet18 for log-mel spectrograms (RealForensics Table 17).

  Attributes:
    stage_blocks: BasicBlocks per stage; (2, 2, 2, 2) is ResNet18.
    widths: channels per stage at multiplier 1; the stem uses ``widths[0]``.
    width_multiplier: scales every width (tiny test / demo models).
    dtype: computation dtype (a jnp dtype or its name, e.g. "bfloat16"); params stay float32.
  """
  stage_blocks: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32

  def _widths(self) -> Tuple[int, ...]:
    if len(self.widths) != len(self.stage_blocks):
      raise ValueError(f"widths {tuple(self.widths)} and stage_blocks "
                       f"{tuple(self.stage_blocks)} must have the same length")
    return tuple(max(1, int(round(w * self.width_multiplier))) for w in self.widths)

  @nn.compact
  def __call__(self, audio: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Log-mel audio [B, Ta, F] (Ta divisible by 4) → dict of

      frames: [B, Ta/4, C] per-frame embeddings (frequency-averaged feature map);
      feature_map: [B, Ta/4, F', C] last-stage map, F' = F / 32 rounded up (3 for F = 80),
    with C = the last width (512 at paper size).
    """
    if audio.ndim != 3:
      raise ValueError(f"expected log-mel audio [B, Ta, F]; got shape {audio.shape}")
    if audio.shape[1] % 4:
      raise ValueError(f"audio length Ta={audio.shape[1]} must be divisible by 4 (Ta = 4·Tv); "
                       f"other lengths give ceil(Ta/4) frames")
    dtype = jnp.dtype(self.dtype)
    widths = self._widths()
    x = audio.astype(dtype)[..., None]
    x = _conv(widths[0], 7, (2, 2), dtype, "stem_conv")(x)
    x = nn.relu(_bn(train, dtype, "stem_bn")(x))
    self.sow("intermediates", "stem", x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    self.sow("intermediates", "pool1", x)
    for s, (num_blocks, width) in enumerate(zip(self.stage_blocks, widths)):
      for b in range(num_blocks):
        stride = _FREQ_STRIDE if (s > 0 and b == 0) else (1, 1)
        x = BasicBlock(width, stride, dtype, name=f"res{s + 1}_block{b + 1}")(x, train=train)
      self.sow("intermediates", f"res{s + 1}", x)
    return {"frames": jnp.mean(x, axis=2), "feature_map": x}


MODELS.register("resnet18_audio")(ResNetAudio)

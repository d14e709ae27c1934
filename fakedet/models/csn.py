"""RealForensics video backbone: ir-CSN-101 that keeps every frame (Table 16, App. B.3).

Interaction-reduced channel-separated bottlenecks (1×1×1 → depthwise 3×3×3 → 1×1×1) with all
temporal strides set to 1, so the output has one embedding per input frame (dense learning),
and a spatial-only average pool at the end. Paper size, 25×112×112 input:

  stem   3×7×7, 64, /1×2×2                     25×56×56
  pool1  max 1×3×3, /1×2×2                     25×28×28
  res1   [1×1×1, 64;  3×3×3 dw, 64;  1×1×1, 256]  × 3          25×28×28
  res2   [1×1×1, 128; 3×3×3 dw, 128; 1×1×1, 512]  × 4, /1×2×2  25×14×14
  res3   [1×1×1, 256; 3×3×3 dw, 256; 1×1×1, 1024] × 23, /1×2×2 25×7×7
  res4   [1×1×1, 512; 3×3×3 dw, 512; 1×1×1, 2048] × 3, /1×2×2  25×4×4
  pool2  mean over H, W                        25×1×1  → ``frames`` [B, 25, 2048]

Padding is explicit and torch-style (1,3,3 for the stem, 0,1,1 with -inf for the pool, 1 for
the depthwise conv) rather than "SAME": they differ at stride 2 on even sizes, and this keeps
shapes and weights interchangeable with the authors' PyTorch model, whose 21,394,176 trainable
parameters this reproduces (a 3×3×3 that is purely depthwise, no extra 1×1×1 conv in the
bottleneck). Input is RGB or greyscale (the authors' configs build either stem): the stem
kernel [3, 7, 7, Cin, 64] follows the input's channels, so a greyscale model has 21,375,360
parameters. Forward cost: ~27.7 GMACs per 25×112×112 clip. Per-stage outputs are sown into the
``intermediates`` collection. Two convs have two exact implementations each, chosen per platform:
the depthwise conv (``depthwise_impl``, ``fakedet.models.depthwise``: XLA:CPU's grouped conv is
~40× slower than a shifted multiply-add) and the stem (``stem_impl``,
``fakedet.models.frame_conv``: XLA:CPU's 3D conv on 3 input channels is ~6× slower than the same
conv as a 2D conv over stacked frames); GPU/TPU prefer the native ones.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fakedet.models import MODELS
from fakedet.models import depthwise
from fakedet.models import frame_conv

_CONV_INIT = depthwise.HE_FAN_OUT  # He init on fan-out, as torchvision video ResNets.
_UNIT = (1, 1, 1)


def _pointwise(features: int, strides: Sequence[int], dtype: Any, name: str) -> nn.Conv:
  return nn.Conv(features, _UNIT, strides=tuple(strides), padding="VALID", use_bias=False,
                 kernel_init=_CONV_INIT, dtype=dtype, name=name)


def _broadcast_mask(mask: Optional[jax.Array], x: jax.Array) -> Optional[jax.Array]:
  """[B] bool → [B, 1, …, 1] broadcast to x: BatchNorm's statistics over the masked clips."""
  if mask is None:
    return None
  return jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x.shape)


def _bn(train: bool, dtype: Any, name: str, zero_init: bool = False) -> nn.BatchNorm:
  """PyTorch BatchNorm3d defaults (momentum 0.1 there is 0.9 here, eps 1e-5)."""
  scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      scale_init=scale_init, name=name)


class Bottleneck(nn.Module):
  """ir-CSN bottleneck: [B, T, H, W, Cin] → [B, T, ceil(H/s), ceil(W/s), features].

  1×1×1 conv-BN-ReLU → depthwise 3×3×3 conv (carries the stride) -BN-ReLU → 1×1×1 conv-BN,
  plus a 1×1×1 conv-BN shortcut when the shape changes, then ReLU. The last BN's γ starts at 0,
  so at init each block is ReLU(shortcut(x)) and deep stacks start well conditioned.

  Attributes:
    features: output channels.
    inner: channels of the depthwise conv.
    strides: (st, sh, sw) of the depthwise conv and the shortcut.
    depthwise_impl: "native", "shifted" or "auto".
    dtype: computation dtype.
  """
  features: int
  inner: int
  strides: Tuple[int, int, int] = _UNIT
  depthwise_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool,
               bn_mask: Optional[jax.Array] = None) -> jax.Array:
    """``bn_mask``: see `CSN.__call__`."""
    bn = lambda name, **kw: lambda v: _bn(train, self.dtype, name, **kw)(
        v, mask=_broadcast_mask(bn_mask, v))
    y = _pointwise(self.inner, _UNIT, self.dtype, "conv_a")(x)
    y = nn.relu(bn("bn_a")(y))
    y = depthwise.DepthwiseConv3D(self.inner, self.strides, self.depthwise_impl,
                                  kernel_init=_CONV_INIT, dtype=self.dtype, name="conv_b")(y)
    y = nn.relu(bn("bn_b")(y))
    y = _pointwise(self.features, _UNIT, self.dtype, "conv_c")(y)
    y = bn("bn_c", zero_init=True)(y)
    if tuple(self.strides) != _UNIT or x.shape[-1] != self.features:
      x = _pointwise(self.features, self.strides, self.dtype, "shortcut_conv")(x)
      x = bn("shortcut_bn")(x)
    return nn.relu(x + y)


class CSN(nn.Module):
  """RealForensics' modified ir-CSN video backbone (Table 16); defaults are the paper's.

  Attributes:
    stage_blocks: bottlenecks per stage; (3, 4, 23, 3) is CSN-101.
    widths: output channels per stage at multiplier 1 (inner width = width / expansion).
    stem_width: stem channels at multiplier 1.
    expansion: output / inner width of a bottleneck.
    spatial_strides: H and W stride of each stage's first block (temporal stride is always 1).
    width_multiplier: scales every width (tiny test / demo models, e.g. 1/8).
    depthwise_impl: "native", "shifted" or "auto" (shifted on CPU, native on GPU/TPU).
    stem_impl: "native", "frames" or "auto" (frames on CPU): the 3×7×7 stem as a 3D conv or as
      a 2D conv over 3 stacked frames (``fakedet.models.frame_conv``; 6–8× faster on XLA:CPU).
    dtype: computation dtype (a jnp dtype or its name, e.g. "bfloat16"); params stay float32.
  """
  stage_blocks: Sequence[int] = (3, 4, 23, 3)
  widths: Sequence[int] = (256, 512, 1024, 2048)
  stem_width: int = 64
  expansion: int = 4
  spatial_strides: Sequence[int] = (1, 2, 2, 2)
  width_multiplier: float = 1.0
  depthwise_impl: str = "auto"
  stem_impl: str = "auto"
  dtype: Any = jnp.float32

  def _scaled(self, width: int) -> int:
    return max(1, int(round(width * self.width_multiplier)))

  def _stage_widths(self) -> Tuple[Tuple[int, int], ...]:
    """(output, inner) channels of each stage after the multiplier."""
    n = len(self.stage_blocks)
    if len(self.widths) != n or len(self.spatial_strides) != n:
      raise ValueError(f"widths {tuple(self.widths)}, spatial_strides "
                       f"{tuple(self.spatial_strides)} and stage_blocks "
                       f"{tuple(self.stage_blocks)} must have the same length")
    out = []
    for w in self.widths:
      width = self._scaled(w)
      if width % self.expansion:
        raise ValueError(f"width {width} (= {w} × {self.width_multiplier}) is not divisible "
                         f"by expansion {self.expansion}")
      out.append((width, width // self.expansion))
    return tuple(out)

  @nn.compact
  def __call__(self, video: jax.Array, *, train: bool,
               bn_mask: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    """Video [B, T, H, W, Cin] (float, normalised; Cin = 3 RGB or 1 greyscale) → dict of

      frames: [B, T, C] per-frame embeddings (spatially averaged feature map);
      feature_map: [B, T, h, w, C] last-stage map, h = ceil(H / 32) (4 for H = 112),
    with C = the last width (2048 at paper size). T is preserved.

    ``bn_mask`` [B] bool (train mode only): BatchNorm's batch statistics come from the clips
    where it is True. RealForensics' stage-2 teacher runs in train mode on the REAL clips of a
    batch only (the authors index them out); a fixed-shape batch gets the same statistics by
    masking, and every clip is still normalised by them.
    """
    if video.ndim != 5:
      raise ValueError(f"expected video [B, T, H, W, C]; got shape {video.shape}")
    dtype = jnp.dtype(self.dtype)
    stages = self._stage_widths()
    x = video.astype(dtype)
    x = frame_conv.FrameConv3D(self._scaled(self.stem_width), (3, 7, 7), (2, 2),
                               ((1, 1), (3, 3), (3, 3)), self.stem_impl, kernel_init=_CONV_INIT,
                               dtype=dtype, name="stem_conv")(x)
    x = nn.relu(_bn(train, dtype, "stem_bn")(x, mask=_broadcast_mask(bn_mask, x)))
    self.sow("intermediates", "stem", x)
    x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding=((0, 0), (1, 1), (1, 1)))
    self.sow("intermediates", "pool1", x)
    for s, (num_blocks, (width, inner), stride) in enumerate(
        zip(self.stage_blocks, stages, self.spatial_strides)):
      for b in range(num_blocks):
        strides = (1, stride, stride) if b == 0 else _UNIT
        x = Bottleneck(width, inner, strides, self.depthwise_impl, dtype,
                       name=f"res{s + 1}_block{b + 1}")(x, train=train, bn_mask=bn_mask)
      self.sow("intermediates", f"res{s + 1}", x)
    return {"frames": jnp.mean(x, axis=(2, 3)), "feature_map": x}


MODELS.register("csn")(CSN)

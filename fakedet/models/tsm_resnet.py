"""Pre-activation (v2) ResNet-50 with Temporal Shift Modules: MMV's / FakeOut's video backbone.

TSM (Lin et al., ICCV 2019) gives a 2D ResNet temporal modelling at zero parameter cost: in every
residual block 1/8 of the channels come from the next frame, another 1/8 from the previous one
(zero-padded at the clip ends), the rest stay. This module follows DeepMind's released MMV
TSM-ResNet (deepmind-research ``mmv/models/tsm_resnet.py``, ``tsm_utils.py``), whose checkpoints
FakeOut fine-tunes (``fakedet/importers/mmv.py`` converts them), so the layout is theirs, not
the TSM paper's: the LAST 1/8 of the channels is taken from frame t+1 and moved to the front, the
FIRST 1/8 is taken from frame t−1 and moved to the back (``temporal_shift``). The shift acts on
the block's pre-activated input, on the residual branch only (the projection shortcut reads the
unshifted pre-activation). Clips ``[B, T, H, W, C]`` are folded batch-major into ``[B·T, H, W, C]``
(the released code's "gpu" mode; its "tpu" mode folds time-major with the same channel layout),
T is never strided, so the convolutions are ordinary 2D ones — fast on every backend.

Layer list at paper size (width ×1, 3-channel input; ×2 doubles every width, stem included):

  stem    7×7, 64, /2 conv, SAME (no BN: v2 blocks pre-activate) → 3×3/2 max-pool, SAME
  stage1  3 × bottleneck [BN-ReLU, shift, 1×1 64, BN-ReLU, 3×3 64, BN-ReLU, 1×1 256]
  stage2  4 × bottleneck [.., 1×1 128, .., 3×3 128 (/2 in the first), .., 1×1 512]
  stage3  6 × bottleneck [.., 1×1 256, .., 3×3 256 (/2), .., 1×1 1024]
  stage4  3 × bottleneck [.., 1×1 512, .., 3×3 512 (/2), .., 1×1 2048]
  final   BN-ReLU → mean over H, W per frame, then over T → ``pooled`` [B, 2048] (4096 for ×2)

The first block of each stage has a 1×1 (strided) projection shortcut without BN, applied to the
pre-activated input. BatchNorm: decay 0.9 (flax momentum 0.9), ε 1e-5, scale and offset. The
released model syncs BN statistics across replicas; under fakedet's jit over global arrays the
batch statistics already span the global batch. Parameters (convs have no bias; BN has scale +
bias):

  torchvision ResNet-50 v1 without fc                         23,508,032
  − stem BN (2·64)                                                  −128
  − projection-shortcut BNs 2·(256 + 512 + 1024 + 2048)           −7,680
  − each block's last BN (2·Cout) + its pre-activation BN (2·Cin):
      stage k: 2·(Cin of block 1 − Cout) = −384, −512, −1,024, −2,048  −3,968
  + final BN (2·2048)                                             +4,096
  = TSM-ResNet-50 v2                                           23,500,352

Of these, 45,440 are BN scales/biases and 9,408 the stem conv. ×2 (every width doubled, stem
included, as in MMV): convs other than the stem ×4 (4·23,445,504), stem ×2 (18,816), BN ×2
(90,880) = 93,891,712. The same body on a 1-channel log-mel (``resnet50_audio``): 23,494,080.
All three equal the released Haiku models' counts (``tests/test_import_mmv.py``).
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fakedet.models import MODELS

_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
PAPER_PARAMS = {"tsm_resnet50": 23_500_352, "tsm_resnet50x2": 93_891_712,
                "resnet50_audio": 23_494_080}


def temporal_shift(x: jax.Array, num_frames: int, fraction: float = 1 / 8) -> jax.Array:
  """TSM shift of frame-batched features ``[B·T, ..., C]`` (clips of ``num_frames`` frames,
  batch-major), in the released MMV layout, with ``n = int(C · fraction)``:

    out[..., :n]       = frame t+1's channels [C−n, C)   (zeros on the clip's last frame)
    out[..., n:C−n]    = frame t's channels  [n, C−n)    (unchanged)
    out[..., C−n:]     = frame t−1's channels [0, n)     (zeros on the clip's first frame)

  The shifted groups swap ends (a fixed channel permutation the next 1×1 conv absorbs); it is
  kept because the released weights were trained with it. ``n == 0`` (fewer than 1/fraction
  channels, only in tiny test models) returns ``x``.
  """
  shape = x.shape
  if shape[0] % num_frames:
    raise ValueError(f"temporal_shift: leading dim {shape[0]} is not a multiple of "
                     f"num_frames={num_frames}")
  if not 0.0 <= fraction <= 0.5:
    raise ValueError(f"temporal_shift: fraction={fraction} must be in [0, 1/2] (two groups of "
                     "that size are shifted)")
  c = shape[-1]
  n = int(c * fraction)
  if n == 0:
    return x
  y = x.reshape((shape[0] // num_frames, num_frames) + shape[1:])
  zeros = jnp.zeros_like(y[:, :1, ..., :n])
  from_next = jnp.concatenate([y[:, 1:, ..., c - n:], zeros], axis=1)  # t ← t+1
  from_prev = jnp.concatenate([zeros, y[:, :-1, ..., :n]], axis=1)  # t ← t−1
  return jnp.concatenate([from_next, y[..., n:c - n], from_prev], axis=-1).reshape(shape)


def _bn(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str) -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="SAME",
                 use_bias=False, kernel_init=_CONV_INIT, dtype=dtype, name=name)


class PreActBottleneck(nn.Module):
  """ResNet v2 bottleneck with an optional temporal shift after the pre-activation.

  [N, H, W, Cin] → [N, H / stride, W / stride, features]; N = B·T when ``num_frames`` > 0.
  """
  features: int
  stride: int = 1
  num_frames: int = 0  # 0: no temporal shift (audio / image use).
  shift_fraction: float = 1 / 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    bottleneck = max(1, self.features // 4)
    pre = nn.relu(_bn(train, self.dtype, "preact_bn")(x))
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = _conv(self.features, 1, self.stride, self.dtype, "proj_conv")(pre)
    else:
      shortcut = x
    y = temporal_shift(pre, self.num_frames, self.shift_fraction) if self.num_frames else pre
    y = _conv(bottleneck, 1, 1, self.dtype, "conv1")(y)
    y = nn.relu(_bn(train, self.dtype, "bn1")(y))
    y = _conv(bottleneck, 3, self.stride, self.dtype, "conv2")(y)
    y = nn.relu(_bn(train, self.dtype, "bn2")(y))
    y = _conv(self.features, 1, 1, self.dtype, "conv3")(y)
    return shortcut + y


class ResNetV2Body(nn.Module):
  """Stem + pre-activation bottleneck stages + final BN-ReLU on images ``[N, H, W, Cin]``.

  Attributes:
    stage_blocks: bottlenecks per stage; (3, 4, 6, 3) is ResNet-50.
    widths: output channels per stage at multiplier 1 (bottleneck = width / 4); stem = 64.
    width_multiplier: scales every width (2 = MMV's ×2; < 1 for tiny test / demo models).
    num_frames: frames per clip for the temporal shift; 0 disables it.
  """
  stage_blocks: Sequence[int] = (3, 4, 6, 3)
  widths: Sequence[int] = (256, 512, 1024, 2048)
  stem_width: int = 64
  width_multiplier: float = 1.0
  num_frames: int = 0
  shift_fraction: float = 1 / 8
  dtype: Any = jnp.float32

  def _scaled(self, w: int) -> int:
    return max(4, int(round(w * self.width_multiplier)))

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if len(self.widths) != len(self.stage_blocks):
      raise ValueError(f"widths {tuple(self.widths)} and stage_blocks "
                       f"{tuple(self.stage_blocks)} must have the same length")
    dtype = jnp.dtype(self.dtype)
    x = _conv(self._scaled(self.stem_width), 7, 2, dtype, "stem_conv")(x.astype(dtype))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for s, (num_blocks, width) in enumerate(zip(self.stage_blocks, self.widths)):
      for b in range(num_blocks):
        stride = 2 if (s > 0 and b == 0) else 1
        x = PreActBottleneck(self._scaled(width), stride, self.num_frames, self.shift_fraction,
                             dtype, name=f"stage{s + 1}_block{b + 1}")(x, train=train)
      self.sow("intermediates", f"stage{s + 1}", x)
    return nn.relu(_bn(train, dtype, "final_bn")(x))


class TSMResNet(nn.Module):
  """TSM-ResNet-50 (v2) video backbone; ``width_multiplier=2`` is MMV's TSM-ResNet-50×2."""
  stage_blocks: Sequence[int] = (3, 4, 6, 3)
  width_multiplier: float = 1.0
  shift_fraction: float = 1 / 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, video: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Video [B, T, H, W, 3] (floats; the released MMV weights expect RGB in [0, 1]) → dict of

      feature_map: [B, T, H/32, W/32, D] last-stage map after the final BN-ReLU;
      frames: [B, T, D] spatially averaged per frame;
      pooled: [B, D] averaged over time and space (one vector per clip);
    with D = 2048 · width_multiplier (2048 at paper size, 4096 for ×2).
    """
    if video.ndim != 5:
      raise ValueError(f"expected video [B, T, H, W, C]; got shape {video.shape}")
    b, t = video.shape[:2]
    x = video.reshape((b * t,) + video.shape[2:])
    x = ResNetV2Body(self.stage_blocks, width_multiplier=self.width_multiplier, num_frames=t,
                     shift_fraction=self.shift_fraction, dtype=self.dtype, name="body")(
                         x, train=train)
    fmap = x.reshape((b, t) + x.shape[1:]).astype(jnp.float32)
    frames = jnp.mean(fmap, axis=(2, 3))
    return {"feature_map": fmap, "frames": frames, "pooled": jnp.mean(frames, axis=1)}


MODELS.register("tsm_resnet")(TSMResNet)

"""Image ResNet with torchvision's layout: the PCL backbone (PCL + I2G §4.1, ResNet-34).

PCL starts from an ImageNet-pretrained torchvision ResNet-34, so this module keeps torchvision's
structure, padding and BatchNorm constants exactly: a converted state dict
(``fakedet.importers.torchvision_resnet``) then gives the same features as torch. At 256 px:

  conv1    7×7/2, 64 + bn1 + relu     128×128
  maxpool  3×3/2, pad 1                64×64
  layer1   BasicBlock ×3, 64           64×64    → stage1  (H/4)
  layer2   BasicBlock ×4, 128, /2      32×32    → stage2  (H/8)
  layer3   BasicBlock ×6, 256, /2      16×16    → stage3  (H/16)  = ``features`` for PCL
  layer4   BasicBlock ×3, 512, /2       8×8     → stage4  (H/32)

The paper's wording is ambiguous: "ResNet-34 with an extra 3×3 max pooling after the conv1
layer", features "after the conv3 layer of size H′×W′×256, where H′ = H/16". Only one reading
gives both 256 channels and H/16: the max-pool is torchvision's own (He et al. list it inside
conv2_x, hence perhaps "extra"; conv1 /2, maxpool /2, layer2 /2, layer3 /2 = /16) and "conv3"
is torchvision's layer3 (He et al.'s conv4_x). A second max-pool would put layer3 at H/32 (8×8
at 256 px), and He et al.'s conv3_x (torchvision's layer2, H/8) has 128 channels. So nothing is
added here and ``feature_stage`` = 3.

Padding is explicit and torch-style (3 for 7×7, 1 for 3×3, -inf for the pool), not "SAME",
which differs from torch on even inputs. The residual blocks are ``resnet_audio.BasicBlock``
(the same block, square strides here). 21,284,672 parameters at full size (torchvision's
resnet34 without fc).
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fakedet.models import MODELS
from fakedet.models.resnet_audio import BasicBlock

# He init on fan-out, as torchvision initialises ResNet convolutions.
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ResNet2D(nn.Module):
  """torchvision-layout ResNet of BasicBlocks; the defaults are ResNet-34.

  Attributes:
    stage_blocks: BasicBlocks per stage; (3, 4, 6, 3) is ResNet-34, (2, 2, 2, 2) ResNet-18.
      Fewer entries build fewer stages (e.g. 3 for a backbone that stops at ``features``).
    widths: channels per stage at multiplier 1; the stem uses ``widths[0]``.
    width_multiplier: scales every width (tiny test / demo models; 1.0 loads torchvision).
    feature_stage: which stage's output is returned as ``features`` (3: PCL's H/16 × 256 map).
    dtype: computation dtype (a jnp dtype or its name, e.g. "bfloat16"); params stay float32.
  """
  stage_blocks: Sequence[int] = (3, 4, 6, 3)
  widths: Sequence[int] = (64, 128, 256, 512)
  width_multiplier: float = 1.0
  feature_stage: int = 3
  dtype: Any = jnp.float32

  def _widths(self) -> Tuple[int, ...]:
    if len(self.widths) < len(self.stage_blocks):
      raise ValueError(f"widths {tuple(self.widths)} name fewer stages than stage_blocks "
                       f"{tuple(self.stage_blocks)}")
    if not 1 <= self.feature_stage <= len(self.stage_blocks):
      raise ValueError(f"feature_stage={self.feature_stage} but only "
                       f"{len(self.stage_blocks)} stages are built")
    return tuple(max(1, int(round(w * self.width_multiplier)))
                 for w in self.widths[:len(self.stage_blocks)])

  @nn.compact
  def __call__(self, image: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Normalised image [B, H, W, 3] → dict of

      stage{s}: [B, H/2^(s+1), W/2^(s+1), C_s] for each built stage s = 1.. (H/4 .. H/32;
        exact for H, W divisible by 32, rounded up otherwise), C_s = widths[s-1] scaled;
      features: stage{feature_stage} (PCL: [B, H/16, W/16, 256]);
      pooled: [B, C_last] global average of the last stage (what torchvision's fc reads).
    """
    if image.ndim != 4:
      raise ValueError(f"expected images [B, H, W, C]; got shape {image.shape}")
    dtype = jnp.dtype(self.dtype)
    widths = self._widths()
    x = nn.Conv(widths[0], (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                kernel_init=_CONV_INIT, dtype=dtype, name="conv1")(image.astype(dtype))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                     name="bn1")(x)
    x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    out = {}
    for s, (num_blocks, width) in enumerate(zip(self.stage_blocks, widths)):
      for b in range(num_blocks):
        stride = (2, 2) if (s > 0 and b == 0) else (1, 1)
        # Named as torchvision's ``layer{s}.{b}`` so the importer's mapping reads one-to-one.
        x = BasicBlock(width, stride, dtype, name=f"layer{s + 1}_{b}")(x, train=train)
      out[f"stage{s + 1}"] = x
    out["features"] = out[f"stage{self.feature_stage}"]
    out["pooled"] = jnp.mean(x, axis=(1, 2))
    return out


MODELS.register("resnet34")(ResNet2D)

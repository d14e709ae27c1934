"""torchvision ResNet (BasicBlock) state dict → ``fakedet.models.resnet2d.ResNet2D`` variables.

PCL (§4.1) initialises its ResNet-34 backbone from ImageNet weights; those are published as a
torchvision state dict. The lead's loader reads the file into ``{name: numpy array}``; this
module only renames and transposes:

  conv1.weight                          → params conv1/kernel
  bn1.{weight,bias}                     → params bn1/{scale,bias}
  bn1.{running_mean,running_var}        → batch_stats bn1/{mean,var}
  layer{s}.{b}.conv{1,2}.weight         → params layer{s}_{b}/conv{1,2}/kernel
  layer{s}.{b}.bn{1,2}.*                → layer{s}_{b}/bn{1,2}/... (as bn1)
  layer{s}.{b}.downsample.0.weight      → params layer{s}_{b}/proj_conv/kernel
  layer{s}.{b}.downsample.1.*           → layer{s}_{b}/proj_bn/... (as bn1)

Deliberately dropped: ``fc.*`` (PCL has its own heads), every ``num_batches_tracked`` (torch's
BN counter; flax's BN uses a fixed momentum) and the stages a shorter ``stage_blocks`` does not
build. The result is the root variables of a ResNet2D; inside PCL they go under "backbone".
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import numpy as np

from fakedet.importers import Tensors, conv, nest

_WIDTHS = (64, 128, 256, 512)  # torchvision's BasicBlock ResNets, stem included


def _read_bn(t: Tensors, src: str, dst: str, width: int, params: Dict[str, np.ndarray],
             stats: Dict[str, np.ndarray]) -> None:
  params[f"{dst}/scale"] = t.get(f"{src}.weight", (width,))
  params[f"{dst}/bias"] = t.get(f"{src}.bias", (width,))
  stats[f"{dst}/mean"] = t.get(f"{src}.running_mean", (width,))
  stats[f"{dst}/var"] = t.get(f"{src}.running_var", (width,))


def _read_conv(t: Tensors, src: str, dst: str, shape_oihw: Sequence[int],
               params: Dict[str, np.ndarray]) -> None:
  params[f"{dst}/kernel"] = conv(t.get(f"{src}.weight", tuple(shape_oihw)))


def _read_block(t: Tensors, src: str, dst: str, cin: int, width: int, projected: bool,
                params: Dict[str, np.ndarray], stats: Dict[str, np.ndarray]) -> None:
  """One BasicBlock; ``projected`` when its shortcut is a 1×1 conv + BN (``downsample``)."""
  _read_conv(t, f"{src}.conv1", f"{dst}/conv1", (width, cin, 3, 3), params)
  _read_bn(t, f"{src}.bn1", f"{dst}/bn1", width, params, stats)
  _read_conv(t, f"{src}.conv2", f"{dst}/conv2", (width, width, 3, 3), params)
  _read_bn(t, f"{src}.bn2", f"{dst}/bn2", width, params, stats)
  if projected:
    _read_conv(t, f"{src}.downsample.0", f"{dst}/proj_conv", (width, cin, 1, 1), params)
    _read_bn(t, f"{src}.downsample.1", f"{dst}/proj_bn", width, params, stats)


def convert(tensors: Mapping[str, np.ndarray], stage_blocks: Sequence[int] = (3, 4, 6, 3),
            source: str = "torchvision ResNet state dict") -> Dict[str, Dict]:
  """``{torchvision name: array}`` → ``{"params": ..., "batch_stats": ...}`` of
  ``ResNet2D(stage_blocks=stage_blocks)`` at width multiplier 1 (float32 numpy leaves).

  Raises ``WeightsError`` naming every missing, mis-shaped and unexpected tensor at once (a
  checkpoint of another depth shows up as missing or unexpected ``layer*`` names).
  """
  if not 1 <= len(stage_blocks) <= len(_WIDTHS):
    raise ValueError(f"stage_blocks {tuple(stage_blocks)}: 1 to {len(_WIDTHS)} stages")
  t = Tensors(tensors, source)
  t.ignore("fc.", "num_batches_tracked")
  unbuilt: List[str] = [f"layer{s + 1}." for s in range(len(stage_blocks), len(_WIDTHS))]
  if unbuilt:
    t.ignore(*unbuilt)
  params: Dict[str, np.ndarray] = {}
  stats: Dict[str, np.ndarray] = {}
  _read_conv(t, "conv1", "conv1", (_WIDTHS[0], 3, 7, 7), params)
  _read_bn(t, "bn1", "bn1", _WIDTHS[0], params, stats)
  cin = _WIDTHS[0]
  for s, (num_blocks, width) in enumerate(zip(stage_blocks, _WIDTHS)):
    for b in range(num_blocks):
      # torchvision projects the shortcut exactly when the block strides or widens: the first
      # block of every stage but layer1 (ResNet2D's BasicBlock uses the same rule).
      projected = b == 0 and (s > 0 or cin != width)
      _read_block(t, f"layer{s + 1}.{b}", f"layer{s + 1}_{b}", cin, width, projected, params,
                  stats)
      cin = width
  t.finish(f"a torchvision ResNet with stage_blocks {tuple(stage_blocks)}")
  return {"params": nest(params), "batch_stats": nest(stats)}

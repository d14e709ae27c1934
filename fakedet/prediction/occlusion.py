"""Occlusion sensitivity (RealForensics appendix C, after Zeiler & Fergus): where does the
detector look?

A square patch (40×40 px of a 112 px input in the paper, i.e. ``PATCH_FRACTION`` of the input
side) covers the same place in every frame of a clip; it slides over the frame in steps of
``stride``. Each occluded clip is scored; a pixel's value is the mean, over the patch positions
that cover it, of the fake-probability DROP (clean − occluded): high where hiding the pixels
removes forgery evidence. The map, clipped at 0 and divided by its largest absolute value, is
overlaid on the clip's first frame.

The paper's occluder is random erasing; we fill the patch with the clip's own mean colour instead,
so the result is deterministic and the occluder adds no texture of its own.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import cv2
import numpy as np
from etils import epath

PATCH_FRACTION = 40 / 112


def positions(size: int, patch: int, stride: int) -> List[int]:
  """Patch starts along one side: every ``stride`` px, plus one flush with the far edge so every
  pixel is covered."""
  if not 0 < patch <= size or stride < 1:
    raise ValueError(f"occlusion patch {patch} px must be in [1, {size}] and stride {stride} >= 1")
  starts = list(range(0, size - patch + 1, stride))
  if starts[-1] + patch < size:
    starts.append(size - patch)
  return starts


def patch_size(side: int, fraction: float) -> int:
  return int(min(side, max(1, round(fraction * side))))


def occluded(example: Dict[str, Any], key: str, patch: int, stride: int,
             ) -> Tuple[List[Dict[str, Any]], List[Tuple[int, int]]]:
  """One copy of ``example`` per patch position with ``example[key]`` ([T, H, W, C]) covered
  there by the clip's mean colour; returns (examples, (y, x) corners)."""
  x = np.asarray(example[key])
  if x.ndim != 4:
    raise ValueError(f"occlusion needs {key!r} as [T, H, W, C], got shape {x.shape}")
  h, w = x.shape[1:3]
  fill = x.reshape(-1, x.shape[-1]).astype(np.float64).mean(0)
  fill = np.round(fill).astype(x.dtype) if x.dtype.kind in "iu" else fill.astype(x.dtype)
  out, corners = [], []
  for y in positions(h, patch, stride):
    for x0 in positions(w, patch, stride):
      covered = x.copy()
      covered[:, y:y + patch, x0:x0 + patch] = fill
      out.append({**example, key: covered})
      corners.append((y, x0))
  return out, corners


def drop_map(clean: float, occluded_probs, corners, patch: int, shape) -> np.ndarray:
  """float32 [H, W]: per pixel, the mean of (clean − occluded) fake probability over the patch
  positions covering it."""
  total = np.zeros(shape, np.float64)
  count = np.zeros(shape, np.float64)
  for p, (y, x) in zip(np.asarray(occluded_probs, np.float64), corners):
    total[y:y + patch, x:x + patch] += clean - p
    count[y:y + patch, x:x + patch] += 1
  return (total / np.maximum(count, 1)).astype(np.float32)


def overlay(frame: np.ndarray, drop: np.ndarray, min_side: int = 224) -> np.ndarray:
  """uint8 [k·H, 2·k·W, 3] RGB: the frame, and the frame with the normalised map in JET
  colours, side by side; k is the smallest integer making the shorter side ≥ ``min_side``."""
  frame = np.asarray(frame)
  if frame.dtype != np.uint8:  # A float model input: rescale its range for display.
    f = frame.astype(np.float64)
    frame = np.round(255 * (f - f.min()) / max(f.max() - f.min(), 1e-12)).astype(np.uint8)
  if frame.shape[-1] == 1:
    frame = np.repeat(frame, 3, -1)
  h, w = frame.shape[:2]
  k = max(1, -(-min_side // min(h, w)))
  big = cv2.resize(frame, (k * w, k * h), interpolation=cv2.INTER_CUBIC)
  # Divided by the largest change either way: a map whose only positive values are noise next
  # to large negative ones (occlusion made the clip look MORE fake) stays faint instead of being
  # stretched to full colour.
  scale = float(np.abs(drop).max())
  heat = np.clip(drop, 0, None) / scale if scale > 0 else np.zeros_like(drop)
  heat = cv2.resize(heat.astype(np.float32), (k * w, k * h), interpolation=cv2.INTER_LINEAR)
  colour = cv2.applyColorMap(np.round(255 * heat).astype(np.uint8), cv2.COLORMAP_JET)
  colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
  alpha = 0.6 * heat[..., None]  # Transparent where the occlusion changed nothing.
  blended = np.round((1 - alpha) * big + alpha * colour).astype(np.uint8)
  return np.concatenate([big, blended], axis=1)

"""Where a detector looks: its ``objective.maps`` images on a few evaluation clips, as PNGs.

Methods with a localisation output (PCL's consistency heatmap, RFFR's residual) say why a clip
scored as it did; a report of AUCs cannot. The evaluator writes, for the first ``per_class``
clips of every class of the eval split (reals and each manipulation, in the split's
deterministic clip order), the frame next to each map over it: ``maps/<class>_<k>_<name>.png``
and the same pictures in TensorBoard. The clips are built on every host from the index (no
data crosses hosts) and scored by one jitted call whose outputs are replicated, so the call is
the same collective on every host; only process 0 writes.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import cv2
import jax
import numpy as np
from etils import epath

from fakedet import sharding as sharding_lib
from fakedet.evaluation import scoring
from input_pipeline import pipeline


def pick_items(items: Sequence[Tuple[int, int]], index: Mapping[str, Sequence],
               per_class: int) -> List[Tuple[str, Tuple[int, int]]]:
  """(class name, item) for the first ``per_class`` items of each class ("real" or the
  manipulation), in item order."""
  taken: Dict[str, int] = {}
  out = []
  for item in items:
    label = int(index["label"][item[0]])
    name = "real" if label == 0 else str(index["manipulation"][item[0]])
    if taken.get(name, 0) < per_class:
      taken[name] = taken.get(name, 0) + 1
      out.append((name, item))
  return out


def overlay(frame: np.ndarray, value: np.ndarray, min_side: int = 224) -> np.ndarray:
  """uint8 [k·H, 2·k·W, 3]: the frame beside the map, k making the shorter side ≥
  ``min_side``. A one-channel map [H, W] in [0, 1] is drawn over the frame in JET colours and
  NOT rescaled, so two maps compare by colour; a three-channel map [H, W, 3] in [0, 1] is an
  image (RFFR's reconstruction) and is shown as it is."""
  frame = np.asarray(frame, np.uint8)
  value = np.asarray(value, np.float32)
  h, w = frame.shape[:2]
  k = max(1, -(-min_side // min(h, w)))
  big = cv2.resize(frame, (k * w, k * h), interpolation=cv2.INTER_CUBIC)
  if value.ndim == 3:
    image = np.round(255 * np.clip(value, 0.0, 1.0)).astype(np.uint8)
    return np.concatenate([big, cv2.resize(image, (k * w, k * h),
                                           interpolation=cv2.INTER_CUBIC)], axis=1)
  heat = cv2.resize(np.clip(value, 0.0, 1.0), (k * w, k * h), interpolation=cv2.INTER_LINEAR)
  colour = cv2.cvtColor(cv2.applyColorMap(np.round(255 * heat).astype(np.uint8),
                                          cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
  blended = np.round(0.5 * big + 0.5 * colour).astype(np.uint8)
  return np.concatenate([big, blended], axis=1)


def write_png(path: str, image: np.ndarray) -> None:
  """RGB uint8 image → PNG at ``path`` (local or ``gs://``; missing folders are made)."""
  ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
  if not ok:
    raise OSError(f"could not encode {path}")
  target = epath.Path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_bytes(data.tobytes())


def _maps_step(state, batch, *, objective):
  return objective.maps(state, batch)


def compute(detector, batch: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """``objective.maps`` of a host batch that is the same on every host (replicated in and
  out: the batch is a handful of clips)."""
  fn = jax.jit(functools.partial(_maps_step, objective=detector.objective),
               in_shardings=(detector.shardings, sharding_lib.replicated(detector.mesh)),
               out_shardings=sharding_lib.replicated(detector.mesh))
  keys = tuple(detector.objective.eval_keys)
  return jax.device_get(fn(detector.state, {k: np.asarray(batch[k]) for k in keys}))


def write(detector, icfg, outputs, per_class: int = 2) -> List[str]:
  """Maps of the first ``per_class`` eval clips of each class → ``outputs`` (module
  docstring). Returns the PNG names (empty when the objective has no maps)."""
  source, items = scoring.eval_items(icfg)
  chosen = pick_items(items, source.index, per_class)
  if not chosen:
    return []
  batch = pipeline.eval_batch(icfg, source, [item for _, item in chosen])
  images = compute(detector, batch)
  if not images:
    return []
  names = []
  counts: Dict[str, int] = {}
  for row, (cls, _) in enumerate(chosen):
    counts[cls] = counts.get(cls, 0) + 1
    frame = batch["video"][row, 0]
    for name, values in sorted(images.items()):
      png = f"{cls}_{counts[cls]}_{name}.png"
      picture = overlay(frame, values[row])
      if outputs.active:
        write_png(outputs.path(f"maps/{png}"), picture)
        if outputs.writer:
          outputs.writer.write_images(outputs.step, {f"maps/{cls}_{counts[cls]}/{name}":
                                                     picture[None]})
      names.append(png)
  return names

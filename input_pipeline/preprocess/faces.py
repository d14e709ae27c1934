"""Per-frame face detections: MTCNN (weights ship in its wheel) or landmarks supplied in a file.

Every source produces the same thing per frame, a ``Detections``: boxes, scores and five points
in the order of ``POINTS`` (image-left eye first). Alignment only needs those five points, so
tracking and alignment never depend on which detector ran.

Why MTCNN (PyPI ``mtcnn==1.0.0``, TensorFlow, already a dependency): it is the only maintained
detector found whose model files ship inside the package and that installs beside this stack
without changing a pinned version (FakeOut uses it for its boxes too). MediaPipe >= 0.10.30 ships
no models (its Tasks API downloads them) and pulls ``opencv-contrib-python``, which clashes with
``opencv-python-headless``; MediaPipe 0.10.21 (the last with bundled models) pins numpy < 2,
protobuf 4 and jax 0.7.1. OpenCV 5 dropped the Haar cascades. See docs/preprocessing.md.

User landmark files (``load_landmarks``): ``.npy`` or ``.json`` holding an array
``[T, K, 2]`` (one face) or ``[T, F, K, 2]`` (up to F faces per frame) of (x, y) pixel
coordinates in the *source* video's upright frame size, one row per output frame (25 fps), NaN (JSON:
``null``) where a face is absent; ``K`` is 68 (iBUG 300-W order, e.g. FAN / dlib) or 5
(``POINTS`` order). A JSON file may also be ``{"landmarks": <array>}``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import List, Optional

import cv2
import numpy as np
from etils import epath

POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")  # Image-left first.
STABLE = (0, 1, 2)  # Eyes and nose: they move least with expression and speech.
MOUTH = (3, 4)


@dataclasses.dataclass
class Detections:
  """Faces found in one frame. boxes: float [K, 4] (x1, y1, x2, y2) px; scores: [K];
  points: [K, 5, 2] (x, y) px in ``POINTS`` order; landmarks68: [K, 68, 2] or None."""
  boxes: np.ndarray
  scores: np.ndarray
  points: np.ndarray
  landmarks68: Optional[np.ndarray] = None

  @staticmethod
  def empty() -> "Detections":
    return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                      np.zeros((0, 5, 2), np.float32))

  def __len__(self) -> int:
    return len(self.boxes)


def five_from_68(lm: np.ndarray) -> np.ndarray:
  """[..., 68, 2] iBUG landmarks → [..., 5, 2] ``POINTS`` (eye centres, nose tip, mouth corners)."""
  lm = np.asarray(lm, np.float32)
  return np.stack([lm[..., 36:42, :].mean(-2), lm[..., 42:48, :].mean(-2), lm[..., 30, :],
                   lm[..., 48, :], lm[..., 54, :]], axis=-2)


def box_from_points(points: np.ndarray) -> np.ndarray:
  """A face box around landmarks: their extent grown so it covers brows to chin (x1, y1, x2, y2).

  Only tracking uses it (IoU between frames), so a consistent box matters more than a tight one.
  """
  lo, hi = points.min(-2), points.max(-2)
  size = (hi - lo).max(-1, keepdims=True)
  centre = (lo + hi) / 2
  return np.concatenate([centre - 0.9 * size, centre + 0.9 * size], -1)


def enlarge_box(boxes: np.ndarray, scale: float = 1.8) -> np.ndarray:
  """FakeOut's face window around detector boxes [N, 4] (x1, y1, x2, y2) → int64 [N, 4].

  Their rule (gilikn/FacePipe ``modify_bounding_box``, FakeOut appendix D step 1): a square of
  side ``scale`` × the box's longer side, about the box centre; centre and half side are
  truncated to whole pixels as Python's ``int`` does. Not clipped to the frame (the caller
  knows the frame).
  """
  b = np.asarray(boxes, np.float64).reshape(-1, 4)
  w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
  cx, cy = np.trunc(b[:, 0] + w / 2), np.trunc(b[:, 1] + h / 2)
  half = np.trunc(scale * np.maximum(w, h) / 2)
  return np.stack([cx - half, cy - half, cx + half, cy + half], -1).astype(np.int64)


# ----------------------------------------------------------------------------- user landmarks
def load_landmarks(path: str) -> np.ndarray:
  """Reads a landmark file (format in the module docstring; local or ``gs://``) → float32
  [T, F, K, 2]."""
  if path.endswith(".npy"):
    with epath.Path(path).open("rb") as f:
      arr = np.load(f)
  elif path.endswith(".json"):
    obj = json.loads(epath.Path(path).read_text())
    if isinstance(obj, dict):
      obj = obj["landmarks"]
    arr = np.array(_nulls_to_nan(obj), np.float32)
  else:
    raise ValueError(f"{path}: landmark files must be .npy or .json")
  arr = np.asarray(arr, np.float32)
  if arr.ndim == 3:
    arr = arr[:, None]
  if arr.ndim != 4 or arr.shape[-1] != 2 or arr.shape[2] not in (5, 68):
    raise ValueError(f"{path}: landmarks must be [T, K, 2] or [T, F, K, 2] with K in (5, 68), "
                     f"got {arr.shape}")
  return arr


def _nulls_to_nan(obj):
  if obj is None:
    return float("nan")
  if isinstance(obj, list):
    return [_nulls_to_nan(o) for o in obj]
  return obj


def detections_from_landmarks(landmarks: np.ndarray, num_frames: int,
                              scale: float = 1.0) -> List[Detections]:
  """Per-frame ``Detections`` from a ``load_landmarks`` array (``scale``: decode downscaling).

  A file with fewer rows than the video leaves the remaining frames empty; extra rows are
  ignored (a few frames of disagreement are common between tools' frame counts).
  """
  out = []
  for t in range(num_frames):
    if t >= len(landmarks):
      out.append(Detections.empty())
      continue
    faces = landmarks[t] * scale
    present = np.isfinite(faces).all(axis=(1, 2))
    faces = faces[present]
    lm68 = faces if faces.shape[1] == 68 else None
    points = five_from_68(faces) if lm68 is not None else faces
    out.append(Detections(box_from_points(faces).astype(np.float32),
                          np.ones(len(faces), np.float32), points.astype(np.float32), lm68))
  return out


# ----------------------------------------------------------------------------- MTCNN
class MtcnnDetector:
  """MTCNN boxes + five points, run on frames downscaled to ``max_side`` in small batches.

  Args:
    max_side: detection runs on frames whose longer side is at most this (px); faces much
      smaller than ``min_face_size`` px there are missed. Coordinates come back in full size.
    every: detect on every ``every``-th frame only; tracking interpolates the frames between.
    batch_size: frames per MTCNN call (batching amortises TensorFlow's per-call overhead).
  """

  def __init__(self, max_side: int = 400, every: int = 1, batch_size: int = 16,
               min_face_size: int = 20, min_score: float = 0.9):
    try:
      from mtcnn import MTCNN  # Optional [faces] extra; imports TensorFlow (seconds, ~0.5 GB).
    except ImportError as e:
      raise ImportError("face detection needs the optional dependency mtcnn: "
                        "pip install -e '.[faces]' (or supply landmark files)") from e
    self.model = MTCNN(device="CPU:0")
    self.max_side, self.every, self.batch_size = max_side, max(1, every), batch_size
    self.min_face_size, self.min_score = min_face_size, min_score

  def __call__(self, frames: np.ndarray) -> List[Detections]:
    """frames: uint8 [T, H, W, 3] RGB → one ``Detections`` per frame (empty on skipped frames)."""
    t, h, w = frames.shape[:3]
    s = min(1.0, self.max_side / max(h, w))
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    picked = list(range(0, t, self.every))
    out = [Detections.empty() for _ in range(t)]
    for b in range(0, len(picked), self.batch_size):
      idx = picked[b:b + self.batch_size]
      small = [cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA) if s < 1 else frames[i]
               for i in idx]
      rows = np.asarray(self.model.detect_faces(small, box_format="xyxy", output_type="numpy",
                                                min_face_size=self.min_face_size), np.float64)
      for j, i in enumerate(idx):
        out[i] = self._to_detections(rows[rows[:, 0] == j] if rows.size else rows, s)
    return out

  def _to_detections(self, rows: np.ndarray, s: float) -> Detections:
    """MTCNN's numpy rows: image, x1, y1, x2, y2, score, then the x of the five points in
    ``POINTS`` order and their y (read from mtcnn 1.0.0's ``parse_landmarks``). Its JSON output
    rounds points to whole pixels of the downscaled frame, hence the numpy path."""
    rows = rows.reshape(-1, 16)
    rows = rows[rows[:, 5] >= self.min_score]
    if not len(rows):
      return Detections.empty()
    points = np.stack([rows[:, 6:11], rows[:, 11:16]], -1) / s
    # "left_eye" is the image-left one, as in POINTS; sort anyway so that a mirrored convention
    # in another version cannot flip the alignment.
    swap = points[:, 0, 0] > points[:, 1, 0]
    points[swap] = points[swap][:, [1, 0, 2, 4, 3]]
    return Detections((rows[:, 1:5] / s).astype(np.float32), rows[:, 5].astype(np.float32),
                      points.astype(np.float32))


def set_single_thread(tensorflow: bool = True):
  """One thread for OpenCV (and TensorFlow): the runner parallelises over videos instead.

  Call before the first TensorFlow op; ``tensorflow=False`` leaves TF unimported (a landmark-file
  run never needs its 5 s import and 0.5 GB per worker).
  """
  cv2.setNumThreads(1)
  if not tensorflow:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import tensorflow as tf  # Heavy: only MTCNN runs need it (see above).
  try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
  except RuntimeError:  # TF already initialised in this process: keep its thread pools.
    pass

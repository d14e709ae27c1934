"""Paired reals: the real clip a dataset fake was made from, aligned onto the fake's crop.

PCL + I2G §4.2 labels the pixels of a dataset's own fakes by their DSSIM to the same frame of
the real video the fake was made from (``i2g.dssim_mask``); this module finds that frame. A fake
record names its real in ``original`` (the real's ``video_id``; the corpus readers, the
preprocessor and the synthetic generator set it), and the split's index maps that name to a
record without decoding anything. A fake whose real is in another split, or was never
preprocessed, has no pair here: ``real_clip`` returns None and the caller decides.

Preprocessing aligned the fake and the real separately (each from its own detected, smoothed
landmarks), so their crops can be offset by a few pixels, and a misaligned pair differs
everywhere, not only where the fake was manipulated. A face swap or a reenactment keeps the
target's head pose, so the two frames' 68 landmarks correspond, and the least-squares similarity
between them (``i2g.similarity_transform``) maps the real crop onto the fake's. A similarity that
moves no pixel of the frame by ``min_shift`` px or more is not applied: that is within the
landmarks' own noise, and on a swap the fake's landmarks follow the donor's face shape (on the
synthetic autoencoder swaps, whose crops are identical to their reals', the fit moves the frame
corners by 1.0–1.4 px at 96 px), so resampling by it would only blur and shift the real frame,
which DSSIM reads as a difference (IoU with the true mask fell from 0.69 to 0.55 at 1 px).

What landmarks cannot correct: preprocessing aligned a swap's crop by the swapped face's own eyes
and nose, so in crop coordinates those agree with the real's even where the backgrounds are
offset, and only the points the swap leaves alone (the jaw line) carry the offset. Registering
the unmanipulated background (e.g. ECC outside the face hull) would; it is not done here.

Grain pickles the map functions that hold a ``PairedReals`` into every worker: it keeps the
source (which reopens its shards there) and one dict of record numbers, never decoded frames.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from input_pipeline import i2g, records

MIN_SHIFT = 1.5  # px; see the module docstring.


class PairedReals:
  """For each fake record of a split, its real record and the aligned real frames.

  Args:
    source: a ``sources.ClipSource`` (anything with its ``index``, ``where(i)`` and ``[i]``
      returning raw parsed records).
    min_shift: the smallest warp (max pixel displacement over the frame) worth resampling for.
  """

  def __init__(self, source: Any, min_shift: float = MIN_SHIFT):
    self.source = source
    self.min_shift = float(min_shift)
    index = source.index
    # video_id → {track_id: record number}, reals only: what a fake's `original` names.
    self._reals: Dict[str, Dict[int, int]] = {}
    for i, (vid, track, label) in enumerate(zip(index["video_id"], index["track_id"],
                                                index["label"])):
      if int(label) == 0:
        self._reals.setdefault(vid, {})[int(track)] = i

  def real_index(self, fake_index: int) -> Optional[int]:
    """The record number of the real that fake ``fake_index`` was made from, or None (a real,
    a fake without ``original``, or one whose real is not in this split).

    The real's face track with the fake's ``track_id``; else its track 0, or its only track.
    """
    index = self.source.index
    original = index["original"][fake_index]
    tracks = self._reals.get(original) if original else None
    if not tracks:
      return None
    for track in (int(index["track_id"][fake_index]), 0):
      if track in tracks:
        return tracks[track]
    return next(iter(tracks.values())) if len(tracks) == 1 else None

  def real_clip(self, fake_index: int, start: int, num_frames: int, *,
                fake: Optional[Mapping[str, Any]] = None) -> Optional[np.ndarray]:
    """Frames ``[start, start + num_frames)`` of the fake's real, aligned onto the fake's crop.

    Args:
      fake_index: record number of the fake in the source.
      start, num_frames: the fake's clip window (must lie inside the fake).
      fake: the fake's raw record if the caller has already read it (saves a read and a parse).
    Returns:
      uint8 [num_frames, H, W, 3] at the fake's frame size, or None when the fake has no pair
      here or its real is shorter than the window (a frame past the real's end would be another
      moment of the video, and its DSSIM would flag the whole face).
    """
    index = self.source.index
    length = int(index["num_frames"][fake_index])
    if start < 0 or num_frames < 1 or start + num_frames > length:
      raise ValueError(f"{self.source.where(fake_index)}: frames [{start}, {start + num_frames})"
                       f" requested; the record has {length} frames")
    j = self.real_index(fake_index)
    if j is None or start + num_frames > int(index["num_frames"][j]):
      return None
    fake = self.source[fake_index] if fake is None else fake
    real = self.source[j]
    window = range(start, start + num_frames)
    shape = records.decode_frames(fake, [start]).shape[1:3]
    return align_frames(records.decode_frames(real, window), _window(real, window),
                        _window(fake, window), shape, self.min_shift)

  def __repr__(self):
    return f"PairedReals({self.source!r}, {len(self._reals)} real videos)"


def _window(raw: Mapping[str, Any], window: range) -> Optional[np.ndarray]:
  lms = raw.get("landmarks")
  return None if lms is None else np.asarray(lms)[window.start:window.stop]


def align_frames(frames: np.ndarray, real_lms: Optional[np.ndarray],
                 fake_lms: Optional[np.ndarray], shape: Sequence[int],
                 min_shift: float = MIN_SHIFT) -> np.ndarray:
  """Warps real frames uint8 [T, h, w, 3] onto the fake's frames of ``shape`` (H, W).

  Per frame, the least-squares similarity from the real's landmarks to the fake's ([T, 68, 2]
  each, or None: then the frames are only resized to ``shape`` when their size differs).
  """
  h, w = int(shape[0]), int(shape[1])
  out = np.empty((len(frames), h, w, 3), np.uint8)
  for t, frame in enumerate(frames):
    m = None
    if real_lms is not None and fake_lms is not None:
      m = _similarity(real_lms[t], fake_lms[t])
    out[t] = _warp(frame, m, (h, w), min_shift)
  return out


def _similarity(real_lms: np.ndarray, fake_lms: np.ndarray) -> Optional[np.ndarray]:
  """The 2×3 real → fake similarity, or None for landmarks it cannot use (missing/degenerate)."""
  if not (np.isfinite(real_lms).all() and np.isfinite(fake_lms).all()):
    return None
  with np.errstate(divide="ignore", invalid="ignore"):
    m = i2g.similarity_transform(real_lms, fake_lms)
  return m if np.isfinite(m).all() else None


def max_shift(m: np.ndarray, shape: Tuple[int, int]) -> float:
  """The largest displacement (px) the 2×3 affine ``m`` gives a pixel of an (H, W) frame.

  The displacement is affine in the position, so its norm peaks at a corner.
  """
  h, w = shape
  corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64)
  moved = corners @ m[:, :2].T + m[:, 2]
  return float(np.linalg.norm(moved - corners, axis=1).max())


def _warp(frame: np.ndarray, m: Optional[np.ndarray], shape: Tuple[int, int],
          min_shift: float) -> np.ndarray:
  h, w = shape
  same_size = frame.shape[:2] == (h, w)
  if m is None or (same_size and max_shift(m, shape) < min_shift):
    if same_size:
      return frame
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
  # Replicated border: the few pixels the shift brings in from outside the real crop should not
  # read as a difference (black would, all along the edge).
  return cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)

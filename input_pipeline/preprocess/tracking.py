"""Face tracks from per-frame detections: greedy IoU linking, gap interpolation, short-track pruning.

One track = one person's face over a contiguous run of frames; it becomes one record. Several
people in a video give several tracks (FakeOut appendix D: one forged face among real ones must
not be averaged away). A detection joins the live track whose last box overlaps it most (IoU
above ``min_iou``); a track missing for more than ``max_gap`` frames ends, so a face that leaves
and comes back starts a new track rather than being interpolated across a cut. Missed frames
inside a track (a blink of the detector, or frames skipped with ``every > 1``) get boxes and
points linearly interpolated between the neighbouring detections.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

import numpy as np

from input_pipeline.preprocess.faces import Detections, enlarge_box


@dataclasses.dataclass
class Track:
  """A face over frames ``start .. start + len - 1``. boxes [L, 4], points [L, 5, 2] (float32),
  detected [L] bool (False where interpolated), landmarks68 [L, 68, 2] or None."""
  start: int
  boxes: np.ndarray
  points: np.ndarray
  detected: np.ndarray
  landmarks68: Optional[np.ndarray] = None

  def __len__(self) -> int:
    return len(self.boxes)

  @property
  def stop(self) -> int:
    return self.start + len(self)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Pairwise IoU of boxes a [N, 4] and b [M, 4] (x1, y1, x2, y2) → [N, M]."""
  a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
  inter = (np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None) *
           np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None))
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
  return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


@dataclasses.dataclass
class _Open:
  frames: List[int]
  dets: List[tuple]  # (box, points, landmarks68 or None) per detected frame.


def link(detections: Sequence[Detections], min_iou: float = 0.3,
         max_gap: int = 25) -> List[_Open]:
  """Greedy frame-by-frame linking; highest-scoring detections choose their track first."""
  live: List[_Open] = []
  done: List[_Open] = []
  for t, det in enumerate(detections):
    still = []
    for tr in live:
      (still if t - tr.frames[-1] <= max_gap else done).append(tr)
    live = still
    taken = set()
    for k in np.argsort(-det.scores, kind="stable"):
      lm = None if det.landmarks68 is None else det.landmarks68[k]
      cands = [j for j, tr in enumerate(live) if j not in taken and tr.frames[-1] < t]
      overlaps = iou(det.boxes[k:k + 1], np.stack([live[j].dets[-1][0] for j in cands]))[0] \
          if cands else np.zeros(0)
      if len(overlaps) and overlaps.max() >= min_iou:
        j = cands[int(np.argmax(overlaps))]
        live[j].frames.append(t)
        live[j].dets.append((det.boxes[k], det.points[k], lm))
        taken.add(j)
      else:
        live.append(_Open([t], [(det.boxes[k], det.points[k], lm)]))
        taken.add(len(live) - 1)
  return sorted(done + live, key=lambda tr: tr.frames[0])


def interpolate(tr: _Open) -> Track:
  """Fills the frames a linked track missed by linear interpolation of boxes and points."""
  frames = np.asarray(tr.frames)
  full = np.arange(frames[0], frames[-1] + 1)

  def fill(values):
    v = np.stack(values).reshape(len(frames), -1)
    out = np.stack([np.interp(full, frames, v[:, c]) for c in range(v.shape[1])], -1)
    return out.reshape((len(full),) + np.shape(values[0])).astype(np.float32)

  has68 = all(d[2] is not None for d in tr.dets)
  return Track(start=int(frames[0]), boxes=fill([d[0] for d in tr.dets]),
               points=fill([d[1] for d in tr.dets]), detected=np.isin(full, frames),
               landmarks68=fill([d[2] for d in tr.dets]) if has68 else None)


def build_tracks(detections: Sequence[Detections], min_frames: int, min_iou: float = 0.3,
                 max_gap: int = 25, min_detected: float = 0.5,
                 min_relative_size: float = 0.0) -> List[Track]:
  """Tracks of at least ``min_frames`` frames, detected on at least ``min_detected`` of them,
  whose median face size is at least ``min_relative_size`` times the largest track's.

  The second condition drops tracks that are mostly interpolation, e.g. a false positive that
  fired twice a second apart; the third drops background faces (a crowd behind the speaker, a
  poster), which FakeOut's pipeline also filters by size. Tracks are ordered by start frame,
  then by first box x; the index in this list is the record's ``track_id``.
  """
  tracks = [interpolate(tr) for tr in link(detections, min_iou, max_gap)]
  tracks = [tr for tr in tracks
            if len(tr) >= min_frames and tr.detected.mean() >= min_detected]
  if tracks and min_relative_size > 0:
    sizes = [float(np.median(np.sqrt(np.prod(tr.boxes[:, 2:] - tr.boxes[:, :2], -1))))
             for tr in tracks]
    tracks = [tr for tr, s in zip(tracks, sizes) if s >= min_relative_size * max(sizes)]
  return sorted(tracks, key=lambda tr: (tr.start, float(tr.boxes[0, 0])))


def crop_window(track: Track, width: int, height: int, scale: float = 1.8) -> tuple:
  """FakeOut's crop window for a track: the union of its face boxes enlarged ``scale`` times
  (``faces.enlarge_box``), clipped to the ``width``×``height`` frame → (x1, y1, x2, y2) int.

  FakeOut's pipeline (gilikn/FacePipe ``face_crop``) grows one window over the whole video from
  the enlarged MTCNN boxes and cuts every frame to it before finding landmarks and aligning, so
  nothing outside it ever reaches a crop. The face box is the detector's box, or, for a track
  with 68-point landmarks, the landmarks' own extent — the track's ``boxes`` there come from
  ``faces.box_from_points``, which is already grown for tracking and would be grown twice.
  """
  if track.landmarks68 is not None:
    lm = track.landmarks68
    boxes = np.concatenate([lm.min(-2), lm.max(-2)], -1)
  else:
    boxes = track.boxes
  e = enlarge_box(boxes, scale)
  x1, y1 = max(int(e[:, 0].min()), 0), max(int(e[:, 1].min()), 0)
  x2, y2 = min(int(e[:, 2].max()), width), min(int(e[:, 3].max()), height)
  if x2 <= x1 or y2 <= y1:
    raise ValueError(f"track from frame {track.start}: its face boxes lie outside the "
                     f"{width}x{height} frame")
  return x1, y1, x2, y2

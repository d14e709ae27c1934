"""Alignment: temporal landmark smoothing, similarity warp to a mean face, face and mouth crops.

RealForensics (appendix B.1) averages each frame's landmarks over a 12-frame window (here: a
local linear fit over the window, which equals that mean for a still face), then warps
every frame with the similarity transform that best maps the *stable* points (those that move
least with speech and expression: eyes and nose) onto a fixed mean face. The crop therefore keeps
the head pose's in-plane rotation and scale fixed while the mouth moves freely, which is what the
video models should see. The mouth crop (AV-contrastive transformer §3.3) is the 96×96 window at
the lip centre of the face aligned at 256×256.

The authors' own framings (``presets``) need three more pieces, kept here because they are
alignment steps like the ones above: RealForensics' re-centred window mean and its LMedS
similarity, the crop corner their ``cut_patch`` picks, and FakeOut's forward window mean; and
``warp`` can show only a window of the frame, as FakeOut's pipeline does.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from input_pipeline.preprocess.faces import MOUTH, STABLE

# Mean face in unit crop coordinates, in ``faces.POINTS`` order: eye centres, nose tip, mouth
# corners. Chosen so that a face fills about 80 % of the crop width with the eyes 40 % down,
# like the 150×150 RealForensics crops; only the STABLE rows drive the warp.
MEAN_FACE = np.array([[0.345, 0.40], [0.655, 0.40], [0.50, 0.57], [0.375, 0.74], [0.625, 0.74]],
                     np.float32)
MOUTH_ALIGN_SIZE = 256  # The aligned face size the mouth crop is cut from (paper setting).


def smooth(x: np.ndarray, window: int = 12) -> np.ndarray:
  """Temporal smoothing over a centred ``window``-frame window along axis 0.

  Frame t uses frames ``t - window // 2 .. t + (window - 1) // 2`` that exist and takes the
  value at t of the least-squares line through them. For a still face that is the plain window
  mean of RealForensics B.1; unlike the mean, it does not lag a face that moves steadily, neither
  at the window's off-centre (even ``window``) nor at a track's first and last frames, where a
  truncated window would otherwise pull the crop several pixels behind the face.
  """
  x = np.asarray(x, np.float64)
  n = len(x)
  if window <= 1 or n < 2:
    return x.astype(np.float32)
  t = np.arange(n, dtype=np.float64)
  lo = np.clip(t.astype(int) - window // 2, 0, n)
  hi = np.clip(t.astype(int) + (window - 1) // 2 + 1, 0, n)
  csum = lambda v: np.concatenate([np.zeros((1,) + v.shape[1:]), np.cumsum(v, axis=0)])
  expand = lambda v: v.reshape((-1,) + (1,) * (x.ndim - 1))
  span = lambda c: c[hi] - c[lo]
  s0, s1, s2 = span(csum(np.ones(n))), span(csum(t)), span(csum(t * t))
  sx, stx = span(csum(x)), span(csum(expand(t) * x))
  # Regress on (s - t): slope b and intercept a at s = t from the window's sums.
  d1 = s1 - t * s0
  d2 = s2 - 2 * t * s1 + t * t * s0
  sdx = stx - expand(t) * sx
  det = s0 * d2 - d1 * d1
  ok = expand(det > 1e-9)
  a = (expand(d2) * sx - expand(d1) * sdx) / expand(np.where(det > 1e-9, det, 1.0))
  return np.where(ok, a, sx / expand(s0)).astype(np.float32)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """Least-squares similarity (rotation, uniform scale, translation) mapping src → dst.

  Umeyama's closed form; src, dst: [N, 2] with N >= 2. Returns the 2×3 matrix for
  ``cv2.warpAffine``. A reflection is never returned (a mirrored face is not the same face).
  """
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  ms, md = src.mean(0), dst.mean(0)
  s, d = src - ms, dst - md
  u, sv, vt = np.linalg.svd(d.T @ s / len(src))
  flip = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
  rot = u @ flip @ vt
  var = (s ** 2).sum() / len(src)
  scale = np.trace(np.diag(sv) @ flip) / max(var, 1e-12)
  return np.concatenate([scale * rot, (md - scale * rot @ ms)[:, None]], 1)


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Applies a 2×3 affine matrix to points [..., 2]."""
  return points @ m[:, :2].T + m[:, 2]


def face_matrices(points: np.ndarray, size: int) -> np.ndarray:
  """Per-frame 2×3 warps from (smoothed) five points [T, 5, 2] to the mean face at ``size`` px."""
  dst = MEAN_FACE[list(STABLE)] * size
  return np.stack([similarity(p[list(STABLE)], dst) for p in points])


def mouth_matrices(points: np.ndarray, size: int = 96,
                   align_size: int = MOUTH_ALIGN_SIZE) -> np.ndarray:
  """Per-frame warps to ``size``×``size`` mouth crops centred on the lips of the face aligned at
  ``align_size`` (the warp and the crop are composed, so the frame is resampled once)."""
  mats = face_matrices(points, align_size)
  centre = np.stack([apply(m, p[list(MOUTH)].mean(0)) for m, p in zip(mats, points)])
  mats = mats.copy()
  mats[:, :, 2] += size / 2 - centre
  return mats


def warp(frames: np.ndarray, mats: np.ndarray, size: int,
         window: Optional[Sequence[int]] = None) -> np.ndarray:
  """Warps frames uint8 [T, H, W, 3] with mats [T, 2, 3] → uint8 [T, size, size, 3].

  Pixels outside the frame are black: replicating the border would invent texture, which a
  forgery detector could learn as an artefact. ``window`` = (x1, y1, x2, y2) px: only that part
  of each frame is visible, the rest is black too — FakeOut cuts every frame to such a window
  before it warps, so its crops go black wherever the aligned view reaches past the window. The
  frame is sliced and the slice's offset folded into the matrices, so ``mats`` stay in frame
  coordinates (``transform_landmarks`` is unchanged).
  """
  if window is not None:
    x1, y1, x2, y2 = (int(v) for v in window)
    frames = frames[:, y1:y2, x1:x2]
    mats = np.array(mats, np.float64)
    mats[:, :, 2] += mats[:, :, :2] @ np.array([x1, y1], np.float64)
  out = np.empty((len(frames), size, size, 3), np.uint8)
  for t, (f, m) in enumerate(zip(frames, mats)):
    out[t] = cv2.warpAffine(f, m, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
  return out


def transform_landmarks(landmarks: Optional[np.ndarray], mats: np.ndarray) -> Optional[np.ndarray]:
  """[T, K, 2] frame landmarks → crop coordinates (None stays None)."""
  if landmarks is None:
    return None
  return np.stack([apply(m, lm) for m, lm in zip(mats, landmarks)]).astype(np.float32)


# ----------------------------------------------------------------------------- authors' framings
def smooth_recentred(landmarks: np.ndarray, window_margin: int = 12) -> np.ndarray:
  """RealForensics' landmark smoothing (their ``preprocessing/extract_faces.py``, ``crop_patch``).

  Frame t takes the plain mean of frames ``t - m .. t + m`` with ``m = min(window_margin // 2,
  t, T - 1 - t)`` — 13 frames for their ``window_margin`` 12, shrinking symmetrically at a
  track's ends (frame 0 keeps its own landmarks) — and then shifts that mean shape so its
  centroid is frame t's own centroid. So only the *shape* (scale, rotation, expression) is
  averaged; a face that moves keeps its position. landmarks: [T, K, 2] → float64 [T, K, 2].
  """
  x = np.asarray(landmarks, np.float64)
  n = len(x)
  if n == 0:
    return x
  t = np.arange(n)
  m = np.minimum(window_margin // 2, np.minimum(t, n - 1 - t))
  c = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
  mean = (c[t + m + 1] - c[t - m]) / (2 * m + 1).reshape((-1,) + (1,) * (x.ndim - 1))
  return mean + x.mean(-2, keepdims=True) - mean.mean(-2, keepdims=True)


def smooth_forward(points: np.ndarray, window: int = 5) -> np.ndarray:
  """FakeOut's landmark smoothing (gilikn/FacePipe ``new_crop_patch``): a sliding mean that looks
  *ahead*.

  Frame t takes the mean of frames ``t .. t + w - 1`` (w = min(window, T)); the last w - 1
  frames, which have no full window ahead, reuse frame ``T - w``'s mean (their code reuses that
  frame's transform). points: [T, K, 2] → float64 [T, K, 2].
  """
  x = np.asarray(points, np.float64)
  n = len(x)
  if n == 0:
    return x
  w = max(1, min(window, n))
  start = np.minimum(np.arange(n), n - w)
  c = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
  return (c[start + w] - c[start]) / w


def similarity_lmeds(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """The similarity RealForensics fits: OpenCV's ``estimateAffinePartial2D`` with LMedS.

  LMedS ignores up to half of the points when they disagree (a landmark detector's outlier on
  one stable point), unlike the least-squares ``similarity``; on consistent points both give the
  same transform. OpenCV returns None only for degenerate input (e.g. coincident points); the
  least-squares fit is then the better answer than no crop. src, dst: [N, 2] → 2×3.
  """
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
  return similarity(src, dst) if m is None else m


def cut_corner(centres: np.ndarray, size: int, canvas: int) -> np.ndarray:
  """Top-left corner [T, 2] (x, y) of the ``size`` crop that RealForensics' ``cut_patch`` cuts
  around ``centres`` [T, 2] from a ``canvas``×``canvas`` aligned frame.

  Their order: clamp the centre so the crop stays inside the canvas, round it half to even
  (Python's ``round``), subtract ``size // 2``. Adding the corner's negative to a warp's
  translation cuts the crop in the same resampling as the warp (``realforensics`` preset).
  """
  half = size // 2
  return np.round(np.clip(np.asarray(centres, np.float64), half, canvas - half)) - half

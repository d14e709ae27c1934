"""Four forgery families made from a real synthetic video, after FaceForensics++.

Each family leaves its own low-level trace and disturbs natural facial behaviour:

* ``autoencoder_swap`` (Deepfakes): another identity rendered at low resolution with damped
  expressions and weak blinks, upsampled, colour-mismatched, blended with a blurred ellipse.
* ``graphics_swap`` (FaceSwap): one neutral frame of another identity warped to the target's
  landmarks every frame (the mouth interior is stretched lips, not an opening), colour-matched
  only partly, blended through a sharp landmark hull whose boundary jitters per frame.
* ``reenactment`` (Face2Face): the same identity re-rendered (smooth, no camera noise) with mouth
  and brows driven by another video's speech, resampled and smoothed; the soundtrack stays the
  original, so mouth and audio disagree.
* ``neural_texture`` (NeuralTextures): only the mouth region re-rendered, driven by another
  video's speech, with a texture that flickers from frame to frame.

A fake is ``composite(source, manipulated, alpha)``: pixels whose uint8 mask is 0 are exactly the
source pixels, so the mask is a faithful per-pixel manipulation label.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, NamedTuple

import cv2
import numpy as np

from input_pipeline.synthetic import faces, smoothing
from input_pipeline.synthetic.speech import Articulation

FAMILIES = ("autoencoder_swap", "graphics_swap", "reenactment", "neural_texture")
_SUB = 4  # Sub-pixel bits for cv2 drawing.


@dataclasses.dataclass(frozen=True)
class Source:
  """A rendered real video and what it was rendered from."""
  face: faces.FaceIdentity
  scene: faces.Scene
  motion: faces.Motion
  frames: np.ndarray  # uint8 [T, H, W, 3]
  landmarks: np.ndarray  # float32 [T, 68, 2]


@dataclasses.dataclass(frozen=True)
class Donor:
  """Another identity's face (swaps) and another video's articulation (reenactments)."""
  face: faces.FaceIdentity
  art: Articulation


class Fake(NamedTuple):
  frames: np.ndarray  # uint8 [T, H, W, 3]
  landmarks: np.ndarray  # float32 [T, 68, 2]
  mask: np.ndarray  # uint8 [T, H, W], 0..255


def composite(frames: np.ndarray, manipulated: np.ndarray, alpha: np.ndarray):
  """Blends `manipulated` (float [T, H, W, 3], 0..255) into `frames` through alpha [T, H, W].

  Returns (frames uint8, mask uint8). The blend uses the quantised mask itself, so wherever
  mask == 0 the result equals the source exactly.
  """
  mask = np.round(np.clip(alpha, 0, 1) * 255).astype(np.uint8)
  src = frames.astype(np.float32)
  out = src + (mask[..., None].astype(np.float32) / 255) * (manipulated - src)
  return np.clip(np.round(out), 0, 255).astype(np.uint8), mask


def _pick_landmarks(src: np.ndarray, manipulated: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Per point: the manipulated landmark where the mask shows the manipulated face (>= 50%)."""
  t, h, w = mask.shape
  xy = np.round(manipulated).astype(int)
  x, y = np.clip(xy[..., 0], 0, w - 1), np.clip(xy[..., 1], 0, h - 1)
  inside = mask[np.arange(t)[:, None], y, x] >= 128
  return np.where(inside[..., None], manipulated, src).astype(np.float32)


def _blur(alpha: np.ndarray, sigma: float) -> np.ndarray:
  return np.stack([cv2.GaussianBlur(a, (0, 0), sigma) for a in alpha])


def _hull_alpha(points: np.ndarray, size: int, sigma: float) -> np.ndarray:
  """Blurred filled convex hull of per-frame points [T, P, 2] → float32 [T, H, W] in 0..1."""
  out = np.zeros((len(points), size, size), np.uint8)
  for t, p in enumerate(points):
    hull = cv2.convexHull(np.round(p * (1 << _SUB)).astype(np.int32))
    cv2.fillConvexPoly(out[t], hull, 255, cv2.LINE_AA, _SUB)
  return _blur(out.astype(np.float32) / 255, sigma)


def _ellipse_alpha(centre: np.ndarray, axes: np.ndarray, angle: np.ndarray, size: int,
                   sigma: float) -> np.ndarray:
  """Blurred filled ellipses: centre [T, 2], half-axes [T, 2] (px), angle [T] (deg)."""
  out = np.zeros((len(centre), size, size), np.uint8)
  c = np.round(centre * (1 << _SUB)).astype(int)
  a = np.round(np.maximum(axes, 1) * (1 << _SUB)).astype(int)
  for t in range(len(centre)):
    cv2.ellipse(out[t], tuple(map(int, c[t])), tuple(map(int, a[t])), float(angle[t]), 0, 360,
                255, -1, cv2.LINE_AA, _SUB)
  return _blur(out.astype(np.float32) / 255, sigma)


def _roll_deg(lms: np.ndarray) -> np.ndarray:
  """In-plane face angle [T] (deg) from the eye corners."""
  d = lms[:, 45] - lms[:, 36]
  return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


def _scale_about_centroid(points: np.ndarray, factor: float) -> np.ndarray:
  centre = points.mean(axis=1, keepdims=True)
  return centre + factor * (points - centre)


def drive(art: Articulation, num_frames: int, rng: np.random.Generator,
          sigma: float) -> Articulation:
  """Another video's articulation time-stretched (0.85–1.15×), offset, mirrored at the ends and
  smoothed (sigma in frames), as a reenactment system would transfer it."""
  n = len(art.jaw)
  t = rng.uniform(0, n - 1) + rng.uniform(0.85, 1.15) * np.arange(num_frames)
  period = 2 * (n - 1)
  t = t % period
  t = np.where(t > n - 1, period - t, t)
  return Articulation(*(smoothing.gaussian(np.interp(t, np.arange(n), x), sigma)
                        .astype(np.float32) for x in art))


def autoencoder_swap(src: Source, donor: Donor, rng: np.random.Generator) -> Fake:
  t, size = src.frames.shape[:2]
  low = max(12, int(round(size * rng.uniform(0.4, 0.55))))
  lagged = (np.concatenate([x[:1], x[:-1]]) for x in src.motion.art)  # One frame late,
  art = Articulation(*(smoothing.gaussian(x, 1.0).astype(np.float32) * g  # smoothed, damped.
                       for x, g in zip(lagged, (0.7, 0.7, 0.8, 0.8, 0.5))))
  motion = dataclasses.replace(src.motion, art=art, eye_open=0.5 + 0.5 * src.motion.eye_open)
  small, small_lms = faces.render(donor.face, src.scene, motion, low, noise=False)
  up = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in small])
  up = up.astype(np.float32) * (1 + rng.normal(0, 0.05, 3)) + rng.normal(0, 5, 3)
  lms = (small_lms + 0.5) * (size / low) - 0.5
  s = src.landmarks
  top, chin = s[:, 17:27, 1].min(1), s[:, 8, 1]
  centre = np.stack([s[:, 27:68, 0].mean(1), 0.5 * (top + chin)], -1)
  axes = np.stack([0.42 * (s[:, 16, 0] - s[:, 0, 0]), 0.5 * (chin - top)], -1)
  alpha = _ellipse_alpha(centre, axes, _roll_deg(s), size, 0.045 * size)
  frames, mask = composite(src.frames, up, alpha)
  return Fake(frames, _pick_landmarks(s, lms, mask), mask)


def _warp_maps(target: np.ndarray, ref: np.ndarray, size: int, step: int = 4) -> np.ndarray:
  """Backward maps [T, H, W, 2] taking each output pixel to the reference image.

  An affine least-squares fit of target→reference landmarks plus Gaussian-weighted residuals
  (landmarks target [T, 68, 2], ref [68, 2]), computed on a coarse grid and upsampled.
  """
  n = len(target)
  x1 = np.concatenate([target, np.ones(target.shape[:2] + (1,))], -1)  # [T, 68, 3]
  affine = np.linalg.pinv(x1) @ ref  # [T, 3, 2]
  resid = ref - x1 @ affine  # [T, 68, 2]
  g = np.arange(0, size + step, step, dtype=np.float64)
  gx, gy = np.meshgrid(g, g)
  grid = np.stack([gx.ravel(), gy.ravel(), np.ones(gx.size)], -1)  # [G, 3]
  dx = grid[None, :, None, 0] - target[:, None, :, 0]  # [T, G, 68]
  dy = grid[None, :, None, 1] - target[:, None, :, 1]
  w = np.exp((dx * dx + dy * dy) * (-0.5 / (0.07 * size) ** 2))
  corr = (w @ resid) / (w.sum(-1, keepdims=True) + 0.5)
  maps = (grid @ affine + corr).reshape(n, len(g), len(g), 2).astype(np.float32)
  zoom = np.float32([[1 / step, 0, 0], [0, 1 / step, 0]])  # Output pixel → grid index.
  return np.stack([cv2.warpAffine(m, zoom, (size, size), flags=cv2.INTER_LINEAR |
                                  cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
                   for m in maps])


def graphics_swap(src: Source, donor: Donor, rng: np.random.Generator) -> Fake:
  t, size = src.frames.shape[:2]
  one = lambda x: np.asarray([x], np.float32)
  neutral = faces.Motion(
      pose=np.zeros((1, 5)), eye_open=one(1.0), gaze=np.zeros((1, 2)),
      exposure=one(src.motion.exposure.mean()),
      art=Articulation(one(0.12), one(0.1), one(0.05), one(0.35), one(0.0)))
  ref, ref_lms = faces.render(donor.face, src.scene, neutral, size, noise=False)
  ref = ref[0].astype(np.float32)
  s = src.landmarks
  # Partial colour transfer: match 60% of the mean face-colour difference.
  ref_face = _hull_alpha(ref_lms[:, :27], size, 1.0)[0][..., None]
  src_face = _hull_alpha(s[:1, :27], size, 1.0)[0][..., None]
  diff = ((src.frames[0] * src_face).sum((0, 1)) / src_face.sum()
          - (ref * ref_face).sum((0, 1)) / ref_face.sum())
  ref = ref + 0.6 * diff
  maps = _warp_maps(s.astype(np.float64), ref_lms[0].astype(np.float64), size)
  warped = np.stack([cv2.remap(ref, m[..., 0], m[..., 1], cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT) for m in maps])
  hull = s[:, :27].copy()
  hull[:, 17:27, 1] -= 0.03 * size  # Include the brows.
  hull = _scale_about_centroid(hull, 0.97) + rng.normal(0, 0.6, hull.shape)  # Jittery boundary.
  alpha = _hull_alpha(hull, size, 0.7)
  frames, mask = composite(src.frames, warped, alpha)
  return Fake(frames, s.astype(np.float32), mask)


def reenactment(src: Source, donor: Donor, rng: np.random.Generator) -> Fake:
  t, size = src.frames.shape[:2]
  motion = dataclasses.replace(src.motion, art=drive(donor.art, t, rng, 1.5))
  frames, lms = faces.render(src.face, src.scene, motion, size, noise=False)
  sigma = rng.uniform(0.5, 0.8)
  smooth = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames]).astype(np.float32)
  smooth *= 1 + rng.normal(0, 0.015, 3)
  pts = np.concatenate([src.landmarks[:, :27], lms[:, :27]], axis=1)
  pts[:, np.r_[17:27, 44:54], 1] -= 0.02 * size
  alpha = _hull_alpha(_scale_about_centroid(pts, 1.04), size, 1.5)
  out, mask = composite(src.frames, smooth, alpha)
  return Fake(out, _pick_landmarks(src.landmarks, lms, mask), mask)


def neural_texture(src: Source, donor: Donor, rng: np.random.Generator) -> Fake:
  t, size = src.frames.shape[:2]
  d = drive(donor.art, t, rng, 0.8)
  art = src.motion.art._replace(jaw=d.jaw, lip_open=d.lip_open, rounding=d.rounding,
                                spread=d.spread)
  frames, lms = faces.render(src.face, src.scene, dataclasses.replace(src.motion, art=art), size,
                             noise=False)
  gain = 1 + rng.normal(0, 0.04, (t, 1, 1, 3))
  blotch = np.stack([cv2.resize(b, (size, size), interpolation=cv2.INTER_CUBIC)
                     for b in rng.normal(0, 0.05, (t, 5, 5)).astype(np.float32)])
  grain = rng.standard_normal((t, size, size, 1), np.float32) * np.float32(2.5)
  textured = frames.astype(np.float32) * gain * (1 + blotch[..., None]) + grain
  pts = np.concatenate([src.landmarks[:, np.r_[7:10, 48:68]], lms[:, np.r_[7:10, 48:68]]], 1)
  lo, hi = pts.min(1), pts.max(1)
  lo[:, 1] = np.minimum(lo[:, 1], src.landmarks[:, 33, 1])
  alpha = _ellipse_alpha(0.5 * (lo + hi), 0.55 * (hi - lo) + 1.5, _roll_deg(src.landmarks),
                         size, 0.025 * size)
  out, mask = composite(src.frames, textured, alpha)
  return Fake(out, _pick_landmarks(src.landmarks, lms, mask), mask)


MAKERS: Dict[str, Callable[[Source, Donor, np.random.Generator], Fake]] = {
    "autoencoder_swap": autoencoder_swap,
    "graphics_swap": graphics_swap,
    "reenactment": reenactment,
    "neural_texture": neural_texture,
}


def make(family: str, src: Source, donor: Donor, rng: np.random.Generator) -> Fake:
  """The fake of `family` made from `src` (see `FAMILIES`)."""
  if family not in MAKERS:
    raise ValueError(f"unknown forgery family {family!r}; known: {FAMILIES}")
  return MAKERS[family](src, donor, rng)

"""Face geometry in canonical coordinates, the 68 landmarks, and the canonical→pixel transform.

Canonical units: the face half-width is ~1, the origin is the face centre, y points down. Every
contour the renderer fills comes from the same functions as the landmarks, so the landmarks are
exactly where the rendered features are (the mouth points open with the jaw, the eyelid points
close in a blink). Per-frame quantities are arrays [T]; contours are [T, P, 2] (u, v).
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

FACE_SCALE = 0.36  # Pixels per canonical unit, as a fraction of the frame size.
CENTRE_Y = 0.52  # Vertical position of the face centre, as a fraction of the frame size.
# Articulation is exaggerated (~1.5× a real open vowel): at the demo's 48-px crops a realistic
# inner-lip gap is 1–2 px, too faint for a toy model to learn lip reading from in minutes.
JAW_DROP = 0.20  # Chin drop at full jaw opening (canonical units).
LIP_GAP = 0.28  # Inner-lip gap at full lip opening.
# Horizontal shift per unit yaw of each feature (how far it stands out of the face plane).
DEPTH_EYE, DEPTH_BROW, DEPTH_MOUTH = 0.12, 0.10, 0.14

# iBUG jaw points 0..16 run from the image-left ear round the chin (8) to the image-right ear.
JAW_PHI = 1.12 * np.pi - 1.24 * np.pi * np.arange(17) / 16


def outline(face, jaw: np.ndarray, phi: np.ndarray) -> np.ndarray:
  """Face outline at angles phi [P] (0 = image right, pi/2 = chin) → [T, P, 2].

  The lower half stretches with the jaw and tapers towards the chin.
  """
  s, c = np.sin(phi)[None], np.cos(phi)[None]
  lower = s > 0
  ah = np.where(lower, face.chin + JAW_DROP * jaw[:, None], face.crown)
  taper = 1.0 - face.chin_taper * np.where(lower, s, 0.0) ** 2
  u = np.broadcast_to(face.half_width * c * taper, ah.shape)
  return np.stack([u, ah * s], axis=-1)


def _col(a, like: np.ndarray) -> np.ndarray:
  """Per-frame values [T] shaped [T, 1, ...] to broadcast against `like` [T | 1, ...]."""
  a = np.asarray(a, np.float64)
  return a.reshape(a.shape + (1,) * (np.ndim(like) - 1))


def eye(face, side: int, eye_open: np.ndarray, yaw: np.ndarray,
        s: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """u, upper-lid v and lower-lid v at s (0 = outer corner, 1 = inner corner).

  s is shaped [T | 1, ...]; side = -1 is the eye on the image left (the subject's right);
  eye_open [T] in 0..1 (0 = closed: the upper lid comes down onto the lower one).
  """
  op = _col(eye_open, s)
  u = side * (face.eye_x + face.eye_w * (1 - 2 * s)) + DEPTH_EYE * _col(yaw, s)
  bump = np.sin(np.pi * np.clip(s, 0, 1)) ** 0.8
  v0 = face.eye_y - face.eye_tilt * (0.5 - s)  # Outer corner higher for a positive tilt.
  upper = v0 + face.eye_h * bump * (0.3 - 1.3 * op)
  lower = v0 + face.eye_h * bump * (0.32 + 0.43 * op)
  return np.broadcast_arrays(u, upper, lower)


def eye_param(face, side: int, yaw: np.ndarray, u: np.ndarray) -> np.ndarray:
  """The s of `eye` at canonical u [T, ...] (its inverse along the eye)."""
  return 0.5 * (1 - (side * (u - DEPTH_EYE * _col(yaw, u)) - face.eye_x) / face.eye_w)


def brow(face, side: int, raise_: np.ndarray, eye_open: np.ndarray, yaw: np.ndarray,
         s: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Brow centre line [T, S, 2] at s [S] in [0, 1] (0 = outer end) and its thickness [S]."""
  u_out = side * (face.eye_x + face.eye_w + 0.07)
  u_in = side * (face.eye_x - face.eye_w - 0.03)
  u = u_out + (u_in - u_out) * s[None] + DEPTH_BROW * yaw[:, None]
  v = (face.eye_y - face.brow_gap - face.brow_arch * np.sin(np.pi * s)[None]
       - 0.08 * raise_[:, None] + 0.015 * (1 - eye_open[:, None]))
  u = np.broadcast_to(u, v.shape)
  return np.stack([u, v], -1), face.brow_thick * (0.5 + 0.5 * s)


def nose(face, yaw: np.ndarray) -> np.ndarray:
  """Landmarks 27..35 [T, 9, 2]: bridge top to tip, then the nostril base left to right."""
  tip = face.nose_y - 0.07
  bridge_v = np.linspace(face.eye_y - 0.02, tip, 4)
  base_u = face.nose_w * np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
  base_v = face.nose_y + np.array([-0.03, 0.0, 0.01, 0.0, -0.03])
  u = np.concatenate([np.zeros(4), base_u])[None] + yaw[:, None] * np.concatenate(
      [np.linspace(0.1, 0.28, 4), np.full(5, 0.2)])[None]
  v = np.broadcast_to(np.concatenate([bridge_v, base_v])[None], u.shape)
  return np.stack([u, v], -1)


INNER_WIDTH = 0.82  # Inner-lip corners relative to the outer ones.


def mouth_frame(face, art, yaw: np.ndarray, like: np.ndarray) -> Dict[str, np.ndarray]:
  """Per-frame mouth parameters shaped to broadcast against `like`.

  mw: half-width; shift: horizontal offset (yaw); vm: lip line; gap: inner-lip gap; corner: v of
  the corners; ul / ll: upper / lower lip thickness. All canonical units.
  """
  g = LIP_GAP * _col(art.lip_open, like)
  rnd, spr = _col(art.rounding, like), _col(art.spread, like)
  vm = face.mouth_y + 0.25 * JAW_DROP * _col(art.jaw, like)
  return {"mw": face.mouth_w * (1 + 0.18 * spr - 0.28 * rnd),
          "shift": DEPTH_MOUTH * _col(yaw, like), "vm": vm, "gap": g,
          "corner": vm + 0.35 * g - face.smile,
          "ul": face.lip_up * (1 + 0.35 * rnd), "ll": face.lip_lo * (1 + 0.35 * rnd)}


def lip_curves(face, m: Dict[str, np.ndarray], x: np.ndarray) -> Dict[str, np.ndarray]:
  """v of the lip curves at x in [-1, 1] (-1 = image-left corner), x shaped like `m`'s `like`.

  outer_* are at u = x · mw + shift, inner_* and teeth (lower edge of the upper teeth) at
  u = INNER_WIDTH · x · mw + shift. The inner curves meet when the gap is 0 (closed lips).
  """
  p = np.clip(1 - x * x, 0, 1) ** 0.7
  corner, vm, g = m["corner"], m["vm"], m["gap"]
  bow = 0.25 * face.lip_up * np.exp(-(x / 0.15) ** 2)  # Cupid's bow dip.
  return {
      "outer_upper": corner + (vm - m["ul"] - corner) * p + bow,
      "outer_lower": corner + (vm + g + m["ll"] - corner) * p,
      "inner_upper": corner + (vm - corner) * p,
      "inner_lower": corner + (vm + g - corner) * p,
      "teeth": corner + (vm + np.minimum(0.035, 0.35 * g) - corner) * p,
  }


def mouth(face, art, yaw: np.ndarray, x: np.ndarray) -> Dict[str, np.ndarray]:
  """Lip curves as points [T, X, 2] at x [X] (see `lip_curves`)."""
  x = x[None]
  m = mouth_frame(face, art, yaw, x)
  curves = lip_curves(face, m, x)
  out = {}
  for name, v in curves.items():
    width = 1.0 if name.startswith("outer") else INNER_WIDTH
    u = width * x * m["mw"] + m["shift"]
    out[name] = np.stack(np.broadcast_arrays(u, v), -1)
  return out


def _lid_points(face, side, eye_open, yaw, s):
  u, upper, lower = eye(face, side, eye_open, yaw, s)
  return np.stack([u, upper], -1), np.stack([u, lower], -1)


def landmarks(face, art, eye_open: np.ndarray, yaw: np.ndarray) -> np.ndarray:
  """The 68 iBUG landmarks in canonical coordinates [T, 68, 2].

  art: per-frame articulation (jaw, lip_open, rounding, spread, brow), each [T].
  """
  jaw_pts = outline(face, art.jaw, JAW_PHI)
  q = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
  brows = []
  for side, order in ((-1, q), (1, q[::-1])):
    centre, thick = brow(face, side, art.brow, eye_open, yaw, order)
    brows.append(centre - np.stack([np.zeros_like(thick), 0.5 * thick], -1)[None])
  third = np.array([[0.0, 1 / 3, 2 / 3, 1.0]])
  (up_l, lo_l), (up_r, lo_r) = (_lid_points(face, side, eye_open, yaw, third)
                                for side in (-1, 1))
  eyes = [up_l[:, [0, 1, 2, 3]], lo_l[:, [2, 1]],  # 36 outer .. 39 inner, 40, 41 lower.
          up_r[:, [3, 2, 1, 0]], lo_r[:, [1, 2]]]  # 42 inner .. 45 outer, 46, 47 lower.
  xo = np.array([-1.0, -0.6, -0.3, 0.0, 0.3, 0.6, 1.0])
  outer = mouth(face, art, yaw, xo)
  inner = mouth(face, art, yaw, np.array([-1.0, -0.5, 0.0, 0.5, 1.0]))
  lips = [outer["outer_upper"], outer["outer_lower"][:, [5, 4, 3, 2, 1]],  # 48..54, 55..59
          inner["inner_upper"], inner["inner_lower"][:, [3, 2, 1]]]  # 60..64, 65..67
  return np.concatenate([jaw_pts, *brows, nose(face, yaw), *eyes, *lips], axis=1)


def transform(pose: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-frame centre [T, 2] (px), scale [T] (px per unit) and rotation [T, 2, 2].

  pose [T, 5]: x / y offset (fraction of the frame), log scale, roll (rad), yaw.
  """
  dx, dy, log_s, roll = pose[:, 0], pose[:, 1], pose[:, 2], pose[:, 3]
  centre = np.stack([(size - 1) * 0.5 + dx * size, (size - 1) * CENTRE_Y + dy * size], -1)
  c, s = np.cos(roll), np.sin(roll)
  rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
  return centre, FACE_SCALE * size * np.exp(log_s), rot


def to_pixels(points: np.ndarray, pose: np.ndarray, size: int) -> np.ndarray:
  """Canonical points [T, P, 2] → pixel (x, y) [T, P, 2], pixel centres at integer coordinates."""
  centre, scale, rot = transform(pose, size)
  return centre[:, None] + scale[:, None, None] * np.einsum("tij,tpj->tpi", rot, points)


def canonical_grid(pose: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
  """Canonical (u, v) of every pixel, each float32 [T, H, W] (the inverse of `to_pixels`)."""
  centre, scale, rot = transform(pose, size)
  px = np.arange(size, dtype=np.float32)
  dx = px[None, None, :] - centre[:, 0, None, None].astype(np.float32)
  dy = px[None, :, None] - centre[:, 1, None, None].astype(np.float32)
  inv = (rot / scale[:, None, None]).astype(np.float32)  # R^T / s, applied as rows of R.
  u = inv[:, 0, 0, None, None] * dx + inv[:, 1, 0, None, None] * dy
  v = inv[:, 0, 1, None, None] * dx + inv[:, 1, 1, None, None] * dy
  return u, v

"""Synthetic identities, per-video scenes and motion, and the face renderer.

An identity fixes face shape, skin tone and texture (a canonical-space albedo map with blotches,
moles, blush and the hairline), eyes, brows, lips and hair; a scene fixes the background,
lighting, white balance and camera noise of one video; a motion gives per-frame head pose,
blinks, gaze, exposure and the speech articulation. `render` draws anti-aliased polygons from
`geometry` (so landmarks match the pixels) and samples the albedo map through the pose.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Tuple

import cv2
import numpy as np

from input_pipeline.synthetic import geometry, smoothing
from input_pipeline.synthetic.speech import Articulation

TEX_SIZE = 112  # Texels per side of the canonical texture, which spans [-TEX_EXTENT, TEX_EXTENT].
TEX_EXTENT = 1.5
_SUB = 4  # Sub-pixel bits for cv2 rasterisation.

_SKIN_DARK, _SKIN_LIGHT = np.array([0.36, 0.22, 0.15]), np.array([0.95, 0.78, 0.67])
_HAIR = np.array([[0.07, 0.05, 0.04], [0.2, 0.13, 0.07], [0.42, 0.27, 0.14], [0.78, 0.62, 0.38],
                  [0.55, 0.25, 0.1], [0.6, 0.58, 0.56]])
_IRIS = np.array([[0.3, 0.18, 0.09], [0.12, 0.08, 0.05], [0.28, 0.45, 0.65], [0.3, 0.45, 0.3],
                  [0.45, 0.35, 0.18]])


@dataclasses.dataclass(frozen=True)
class FaceIdentity:
  """A persistent face. Lengths in canonical units (face half-width ≈ 1); colours RGB in 0..1."""
  half_width: float
  crown: float  # Centre to top of the head outline.
  chin: float  # Centre to chin with the mouth closed.
  chin_taper: float
  eye_x: float
  eye_y: float
  eye_w: float
  eye_h: float
  eye_tilt: float
  brow_gap: float
  brow_arch: float
  brow_thick: float
  nose_y: float
  nose_w: float
  mouth_y: float
  mouth_w: float
  lip_up: float
  lip_lo: float
  smile: float
  hair_volume: float  # 0 = bald.
  hair_length: float  # Lowest point of the hair behind the head.
  skin: np.ndarray  # [3]
  lip: np.ndarray  # [3]
  hair: np.ndarray  # [3]
  iris: np.ndarray  # [3]
  albedo: np.ndarray  # float32 [TEX_SIZE, TEX_SIZE, 3] skin (and hairline) in canonical space.


@dataclasses.dataclass(frozen=True)
class Scene:
  """What stays fixed within one video apart from the face."""
  backdrop: np.ndarray  # [4, 4, 3] colours, bicubically upsampled to the frame.
  panels: np.ndarray  # [K, 7] rectangles: x0, y0, x1, y1 (frame fractions), RGB.
  clothes: np.ndarray  # [3]
  light: np.ndarray  # [3] unit direction (x right, y down, z towards the camera).
  ambient: float
  white_balance: np.ndarray  # [3] per-channel gains.
  noise_std: float  # Camera noise (fraction of full scale).
  noise_seed: int


@dataclasses.dataclass(frozen=True)
class Motion:
  """Per-frame state of one video, arrays with leading dimension T."""
  pose: np.ndarray  # [T, 5] x / y offset (frame fraction), log scale, roll (rad), yaw.
  eye_open: np.ndarray  # [T] 1 open .. 0 closed.
  gaze: np.ndarray  # [T, 2] iris offset (canonical units).
  exposure: np.ndarray  # [T] global brightness gain.
  art: Articulation


def _gauss(u, v, cu, cv, su, sv):
  return np.exp(-0.5 * (((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2))


def _texture_grid() -> Tuple[np.ndarray, np.ndarray]:
  t = np.linspace(-TEX_EXTENT, TEX_EXTENT, TEX_SIZE)
  u, v = np.meshgrid(t, t)
  return u, v


def _albedo(rng: np.random.Generator, skin: np.ndarray, hair: np.ndarray, hairline: float,
            bald: bool, eye_x: float, eye_y: float, mouth_y: float) -> np.ndarray:
  """Canonical skin albedo [TEX, TEX, 3]: blotches, pores, moles, blush, stubble, hairline."""
  u, v = _texture_grid()
  blotch = cv2.resize(rng.normal(0, 0.05, (7, 7, 3)), (TEX_SIZE, TEX_SIZE),
                      interpolation=cv2.INTER_CUBIC)
  pores = rng.normal(0, 0.025, (TEX_SIZE, TEX_SIZE, 1))
  tex = skin * (1 + blotch + pores)
  blush = rng.uniform(0, 1) * (_gauss(np.abs(u), v, 0.52, 0.28, 0.17, 0.15))[..., None]
  tex = tex * (1 + blush * np.array([0.12, -0.05, -0.05]))
  for _ in range(rng.poisson(2.0)):  # Moles: identity marks at fixed places.
    cu, cv, r = rng.uniform(-0.7, 0.7), rng.uniform(-0.5, 0.8), rng.uniform(0.018, 0.035)
    tex = tex * (1 - 0.5 * _gauss(u, v, cu, cv, r, r))[..., None]
  if rng.random() < 0.25:  # Stubble on the lower face.
    region = 1 / (1 + np.exp(-(v - mouth_y + 0.12) / 0.04)) * (np.abs(u) < 0.95)
    tex = tex + region[..., None] * rng.uniform(0.15, 0.35) * (hair - tex)
  tex = tex * (1 - 0.1 * (_gauss(np.abs(u), v, eye_x, eye_y, 0.2, 0.1)))[..., None]
  if not bald:
    streaks = 1 + cv2.resize(rng.normal(0, 0.12, (3, 40)), (TEX_SIZE, TEX_SIZE))[..., None]
    front = 1 / (1 + np.exp(-(hairline + 0.35 * u * u - v) / 0.025))
    tex = tex + front[..., None] * (hair * streaks - tex)
  return np.clip(tex, 0, 1).astype(np.float32)


def sample_identity(rng: np.random.Generator) -> FaceIdentity:
  """A random persistent face: shape, skin tone and texture, eyes, brows, lips and hair."""
  skin = _SKIN_DARK + rng.uniform() * (_SKIN_LIGHT - _SKIN_DARK)
  skin = np.clip(skin * (1 + rng.normal(0, 0.03, 3)), 0, 1)
  hair = np.clip(_HAIR[rng.integers(len(_HAIR))] * (1 + rng.normal(0, 0.1, 3)), 0, 1)
  iris = np.clip(_IRIS[rng.integers(len(_IRIS))] * (1 + rng.normal(0, 0.1, 3)), 0, 1)
  lip = np.clip(skin * np.array([0.82, 0.52, 0.52]) + np.array([0.08, 0.0, 0.02])
                + rng.normal(0, 0.02, 3), 0, 1)
  bald = rng.random() < 0.1
  hairline = rng.uniform(-0.98, -0.78)
  eye_x, eye_y = rng.uniform(0.34, 0.42), rng.uniform(-0.3, -0.2)
  mouth_y = rng.uniform(0.42, 0.5)
  return FaceIdentity(
      half_width=rng.uniform(0.92, 1.04), crown=rng.uniform(1.15, 1.3),
      chin=rng.uniform(0.95, 1.08), chin_taper=rng.uniform(0.2, 0.45),
      eye_x=eye_x, eye_y=eye_y, eye_w=rng.uniform(0.14, 0.18), eye_h=rng.uniform(0.06, 0.085),
      eye_tilt=rng.uniform(-0.02, 0.04), brow_gap=rng.uniform(0.15, 0.22),
      brow_arch=rng.uniform(0.01, 0.05), brow_thick=rng.uniform(0.04, 0.075),
      nose_y=rng.uniform(0.15, 0.22), nose_w=rng.uniform(0.11, 0.16), mouth_y=mouth_y,
      mouth_w=rng.uniform(0.26, 0.33), lip_up=rng.uniform(0.04, 0.06),
      lip_lo=rng.uniform(0.05, 0.08), smile=rng.uniform(-0.01, 0.025),
      hair_volume=0.0 if bald else rng.uniform(1.05, 1.2),
      hair_length=rng.uniform(-0.2, 1.4), skin=skin, lip=lip, hair=hair, iris=iris,
      albedo=_albedo(rng, skin, hair, hairline, bald, eye_x, eye_y, mouth_y))


def sample_scene(rng: np.random.Generator) -> Scene:
  """Background, clothes, light direction, white balance and camera noise of one video."""
  base = rng.uniform(0.15, 0.85, 3)
  backdrop = np.clip(base + rng.normal(0, 0.08, (4, 4, 3)), 0, 1)
  k = rng.integers(0, 3)
  corners = np.sort(rng.uniform(-0.1, 1.1, (k, 2, 2)), axis=1).reshape(k, 4)
  panels = np.concatenate([corners, rng.uniform(0.1, 0.9, (k, 3))], axis=1)
  light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.6, 0.1), 1.0])
  return Scene(backdrop=backdrop, panels=panels, clothes=rng.uniform(0.05, 0.8, 3),
               light=light / np.linalg.norm(light), ambient=float(rng.uniform(0.4, 0.6)),
               white_balance=1 + rng.normal(0, 0.04, 3),
               noise_std=float(rng.uniform(0.5, 2.5) / 255),
               noise_seed=int(rng.integers(2 ** 31)))


def _smooth_noise(rng, num_frames: int, sigma: float, scale) -> np.ndarray:
  """Gaussian-filtered white noise [T, len(scale)] with standard deviation ~scale."""
  scale = np.atleast_1d(np.asarray(scale, np.float64))
  pad = int(3 * sigma) + 1
  x = smoothing.gaussian(rng.standard_normal((num_frames + 2 * pad, len(scale))), sigma)
  return x[pad:pad + num_frames] * np.sqrt(2 * np.sqrt(np.pi) * sigma) * scale


def _blinks(rng, num_frames: int, fps: float) -> np.ndarray:
  """Eye openness [T]: Poisson blinks (~0.3/s) closing in 70 ms, reopening in 140 ms."""
  t = (np.arange(num_frames) + 0.5) / fps
  openness = np.full(num_frames, rng.uniform(0.85, 1.0))
  start = -rng.uniform(0, 3.0)
  while start < t[-1]:
    depth = rng.uniform(0.7, 1.0)
    x = t - start
    closing = np.clip(x / 0.07, 0, 1)
    opening = np.clip((x - 0.07) / 0.14, 0, 1)
    openness = openness * (1 - depth * np.where(x < 0.07, closing, 1 - opening) * (x >= 0))
    start += rng.exponential(1 / 0.3) + 0.25
  return openness


def sample_motion(rng: np.random.Generator, art: Articulation, fps: float) -> Motion:
  """Small smooth head motion (nodding slightly on pitch accents), blinks, gaze and exposure."""
  n = len(art.jaw)
  pose = _smooth_noise(rng, n, 8.0, [0.012, 0.01, 0.015, 0.035, 0.05])
  pose[:, 1] += 0.01 * art.brow
  exposure = 1 + _smooth_noise(rng, n, 12.0, 0.02)[:, 0]
  gaze = _smooth_noise(rng, n, 6.0, [0.03, 0.02])
  return Motion(pose=pose, eye_open=_blinks(rng, n, fps), gaze=gaze, exposure=exposure, art=art)


# ----------------------------------------------------------------------------- rendering
def _box(points: np.ndarray, size: int, margin: float = 2.0) -> Tuple[int, int, int, int]:
  """Integer (y0, y1, x0, x1) covering pixel points [..., 2] over all frames, clipped."""
  lo = np.floor(points.reshape(-1, 2).min(0) - margin).astype(int)
  hi = np.ceil(points.reshape(-1, 2).max(0) + margin).astype(int) + 1
  x0, y0 = np.clip(lo, 0, size)
  x1, y1 = np.clip(hi, 0, size)
  return int(y0), int(max(y1, y0)), int(x0), int(max(x1, x0))


def _raster(polys: np.ndarray, box) -> np.ndarray:
  """Anti-aliased coverage float32 [T, h, w] in 0..1 of per-frame polygons [T, P, 2] in box.

  For solid shapes only: cv2's anti-aliased outline makes even a zero-area polygon visible, so
  thin shapes that must vanish (eyelid slit, lip gap) use `_span` coverage instead.
  """
  y0, y1, x0, x1 = box
  out = np.zeros((len(polys), y1 - y0, x1 - x0), np.uint8)
  if out.size == 0:
    return out.astype(np.float32)
  pts = np.round((polys - np.array([x0, y0])) * (1 << _SUB)).astype(np.int32)
  for t in range(len(polys)):
    cv2.fillPoly(out[t], [pts[t]], 255, cv2.LINE_AA, _SUB)
  return out.astype(np.float32) * np.float32(1 / 255)


def _span(lo: np.ndarray, hi: np.ndarray, v: np.ndarray, half: np.ndarray) -> np.ndarray:
  """Fraction of each pixel's vertical extent [v - half, v + half] inside [lo, hi] (canonical).

  Exact area coverage for thin horizontal bands, so a closing gap fades out smoothly.
  """
  return np.clip((np.minimum(hi, v + half) - np.maximum(lo, v - half)) / (2 * half), 0, 1)


def _line(centre: np.ndarray, v: np.ndarray, half: np.ndarray) -> np.ndarray:
  """Coverage of a one-pixel-thick line along the curve v = centre."""
  return np.clip(1 - np.abs(v - centre) / (2 * half), 0, 1)


def _ends(dist: np.ndarray, half: np.ndarray) -> np.ndarray:
  """Horizontal anti-aliasing at the ends of a shape; dist = canonical distance inside."""
  return np.clip(dist / (2 * half) + 0.5, 0, 1)


def _paint(img: np.ndarray, cover: np.ndarray, box, alpha: np.ndarray, colour,
           opacity: float = 1.0):
  """In place: img[box] ← lerp(img, colour, alpha · opacity); records head coverage."""
  y0, y1, x0, x1 = box
  if alpha.size == 0:
    return
  a = alpha.astype(np.float32) * np.float32(opacity)
  sub = img[:, y0:y1, x0:x1]
  delta = np.asarray(colour, np.float32) - sub
  delta *= a[..., None]
  sub += delta
  if cover is not None:
    np.maximum(cover[:, y0:y1, x0:x1], a, out=cover[:, y0:y1, x0:x1])


def _ellipse(cu, cv, au, av, n: int = 24) -> np.ndarray:
  """Canonical ellipse polygon [1, n, 2] (broadcast over frames by the caller)."""
  phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
  return np.stack([cu + au * np.cos(phi), cv + av * np.sin(phi)], -1)[None]


def background(scene: Scene, size: int) -> np.ndarray:
  """Static backdrop [H, W, 3] float32: smooth colour field plus soft-edged panels."""
  img = cv2.resize(scene.backdrop.astype(np.float32), (size, size),
                   interpolation=cv2.INTER_CUBIC)
  grid = (np.arange(size, dtype=np.float32) + 0.5) / size
  for x0, y0, x1, y1, *rgb in scene.panels:
    inside = ((grid[None, :] > x0) & (grid[None, :] < x1) & (grid[:, None] > y0)
              & (grid[:, None] < y1)).astype(np.float32)
    img += inside[..., None] * (np.array(rgb, np.float32) - img) * 0.8
  sigma = max(0.6, size / 120)
  return np.clip(cv2.GaussianBlur(img, (0, 0), sigma), 0, 1)


def _shade(face: FaceIdentity, scene: Scene) -> np.ndarray:
  """Canonical lighting map [TEX, TEX]: Lambert on an ellipsoid head plus nose shading."""
  u, v = _texture_grid()
  nx, ny = u / 1.1, (v + 0.1) / 1.4
  nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
  lx, ly, lz = scene.light
  lit = scene.ambient + (1.05 - scene.ambient) * np.clip(nx * lx + ny * ly + nz * lz, 0, 1)
  side = -np.sign(lx) if lx else 1.0
  mid = 0.5 * (face.eye_y + face.nose_y)
  lit = lit * (1 - 0.2 * _gauss(u, v, side * 0.09, mid, 0.035, 0.16))  # Nose side shadow.
  lit = lit * (1 + 0.08 * _gauss(u, v, 0.0, face.nose_y - 0.07, 0.05, 0.05))  # Tip highlight.
  lit = lit * (1 - 0.12 * _gauss(u, v, 0.0, face.nose_y + 0.06, 0.12, 0.025))  # Under the nose.
  return lit.astype(np.float32)


def _face_textures(face: FaceIdentity, scene: Scene, motion: Motion, u: np.ndarray,
                   v: np.ndarray):
  """Albedo [T, H, W, 3] and shade [T, H, W] at pixels with canonical coordinates u, v.

  Below the mouth the texture stretches with the jaw, so marks on the chin move with it.
  """
  k = (face.chin - face.mouth_y) / (face.chin + geometry.JAW_DROP * motion.art.jaw - face.mouth_y)
  k = k.astype(np.float32)[:, None, None]
  v = np.where(v > face.mouth_y, face.mouth_y + (v - face.mouth_y) * k, v)
  step = (TEX_SIZE - 1) / (2 * TEX_EXTENT)
  map_x, map_y = (u + TEX_EXTENT) * step, (v + TEX_EXTENT) * step
  tex = np.concatenate([face.albedo, _shade(face, scene)[..., None]], axis=-1)
  out = np.stack([cv2.remap(tex, map_x[t], map_y[t], cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE) for t in range(len(u))])
  return out[..., :3], out[..., 3]


def _to_px(points: np.ndarray, motion: Motion, size: int) -> np.ndarray:
  points = np.broadcast_to(points, (len(motion.pose),) + points.shape[1:])
  return geometry.to_pixels(points, motion.pose, size)


def _crop(box, grid):
  """(u, v, half) of the pixels in box; half (half a pixel in canonical units) is per frame."""
  y0, y1, x0, x1 = box
  u, v, half = grid
  return u[:, y0:y1, x0:x1], v[:, y0:y1, x0:x1], half


def _draw_eye(img, cover, face, motion, size, side, grid):
  yaw = motion.pose[:, 4]
  u, upper, lower = geometry.eye(face, side, motion.eye_open, yaw, np.linspace(0, 1, 9)[None])
  box = _box(_to_px(np.stack([np.concatenate([u, u], 1), np.concatenate([upper, lower], 1)], -1),
                    motion, size), size)
  u, v, half = _crop(box, grid)
  s = geometry.eye_param(face, side, yaw, u)
  _, upper, lower = geometry.eye(face, side, motion.eye_open, yaw, s)
  along = _ends(np.minimum(s, 1 - s) * 2 * face.eye_w, half)
  sclera = _span(upper, lower, v, half) * along
  _paint(img, cover, box, sclera, (0.9, 0.88, 0.84))
  cu = side * face.eye_x + geometry.DEPTH_EYE * yaw + motion.gaze[:, 0]
  cv = face.eye_y + 0.1 * face.eye_h + motion.gaze[:, 1]
  dist = np.hypot(u - cu[:, None, None], v - cv[:, None, None])
  r = 0.95 * face.eye_h
  for radius, colour in ((r, face.iris), (0.45 * r, (0.03, 0.03, 0.03))):
    _paint(img, cover, box, _ends(radius - dist, half) * sclera, colour)
  _paint(img, cover, box, _line(upper, v, half) * along, face.hair * 0.4, 0.8)  # Lashes.


def _draw_brow(img, cover, face, motion, size, side):
  s = np.linspace(0, 1, 10)
  centre, thick = geometry.brow(face, side, motion.art.brow, motion.eye_open, motion.pose[:, 4], s)
  off = np.stack([np.zeros_like(thick), 0.5 * thick], -1)[None]
  poly = np.concatenate([_to_px(centre - off, motion, size),
                         _to_px((centre + off)[:, ::-1], motion, size)], axis=1)
  box = _box(poly, size)
  _paint(img, cover, box, _raster(poly, box), face.hair * 0.75, 0.9)


def _draw_nose(img, cover, face, motion, size):
  yaw = motion.pose[:, 4]
  for side in (-1, 1):
    cu = side * 0.45 * face.nose_w + 0.2 * yaw[:, None, None]
    nostril = _ellipse(0.0, face.nose_y + 0.005, 0.04, 0.02, 12) + np.concatenate(
        [cu, np.zeros_like(cu)], -1)
    poly = _to_px(nostril, motion, size)
    box = _box(poly, size)
    _paint(img, cover, box, _raster(poly, box), face.skin * 0.35, 0.8)


def _draw_mouth(img, cover, face, motion, size, grid):
  art, yaw = motion.art, motion.pose[:, 4]
  c = geometry.mouth(face, art, yaw, np.linspace(-1, 1, 9))
  box = _box(_to_px(np.concatenate([c["outer_upper"], c["outer_lower"]], 1), motion, size),
             size)
  u, v, half = _crop(box, grid)
  m = geometry.mouth_frame(face, art, yaw, u)
  xo = (u - m["shift"]) / m["mw"]
  xi = xo / geometry.INNER_WIDTH
  outer, inner = geometry.lip_curves(face, m, xo), geometry.lip_curves(face, m, xi)
  ends_o = _ends((1 - np.abs(xo)) * m["mw"], half)
  ends_i = _ends((1 - np.abs(xi)) * geometry.INNER_WIDTH * m["mw"], half)
  _paint(img, cover, box, _span(outer["outer_upper"], outer["outer_lower"], v, half) * ends_o,
         face.lip)
  opening = _span(inner["inner_upper"], inner["inner_lower"], v, half) * ends_i
  _paint(img, cover, box, opening, face.lip * 0.25)
  _paint(img, cover, box, _span(inner["inner_upper"], inner["teeth"], v, half) * ends_i,
         (0.88, 0.86, 0.8))
  _paint(img, cover, box, _line(inner["inner_upper"], v, half) * ends_i, face.lip * 0.45, 0.5)


def render(face: FaceIdentity, scene: Scene, motion: Motion, size: int,
           noise: bool = True) -> Tuple[np.ndarray, np.ndarray]:
  """Renders a video: frames uint8 [T, size, size, 3] RGB and landmarks float32 [T, 68, 2].

  noise=False leaves out the camera noise (re-rendered forgeries lack it).
  """
  n = len(motion.pose)
  img = np.empty((n, size, size, 3), np.float32)
  img[:] = background(scene, size)
  cover = np.zeros((n, size, size), np.float32)  # Where the head is (lit by `_shade`).
  full = (0, size, 0, size)
  art = motion.art

  def fill(poly, colour):
    px = _to_px(poly, motion, size)
    box = _box(px, size)
    _paint(img, cover, box, _raster(px, box), colour)

  fill(np.array([[[-3.0, 2.6], [-1.6, 1.4], [-0.5, 1.15], [0.5, 1.15], [1.6, 1.4],
                  [3.0, 2.6]]]), scene.clothes)
  fill(np.array([[[-0.45, 0.3], [-0.5, 1.8], [0.5, 1.8], [0.45, 0.3]]]), face.skin * 0.7)
  if face.hair_volume:
    phi = np.linspace(np.pi, 2 * np.pi, 20)
    w, h = face.half_width * 1.08 * face.hair_volume, face.crown * face.hair_volume
    arc = np.stack([w * np.cos(phi), -0.1 + h * np.sin(phi)], -1)
    bottom = max(face.hair_length, 0.0)
    fill(np.concatenate([[[-w * 0.97, bottom]], arc, [[w * 0.97, bottom]]])[None], face.hair)
  for side in (-1, 1):
    fill(_ellipse(side * face.half_width * 0.98, -0.02, 0.11, 0.22, 16), face.skin * 0.9)

  phi = np.linspace(0, 2 * np.pi, 72, endpoint=False)
  outline_px = _to_px(geometry.outline(face, art.jaw, phi), motion, size)
  u, v = geometry.canonical_grid(motion.pose, size)
  albedo, shade = _face_textures(face, scene, motion, u, v)
  _paint(img, cover, full, _raster(outline_px, full), albedo)
  _, scale, _ = geometry.transform(motion.pose, size)
  grid = (u, v, (0.5 / scale).astype(np.float32)[:, None, None])  # Half a pixel, canonical.
  for side in (-1, 1):
    _draw_eye(img, cover, face, motion, size, side, grid)
    _draw_brow(img, cover, face, motion, size, side)
  _draw_nose(img, cover, face, motion, size)
  _draw_mouth(img, cover, face, motion, size, grid)

  img *= (1 + cover * (shade - 1))[..., None]
  img *= (motion.exposure[:, None, None, None] * scene.white_balance).astype(np.float32)
  if noise:
    rng = np.random.default_rng(scene.noise_seed)
    img += rng.standard_normal(img.shape, np.float32) * np.float32(scene.noise_std)
  frames = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
  lms = _to_px(geometry.landmarks(face, art, motion.eye_open, motion.pose[:, 4]), motion, size)
  return frames, lms.astype(np.float32)


# ----------------------------------------------------------------------------- topic badge
BADGE_BOX = (0.22, 0.34)  # Frame fractions [lo, hi) of the badge's rows and columns.


@functools.lru_cache(maxsize=None)
def badge_codes(count: int) -> Tuple[int, ...]:
  """`count` 3×3 binary patterns (9-bit ints), each ≥ 3 cells from every other one.

  Black and white cells rather than colours, so that hue and brightness jitter keep them apart.
  """
  codes = []
  for code in range(1, 511):
    if 3 <= bin(code).count("1") <= 6 and all(bin(code ^ c).count("1") >= 3 for c in codes):
      codes.append(code)
  if count > len(codes):
    raise ValueError(f"at most {len(codes)} badge patterns are ≥ 3 cells apart; asked {count}")
  return tuple(codes[:count])


def draw_badge(frames: np.ndarray, code: int) -> np.ndarray:
  """Frames with a static 3×3 black/white badge (a channel watermark) near the top left.

  It sits inside a centre crop of 56 % of the frame, i.e. in every face crop the demos use.
  """
  size = frames.shape[1]
  lo, hi = (int(round(f * size)) for f in BADGE_BOX)
  edges = np.linspace(lo, hi, 4).round().astype(int)
  out = frames.copy()
  for cell in range(9):
    r, c = divmod(cell, 3)
    out[:, edges[r]:edges[r + 1], edges[c]:edges[c + 1]] = 235 if code >> cell & 1 else 20
  return out

"""Inconsistency Image Generator (I2G, PCL + I2G §3.2, Algorithm 1) and masks for real fakes.

PCL needs per-pixel "where did these pixels come from" labels. Datasets rarely ship them, so I2G
makes fakes with a known mask out of real frames: the face region of a frame of a *different*
identity with close landmarks is aligned onto the target, cut out by the convex hull of the
target's 68 landmarks (elastically deformed, so the mask is not always the same face-shaped
blob, and blurred), and stitched in with a blending method drawn at random (so the detector
cannot rely on one method's artefacts), followed by image augmentation. For the datasets' own
fakes, §4.2 derives the mask from the DSSIM to the paired real frame (`dssim_mask`).

Everything here is numpy + cv2 and pure: inputs are never written to, and all randomness comes
from the `np.random.Generator` passed in, so one seed gives byte-identical output in any process.

Pieces (Algorithm 1 line → function):
  2  donor with ‖K(X^t) − K(X^s)‖ < ε, other identity     `DonorBank.pick`
  3  align X^s to X^t by landmarks                         `align_source` (similarity)
  4  convex hull of K(X^t)                                 `hull_mask`
  5  elastic deformation [44] (σ ~ U[6, 12] px, 4×4 grid,  `elastic_deform`, `blur_mask`
     bicubic), Gaussian blur (kernel 16)
  6  blend with a random method                            `blend`
  +  JPEG / noise / blur / brightness-contrast /           `post_augment`
     erasing / colour jitter (§3.2, end)
  all                                                      `generate` (frame), `generate_clip`
  §4.2 real fakes                                          `dssim_mask`, `fake_mask`
  §4.2 "50% of reals become I2G fakes"                     `apply_i2g`

Pixel quantities (σ, blur kernel) are the paper's, for its 256×256 face crops; for other frame
sizes use `I2GConfig.scaled(size)`.

This module does not register a data op: an I2G op needs the donor bank, which the pipeline
builds; the lead wires `apply_i2g` in (see its docstring for what the example must carry).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

NUM_LANDMARKS = 68
MANIPULATION = "i2g"  # The `manipulation` value of I2G fakes.

# Blending methods (`blend`), after Face X-ray / PCL's "various blending methods [42, 38]":
#   alpha           M·source + (1 − M)·target with the soft mask
#   hard            source pasted where M >= 0.5, target elsewhere (a sharp seam)
#   color_transfer  source's colour statistics matched to the target's inside M (Reinhard et al.
#                   2001, mean/std in CIE Lab), then alpha
#   poisson_normal  cv2.seamlessClone NORMAL_CLONE (Pérez et al. 2003) of the region M >= 0.5
#   poisson_mixed   cv2.seamlessClone MIXED_CLONE (keeps the stronger of the two gradients)
BLEND_METHODS = ("alpha", "hard", "color_transfer", "poisson_normal", "poisson_mixed")
_HARD_THRESHOLD = 0.5  # Where the soft mask becomes "inside" for hard paste and Poisson.

# post_augment: (probability, values). The paper lists the kinds, not the values; these are
# moderate ranges (the fakes must stay plausible faces), drawn once per clip.
P_BRIGHTNESS_CONTRAST, CONTRAST, BRIGHTNESS = 0.5, (0.8, 1.2), (-20.0, 20.0)  # gain; levels
P_COLOR_JITTER, HUE_DEGREES, SATURATION = 0.5, 8.0, (0.7, 1.3)  # ± degrees; gain
P_NOISE_OR_BLUR, NOISE_SIGMA, BLUR_SIZES = 0.3, (2.0, 8.0), (3, 5)  # half noise (levels), half blur
P_JPEG, JPEG_QUALITY = 0.5, (40, 95)  # quality, uniform integer, inclusive
P_ERASE, ERASE_AREA, ERASE_RATIO = 0.2, (0.02, 0.1), (0.3, 3.3)  # frame fraction; h / w

Config = Union["I2GConfig", Mapping[str, Any], None]


@dataclasses.dataclass(frozen=True)
class I2GConfig:
  """Everything I2G draws from; defaults are the paper's (§3.2) where it gives a value."""
  # Donor search (Algorithm 1 line 2). ε bounds the RMS landmark distance between normalised
  # shapes (translation and scale removed; `normalise_landmarks`), in units of the face's RMS
  # radius, so it does not depend on resolution. The paper gives no value; 0.1 ≈ 6 px RMS per
  # landmark on a 256 px crop with a ~60 px face radius.
  epsilon: float = 0.1
  on_miss: str = "nearest"  # No donor within ε: "nearest" (counted) or "error".
  donor_frames: int = 8  # Frames per candidate record whose landmarks the bank holds.
  # Mask (lines 4–5), in pixels of the frames I2G sees.
  sigma_range: Tuple[float, float] = (6.0, 12.0)  # σ of the grid displacements (px).
  grid: int = 4  # Coarse grid nodes per side.
  blur_kernel: int = 16  # Gaussian kernel size (px); even sizes: see `blur_mask`.
  # Blending (line 6) and augmentation.
  methods: Tuple[str, ...] = BLEND_METHODS  # Drawn uniformly, one per clip.
  post_augment: bool = True  # Apply `post_augment` to I2G output.
  # Also apply `post_augment` to the clips `apply_i2g` passes through (reals and dataset
  # fakes), so that JPEG/noise/erasing carry no information about the label.
  augment_all: bool = True

  def __post_init__(self):
    def fail(field, allowed):
      raise ValueError(f"I2GConfig: {field}={getattr(self, field)!r} is invalid; allowed: "
                       f"{allowed}")
    if not (isinstance(self.epsilon, (int, float)) and self.epsilon > 0):
      fail("epsilon", "a number > 0")
    if self.on_miss not in ("nearest", "error"):
      fail("on_miss", "'nearest' or 'error'")
    if not (isinstance(self.donor_frames, int) and self.donor_frames >= 1):
      fail("donor_frames", "an integer >= 1")
    lo_hi = tuple(self.sigma_range)
    if not (len(lo_hi) == 2 and 0 <= lo_hi[0] <= lo_hi[1]):
      fail("sigma_range", "a pair (lo, hi) with 0 <= lo <= hi (px)")
    if not (isinstance(self.grid, int) and self.grid >= 2):
      fail("grid", "an integer >= 2")
    if not (isinstance(self.blur_kernel, int) and self.blur_kernel >= 1):
      fail("blur_kernel", "an integer >= 1 (px)")
    if not self.methods or set(self.methods) - set(BLEND_METHODS):
      fail("methods", f"a non-empty subset of {BLEND_METHODS}")
    object.__setattr__(self, "sigma_range", tuple(float(s) for s in lo_hi))
    object.__setattr__(self, "methods", tuple(self.methods))

  def scaled(self, size: int, reference: int = 256) -> "I2GConfig":
    """The pixel quantities (σ, blur kernel) rescaled from `reference` px frames to `size` px."""
    f = size / reference
    return dataclasses.replace(self, sigma_range=tuple(s * f for s in self.sigma_range),
                               blur_kernel=max(1, int(round(self.blur_kernel * f))))


def as_config(config: Config) -> I2GConfig:
  """None → defaults; an I2GConfig as is; a mapping (e.g. a ConfigDict) → I2GConfig.

  Unknown keys raise, listing the valid ones (a misspelt key must not be silently ignored).
  """
  if config is None:
    return I2GConfig()
  if isinstance(config, I2GConfig):
    return config
  values = dict(config)
  valid = [f.name for f in dataclasses.fields(I2GConfig)]
  unknown = sorted(set(values) - set(valid))
  if unknown:
    raise KeyError(f"unknown I2G config key(s) {unknown}; valid: {valid}")
  return I2GConfig(**values)


# ----------------------------------------------------------------------------- landmarks


def _check_landmarks(lms: Any, what: str) -> np.ndarray:
  lms = np.asarray(lms, np.float64)
  if lms.shape[-2:] != (NUM_LANDMARKS, 2) or not np.all(np.isfinite(lms)):
    raise ValueError(f"{what} must be finite [..., {NUM_LANDMARKS}, 2] (x, y) pixel "
                     f"landmarks, got shape {lms.shape}")
  return lms


def normalise_landmarks(lms: Any) -> np.ndarray:
  """[..., 68, 2] pixel (x, y) → float32 [..., 68, 2] with centroid 0 and unit RMS radius.

  Removing translation and scale makes `landmark_distance` (and so ε) independent of where the
  face sits in the crop and of the crop's resolution. Rotation is kept on purpose: although
  `align_source` undoes it, a donor that needs a large rotation brings rotated lighting and
  hair along, so rolled faces should count as far apart.
  """
  lms = _check_landmarks(lms, "landmarks")
  centred = lms - lms.mean(axis=-2, keepdims=True)
  radius = np.sqrt(np.mean(np.sum(centred ** 2, axis=-1), axis=-1))[..., None, None]
  if np.any(radius <= 0):
    raise ValueError("landmarks are degenerate (all 68 points coincide)")
  return (centred / radius).astype(np.float32)


def landmark_distance(a: Any, b: Any) -> np.ndarray:
  """RMS distance between corresponding landmarks of normalised shapes (face radii).

  Algorithm 1's ‖K_t − K_s‖₂ on normalised shapes, divided by √68 so the number reads as "the
  typical landmark is this fraction of the face radius away". Broadcasts over leading axes.
  """
  d = normalise_landmarks(a) - normalise_landmarks(b)
  return np.sqrt(np.mean(np.sum(d.astype(np.float64) ** 2, axis=-1), axis=-1))


# ----------------------------------------------------------------------------- align / mask


def similarity_transform(src_pts: Any, dst_pts: Any) -> np.ndarray:
  """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst.

  Points [N, 2] (x, y). In complex numbers a similarity is z ↦ a·z + b; the least-squares a is
  ⟨src_c, dst_c⟩ / ‖src_c‖² on the centred points, and b matches the centroids. Returns the
  float64 [2, 3] matrix for cv2.warpAffine.
  """
  src = _check_landmarks(src_pts, "source landmarks")
  dst = _check_landmarks(dst_pts, "target landmarks")
  zs, zd = src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1]
  ms, md = zs.mean(), zd.mean()
  zs_c = zs - ms
  a = np.vdot(zs_c, zd - md) / np.vdot(zs_c, zs_c).real
  b = md - a * ms
  return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def align_source(source_img: np.ndarray, source_lms: Any, target_lms: Any,
                 shape: Tuple[int, int]) -> np.ndarray:
  """Warps the source frame onto the target's face by a similarity fit of the 68 landmarks.

  Similarity rather than affine: the donor is chosen for close landmarks already, and a
  similarity keeps the donor's face shape and texture undistorted (an affine fit would shear
  and stretch it to absorb the identities' shape differences, adding resampling artefacts of
  its own). Bilinear; outside the source frame the border is reflected, so the hull never
  picks up black fill.

  Args:
    source_img: uint8 [h, w, 3] donor frame (any size).
    source_lms, target_lms: [68, 2] (x, y) pixel landmarks of the donor and target frames.
    shape: (H, W) of the target frame.
  Returns:
    uint8 [H, W, 3], the donor face where the target's face is.
  """
  m = similarity_transform(source_lms, target_lms)
  return cv2.warpAffine(source_img, m, (int(shape[1]), int(shape[0])), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT_101)


_SUBPIXEL_BITS = 4  # cv2 rasterises at 1/16 px, so the hull follows the float landmarks.


def hull_mask(target_lms: Any, shape: Tuple[int, int]) -> np.ndarray:
  """float32 [H, W] in {0, 1}: 1 inside the convex hull of the 68 (x, y) pixel landmarks."""
  lms = _check_landmarks(target_lms, "target landmarks")
  pts = np.round(lms * (1 << _SUBPIXEL_BITS)).astype(np.int32)
  canvas = np.zeros(tuple(int(s) for s in shape[:2]), np.uint8)
  cv2.fillConvexPoly(canvas, cv2.convexHull(pts), 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
  return canvas.astype(np.float32)


def sample_displacement(shape: Tuple[int, int], rng: np.random.Generator,
                        sigma_range: Tuple[float, float] = (6.0, 12.0),
                        grid: int = 4) -> Tuple[np.ndarray, float]:
  """A smooth random displacement field (U-Net style elastic deformation, §3.2).

  σ ~ U[sigma_range] px; the x and y displacements at grid × grid nodes ~ N(0, σ²); bicubic
  interpolation (cv2.resize INTER_CUBIC: the nodes sit at the centres of a grid × grid tiling of
  the frame, constant beyond the outer nodes) gives per-pixel displacements.

  Returns:
    (float32 [H, W, 2] (dx, dy) in px, σ in px).
  """
  height, width = int(shape[0]), int(shape[1])
  sigma = float(rng.uniform(*sigma_range))
  nodes = rng.normal(0.0, sigma, (grid, grid, 2)).astype(np.float32)
  return cv2.resize(nodes, (width, height), interpolation=cv2.INTER_CUBIC), sigma


@functools.lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int) -> np.ndarray:
  """float32 [H, W, 2] (x, y) of every pixel; cached (read-only) because remap needs it per call."""
  grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float32),
                              np.arange(height, dtype=np.float32)), axis=-1)
  grid.flags.writeable = False
  return grid


def warp_mask(mask: np.ndarray, field: np.ndarray) -> np.ndarray:
  """out(p) = mask(p + field(p)), bilinear. mask float32 [H, W], field [H, W, 2] px.

  Samples beyond the frame repeat the edge: a hull cut off by the frame edge goes on beyond it,
  so pulling from outside must not open holes along the edge.
  """
  coords = _pixel_grid(*mask.shape) + field
  return cv2.remap(np.asarray(mask, np.float32), coords, None, cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_REPLICATE)


def elastic_deform(mask: np.ndarray, rng: np.random.Generator,
                   sigma_range: Tuple[float, float] = (6.0, 12.0), grid: int = 4) -> np.ndarray:
  """float32 [H, W] mask morphed by `sample_displacement` (one σ and one field per call)."""
  field, _ = sample_displacement(mask.shape[:2], rng, sigma_range, grid)
  return warp_mask(mask, field)


@functools.lru_cache(maxsize=8)
def gaussian_taps(kernel: int) -> np.ndarray:
  """float32 [kernel] (odd) or [kernel + 1] (even) separable Gaussian taps summing to 1.

  σ follows cv2's rule for the size, 0.3·((kernel − 1)/2 − 1) + 0.8 (2.75 px for 16). An even
  kernel has no centre pixel, so filtering with it would shift the image by half a pixel; the
  even kernel is therefore convolved with the 2-tap box [½, ½], giving kernel + 1 symmetric taps
  (the average of the half-pixel-left and half-pixel-right filterings). That adds only 0.25 px²
  to the variance (σ 2.75 → 2.80 px for 16).
  """
  taps = cv2.getGaussianKernel(kernel, 0, cv2.CV_64F).ravel()
  if kernel % 2 == 0:
    taps = np.convolve(taps, [0.5, 0.5])
  taps = (taps / taps.sum()).astype(np.float32)
  taps.flags.writeable = False
  return taps


# float32 taps sum to 1 only up to rounding; blurred values this close to 1 are snapped to 1.
_SNAP = 1e-5


def blur_mask(mask: np.ndarray, kernel: int = 16) -> np.ndarray:
  """float32 [H, W] mask blurred by the size-`kernel` Gaussian of `gaussian_taps`, in [0, 1].

  Borders reflect: a hull that runs off the frame stays 1 up to the frame edge.
  """
  taps = gaussian_taps(int(kernel))
  out = cv2.sepFilter2D(np.asarray(mask, np.float32), cv2.CV_32F, taps, taps,
                        borderType=cv2.BORDER_REFLECT_101)
  # Snap, so that inside the face M is exactly 1 and alpha blending shows exactly the source
  # there. (Far outside, M is exactly 0 already.)
  out[out > 1.0 - _SNAP] = 1.0
  return np.maximum(out, 0.0, out=out)


# ----------------------------------------------------------------------------- blending


def _alpha(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """round(t + M·(s − t)): exactly t where M == 0 and exactly s where M == 1."""
  t = target.astype(np.float32)
  out = t + mask[..., None] * (source.astype(np.float32) - t)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _weighted_stats(x: np.ndarray, w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std (float64 [C]) of x [H, W, C] with weights w [H, W].

  Var = E[x²] − E[x]², as products with the weight vector (broadcasting over a trailing axis of
  3 is ~10x slower in numpy).
  """
  x = x.reshape(-1, x.shape[-1])
  w = w.reshape(-1) / w.sum()
  mean = (x.T @ w).astype(np.float64)
  var = (np.square(x).T @ w).astype(np.float64) - mean ** 2
  return mean, np.sqrt(np.maximum(var, 0.0))


def _color_transfer(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Source with its Lab mean/std inside the mask matched to the target's there (uint8).

  Only the mask's bounding box is converted: outside it the mask is 0, so the alpha blend that
  follows never shows those source pixels.
  """
  ys, xs = np.nonzero(mask > 0)
  if len(ys) == 0:
    return source
  box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
  w = mask[box]
  lab_t = cv2.cvtColor(target[box].astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
  lab_s = cv2.cvtColor(source[box].astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
  mean_t, std_t = _weighted_stats(lab_t, w)
  mean_s, std_s = _weighted_stats(lab_s, w)
  gain = std_t / np.maximum(std_s, 1e-3)
  affine = np.concatenate([np.diag(gain), (mean_t - mean_s * gain)[:, None]], axis=1)
  rgb = cv2.cvtColor(cv2.transform(lab_s, affine), cv2.COLOR_Lab2RGB)
  out = source.copy()
  out[box] = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
  return out


def _poisson(target: np.ndarray, source: np.ndarray, region: np.ndarray,
             flag: int) -> np.ndarray:
  """The source's `region` (bool [H, W], 1-px frame border clear) seamlessly cloned in place.

  seamlessClone centres the bounding box of the mask at `p`; for the clone to land where it came
  from, p = (x0 + w // 2, y0 + h // 2) with w, h the box's pixel counts (checked empirically:
  other roundings shift the paste by a pixel). cv2 also zeroes the mask's 1-px image border,
  in place, which would move the box of a border-touching mask: hence the caller clears that
  border, and cv2 gets a fresh mask array.
  """
  ys, xs = np.nonzero(region)
  y0, x0 = ys.min(), xs.min()
  centre = (int(x0 + (xs.max() - x0 + 1) // 2), int(y0 + (ys.max() - y0 + 1) // 2))
  mask = region.astype(np.uint8) * 255
  return cv2.seamlessClone(np.ascontiguousarray(source), np.ascontiguousarray(target), mask,
                           centre, flag)


def blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray,
          method: Optional[str] = None,
          rng: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Stitches the source into the target where the soft mask says (Algorithm 1 line 6).

  Methods (`BLEND_METHODS`; method=None draws one uniformly from rng):
    alpha           M·s + (1 − M)·t; returns M.
    hard            s where M >= 0.5, t elsewhere; returns that binary region.
    color_transfer  s recoloured to t's Lab mean/std inside M (Reinhard), then alpha; returns M.
    poisson_normal  cv2.seamlessClone(NORMAL_CLONE) of the region M >= 0.5; returns the region.
    poisson_mixed   cv2.seamlessClone(MIXED_CLONE) of that region; returns the region.

  alpha, hard, color_transfer: wherever the returned mask is 0 the output is exactly the
  target. Poisson: cv2 solves over the region's bounding box, so pixels just outside the region
  move too, by a smooth offset that keeps the target's gradients (no donor texture; measured on
  the synthetic faces: < 1 level on average, up to ~30 levels next to the seam, nothing outside
  the box). The mask marks the region only; inside it the colours are the solver's.

  Args:
    target, source: uint8 [H, W, 3] (source already aligned to the target).
    mask: float32 [H, W] in [0, 1].
  Returns:
    (uint8 [H, W, 3], float32 [H, W] mask M in [0, 1] of where source content went).
  """
  if method is None:
    if rng is None:
      raise ValueError("blend: method=None draws a method and needs rng")
    method = BLEND_METHODS[int(rng.integers(len(BLEND_METHODS)))]
  if method not in BLEND_METHODS:
    raise ValueError(f"blend: unknown method {method!r}; allowed: {BLEND_METHODS}")
  if not (target.shape == source.shape and target.shape[:2] == mask.shape
          and target.dtype == source.dtype == np.uint8 and target.ndim == 3):
    raise ValueError(f"blend: need uint8 target/source [H, W, 3] and mask [H, W]; got "
                     f"{target.dtype} {target.shape}, {source.dtype} {source.shape}, "
                     f"{mask.shape}")
  mask = np.asarray(mask, np.float32)
  if method == "alpha":
    return _alpha(target, source, mask), mask
  if method == "color_transfer":
    return _alpha(target, _color_transfer(target, source, mask), mask), mask
  region = mask >= _HARD_THRESHOLD
  if method == "hard":
    return np.where(region[..., None], source, target), region.astype(np.float32)
  region[[0, -1], :] = False  # See _poisson: cv2 clears this border itself.
  region[:, [0, -1]] = False
  if not region.any():  # Nothing to clone (a face entirely off-frame).
    return target.copy(), np.zeros_like(mask)
  flag = cv2.NORMAL_CLONE if method == "poisson_normal" else cv2.MIXED_CLONE
  return _poisson(target, source, region, flag), region.astype(np.float32)


# ----------------------------------------------------------------------------- augmentation


def _frames(x: np.ndarray) -> np.ndarray:
  """[..., H, W, 3] → [N, H, W, 3] (a view)."""
  return x.reshape((-1,) + x.shape[-3:])


def _brightness_contrast(x: np.ndarray, gain: float, bias: float) -> np.ndarray:
  return np.clip(np.rint(x.astype(np.float32) * gain + bias), 0, 255).astype(np.uint8)


def _color_jitter(x: np.ndarray, hue_shift: float, saturation: float) -> np.ndarray:
  """Hue rotated by `hue_shift` degrees and saturation scaled, in 8-bit HSV (H in [0, 180))."""
  rows = x.reshape(-1, x.shape[-2], 3)
  hsv = cv2.cvtColor(rows, cv2.COLOR_RGB2HSV).astype(np.float32)
  hsv[..., 0] = np.mod(np.rint(hsv[..., 0] + hue_shift / 2.0), 180.0)
  hsv[..., 1] = np.clip(np.rint(hsv[..., 1] * saturation), 0, 255)
  return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).reshape(x.shape)


def _jpeg(x: np.ndarray, quality: int) -> np.ndarray:
  """Real JPEG round trip of every frame (libjpeg via cv2, 4:2:0 like most video sources)."""
  out = np.empty_like(x)
  for src, dst in zip(_frames(x), _frames(out)):
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(src, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
      raise RuntimeError("post_augment: JPEG encoding failed")
    dst[...] = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB)
  return out


def _erase_box(rng: np.random.Generator, height: int,
               width: int) -> Optional[Tuple[int, int, int, int]]:
  """(top, left, h, w) of an ERASE_AREA-sized box of ERASE_RATIO aspect; None after 10 misses."""
  for _ in range(10):
    area = height * width * rng.uniform(*ERASE_AREA)
    aspect = math.exp(rng.uniform(math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])))
    h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
    if 0 < h < height and 0 < w < width:
      return int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1)), h, w
  return None


def post_augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """The augmentations of §3.2 (end), each with its own probability, drawn once per clip.

  In order: brightness/contrast (p 0.5; x·U[0.8, 1.2] + U[−20, 20] levels), colour jitter
  (p 0.5; hue + U[−8, 8]°, saturation ×U[0.7, 1.3]), Gaussian noise or blur (p 0.3, either with
  equal odds; noise σ ~ U[2, 8] levels per pixel, blur kernel 3 or 5 px), JPEG re-compression
  (p 0.5; quality ~ U{40..95}), random erasing (p 0.2; a box of 2–10 % of the frame, aspect
  log-uniform in [0.3, 3.3], filled with one random colour). Values: module constants P_*.

  Args:
    image: uint8 [H, W, 3] or a clip [T, H, W, 3] (every frame gets the same parameters).
  Returns:
    A new uint8 array of the same shape.
  """
  if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
    raise ValueError(f"post_augment: need uint8 [H, W, 3] or [T, H, W, 3], got {image.dtype} "
                     f"{image.shape}")
  out = np.array(image, copy=True)
  if rng.random() < P_BRIGHTNESS_CONTRAST:
    out = _brightness_contrast(out, rng.uniform(*CONTRAST), rng.uniform(*BRIGHTNESS))
  if rng.random() < P_COLOR_JITTER:
    out = _color_jitter(out, rng.uniform(-HUE_DEGREES, HUE_DEGREES), rng.uniform(*SATURATION))
  if rng.random() < P_NOISE_OR_BLUR:
    if rng.random() < 0.5:
      noise = rng.standard_normal(out.shape, dtype=np.float32) * np.float32(
          rng.uniform(*NOISE_SIGMA))
      out = np.clip(np.rint(out + noise), 0, 255).astype(np.uint8)
    else:
      size = int(BLUR_SIZES[int(rng.integers(len(BLUR_SIZES)))])
      out = np.stack([cv2.GaussianBlur(f, (size, size), 0) for f in _frames(out)]).reshape(
          out.shape)
  if rng.random() < P_JPEG:
    out = _jpeg(out, int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))
  if rng.random() < P_ERASE:
    box = _erase_box(rng, out.shape[-3], out.shape[-2])
    colour = rng.integers(0, 256, 3).astype(np.uint8)
    if box is not None:
      top, left, h, w = box
      out[..., top:top + h, left:left + w, :] = colour
  return out


# ----------------------------------------------------------------------------- generation


def generate_clip(video: np.ndarray, video_lms: Any, source: np.ndarray, source_lms: Any,
                  rng: np.random.Generator,
                  config: Config = None) -> Tuple[np.ndarray, np.ndarray]:
  """Algorithm 1 on a clip with one donor frame, one deformation and one method for all frames.

  The donor frame is aligned to each target frame's landmarks and the one displacement field
  morphs each frame's hull, so the pasted region follows the face without flickering (a per-frame
  draw would itself be a temporal artefact).

  Args:
    video: uint8 [T, H, W, 3] real target frames.
    video_lms: [T, 68, 2] their (x, y) pixel landmarks.
    source: uint8 [h, w, 3] donor frame (other identity); source_lms: its [68, 2] landmarks.
    rng: the only source of randomness (draw order: field, method, augmentation).
    config: I2GConfig or mapping (see `as_config`).
  Returns:
    (fake uint8 [T, H, W, 3], mask float32 [T, H, W] in [0, 1]).
  """
  cfg = as_config(config)
  video = np.asarray(video)
  lms = _check_landmarks(video_lms, "target landmarks")
  if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
    raise ValueError(f"I2G: video must be uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
  if lms.shape[0] != video.shape[0]:
    raise ValueError(f"I2G: {lms.shape[0]} landmark sets for {video.shape[0]} frames")
  shape = video.shape[1:3]
  field, _ = sample_displacement(shape, rng, cfg.sigma_range, cfg.grid)
  method = cfg.methods[int(rng.integers(len(cfg.methods)))]
  fake = np.empty_like(video)
  mask = np.empty(video.shape[:3], np.float32)
  for t in range(video.shape[0]):
    aligned = align_source(source, source_lms, lms[t], shape)
    soft = blur_mask(warp_mask(hull_mask(lms[t], shape), field), cfg.blur_kernel)
    fake[t], mask[t] = blend(video[t], aligned, soft, method, rng)
  if cfg.post_augment:
    fake = post_augment(fake, rng)
  return fake, mask


def generate(target: np.ndarray, target_lms: Any, source: np.ndarray, source_lms: Any,
             rng: np.random.Generator, config: Config = None) -> Tuple[np.ndarray, np.ndarray]:
  """Algorithm 1 on one frame: (fake uint8 [H, W, 3], mask float32 [H, W] in [0, 1]).

  target uint8 [H, W, 3] and its [68, 2] (x, y) pixel landmarks; source (donor) likewise, any
  size. See `generate_clip`.
  """
  fake, mask = generate_clip(np.asarray(target)[None], np.asarray(target_lms)[None], source,
                             source_lms, rng, config)
  return fake[0], mask[0]


# ----------------------------------------------------------------------------- donor bank


class NoDonorError(LookupError):
  """No frame of another identity is within ε of the target's landmarks (on_miss="error")."""


def _frame(record: Mapping[str, Any], index: int, where: str) -> np.ndarray:
  """Frame `index` of a record whose frames are decoded uint8 [T, H, W, 3] or JPEG bytes."""
  frames = record["frames"]
  if isinstance(frames, np.ndarray):
    return frames[index]
  img = cv2.imdecode(np.frombuffer(frames[index], np.uint8), cv2.IMREAD_COLOR_RGB)
  if img is None:
    raise ValueError(f"{where}: frame {index} is not a decodable image")
  return img


class DonorBank:
  """Landmarks of candidate donor frames, for Algorithm 1 line 2; frames are fetched on demand.

  Built once per pipeline: reads `config.donor_frames` evenly spaced frames' landmarks of each
  candidate record (only landmarks stay in memory: 68·2 float32 = 544 B per frame, e.g. 3 MB for
  720 FF++ videos × 8 frames) and fetches the chosen frame through `record` when picked.
  Candidates should be real records: a donor is supposed to bring a pristine face.

  Pickles as the record callable, the config and the compact arrays (no frames, no caches), so
  grain workers get it cheaply; `record` must pickle too (e.g. a random-access source's method).
  The pick/miss counters are per process and restart at 0 in a worker.

  Args:
    record: record(i) → dict with `frames` (uint8 [T, H, W, 3] or a list of JPEG bytes) and
      `landmarks` [T, 68, 2] (x, y) px.
    indices: the candidate record indices.
    identities: the identity of each candidate (same length).
    config: I2GConfig or mapping; uses epsilon, on_miss and donor_frames.
  """

  def __init__(self, record: Callable[[int], Mapping[str, Any]], indices: Sequence[int],
               identities: Sequence[str], config: Config = None):
    if len(indices) != len(identities):
      raise ValueError(f"DonorBank: {len(indices)} indices but {len(identities)} identities")
    self.config = as_config(config)
    self._record = record
    names = sorted(set(identities))
    code = {name: k for k, name in enumerate(names)}
    entries, shapes = [], []
    for i, identity in zip(indices, identities):
      rec = record(int(i))
      if "landmarks" not in rec:
        raise ValueError(f"DonorBank: record {i} has no landmarks")
      lms = np.asarray(rec["landmarks"], np.float32)
      frames = np.unique(np.round(np.linspace(0, len(lms) - 1, self.config.donor_frames)))
      for f in frames.astype(int):
        entries.append((int(i), f, code[identity]))
      shapes.append(normalise_landmarks(lms[frames.astype(int)]))
    if not entries:
      raise ValueError("DonorBank: no candidate records")
    table = np.array(entries, np.int64)
    self._names = tuple(names)
    self._record_index, self._frame_index = table[:, 0], table[:, 1].astype(np.int32)
    self._identity = table[:, 2].astype(np.int32)
    self._shapes = np.concatenate(shapes).reshape(len(table), -1)  # float32 [N, 136]
    self._reset_counters()

  def _reset_counters(self):
    self.picks = 0
    self.misses = 0  # Picks with no donor within ε (served by the nearest, or raised).

  def __len__(self) -> int:
    return len(self._identity)

  def __getstate__(self) -> Dict[str, Any]:
    state = dict(self.__dict__)
    del state["picks"], state["misses"]
    return state

  def __setstate__(self, state: Dict[str, Any]):
    self.__dict__.update(state)
    self._reset_counters()

  def stats(self) -> Dict[str, int]:
    """{"picks", "misses"} of this process, for run summaries (misses: no donor within ε)."""
    return {"picks": self.picks, "misses": self.misses}

  def distances(self, target_lms: Any) -> np.ndarray:
    """float32 [N]: `landmark_distance` from the target to every bank frame (face radii).

    Normalised shapes all have Σ‖p‖² = 68, so d² = 2 − 2⟨a, b⟩/68: one matrix-vector product
    instead of an [N, 136] difference.
    """
    q = normalise_landmarks(target_lms).reshape(-1)
    d2 = 2.0 - (2.0 / NUM_LANDMARKS) * (self._shapes @ q)
    return np.sqrt(np.maximum(d2, 0.0))

  def pick(self, target_lms: Any, target_identity: str,
           rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A random donor frame of another identity within ε of the target's landmarks.

    Uniform over the bank frames that qualify. If none does: on_miss="nearest" serves the
    closest frame of another identity and counts a miss (one unusual pose should not stop
    training, the nearest face is the best available, and the miss rate in `stats` shows when
    ε is too tight); on_miss="error" raises NoDonorError.

    Args:
      target_lms: [68, 2] (x, y) pixel landmarks of the target frame.
      target_identity: its identity (not necessarily in the bank).
    Returns:
      (donor frame uint8 [h, w, 3], its landmarks float32 [68, 2] px).
    """
    if target_identity is None:
      raise ValueError("DonorBank.pick: the target's identity is needed to exclude it")
    code = self._names.index(target_identity) if target_identity in self._names else -1
    other = self._identity != code
    if not other.any():
      raise NoDonorError(f"DonorBank: every candidate is identity {target_identity!r}")
    d = self.distances(target_lms)
    ok = np.flatnonzero(other & (d < self.config.epsilon))
    self.picks += 1
    if len(ok):
      k = int(ok[rng.integers(len(ok))])
    else:
      self.misses += 1
      k = int(np.flatnonzero(other)[np.argmin(d[other])])
      if self.config.on_miss == "error":
        raise NoDonorError(f"DonorBank: no frame of another identity within epsilon="
                           f"{self.config.epsilon} of the target (identity "
                           f"{target_identity!r}); nearest is {d[k]:.4f}")
    i, f = int(self._record_index[k]), int(self._frame_index[k])
    rec = self._record(i)
    lms = np.asarray(rec["landmarks"], np.float32)[f]
    return _frame(rec, f, f"donor record {i}"), lms


# ----------------------------------------------------------------------------- masks of real fakes


_SSIM_WINDOW, _SSIM_SIGMA = 11, 1.5  # Wang et al. 2004: 11×11 Gaussian window, σ = 1.5 px.
_SSIM_C1, _SSIM_C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2  # K1 = 0.01, K2 = 0.03, L = 255.


def ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Per-pixel SSIM (Wang et al. 2004) of uint8 [H, W, C] images → float32 [H, W, C] in [−1, 1].

  Our own windowed SSIM rather than skimage's (a test-only dependency here): Gaussian-weighted
  local means, variances and covariance (population form) over an 11×11 window with σ = 1.5,
  reflected borders — the settings of skimage.metrics.structural_similarity(
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, full=True),
  which the tests match to 1e-4.
  """
  # float32 on values centred at 128: (co)variances as E[xy] − E[x]E[y] lose ~4x less to
  # cancellation than on 0..255 and the map stays within 1e-4 of float64 at half the cost.
  x = np.asarray(x, np.float32) - np.float32(128)
  y = np.asarray(y, np.float32) - np.float32(128)

  def smooth(a):
    return cv2.GaussianBlur(a, (_SSIM_WINDOW, _SSIM_WINDOW), _SSIM_SIGMA,
                            borderType=cv2.BORDER_REFLECT)

  mx, my = smooth(x), smooth(y)
  vx, vy, cxy = smooth(x * x) - mx * mx, smooth(y * y) - my * my, smooth(x * y) - mx * my
  mx += np.float32(128)
  my += np.float32(128)
  return ((2 * mx * my + _SSIM_C1) * (2 * cxy + _SSIM_C2)
          / ((mx * mx + my * my + _SSIM_C1) * (vx + vy + _SSIM_C2))).astype(np.float32)


def dssim_mask(fake: np.ndarray, real: np.ndarray, blur: int = 11,
               threshold: float = 0.03) -> np.ndarray:
  """§4.2 mask of a dataset fake: blurred per-pixel DSSIM to its paired real frame, thresholded.

  DSSIM = (1 − SSIM) / 2 ∈ [0, 1] with SSIM from `ssim_map`, averaged over the colour channels.
  The DSSIM map is Gaussian-blurred (`blur` px, odd; it joins speckle into regions) and
  thresholded. The paper gives neither value; the defaults were calibrated on the synthetic
  dataset's ground-truth masks: IoU ≈ 0.75–0.85 for face swaps, 0.3–0.45 for the subtle
  reenactment / neural-texture families, and ~1 % of untouched pixels flagged when both frames
  are JPEG-compressed alike (quality 75–90). A pair compressed differently (e.g. raw vs q95)
  flags much more and needs a higher threshold; check on real pairs before trusting it.

  Args:
    fake, real: uint8 [H, W, 3], the same frame of the fake and of its source video.
  Returns:
    float32 [H, W] in {0, 1}.
  """
  fake, real = np.asarray(fake), np.asarray(real)
  if fake.shape != real.shape or fake.ndim != 3:
    raise ValueError(f"dssim_mask: need two [H, W, 3] frames of one shape, got {fake.shape} "
                     f"and {real.shape}")
  dssim = (1.0 - ssim_map(fake, real).mean(axis=-1)) / 2.0
  if blur > 1:
    dssim = cv2.GaussianBlur(dssim, (blur, blur), 0)
  return (dssim > threshold).astype(np.float32)


def fake_mask(example: Mapping[str, Any], key: str = "video",
              real_key: str = "real_video") -> np.ndarray:
  """float32 [T, H, W] in [0, 1] for a dataset fake: its own mask, else DSSIM to the paired real.

  A record's uint8 mask (0..255) is rescaled; without one the example must carry the paired
  real clip under `real_key` (uint8 [T, H, W, 3], same frames).
  """
  if "mask" in example:
    mask = np.asarray(example["mask"])
    return (mask.astype(np.float32) / 255.0 if mask.dtype == np.uint8
            else mask.astype(np.float32))
  if real_key in example:
    fake, real = np.asarray(example[key]), np.asarray(example[real_key])
    return np.stack([dssim_mask(f, r) for f, r in zip(fake, real)])
  raise KeyError(f"I2G: a fake clip needs `mask` or its paired real clip {real_key!r} to get a "
                 f"PCL mask; keys: {sorted(example)}")


# ----------------------------------------------------------------------------- pipeline entry


def apply_i2g(example: Mapping[str, Any], bank: DonorBank, rng: np.random.Generator,
              p: float = 0.5, config: Config = None) -> Dict[str, Any]:
  """§4.2: with probability p a real clip becomes an I2G fake; every clip leaves with a mask.

  Needs `video` uint8 [T, H, W, 3], `label`, and for reals `landmarks` [T, 68, 2] (x, y) px in
  the coordinates of `video` (so this runs before any crop or resize) and `identity`. The donor
  is picked by the middle frame's landmarks; one donor, field and method serve the whole clip.

  Returns a new dict with `mask` float32 [T, H, W] in [0, 1]:
    selected real  → I2G frames, label 1, manipulation "i2g", the I2G mask;
    other real     → zeros (label 0);
    dataset fake   → `fake_mask` (its own mask, or DSSIM to `real_video`).
  With config.augment_all, passed-through clips get `post_augment` too (see I2GConfig).
  A real clip whose I2G mask came out empty (face off-frame) stays real.
  """
  cfg = as_config(config)
  if not 0.0 <= p <= 1.0:
    raise ValueError(f"apply_i2g: p={p!r} is not a probability")
  video = np.asarray(example["video"])
  out = dict(example)
  if int(example["label"]) != 0:
    out["mask"] = fake_mask(example)
  elif rng.random() < p:
    for key in ("landmarks", "identity"):
      if key not in example:
        raise KeyError(f"apply_i2g: a real clip needs {key!r} for I2G; keys: {sorted(example)}")
    lms = np.asarray(example["landmarks"], np.float32)
    donor, donor_lms = bank.pick(lms[len(lms) // 2], example["identity"], rng)
    fake, mask = generate_clip(video, lms, donor, donor_lms, rng, cfg)
    if mask.any():
      out.update(video=fake, mask=mask, label=np.int32(1), manipulation=MANIPULATION)
      return out
    out["mask"] = np.zeros(video.shape[:3], np.float32)
  else:
    out["mask"] = np.zeros(video.shape[:3], np.float32)
  if cfg.augment_all:
    out["video"] = post_augment(video, rng)
  return out

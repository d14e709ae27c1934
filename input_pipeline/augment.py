"""Clip-level augmentation ops (registered in `input_pipeline.ops`).

Every op draws its randomness once per clip from the passed ``rng`` and applies the same
transform to all T frames, because the detectors look at temporal (in)consistency and a
per-frame jitter would itself look like a forgery artifact. Video is uint8 [T, H, W, 3] RGB until
`to_float`; ops work on the whole clip at once (numpy, or cv2 on the clip viewed as one tall
[T*H, W, 3] image) to stay within the decode+augment budget of >= 100 clips/s per core.
Ops return a new dict and never write into an input array.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from input_pipeline.op_registry import register

Keys = Union[str, Sequence[str]]


# ----------------------------------------------------------------------------- validation


def _fail(op: str, arg: str, value: Any, allowed: str):
  raise ValueError(f"{op}: {arg}={value!r} is invalid; allowed: {allowed}")


def _check_prob(op: str, p: Any) -> float:
  if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
    _fail(op, "p", p, "a probability in [0, 1]")
  return float(p)


def _check_int(op: str, arg: str, value: Any, low: int, optional: bool = False) -> Optional[int]:
  if optional and value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    _fail(op, arg, value, ("None or " if optional else "") + f"an integer >= {low}")
  return int(value)


def _check_key(op: str, arg: str, key: Any, optional: bool = False) -> None:
  if not (isinstance(key, str) or (optional and key is None)):
    _fail(op, arg, key, ("None or " if optional else "") + "a key (str)")


def _check_keys(op: str, arg: str, keys: Keys) -> Tuple[str, ...]:
  """Accepts one key or a non-empty sequence of keys; returns a tuple."""
  keys = (keys,) if isinstance(keys, str) else keys
  if (not isinstance(keys, (tuple, list)) or not keys
      or not all(isinstance(k, str) for k in keys)):
    _fail(op, arg, keys, "a key or a non-empty tuple of keys (str)")
  return tuple(keys)


def _check_range(op: str, arg: str, value: Any, low: float, high: float) -> Tuple[float, float]:
  """A (lo, hi) pair with low <= lo <= hi <= high."""
  ok = (isinstance(value, (tuple, list)) and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and low <= value[0] <= value[1] <= high)
  if not ok:
    _fail(op, arg, value, f"a pair (lo, hi) with {low} <= lo <= hi <= {high}")
  return float(value[0]), float(value[1])


def _get(op: str, example: dict, key: str) -> np.ndarray:
  if key not in example:
    raise KeyError(f"{op}: example has no key {key!r}; keys: {sorted(example)}")
  return np.asarray(example[key])


def _get_video(op: str, example: dict, key: str) -> np.ndarray:
  video = _get(op, example, key)
  if video.ndim != 4:
    raise ValueError(f"{op}: {key!r} must be a clip [T, H, W, C], got shape {video.shape}")
  return video


def _as_rows(x: np.ndarray) -> np.ndarray:
  """[..., H, W, C] -> one tall image [prod(...) * H, W, C] (a view when x is contiguous)."""
  return np.ascontiguousarray(x).reshape(-1, x.shape[-2], x.shape[-1])


# ----------------------------------------------------------------------------- crops


def _crop_resize(video: np.ndarray, top: int, left: int, size: int,
                 resize: Optional[int]) -> np.ndarray:
  """Crops [T, H, W, C] at (top, left) to size x size, then resizes each frame.

  Bilinear (cv2.INTER_LINEAR, half-pixel centres) like torchvision's tensor Resize used by
  RealForensics, and ~5x faster than INTER_AREA at the 140 -> 112 ratio.
  """
  crop = video[:, top:top + size, left:left + size]
  if resize is None or resize == size:
    return np.ascontiguousarray(crop)
  out = np.empty((video.shape[0], resize, resize, video.shape[-1]), video.dtype)
  for t in range(video.shape[0]):
    if video.shape[-1] == 1:  # cv2 returns one-channel images as [H, W]: keep the axis.
      out[t, ..., 0] = cv2.resize(crop[t], (resize, resize), interpolation=cv2.INTER_LINEAR)
    else:  # dst= writes in place: no per-frame allocation.
      cv2.resize(crop[t], (resize, resize), dst=out[t], interpolation=cv2.INTER_LINEAR)
  return out


def _crop_op(op: str, key: str, out_key: Optional[str], size: int, resize: Optional[int],
             random: bool, also: Keys = ()):
  _check_key(op, "key", key)
  _check_key(op, "out_key", out_key, optional=True)
  size = _check_int(op, "size", size, 1)
  resize = _check_int(op, "resize", resize, 1, optional=True)
  also = _check_keys(op, "also", also) if also else ()
  if also and out_key is not None:
    _fail(op, "also", also, "() when out_key is set (the extra keys are cropped in place)")

  def fn(example, rng):
    video = _get_video(op, example, key)
    height, width = video.shape[1:3]
    if height < size or width < size:
      raise ValueError(f"{op}: frames of {key!r} are {height}x{width}, smaller than "
                       f"size={size}")
    if random:
      top = int(rng.integers(0, height - size + 1))
      left = int(rng.integers(0, width - size + 1))
    else:
      top, left = (height - size) // 2, (width - size) // 2
    out = dict(example)
    out[key if out_key is None else out_key] = _crop_resize(video, top, left, size, resize)
    for k in also:
      extra = _get_video(op, example, k)
      if extra.shape[:3] != video.shape[:3]:
        raise ValueError(f"{op}: {k!r} is {extra.shape[:3]}, {key!r} is {video.shape[:3]}; "
                         "`also` keys must be frame-aligned with the video")
      out[k] = _crop_resize(extra, top, left, size, resize)
    return out

  return fn


@register("random_crop")
def random_crop(key: str = "video", out_key: Optional[str] = None, size: int = 140,
                resize: Optional[int] = 112, also: Keys = ()):
  """One random size x size window for the whole clip, resized to resize x resize.

  Writes ``out_key`` (default: overwrite ``key``); two calls with different out_keys give
  independently cropped views of the same frames (e.g. teacher "video", student
  "video_masked"). resize=None keeps the crop size. ``also`` names frame-aligned [T, H, W, C]
  fields cropped with the same window (e.g. PCL's ``mask``).
  """
  return _crop_op("random_crop", key, out_key, size, resize, random=True, also=also)


@register("center_crop")
def center_crop(key: str = "video", out_key: Optional[str] = None, size: int = 140,
                resize: Optional[int] = 112, also: Keys = ()):
  """Deterministic eval counterpart of `random_crop` (window centred, floor for odd margins)."""
  return _crop_op("center_crop", key, out_key, size, resize, random=False, also=also)


def _rotate(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """Warps every frame of [T, H, W, C] by the 2×3 affine ``matrix`` (bilinear, mirrored
  borders: no black corners for the detector to key on)."""
  height, width, channels = x.shape[1:]
  out = np.empty_like(x)
  for t in range(x.shape[0]):
    frame = cv2.warpAffine(x[t], matrix, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
    out[t] = frame[..., None] if channels == 1 else frame
  return out


@register("rotate")
def rotate(keys: Keys = ("video",), degrees: float = 10.0, p: float = 0.5):
  """With probability p, one rotation by U(−degrees, degrees) about the frame centre for the
  whole clip and every listed key (frames and their mask stay aligned)."""
  keys = _check_keys("rotate", "keys", keys)
  p = _check_prob("rotate", p)
  if not (isinstance(degrees, (int, float)) and 0 <= degrees <= 180):
    _fail("rotate", "degrees", degrees, "a number in [0, 180]")

  def fn(example, rng):
    if not rng.random() < p:
      return dict(example)
    angle = float(rng.uniform(-degrees, degrees))
    out = dict(example)
    for k in keys:
      x = _get_video("rotate", example, k)
      centre = ((x.shape[2] - 1) / 2.0, (x.shape[1] - 1) / 2.0)
      out[k] = _rotate(x, cv2.getRotationMatrix2D(centre, angle, 1.0))
    return out

  return fn


# ----------------------------------------------------------------------------- flips / colour


def _hflip(x: np.ndarray) -> np.ndarray:
  """Mirrors [..., H, W, C] along W into a new contiguous array."""
  if x.ndim < 3:
    raise ValueError(f"flip: expected [..., H, W, C], got shape {x.shape}")
  if x.dtype in (np.uint8, np.float32) and x.shape[-1] <= 4:
    return cv2.flip(_as_rows(x), 1).reshape(x.shape)  # ~25x faster than numpy for uint8.
  return np.ascontiguousarray(x[..., ::-1, :])


@register("flip")
def flip(keys: Keys = ("video",), p: float = 0.5):
  """Horizontal flip of every listed key with one draw, so aligned views stay aligned."""
  keys = _check_keys("flip", "keys", keys)
  p = _check_prob("flip", p)

  def fn(example, rng):
    if not rng.random() < p:
      return dict(example)
    out = dict(example)
    for k in keys:
      out[k] = _hflip(_get("flip", example, k))
    return out

  return fn


_LUMA_601 = np.array([0.299, 0.587, 0.114], np.float32)


def _grayscale(x: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma of RGB [..., 3], replicated to 3 equal channels; same dtype."""
  if x.ndim < 3 or x.shape[-1] != 3:
    raise ValueError(f"grayscale: expected RGB [..., H, W, 3], got shape {x.shape}")
  if x.dtype in (np.uint8, np.float32):
    gray = cv2.cvtColor(_as_rows(x), cv2.COLOR_RGB2GRAY)  # 601 weights, rounded for uint8.
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB).reshape(x.shape)
  gray = x @ _LUMA_601.astype(x.dtype)
  return np.repeat(gray[..., None], 3, axis=-1)


@register("grayscale")
def grayscale(keys: Keys = ("video",), p: float = 0.5):
  """With probability p, all listed keys become grey (one draw for all keys)."""
  keys = _check_keys("grayscale", "keys", keys)
  p = _check_prob("grayscale", p)

  def fn(example, rng):
    if not rng.random() < p:
      return dict(example)
    out = dict(example)
    for k in keys:
      out[k] = _grayscale(_get("grayscale", example, k))
    return out

  return fn


_CHUNK_PIXELS = 1 << 16  # ~0.8 MB of float32 RGB: stays in cache, ~2.5x faster than whole clips.


def _shift_hue_brightness(video: np.ndarray, hue_delta: float,
                          brightness_delta: float) -> np.ndarray:
  """uint8 RGB [..., H, W, 3]: HSV hue += hue_delta (turns), then += brightness_delta (of 1.0).

  Hue follows tf.image.adjust_hue (hexcone HSV, hue wraps). The hue round trip runs in float32
  through cv2 (HSV is scale-free, so on [0, 255] directly) over row chunks of the clip with
  reused buffers; one saturating, rounding cast back to uint8 at the end.
  """
  rows = _as_rows(video)
  out = np.empty_like(rows)
  brightness = (255.0 * brightness_delta,) * 3 + (0.0,)
  if hue_delta == 0.0:
    cv2.add(rows, brightness, dst=out, dtype=cv2.CV_8U)
    return out.reshape(video.shape)
  shift = np.float32((360.0 * hue_delta) % 360.0)  # cv2's H is in degrees, [0, 360).
  step = max(1, _CHUNK_PIXELS // rows.shape[1])
  rgb = np.empty((min(step, rows.shape[0]),) + rows.shape[1:], np.float32)
  hsv = np.empty_like(rgb)
  for start in range(0, rows.shape[0], step):
    n = min(step, rows.shape[0] - start)
    np.copyto(rgb[:n], rows[start:start + n])
    cv2.cvtColor(rgb[:n], cv2.COLOR_RGB2HSV, dst=hsv[:n])
    hue = hsv[:n, :, 0]
    hue += shift
    hue -= np.float32(360.0) * (hue >= 360.0)  # Wrap here: cv2 does not for all H ranges.
    cv2.cvtColor(hsv[:n], cv2.COLOR_HSV2RGB, dst=rgb[:n])
    cv2.add(rgb[:n], brightness, dst=out[start:start + n], dtype=cv2.CV_8U)
  return out.reshape(video.shape)


@register("color_jitter")
def color_jitter(key: str = "video", hue: float = 0.2, brightness: float = 32 / 255,
                 hue_p: float = 1.0, brightness_p: float = 1.0):
  """FakeOut B.1 colour jitter: hue ~ U[-hue, hue] turns, brightness ~ U[-b, b], per clip;
  each applied with its own probability (the authors' code: 0.5 each, independent draws).

  uint8 in, uint8 out (clipped); put it before `to_float`.
  """
  op = "color_jitter"
  _check_key(op, "key", key)
  if isinstance(hue, bool) or not isinstance(hue, (int, float)) or not 0.0 <= hue <= 0.5:
    _fail(op, "hue", hue, "a number in [0, 0.5] (fraction of the hue circle)")
  if (isinstance(brightness, bool) or not isinstance(brightness, (int, float))
      or not 0.0 <= brightness <= 1.0):
    _fail(op, "brightness", brightness, "a number in [0, 1] (on the [0, 1] intensity scale)")
  for arg, value in (("hue_p", hue_p), ("brightness_p", brightness_p)):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
      _fail(op, arg, value, "a probability in [0, 1]")

  def fn(example, rng):
    hue_delta = float(rng.uniform(-hue, hue))
    brightness_delta = float(rng.uniform(-brightness, brightness))
    hue_delta *= bool(rng.random() < hue_p)
    brightness_delta *= bool(rng.random() < brightness_p)
    video = _get(op, example, key)
    if video.dtype != np.uint8 or video.ndim < 3 or video.shape[-1] != 3:
      raise ValueError(f"{op}: {key!r} must be uint8 RGB [..., H, W, 3], got "
                       f"{video.dtype} {video.shape}")
    out = dict(example)
    out[key] = _shift_hue_brightness(video, hue_delta, brightness_delta)
    return out

  return fn


# ----------------------------------------------------------------------------- blur / noise / brightness
# The AV contrastive transformer's image augmentations (§3.3: "identical image augmentations on
# each frame ... motion blur, Gaussian noise and random brightness"): each draws its parameters,
# and the noise image itself, once per clip, so nothing in them changes from frame to frame
# (a per-frame draw would flicker, which is exactly the temporal cue the model must not see).


def _uint8_video(op: str, example: dict, key: str) -> np.ndarray:
  video = _get_video(op, example, key)
  if video.dtype != np.uint8:
    raise ValueError(f"{op}: {key!r} must be uint8 [T, H, W, C] (put it before `to_float`), "
                     f"got {video.dtype}")
  return video


def motion_kernel(size: int, angle: float) -> np.ndarray:
  """A normalised size×size linear motion-blur kernel: a one-pixel line through the centre at
  ``angle`` degrees (0 = horizontal), anti-aliased by a bilinear rotation. float32 [size, size]."""
  line = np.zeros((size, size), np.float32)
  line[size // 2, :] = 1.0
  centre = ((size - 1) / 2.0, (size - 1) / 2.0)
  kernel = cv2.warpAffine(line, cv2.getRotationMatrix2D(centre, angle, 1.0), (size, size),
                          flags=cv2.INTER_LINEAR)
  return kernel / kernel.sum()


@register("motion_blur")
def motion_blur(key: str = "video", p: float = 0.5, kernel: Tuple[int, int] = (3, 7)):
  """With probability p, one linear motion blur for the whole clip: an odd length in
  [kernel[0], kernel[1]] px and a direction U[0°, 180°) (each frame filtered alone, mirrored
  borders). uint8 in, uint8 out."""
  op = "motion_blur"
  _check_key(op, "key", key)
  p = _check_prob(op, p)
  ok = (isinstance(kernel, (tuple, list)) and len(kernel) == 2
        and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 and k % 2
                for k in kernel) and kernel[0] <= kernel[1])
  if not ok:
    _fail(op, "kernel", kernel, "a pair (lo, hi) of odd integers >= 1 with lo <= hi")
  sizes = np.arange(kernel[0], kernel[1] + 1, 2)

  def fn(example, rng):
    if not rng.random() < p:
      return dict(example)
    size, angle = int(rng.choice(sizes)), float(rng.uniform(0.0, 180.0))
    video = _uint8_video(op, example, key)
    out = dict(example)
    if size == 1:
      return out
    k = motion_kernel(size, angle)
    blurred = np.empty_like(video)
    for t in range(video.shape[0]):
      frame = cv2.filter2D(video[t], -1, k, borderType=cv2.BORDER_REFLECT_101)
      blurred[t] = frame[..., None] if video.shape[-1] == 1 else frame
    out[key] = blurred
    return out

  return fn


@register("gaussian_noise")
def gaussian_noise(key: str = "video", p: float = 0.5, std: Tuple[float, float] = (0.0, 0.05)):
  """With probability p, add one noise image N(0, σ²), σ ~ U[std] (on the [0, 1] intensity
  scale), to every frame: the same [H, W] draw on all frames and channels (luma noise, so grey
  frames stay grey). uint8 in, uint8 out (rounded, clipped)."""
  op = "gaussian_noise"
  _check_key(op, "key", key)
  p = _check_prob(op, p)
  std = _check_range(op, "std", std, 0.0, 1.0)

  def fn(example, rng):
    if not rng.random() < p:
      return dict(example)
    sigma = float(rng.uniform(std[0], std[1]))
    video = _uint8_video(op, example, key)
    noise = rng.normal(0.0, 255.0 * sigma, video.shape[1:3]).astype(np.float32)
    out = dict(example)
    noisy = video.astype(np.float32) + noise[None, :, :, None]
    out[key] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out

  return fn


@register("brightness")
def brightness(key: str = "video", p: float = 0.5, delta: float = 0.2):
  """With probability p, scale every frame's intensities by one factor U[1 − delta, 1 + delta]
  (torchvision ``ColorJitter(brightness=delta)``). uint8 in, uint8 out (rounded, clipped)."""
  op = "brightness"
  _check_key(op, "key", key)
  p = _check_prob(op, p)
  if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 <= delta <= 1.0:
    _fail(op, "delta", delta, "a number in [0, 1]")

  def fn(example, rng):
    if not rng.random() < p:
      return dict(example)
    factor = float(rng.uniform(1.0 - delta, 1.0 + delta))
    video = _uint8_video(op, example, key)
    out = dict(example)
    out[key] = cv2.convertScaleAbs(_as_rows(video), alpha=factor).reshape(video.shape)
    return out

  return fn


# ----------------------------------------------------------------------------- erasing / masking


def _erase_box(rng: np.random.Generator, height: int, width: int, scale: Tuple[float, float],
               log_ratio: Tuple[float, float]) -> Optional[Tuple[int, int, int, int]]:
  """torchvision RandomErasing.get_params: (top, left, h, w), or None after 10 misses."""
  area = height * width
  for _ in range(10):
    erase_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    h = int(round(math.sqrt(erase_area * aspect)))
    w = int(round(math.sqrt(erase_area / aspect)))
    if h < height and w < width:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  return None


@register("random_erase")
def random_erase(key: str = "video", p: float = 0.5, scale: Tuple[float, float] = (0.02, 0.33),
                 ratio: Tuple[float, float] = (0.3, 3.3), value: Any = 0):
  """torchvision RandomErasing, one rectangle shared by all frames; value: scalar or per channel.

  scale: erased fraction of the frame area ~ U[scale]; ratio: h / w, log-uniform.
  """
  op = "random_erase"
  _check_key(op, "key", key)
  p = _check_prob(op, p)
  scale = _check_range(op, "scale", scale, 0.0, 1.0)
  ratio = _check_range(op, "ratio", ratio, 1e-6, math.inf)
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  value_arr = _check_fill(op, "value", value)

  def fn(example, rng):
    if not rng.random() < p:
      return dict(example)
    video = _get_video(op, example, key)
    box = _erase_box(rng, video.shape[1], video.shape[2], scale, log_ratio)
    if box is None:
      return dict(example)
    _check_fill_fits(op, "value", value_arr, video, key)
    top, left, h, w = box
    erased = video.copy()
    erased[:, top:top + h, left:left + w] = value_arr.astype(video.dtype)
    out = dict(example)
    out[key] = erased
    return out

  return fn


def _zero_span(x: np.ndarray, start: int, stop: int, axis: int, value: Any = 0) -> np.ndarray:
  """Copy of x with [start, stop) along axis set to ``value`` (scalar or per last-axis entry)."""
  out = x.copy()
  index = [slice(None)] * x.ndim
  index[axis] = slice(start, stop)
  out[tuple(index)] = np.asarray(value).astype(x.dtype)
  return out


def _check_fill(op: str, arg: str, value: Any) -> np.ndarray:
  arr = np.asarray(value)
  if arr.dtype.kind not in "iuf" or arr.ndim > 1:
    _fail(op, arg, value, "a number or a tuple of per-channel numbers")
  return arr


def _check_fill_fits(op: str, arg: str, value: np.ndarray, x: np.ndarray, key: str) -> None:
  if value.ndim == 1 and value.shape[0] != x.shape[-1]:
    raise ValueError(f"{op}: {arg} has {value.shape[0]} entries but {key!r} has "
                     f"{x.shape[-1]} channels")
  if x.dtype.kind in "iu":
    info = np.iinfo(x.dtype)
    if value.min() < info.min or value.max() > info.max:
      raise ValueError(f"{op}: {arg}={value.tolist()!r} does not fit {key!r} of dtype {x.dtype}")


@register("time_mask")
def time_mask(video_key: Optional[str] = "video", audio_key: Optional[str] = "audio",
              max_frames: int = 12, audio_ratio: int = 4, p: float = 0.5,
              video_value: Any = 0):
  """With probability p zero n ~ U{0..max_frames} consecutive video frames and the same span
  (x audio_ratio) of log-mel frames, so the masked time is missing in both modalities.

  ``video_value`` fills the masked frames (scalar or per channel). RealForensics masks after
  normalisation, so its masked frames are the normalisation mean; on uint8 frames that is
  ``round(255 · mean)`` per channel (within half a grey level of it).

  Either key may be None to mask one modality; the span is always drawn in video frames
  (T = audio frames // audio_ratio when video_key is None). Needs audio frames ==
  audio_ratio * video frames when both are given.
  """
  op = "time_mask"
  if video_key is None and audio_key is None:
    _fail(op, "video_key/audio_key", (video_key, audio_key), "at least one key that is not None")
  _check_key(op, "video_key", video_key, optional=True)
  _check_key(op, "audio_key", audio_key, optional=True)
  max_frames = _check_int(op, "max_frames", max_frames, 0)
  audio_ratio = _check_int(op, "audio_ratio", audio_ratio, 1)
  p = _check_prob(op, p)
  fill = _check_fill(op, "video_value", video_value)

  def fn(example, rng):
    if not rng.random() < p:
      return dict(example)
    video = None if video_key is None else _get(op, example, video_key)
    if video is not None:
      _check_fill_fits(op, "video_value", fill, video, video_key)
    audio = None if audio_key is None else _get(op, example, audio_key)
    if video is not None:
      num_frames = video.shape[0]
      if audio is not None and audio.shape[0] != audio_ratio * num_frames:
        raise ValueError(f"{op}: {audio_key!r} has {audio.shape[0]} frames, expected "
                         f"audio_ratio * {num_frames} video frames = {audio_ratio * num_frames}")
    else:
      num_frames = audio.shape[0] // audio_ratio
    n = int(rng.integers(0, min(max_frames, num_frames) + 1))
    start = int(rng.integers(0, num_frames - n + 1))
    out = dict(example)
    if n == 0:
      return out
    if video is not None:
      out[video_key] = _zero_span(video, start, start + n, axis=0, value=fill)
    if audio is not None:
      out[audio_key] = _zero_span(audio, start * audio_ratio, (start + n) * audio_ratio, axis=0)
    return out

  return fn


@register("freq_mask")
def freq_mask(key: str = "audio", max_bins: int = 27, p: float = 0.5):
  """SpecAugment frequency mask: with probability p zero n ~ U{0..max_bins} adjacent mel bins
  of a [Ta, n_mels] log-mel."""
  op = "freq_mask"
  _check_key(op, "key", key)
  max_bins = _check_int(op, "max_bins", max_bins, 0)
  p = _check_prob(op, p)

  def fn(example, rng):
    if not rng.random() < p:
      return dict(example)
    audio = _get(op, example, key)
    if audio.ndim < 1:
      raise ValueError(f"{op}: {key!r} must be a log-mel [Ta, n_mels], got a scalar")
    num_bins = audio.shape[-1]
    n = int(rng.integers(0, min(max_bins, num_bins) + 1))
    start = int(rng.integers(0, num_bins - n + 1))
    out = dict(example)
    if n:
      out[key] = _zero_span(audio, start, start + n, axis=audio.ndim - 1)
    return out

  return fn


# ----------------------------------------------------------------------------- dtype


def _per_channel(op: str, arg: str, value: Any, default: float) -> np.ndarray:
  """None -> default; a number or a sequence of numbers -> float64 array of ndim <= 1."""
  if value is None:
    return np.asarray(default, np.float64)
  try:
    arr = np.asarray(value, np.float64)
  except (TypeError, ValueError):
    arr = None
  if arr is None or arr.ndim > 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
    _fail(op, arg, value, "None, a number or a tuple of per-channel numbers")
  return arr


@register("to_float")
def to_float(keys: Keys = ("video",), scale: float = 1 / 255, mean: Any = None, std: Any = None):
  """x -> float32 (x * scale - mean) / std; mean/std are scalars or per-channel (last axis)."""
  op = "to_float"
  keys = _check_keys(op, "keys", keys)
  if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
    _fail(op, "scale", scale, "a finite number")
  mean_arr = _per_channel(op, "mean", mean, 0.0)
  std_arr = _per_channel(op, "std", std, 1.0)
  if np.any(std_arr == 0):
    _fail(op, "std", std, "non-zero values")
  if mean_arr.ndim == std_arr.ndim == 1 and mean_arr.shape != std_arr.shape:
    _fail(op, "std", std, f"the same number of channels as mean ({mean_arr.size})")
  # One fused affine: x * gain + bias, gain = scale / std, bias = -mean / std.
  gain, bias = (a.astype(np.float32) for a in np.broadcast_arrays(scale / std_arr,
                                                                   -mean_arr / std_arr))
  per_channel = gain.ndim == 1

  def convert(x: np.ndarray) -> np.ndarray:
    y = x.astype(np.float32, order="C")  # Fresh and C-contiguous: in-place ops below are safe.
    if per_channel:
      if y.ndim < 2 or y.shape[-1] != gain.size:
        raise ValueError(f"{op}: {gain.size} per-channel mean/std values for an array of "
                         f"shape {x.shape}")
      # Tiling over [rows, W * C] broadcasts much faster than over a trailing axis of 3.
      rows = y.reshape(-1, y.shape[-2] * y.shape[-1])
      rows *= np.tile(gain, y.shape[-2])
      rows += np.tile(bias, y.shape[-2])
    else:
      y *= gain
      if bias != 0:
        y += bias
    return y

  def fn(example, rng):
    del rng  # Deterministic.
    out = dict(example)
    for k in keys:
      out[k] = convert(_get(op, example, k))
    return out

  return fn


@register("temporal_stride")
def temporal_stride(stride: int = 2, keys: Keys = ("video",), audio_frames: Optional[int] = None):
  """Every ``stride``-th frame of the per-frame ``keys`` (a clip of (n − 1)·stride + 1 frames
  becomes n frames), and the ``waveform`` cut to its first ``audio_frames`` frames' duration
  (None: kept whole).

  FakeOut's code feeds 32 frames at stride 2 (2.5 s at 25 fps) with the audio of only the first
  32 frames' duration from the clip's start (fakeout/data/data_utils.py): a clip of 63 frames,
  ``temporal_stride(stride=2, audio_frames=32)``. Runs first, before crops and ``log_mel``.
  """
  op = "temporal_stride"
  stride = _check_int(op, "stride", stride, 1)
  keys = _check_keys(op, "keys", keys)
  audio_frames = _check_int(op, "audio_frames", audio_frames, 1, optional=True)

  def fn(example, rng):
    del rng
    out = dict(example)
    total = len(_get(op, example, keys[0]))
    for k in keys:
      x = _get(op, example, k)
      if len(x) != total:
        raise ValueError(f"{op}: {k!r} has {len(x)} frames but {keys[0]!r} has {total}")
      out[k] = x[::stride]
    if audio_frames is not None and "waveform" in example:
      wave = example["waveform"]
      if audio_frames > total:
        raise ValueError(f"{op}: audio_frames={audio_frames} exceeds the clip's {total} frames")
      out["waveform"] = wave[:len(wave) * audio_frames // total]
    return out

  return fn


@register("fill_padding")
def fill_padding(key: str = "video", value: Any = 0):
  """Frames an evaluation clip ran past its record's end (``frame_valid`` False; the
  ``consecutive`` layout) get ``value`` (a no-op for examples without ``frame_valid``).

  RealForensics pads after normalisation with zeros, i.e. the normalisation mean: on uint8
  frames that is ``round(255 · mean)``, so the padding normalises to ~0 as theirs does.
  """
  op = "fill_padding"
  _check_key(op, "key", key)
  fill = _check_fill(op, "value", value)

  def fn(example, rng):
    del rng
    if "frame_valid" not in example:
      return dict(example)
    valid = np.asarray(example["frame_valid"], bool)
    video = _get(op, example, key)
    if len(valid) != len(video):
      raise ValueError(f"{op}: frame_valid has {len(valid)} entries but {key!r} has "
                       f"{len(video)} frames")
    _check_fill_fits(op, "value", fill, video, key)
    out = dict(example)
    out[key] = video.copy()
    out[key][~valid] = fill.astype(video.dtype)
    return out

  return fn


@register("copy")
def copy(src: str, dst: str):
  """Duplicates a field under a new name (e.g. the log-mel the student's masking will edit)."""

  def apply(example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    del rng
    if src not in example:
      raise KeyError(f"data op 'copy': field {src!r} not in the example; has {sorted(example)}")
    return {**example, dst: example[src]}

  return apply

"""The seven DeeperForensics-1.0 perturbations used for robustness (RealForensics Table 4, Fig. 7).

Two protocols share the one severity table ``LEVELS``:
- crop level (quick): ``corrupt(kind=..., severity=1..5)``, an evaluation op on the aligned face
  crops ``video`` uint8 [T, H, W, 3] RGB, used by ``fakedet.evaluate --protocol=robustness``;
- frame level (the authors'): ``corrupt_frame`` on each FULL raw frame [H, W, 3] before face
  extraction, driven by ``python -m input_pipeline.corrupt_videos`` (docs/robustness.md).

Levels follow DeeperForensics-1.0's perturbation code (facts, not code, taken from it):

  saturation   Cb/Cr deviation from grey scaled by   0.4, 0.3, 0.2, 0.1, 0.0
  contrast     pixel values scaled by                0.85, 0.725, 0.6, 0.475, 0.35
  block        grey blocks pasted, count             16, 32, 48, 64, 80
  noise        white Gaussian noise in YCbCr, var    0.001, 0.002, 0.005, 0.01, 0.05
  blur         Gaussian kernel size (σ = size / 6)   7, 9, 13, 17, 21
  pixelation   down- then up-sampled by factor       2, 3, 4, 5, 6
  compression  H.264 (libx264) constant rate factor  30, 32, 35, 38, 40

Crop level: spatial levels (blur kernel, block side) are in pixels of the frames given:
DeeperForensics applies them to whole video frames, so on small aligned face crops they are
relatively stronger. Block positions and noise are drawn once per clip from the op's rng (frames
of a clip share the blocks, as an occluder would); compression runs a real codec round trip
(PyAV's bundled FFmpeg).

Frame level follows DeeperForensics' per-frame definitions where the crop-level op simplified them:
  block        8x8 grey (128) blocks at any pixel position (not an 8-px grid), top-left in
               [0, W - 9] x [0, H - 9], ``min(H, W) // 256`` x the table's count (16..80) of
               them, redrawn every frame
               (so a frame under 256 px on its short side gets none, as in DeeperForensics)
  noise        the same variance table, but in DeeperForensics' studio-range units: the standard
               deviation in 8-bit full-range Y is sqrt(var) * 255 * 255/219 and in Cr/Cb
               sqrt(var) * 255 * 255/224 (its bgr2ycbcr maps [0, 255] onto 16..235/240 and
               back), fresh noise every frame
  pixelation   bilinear down-sampling to (W // f, H // f) and bilinear up-sampling back
               (OpenCV's default interpolation, as in DeeperForensics)
  saturation, contrast, blur   the crop-level functions on the whole frame
  compression  a whole-video libx264 encode at the table's CRF (``corrupt_videos``)
"""
from __future__ import annotations

import io
from typing import Any, Callable, Dict

import cv2
import numpy as np

from input_pipeline.op_registry import register

LEVELS = {
    "saturation": (0.4, 0.3, 0.2, 0.1, 0.0),
    "contrast": (0.85, 0.725, 0.6, 0.475, 0.35),
    "block": (16, 32, 48, 64, 80),
    "noise": (0.001, 0.002, 0.005, 0.01, 0.05),
    "blur": (7, 9, 13, 17, 21),
    "pixelation": (2, 3, 4, 5, 6),
    "compression": (30, 32, 35, 38, 40),
}
BLOCK_FRACTION = 1 / 16  # Block side relative to the frame height.


def _ycrcb(video: np.ndarray) -> np.ndarray:
  t, h, w, _ = video.shape
  return cv2.cvtColor(video.reshape(t * h, w, 3), cv2.COLOR_RGB2YCrCb).reshape(video.shape)


def _rgb(ycrcb: np.ndarray) -> np.ndarray:
  t, h, w, _ = ycrcb.shape
  return cv2.cvtColor(ycrcb.reshape(t * h, w, 3), cv2.COLOR_YCrCb2RGB).reshape(ycrcb.shape)


def saturation(video: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
  del rng
  y = _ycrcb(video).astype(np.float32)
  y[..., 1:] = 128.0 + (y[..., 1:] - 128.0) * factor
  return _rgb(np.clip(np.rint(y), 0, 255).astype(np.uint8))


def contrast(video: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
  del rng
  return np.clip(np.rint(video.astype(np.float32) * factor), 0, 255).astype(np.uint8)


def block(video: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
  _, h, w, _ = video.shape
  side = max(1, int(round(h * BLOCK_FRACTION)))
  out = video.copy()
  for y, x in zip(rng.integers(0, h - side + 1, count), rng.integers(0, w - side + 1, count)):
    out[:, y:y + side, x:x + side] = 128
  return out


def noise(video: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
  y = _ycrcb(video).astype(np.float32) / 255.0
  y = y + rng.normal(0.0, np.sqrt(variance), y.shape).astype(np.float32)
  return _rgb(np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8))


def blur(video: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  del rng
  return np.stack([cv2.GaussianBlur(f, (size, size), size / 6.0) for f in video])


def pixelation(video: np.ndarray, factor: int, rng: np.random.Generator) -> np.ndarray:
  del rng
  _, h, w, _ = video.shape
  small = (max(1, w // factor), max(1, h // factor))
  return np.stack([cv2.resize(cv2.resize(f, small, interpolation=cv2.INTER_AREA), (w, h),
                              interpolation=cv2.INTER_NEAREST) for f in video])


def compression(video: np.ndarray, crf: int, rng: np.random.Generator, fps: int = 25) -> np.ndarray:
  """Encodes the clip with libx264 at ``crf`` into memory and decodes it back."""
  del rng
  import av  # ~1 s to import, and only this op needs it; every data worker imports this module.
  t, h, w, _ = video.shape
  # yuv420p needs even sizes: pad by edge replication, crop after decoding.
  ph, pw = h + h % 2, w + w % 2
  padded = np.pad(video, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
  buf = io.BytesIO()
  with av.open(buf, mode="w", format="mp4") as out:
    stream = out.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
    # One thread: frame-threaded x264 may vary its output with timing (a loaded CI machine).
    stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
    for frame in padded:
      out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
    out.mux(stream.encode())
  buf.seek(0)
  with av.open(buf, mode="r") as inp:
    frames = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
  if len(frames) != t:
    raise RuntimeError(f"compression round trip returned {len(frames)} frames for {t}")
  return np.stack(frames)[:, :h, :w]


APPLY: Dict[str, Callable[..., np.ndarray]] = {
    "saturation": saturation, "contrast": contrast, "block": block, "noise": noise,
    "blur": blur, "pixelation": pixelation, "compression": compression}


def level(kind: str, severity: int, where: str = "corrupt") -> Any:
  """``LEVELS[kind][severity - 1]``; bad values raise naming ``where`` (the op or the flag)."""
  if kind not in LEVELS:
    raise ValueError(f"{where}: kind={kind!r} is invalid; allowed: {sorted(LEVELS)}")
  if isinstance(severity, bool) or severity not in (1, 2, 3, 4, 5):
    raise ValueError(f"{where}: severity={severity!r} is invalid; allowed: 1, 2, 3, 4, 5")
  return LEVELS[kind][severity - 1]


@register("corrupt")
def corrupt(kind: str, severity: int, key: str = "video"):
  """One DeeperForensics perturbation at ``severity`` 1–5 on ``key`` (uint8 [T, H, W, 3])."""
  level_ = level(kind, severity)

  def apply(example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    video = example[key]
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
      raise ValueError(f"corrupt: {key!r} must be uint8 [T, H, W, 3]; got {video.dtype} "
                       f"{video.shape}")
    return {**example, key: APPLY[kind](video, level_, rng)}

  return apply


# ----------------------------------------------------------------------------- frame level
BLOCK_SIDE = 8  # DeeperForensics' block width (px of the raw frame).
BLOCK_UNIT = 256  # Block count = min(H, W) // BLOCK_UNIT x the table's count (16..80).
# Noise std gain per YCrCb channel: DeeperForensics adds the noise in its studio-range units.
NOISE_GAIN = np.array([255 / 219, 255 / 224, 255 / 224], np.float32)


def frame_block(frame: np.ndarray, level_: int, rng: np.random.Generator) -> np.ndarray:
  """``min(H, W) // 256 * level_`` grey 8x8 blocks at uniform pixel positions (may overlap)."""
  h, w, _ = frame.shape
  count = min(h, w) // BLOCK_UNIT * level_
  out = frame.copy()
  if count == 0 or h <= BLOCK_SIDE or w <= BLOCK_SIDE:
    return out
  # DeeperForensics draws x then y per block from randint(0, side - 1 - 8), inclusive.
  xy = rng.integers(0, [w - BLOCK_SIDE, h - BLOCK_SIDE], size=(count, 2))
  for x, y in xy:
    out[y:y + BLOCK_SIDE, x:x + BLOCK_SIDE] = 128
  return out


def frame_noise(frame: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
  """White Gaussian noise in YCrCb at DeeperForensics' scale (``NOISE_GAIN``), drawn per frame."""
  y = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb).astype(np.float32)
  std = np.float32(np.sqrt(variance) * 255.0) * NOISE_GAIN
  y = y + rng.standard_normal(y.shape, dtype=np.float32) * std
  return cv2.cvtColor(np.clip(np.rint(y), 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)


def frame_pixelation(frame: np.ndarray, factor: int, rng: np.random.Generator) -> np.ndarray:
  """Bilinear down-sampling by ``factor`` (sizes floored) and bilinear up-sampling back."""
  del rng
  h, w, _ = frame.shape
  small = cv2.resize(frame, (max(1, w // factor), max(1, h // factor)),
                     interpolation=cv2.INTER_LINEAR)
  return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _per_frame(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
  """A crop-level (clip) function applied to one frame: the definitions coincide there."""
  return lambda frame, level_, rng: fn(frame[None], level_, rng)[0]


FRAME_APPLY: Dict[str, Callable[..., np.ndarray]] = {
    "saturation": _per_frame(saturation), "contrast": _per_frame(contrast),
    "block": frame_block, "noise": frame_noise, "blur": _per_frame(blur),
    "pixelation": frame_pixelation}
# Kinds ``corrupt_frame`` applies; compression is a whole-video encode (corrupt_videos.py).
FRAME_KINDS = tuple(FRAME_APPLY)


def corrupt_frame(frame: np.ndarray, kind: str, severity: int,
                  rng: np.random.Generator) -> np.ndarray:
  """One full raw frame (uint8 [H, W, 3] RGB) with ``kind`` at ``severity``; random kinds draw
  from ``rng`` each call, so a video's frames get fresh blocks / noise in frame order."""
  level_ = level(kind, severity, where="corrupt_frame")
  if kind not in FRAME_APPLY:
    raise ValueError(f"corrupt_frame: kind={kind!r} is a whole-video corruption; per-frame kinds: "
                     f"{list(FRAME_KINDS)}")
  if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
    raise ValueError(f"corrupt_frame: frame must be uint8 [H, W, 3]; got {frame.dtype} "
                     f"{frame.shape}")
  return FRAME_APPLY[kind](frame, level_, rng)

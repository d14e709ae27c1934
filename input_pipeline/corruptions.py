"""The seven DeeperForensics-1.0 perturbations used for robustness (RealForensics Table 4, Fig. 7).

``corrupt(kind=..., severity=1..5)`` is an evaluation op on ``video`` uint8 [T, H, W, 3] RGB.
Levels follow DeeperForensics-1.0's perturbation code (facts, not code, taken from it):

  saturation   Cb/Cr deviation from grey scaled by   0.4, 0.3, 0.2, 0.1, 0.0
  contrast     pixel values scaled by                0.85, 0.725, 0.6, 0.475, 0.35
  block        grey blocks pasted, count             16, 32, 48, 64, 80
  noise        white Gaussian noise in YCbCr, var    0.001, 0.002, 0.005, 0.01, 0.05
  blur         Gaussian kernel size (σ = size / 6)   7, 9, 13, 17, 21
  pixelation   down- then up-sampled by factor       2, 3, 4, 5, 6
  compression  H.264 (libx264) constant rate factor  30, 32, 35, 38, 40

Spatial levels (blur kernel, block side) are in pixels of the frames given: DeeperForensics
applies them to whole video frames, so on small aligned face crops they are relatively stronger.
Block positions and noise are drawn once per clip from the op's rng (frames of a clip share the
blocks, as an occluder would); compression runs a real codec round trip (PyAV's bundled FFmpeg).
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
    stream.options = {"crf": str(crf), "preset": "veryfast"}
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


@register("corrupt")
def corrupt(kind: str, severity: int, key: str = "video"):
  """One DeeperForensics perturbation at ``severity`` 1–5 on ``key`` (uint8 [T, H, W, 3])."""
  if kind not in LEVELS:
    raise ValueError(f"corrupt: kind={kind!r} is invalid; allowed: {sorted(LEVELS)}")
  if isinstance(severity, bool) or severity not in (1, 2, 3, 4, 5):
    raise ValueError(f"corrupt: severity={severity!r} is invalid; allowed: 1, 2, 3, 4, 5")
  level = LEVELS[kind][severity - 1]

  def apply(example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    video = example[key]
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
      raise ValueError(f"corrupt: {key!r} must be uint8 [T, H, W, 3]; got {video.dtype} "
                       f"{video.shape}")
    return {**example, key: APPLY[kind](video, level, rng)}

  return apply

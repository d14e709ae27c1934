"""Writing real video files (PyAV) from arrays: test fixtures and benchmarks with real codecs.

Preprocessing must be exercised on what the corpora actually contain (H.264/AAC mp4, VP9/Opus
webm, MPEG-4/MP3 avi, ...) rather than on arrays, so tests and benchmarks write the synthetic
generator's faces and speech through these encoders and read them back through ``decode``.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional

import av
import numpy as np

# Container → (video codec, audio codec) pairs that PyAV's bundled FFmpeg can write offline.
CODECS = {".mp4": ("libx264", "aac"), ".mov": ("libx264", "aac"),
          ".webm": ("libvpx-vp9", "libopus"), ".avi": ("mpeg4", "pcm_s16le"),
          ".mkv": ("libx264", "aac")}


def write_video(path: str, frames: np.ndarray, audio: Optional[np.ndarray], fps: float = 25.0,
                sample_rate: int = 16000, video_codec: Optional[str] = None,
                audio_codec: Optional[str] = None, crf: int = 18, rotation: int = 0) -> None:
  """Encodes frames uint8 [T, H, W, 3] RGB and mono int16 audio [N] (None: no audio track).

  Codecs default from the extension (``CODECS``); odd frame sizes are cropped to even ones
  because yuv420p needs them. ``rotation`` stores a display matrix turning the frames by that
  many degrees counter-clockwise (as a phone does for portrait video).
  """
  ext = path[path.rfind("."):].lower()
  vcodec, acodec = CODECS.get(ext, ("libx264", "aac"))
  vcodec, acodec = video_codec or vcodec, audio_codec or acodec
  frames = np.asarray(frames, np.uint8)
  h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
  with av.open(path, "w") as out:
    vs = out.add_stream(vcodec, rate=Fraction(fps).limit_denominator(1001))
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    if rotation:
      vs.set_display_rotation(rotation)
    if vcodec == "libx264":
      vs.options = {"crf": str(crf), "preset": "veryfast"}
    astream = None
    if audio is not None:
      astream = out.add_stream(acodec, rate=sample_rate, layout="mono")
    for i, f in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h, :w]), format="rgb24")
      frame.pts, frame.time_base = i, Fraction(1) / vs.average_rate  # Else AVI gets gaps.
      for p in vs.encode(frame):
        out.mux(p)
    for p in vs.encode():
      out.mux(p)
    if astream is not None:
      audio = np.asarray(audio, np.int16)
      for s in range(0, len(audio), 1024):
        chunk = av.AudioFrame.from_ndarray(audio[None, s:s + 1024], format="s16", layout="mono")
        chunk.sample_rate, chunk.pts = sample_rate, s
        for p in astream.encode(chunk):
          out.mux(p)
      for p in astream.encode():
        out.mux(p)

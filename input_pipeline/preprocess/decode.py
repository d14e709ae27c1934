"""Decoding raw video files (PyAV's bundled FFmpeg) into 25 fps RGB frames + 16 kHz int16 audio.

Every failure is a ``MediaError`` with a machine-readable ``kind`` (``SKIP_KINDS``) so the runner
can list each skipped file and why in its manifest instead of stopping the batch.

Resampling is done here rather than with FFmpeg filters so that the frame/sample bookkeeping is
explicit and testable: output frame ``k`` shows the source frame on screen at time ``k / fps``
(sample-and-hold, like FFmpeg's ``fps`` filter), and audio sample ``n`` is the sound at time
``n / sample_rate`` on the same clock, so the pair stays in sync whatever the source rates and
start offsets. Audio codec priming is dropped by FFmpeg for mp4/mov/webm (measured: a 0.5 s onset
decodes at sample 8002 of 8000); AVI cannot signal MP3 encoder delay, so MP3-in-AVI audio lags by
the encoder delay (≈ 69 ms with LAME).
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import av
import numpy as np

DECODE_ERROR = "decode_error"
UNSUPPORTED_CODEC = "unsupported_codec"
NO_VIDEO = "no_video"
NO_AUDIO = "no_audio"
TOO_SHORT = "too_short"
NO_FACE = "no_face"
INTERNAL_ERROR = "error"  # An unexpected exception: a bug or a case nobody anticipated.
SKIP_KINDS = (DECODE_ERROR, UNSUPPORTED_CODEC, NO_VIDEO, NO_AUDIO, TOO_SHORT, NO_FACE,
              INTERNAL_ERROR)


class MediaError(Exception):
  """A video that cannot become records; ``kind`` is one of ``SKIP_KINDS``."""

  def __init__(self, kind: str, message: str):
    assert kind in SKIP_KINDS, kind
    super().__init__(f"{kind}: {message}")
    self.kind, self.message = kind, message


@dataclasses.dataclass
class Media:
  """A decoded video on one clock starting at its first video frame.

  frames: uint8 [T, H, W, 3] RGB at ``fps``; audio: int16 [N] mono at ``sample_rate`` with
  ``N == round(T / fps * sample_rate)``; ``scale``: output pixels per source pixel (< 1 when the
  frames were downscaled to ``max_side``), needed to map user landmarks into these frames.
  """
  frames: np.ndarray
  audio: np.ndarray
  fps: float
  sample_rate: int
  scale: float = 1.0
  audio_padded: int = 0  # Zero samples appended because the audio stream ended early.

  @property
  def seconds(self) -> float:
    return len(self.frames) / self.fps


def resample_indices(times: np.ndarray, fps: float, duration: float) -> np.ndarray:
  """Indices of the source frames shown at ``k / fps`` for every output frame ``k``.

  Args:
    times: presentation times (s) of the decoded frames, relative to the first one, any order.
    duration: seconds covered by the source (last time + one frame duration).
  Returns:
    int [floor(duration * fps)] indices into ``times`` (the latest frame at or before each
    output time; a small tolerance absorbs timestamp rounding in the container).
  """
  times = np.asarray(times, np.float64)
  order = np.argsort(times, kind="stable")
  sorted_times = times[order]
  n = int(np.floor(duration * fps + 1e-6))
  out_times = np.arange(n) / fps
  pos = np.searchsorted(sorted_times, out_times + 1e-4, side="right") - 1
  return order[np.clip(pos, 0, len(times) - 1)]


def place_audio(chunks: List[np.ndarray], start: float, sample_rate: int,
                num_samples: int) -> Tuple[np.ndarray, int]:
  """Lays decoded audio onto the video clock: ``start`` (s) is its offset from the first frame.

  Audio before the first video frame is cut, a late start is zero-filled, and the result is
  trimmed or zero-padded to ``num_samples``. Returns (int16 [num_samples], samples padded at
  the end).
  """
  audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
  offset = int(round(start * sample_rate))
  if offset < 0:
    audio = audio[-offset:]
  elif offset > 0:
    audio = np.concatenate([np.zeros(offset, np.int16), audio])
  padded = max(0, num_samples - len(audio))
  audio = np.pad(audio[:num_samples], (0, padded))
  return audio.astype(np.int16), padded


def upright(image: np.ndarray, rotation: float) -> np.ndarray:
  """The frame as a player shows it: phones store portrait video as landscape frames plus a
  display matrix, and a face lying on its side is one no detector finds.

  ``rotation``: PyAV's ``VideoFrame.rotation``, the counter-clockwise angle (degrees) the
  display matrix turns the coded frame by; multiples of 90° only (others do not occur in
  practice and would need resampling).
  """
  k = int(round(rotation / 90.0)) % 4
  return np.ascontiguousarray(np.rot90(image, k)) if k else image


def output_size(width: int, height: int, max_side: Optional[int]) -> Tuple[int, int]:
  """(width, height) after downscaling so the longer side is at most ``max_side`` (even sizes)."""
  if not max_side or max(width, height) <= max_side:
    return width, height
  s = max_side / max(width, height)
  return max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)


def read_video(path: str, fps: float = 25.0, sample_rate: int = 16000,
               max_side: Optional[int] = 960, min_seconds: float = 1.0,
               require_audio: bool = True, max_seconds: Optional[float] = None) -> Media:
  """Decodes ``path`` into a ``Media`` at ``fps`` and ``sample_rate`` (mono int16).

  Args:
    max_side: frames whose longer side exceeds it are downscaled while decoding (bounds the
      memory of long high-resolution videos: 20 s of 1080p RGB is 3 GB); None keeps the size.
    min_seconds: shorter videos raise ``MediaError(TOO_SHORT)``.
    require_audio: if False a video without an audio track gets silent audio.
    max_seconds: decode only this much from the start (None: everything).
  Raises:
    MediaError naming the kind of failure.
  """
  try:
    container = av.open(path)
  except (av.error.FFmpegError, OSError) as e:
    raise MediaError(DECODE_ERROR, f"cannot open {path}: {e}") from None
  with container:
    if not container.streams.video:
      raise MediaError(NO_VIDEO, f"{path} has no video track")
    vstream = container.streams.video[0]
    astream = container.streams.audio[0] if container.streams.audio else None
    if astream is None and require_audio:
      raise MediaError(NO_AUDIO, f"{path} has no audio track")
    for s in (vstream, astream):
      if s is not None and s.codec_context is None:
        raise MediaError(UNSUPPORTED_CODEC, f"{path}: no decoder for its {s.type} track")
    # One decoding thread: the runner already keeps every core busy with one video per worker.
    vstream.codec_context.thread_count = 1
    streams = [s for s in (vstream, astream) if s is not None]
    try:
      return _decode(container, streams, vstream, astream, path, fps, sample_rate, max_side,
                     min_seconds, max_seconds)
    except av.error.DecoderNotFoundError as e:
      raise MediaError(UNSUPPORTED_CODEC, f"{path}: {e}") from None
    except av.error.FFmpegError as e:
      raise MediaError(DECODE_ERROR, f"{path}: {e}") from None


def _decode(container, streams, vstream, astream, path, fps, sample_rate, max_side, min_seconds,
            max_seconds) -> Media:
  """Demuxes once, keeping RGB frames with their times and resampled mono s16 audio."""
  frames, times, chunks = [], [], []
  audio_start = None
  resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
  size = scale = None
  for frame in container.decode(*streams):
    if frame.time is None:
      continue
    if max_seconds is not None and times and frame.time - times[0] >= max_seconds + 1.0:
      break  # Both tracks are past the end (1 s covers the muxer's interleaving).
    if isinstance(frame, av.VideoFrame):
      if max_seconds is not None and times and frame.time - times[0] >= max_seconds:
        continue  # Audio up to the same time may still follow.
      if size is None:
        size = output_size(frame.width, frame.height, max_side)
        scale = size[0] / frame.width
      frames.append(upright(frame.to_ndarray(format="rgb24", width=size[0], height=size[1]),
                            frame.rotation))
      times.append(frame.time)
    else:
      if audio_start is None:
        audio_start = frame.time
      for out in resampler.resample(frame):
        chunks.append(out.to_ndarray().reshape(-1))
  if astream is not None:
    for out in resampler.resample(None):
      chunks.append(out.to_ndarray().reshape(-1))
  if not frames:
    raise MediaError(DECODE_ERROR, f"{path}: no decodable video frame")
  video_start = min(times)  # The output clock's zero: the first video frame shown.
  times = np.asarray(times) - video_start
  duration = float(times.max() + _frame_step(vstream, times, fps))
  if max_seconds is not None:
    duration = min(duration, max_seconds)
  idx = resample_indices(times, fps, duration)
  if len(idx) < max(1, int(np.ceil(min_seconds * fps - 1e-6))):
    raise MediaError(TOO_SHORT, f"{path}: {duration:.2f} s of video, need {min_seconds} s")
  video = np.stack([frames[i] for i in idx])
  del frames  # Halves the peak memory for the rest of the video's processing.
  num_samples = int(round(len(idx) / fps * sample_rate))
  if astream is None:
    audio, padded = np.zeros(num_samples, np.int16), 0
  elif not chunks:
    raise MediaError(NO_AUDIO, f"{path}: its audio track decodes to no samples")
  else:
    audio, padded = place_audio(chunks, audio_start - video_start, sample_rate, num_samples)
  return Media(video, audio, float(fps), int(sample_rate), float(scale), padded)


def _frame_step(vstream, times: np.ndarray, fps: float) -> float:
  """Display duration of the last frame: the stream's nominal rate, else the median spacing."""
  if vstream.average_rate:
    return 1.0 / float(vstream.average_rate)
  if len(times) > 1:
    return float(np.median(np.diff(np.sort(times))))
  return 1.0 / fps

"""The YouTube originals: find a user's file by YouTube id and cut the audio under a frame range.

A frame list names frames of the original *video*, so the video's own frame clock turns frame
numbers into times: frame ``n`` is the n-th frame in display order (how the FF++ extraction
script counted, reading frame by frame), at its presentation time relative to the first frame.
Only packets are demuxed for the video track (no pixel is decoded); the audio track is decoded,
resampled to the record's rate and laid on that clock exactly as ``preprocess.decode`` lays a
video's own audio (``place_audio``), so enriched and natively audible records share one clock.

An audio-only file has no frame clock: it is usable when a youtube-dl / yt-dlp info file beside
it (``<id>.info.json`` or ``<id>.json``) gives the video's ``fps``; its time 0 is taken as the
video's first frame (true for audio extracted from the downloaded video).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import List, Optional

import av
import numpy as np

from input_pipeline.preprocess import decode

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")
AUDIO_EXTENSIONS = (".m4a", ".wav", ".mp3", ".opus", ".ogg", ".aac", ".flac")
MARGIN_SECONDS = 1.0  # Audio cut beyond the sequence's last frame (the record may run slightly on).
_REORDER = 16  # Video packets read past the last needed frame: B-frames arrive out of order.


class OriginalError(Exception):
  """An original that cannot give the audio; ``kind`` is the report's reason."""

  def __init__(self, kind: str, message: str):
    super().__init__(f"{kind}: {message}")
    self.kind, self.message = kind, message


@dataclasses.dataclass(frozen=True)
class Span:
  """The audio under frames [first, first + count) of an original (+ ``MARGIN_SECONDS``).

  audio: int16 mono at the requested rate, sample 0 at the presentation time of frame
  ``first``; ``available``: how many of its samples are real audio (the rest is zero padding
  past the end of the file's audio); ``start``: that time (s) from the original's first frame;
  ``fps``: the original's frame rate.
  """
  audio: np.ndarray
  available: int
  start: float
  fps: float


def find(originals_dir: str, youtube_id: str) -> Optional[str]:
  """``DIR/<id>.<ext>`` or ``DIR/<id>/<id>.<ext>`` (the FF++ ``downloaded_videos`` layout);
  video files first (they carry their own frame clock)."""
  for folder in (originals_dir, os.path.join(originals_dir, youtube_id)):
    for ext in VIDEO_EXTENSIONS + AUDIO_EXTENSIONS:
      path = os.path.join(folder, youtube_id + ext)
      if os.path.isfile(path):
        return path
  return None


def read_span(path: str, first: int, count: int, sample_rate: int) -> Span:
  """Cuts the audio of frames [first, first + count) out of ``path``; raises OriginalError."""
  try:
    container = av.open(path)
  except (av.error.FFmpegError, OSError) as e:
    raise OriginalError("decode_error", f"cannot open {path}: {e}") from None
  with container:
    if not container.streams.audio:
      raise OriginalError("no_audio_track", f"{path} has no audio track")
    astream = container.streams.audio[0]
    vstream = container.streams.video[0] if container.streams.video else None
    try:
      if vstream is None:
        return _audio_only(container, astream, path, first, count, sample_rate)
      return _with_video(container, vstream, astream, path, first, count, sample_rate)
    except av.error.FFmpegError as e:
      raise OriginalError("decode_error", f"{path}: {e}") from None


class _Audio:
  """Decoded, resampled audio chunks and the time (s, container clock) of the first one."""

  def __init__(self, sample_rate: int):
    self.resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    self.chunks: List[np.ndarray] = []
    self.start: Optional[float] = None
    self.end = -math.inf

  def add(self, packet):
    for frame in packet.decode():
      if frame.time is None:
        continue
      if self.start is None:
        self.start = frame.time
      self.end = frame.time + frame.samples / frame.sample_rate
      for out in self.resampler.resample(frame):
        self.chunks.append(out.to_ndarray().reshape(-1))

  def flush(self):
    for out in self.resampler.resample(None):
      self.chunks.append(out.to_ndarray().reshape(-1))


def _with_video(container, vstream, astream, path, first, count, sample_rate) -> Span:
  pts: List[float] = []
  latest = -math.inf
  audio = _Audio(sample_rate)
  for packet in container.demux(vstream, astream):
    if packet.stream.type == "video":
      if packet.pts is not None:
        pts.append(float(packet.pts * packet.time_base))
        latest = max(latest, pts[-1])
    else:
      audio.add(packet)
    # Stop once every needed frame time is known and the audio runs a margin past them all.
    if len(pts) >= first + count + _REORDER and audio.end >= latest + MARGIN_SECONDS:
      break
  audio.flush()
  if len(pts) < first + count:
    raise OriginalError("frames_beyond_video",
                        f"{path} has {len(pts)} video frames; the frame list needs frames "
                        f"{first}..{first + count - 1} (a different upload or edit of the video?)")
  times = np.sort(np.asarray(pts))
  fps = float(vstream.average_rate) if vstream.average_rate else 1.0 / float(
      np.median(np.diff(times)))
  start = float(times[first] - times[0])
  return _cut(audio, audio.start - times[0] if audio.chunks else 0.0, start, count, fps,
              sample_rate, path)


def _audio_only(container, astream, path, first, count, sample_rate) -> Span:
  fps = _sidecar_fps(path)
  start = first / fps
  audio = _Audio(sample_rate)
  for packet in container.demux(astream):
    audio.add(packet)
    if audio.end >= start + count / fps + MARGIN_SECONDS:
      break
  audio.flush()
  return _cut(audio, audio.start or 0.0, start, count, fps, sample_rate, path)


def _cut(audio: _Audio, audio_start: float, start: float, count: int, fps: float,
         sample_rate: int, path: str) -> Span:
  """``audio_start``: where the decoded audio begins on the frame clock (s)."""
  if not audio.chunks:
    raise OriginalError("no_audio_track", f"{path}: its audio track decodes to no samples")
  num = int(math.ceil((count / fps + MARGIN_SECONDS) * sample_rate))
  samples, padded = decode.place_audio(audio.chunks, audio_start - start, sample_rate, num)
  return Span(samples, num - padded, start, fps)


def _sidecar_fps(path: str) -> float:
  stem = os.path.splitext(path)[0]
  for info in (stem + ".info.json", stem + ".json"):
    if os.path.isfile(info):
      try:
        with open(info) as f:
          fps = json.load(f).get("fps")
      except (json.JSONDecodeError, AttributeError):
        fps = None
      if isinstance(fps, (int, float)) and fps > 0:
        return float(fps)
  raise OriginalError("no_frame_clock",
                      f"{path} is audio only and no {os.path.basename(stem)}.info.json beside it "
                      "gives the video's fps, so frame numbers cannot become times")

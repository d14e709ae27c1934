"""One raw video file → its face tracks as parsed clip records, in memory.

The transforms are the preprocessing pipeline's own (``input_pipeline/preprocess``): decode to
25 fps / 16 kHz, faces from MTCNN or the user's landmark file, IoU tracks, 12-frame smoothing,
similarity alignment at the records' crop size. Each track's crops then take the records' JPEG
round trip (``records.encode`` → ``records.parse``), so a clip seen here is byte-identical to the
clip the evaluator would read from records made of the same file.

``--aligned`` input (already an aligned face-crop video) skips faces and alignment: every frame is
resized to the crop size and the whole video is one track.

Expected failures (unreadable file, unsupported codec, no audio where the model needs it, no face,
too short) raise ``decode.MediaError`` with a machine-readable ``kind``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional

import cv2
import numpy as np
from etils import epath

from input_pipeline import records
from input_pipeline.preprocess import decode, faces, video

SOURCE = "predict"  # The ``source`` field of the in-memory records.


@dataclasses.dataclass
class FaceTrack:
  """One face over frames ``start .. start + num_frames - 1`` of the 25 fps video.

  ``raw``: the parsed record (JPEG frames, int16 audio), what ``sampling.clip`` reads;
  ``box``: the face's median box (x1, y1, x2, y2) in source-video pixels (the whole frame for
  aligned input).
  """
  track_id: int
  start: int
  raw: Dict[str, Any]
  box: List[float]

  @property
  def num_frames(self) -> int:
    return len(self.raw["frames"])


@dataclasses.dataclass
class VideoTracks:
  tracks: List[FaceTrack]
  seconds: float  # Duration of the decoded video (s).
  faces_from: str  # "aligned" | "landmarks" | "mtcnn".
  frame_size: List[int]  # Decoded (upright) frame (width, height) in source pixels.


def preprocess_config(crop_size: int, clip_frames: int, needs_audio: bool,
                      max_seconds: Optional[float] = None,
                      detect_every: int = 1) -> video.PreprocessConfig:
  """The records' settings, except that anything at least one clip long is kept: a video or
  track shorter than the preprocessing's 1 s minimum can still be scored if it holds a clip."""
  fps = video.PreprocessConfig.fps
  one_clip = clip_frames / fps
  return video.PreprocessConfig(crop_size=crop_size, require_audio=needs_audio,
                                min_seconds=one_clip, min_track_seconds=one_clip,
                                max_seconds=max_seconds, detect_every=detect_every)


def _parsed(record: Dict[str, Any], config: video.PreprocessConfig, where: str) -> Dict[str, Any]:
  """The records' JPEG round trip: the model sees exactly what it would read from a shard."""
  return records.parse(records.encode(record, config.jpeg_quality, where), where)


def _base(video_id: str, track_id: int, audio: np.ndarray, config: video.PreprocessConfig):
  return {"audio": audio, "fps": config.fps, "sample_rate": config.sample_rate,
          "video_id": video_id, "track_id": track_id, "source": SOURCE, "label": 0,
          "manipulation": records.REAL}


def _read(path: str, config: video.PreprocessConfig, max_side: Optional[int]) -> decode.Media:
  return decode.read_video(path, config.fps, config.sample_rate, max_side, config.min_seconds,
                           config.require_audio, config.max_seconds)


def aligned_tracks(path: str, video_id: str, config: video.PreprocessConfig) -> VideoTracks:
  """An aligned face-crop video: frames resized to ``crop_size`` square, one track."""
  media = _read(path, config, config.max_side)
  size = config.crop_size
  h, w = media.frames.shape[1:3]
  interp = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_LINEAR
  frames = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in media.frames])
  n = records.audio_samples(len(frames), config.fps, config.sample_rate)
  audio = np.pad(media.audio[:n], (0, max(0, n - len(media.audio))))
  rec = dict(_base(video_id, 0, audio, config), frames=frames)
  raw = _parsed(rec, config, f"{path} (aligned)")
  full = [0.0, 0.0, w / media.scale, h / media.scale]
  return VideoTracks([FaceTrack(0, 0, raw, full)], media.seconds, "aligned",
                     [int(round(w / media.scale)), int(round(h / media.scale))])


Detector = Callable[[np.ndarray], List[faces.Detections]]


def face_tracks(path: str, video_id: str, config: video.PreprocessConfig,
                landmarks: str = "", detector: Optional[Callable[[], Detector]] = None,
                ) -> VideoTracks:
  """Raw video → aligned face tracks, as ``video.process_video`` makes records.

  Args:
    landmarks: a landmark file (``faces.load_landmarks`` format) used instead of the detector.
    detector: a zero-argument function returning the face detector, called only when a file has
      no landmark file (so a landmark-only run never loads MTCNN).
  """
  media = _read(path, config, config.max_side)
  if landmarks:
    try:
      lm = faces.load_landmarks(landmarks)
    except (OSError, ValueError) as e:
      raise decode.MediaError(decode.NO_FACE, f"landmark file {landmarks}: {e}") from None
    dets = faces.detections_from_landmarks(lm, len(media.frames), media.scale)
    faces_from = "landmarks"
  else:
    if detector is None:
      raise ValueError(f"{path}: no landmark file and no face detector")
    dets = detector()(media.frames)
    faces_from = "mtcnn"
  found = video.face_tracks(dets, config, path)  # The preprocessing's track settings.
  item = video.VideoItem(path=path, video_id=video_id, source=SOURCE)
  out = []
  for track_id, tr in enumerate(found):
    face, _ = video.track_records(item, media, tr, track_id, config)
    face.pop("landmarks", None)  # Not a model input; saves encoding it.
    face.pop("identity", None)
    raw = _parsed(face, config, f"{path} track {track_id}")
    box = (np.median(tr.boxes, axis=0) / media.scale).tolist()
    out.append(FaceTrack(track_id, int(tr.start), raw, [round(float(b), 1) for b in box]))
  h, w = media.frames.shape[1:3]
  return VideoTracks(out, media.seconds, faces_from,
                     [int(round(w / media.scale)), int(round(h / media.scale))])


def landmark_file(landmarks_dir: Optional[str], path: str) -> str:
  """``landmarks_dir/<file name without extension>.npy`` (or ``.json``) if it exists, else ""."""
  if not landmarks_dir:
    return ""
  stem = os.path.splitext(os.path.basename(path))[0]
  for ext in (".npy", ".json"):
    candidate = records.join(landmarks_dir, stem + ext)
    if epath.Path(candidate).exists():
      return candidate
  return ""

"""The per-video transform: one raw file → its face-track records (or the reason it has none).

``process_video`` is a pure function of (item, config, detector) so the local runner and any
other executor (a Beam ``Map``, a notebook) apply exactly the same steps:

  decode (25 fps, 16 kHz) → detect or load landmarks → IoU tracks → 12-frame smoothing →
  similarity warp of the stable points to the mean face → face crops (+ 96×96 mouth crops)
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from input_pipeline import records
from input_pipeline.preprocess import align, decode, faces, presets, tracking

Detector = Callable[[np.ndarray], List[faces.Detections]]


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """Every knob of the per-video transform (stored in the output's preprocess.json)."""
  fps: float = 25.0
  sample_rate: int = 16000
  crop_size: int = 150  # Aligned face crop side (px); RealForensics stores 150, FakeOut 224.
  mouth: bool = False  # Also make 96×96 mouth crops (AV-contrastive transformer).
  mouth_size: int = 96
  smooth_window: int = 12  # Frames averaged per landmark (RealForensics B.1).
  max_side: Optional[int] = 960  # Decode-time downscale bound (memory), None = native size.
  detect_max_side: int = 400  # Frames are shrunk to this for MTCNN.
  detect_every: int = 1  # Run the detector on every n-th frame; tracks interpolate between.
  min_face_size: int = 20  # px at detection resolution.
  min_score: float = 0.9
  min_seconds: float = 1.0  # Shorter videos are skipped as too_short.
  min_track_seconds: float = 1.0  # Shorter face tracks are dropped.
  min_iou: float = 0.3
  min_relative_size: float = 0.4  # Tracks of faces smaller than this × the largest are dropped.
  max_gap: int = 25  # Frames a track may go undetected before it ends.
  require_audio: bool = True  # False: videos without audio get silence instead of a skip.
  max_seconds: Optional[float] = None  # Only the first max_seconds of each video.
  jpeg_quality: int = 95
  preset: str = presets.DEFAULT  # Face framing (presets.PRESETS): fakedet's or an author's.
  mean_face: str = ""  # The user's LRW mean face .npy (the authors' presets).

  def __post_init__(self):
    if self.crop_size < 16 or self.mouth_size < 16 or self.detect_every < 1:
      raise ValueError("crop_size and mouth_size must be >= 16 and detect_every >= 1")
    presets.get(self.preset)


@dataclasses.dataclass(frozen=True)
class VideoItem:
  """One input video and the record metadata the caller (or a corpus reader) knows about it."""
  path: str
  video_id: str
  split: str = "train"
  label: int = 0
  manipulation: str = records.REAL
  source: str = "videos"
  identity: str = ""
  landmarks: str = ""  # Optional landmark file (faces.load_landmarks format).
  original: str = ""  # Fakes: video_id of the real video it was made from ("" = unknown).


@dataclasses.dataclass
class VideoResult:
  """Records (decoded, ``records.encode`` ready) or ``skip`` = (kind, message)."""
  item: VideoItem
  face_records: List[Dict[str, Any]]
  mouth_records: List[Dict[str, Any]]
  skip: Optional[tuple] = None
  seconds: float = 0.0  # Video duration (s).
  elapsed: float = 0.0  # Processing time (s).
  stats: Optional[Dict[str, Any]] = None


def face_tracks(dets, config, path: str):
  """Per-frame detections → face tracks with the config's track settings; no track at all is
  a NO_FACE MediaError naming ``path`` (shared by preprocessing and the predict CLI)."""
  min_frames = max(1, int(round(config.min_track_seconds * config.fps)))
  tracks = tracking.build_tracks(dets, min_frames, config.min_iou, config.max_gap,
                                 min_detected=0.5 / config.detect_every,
                                 min_relative_size=config.min_relative_size)
  if not tracks:
    found = sum(len(d) > 0 for d in dets)
    raise decode.MediaError(decode.NO_FACE, f"{path}: no face track of at least "
                            f"{config.min_track_seconds:g} s (faces found on {found} of "
                            f"{len(dets)} frames)")
  return tracks


def process_video(item: VideoItem, config: PreprocessConfig,
                  detector: Optional[Detector] = None) -> VideoResult:
  """Runs the whole transform on one file; every expected failure becomes ``skip``."""
  start = time.perf_counter()
  try:
    media = decode.read_video(item.path, config.fps, config.sample_rate, config.max_side,
                              config.min_seconds, config.require_audio, config.max_seconds)
    dets = _detections(item, media, detector)
    tracks = face_tracks(dets, config, item.path)
  except decode.MediaError as e:
    return VideoResult(item, [], [], (e.kind, e.message), elapsed=time.perf_counter() - start)
  face_recs, mouth_recs = [], []
  for track_id, tr in enumerate(tracks):
    face, mouth = track_records(item, media, tr, track_id, config)
    face_recs.append(face)
    if mouth is not None:
      mouth_recs.append(mouth)
  stats = {"tracks": len(tracks), "frames": len(media.frames),
           "audio_padded": media.audio_padded,
           "interpolated": int(sum((~tr.detected).sum() for tr in tracks))}
  return VideoResult(item, face_recs, mouth_recs, None, media.seconds,
                     time.perf_counter() - start, stats)


def _detections(item: VideoItem, media: decode.Media,
                detector: Optional[Detector]) -> List[faces.Detections]:
  """The user's landmark file when the item names one, otherwise the detector."""
  if item.landmarks:
    try:
      lm = faces.load_landmarks(item.landmarks)
    except (OSError, ValueError) as e:
      raise decode.MediaError(decode.NO_FACE, f"landmark file {item.landmarks}: {e}") from None
    return faces.detections_from_landmarks(lm, len(media.frames), media.scale)
  if detector is None:
    raise ValueError(f"{item.path}: no landmark file and no face detector configured")
  return detector(media.frames)


def track_records(item: VideoItem, media: decode.Media, tr: tracking.Track, track_id: int,
                  config: PreprocessConfig):
  """The face record (and mouth record, if configured) of one track."""
  frames = media.frames[tr.start:tr.stop]
  framed = presets.frame_track(frames, tr, config.preset, crop_size=config.crop_size,
                               mouth_size=config.mouth_size, smooth_window=config.smooth_window,
                               mouth=config.mouth, mean_face=config.mean_face)
  # The audio of exactly the track's frames, on the clock records.audio_samples defines.
  a0 = records.audio_samples(tr.start, config.fps, config.sample_rate)
  a1 = a0 + records.audio_samples(len(tr), config.fps, config.sample_rate)
  audio = media.audio[a0:a1]
  audio = np.pad(audio, (0, a1 - a0 - len(audio)))  # Rounding at the very end of a video.
  base = {"audio": audio, "fps": config.fps, "sample_rate": config.sample_rate,
          "video_id": item.video_id, "track_id": track_id, "source": item.source,
          "label": int(item.label), "manipulation": item.manipulation}
  for key in ("identity", "original"):
    if getattr(item, key):
      base[key] = getattr(item, key)
  face = dict(base, frames=framed.face)
  lm68 = align.transform_landmarks(tr.landmarks68, framed.face_mats)
  if lm68 is not None:
    face["landmarks"] = lm68
  mouth = None if framed.mouth is None else dict(base, frames=framed.mouth)
  return face, mouth


def make_detector(config: PreprocessConfig) -> Detector:
  """The MTCNN detector with this config's settings."""
  return faces.MtcnnDetector(max_side=config.detect_max_side, every=config.detect_every,
                             min_face_size=config.min_face_size, min_score=config.min_score)


def encode_result(result: VideoResult, jpeg_quality: int) -> Dict[str, Any]:
  """Serialises a result for the writer: small (JPEG bytes), picklable, order-preserving."""
  def enc(recs: Sequence[Dict[str, Any]]):
    return [(records.encode(r, jpeg_quality, f"{result.item.path} track {r['track_id']}"),
             records.index_row(r)) for r in recs]
  return {"item": dataclasses.asdict(result.item), "skip": result.skip,
          "faces": enc(result.face_records), "mouths": enc(result.mouth_records),
          "seconds": result.seconds, "elapsed": result.elapsed, "stats": result.stats}

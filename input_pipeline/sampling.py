"""Cutting a clip (video window + the audio it spans) out of a parsed record.

One function picks the window for audio and video together, so the two modalities can never
drift apart: the audio slice is derived from the video frame range, at the record's own rates.
Where clips may start is decided here too: training draws inside an optional frame window
(``random_clip``), and ``consecutive_clip_starts`` lays evaluation clips out the way the
RealForensics code does (``padded_clip`` cuts its zero-padded last clip).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping

import numpy as np

from input_pipeline import records


def clip(raw: Mapping[str, Any], start: int, num_frames: int, *, sample_rate: int,
         with_mask: bool = False, with_words: bool = False,
         with_landmarks: bool = False) -> Dict[str, Any]:
  """Frames [start, start+num_frames) and their audio as a pipeline example.

  Returns:
    ``video`` uint8 [T, H, W, 3]; ``waveform`` float32 [T·sr/fps] in [-1, 1]; ``label`` int32;
    ``video_id``/``manipulation`` str; ``track_id``/``clip_start`` int32; with ``with_mask``
    also ``mask`` uint8 [T, H, W] (zeros when the record has no mask, i.e. a real video); with
    ``with_words`` the video's transcript: ``words`` (list of str), ``word_start``/``word_end``
    float32 [W] in seconds from the clip start, and ``clip_duration`` (s) — variable-length
    fields that an op (``narrations``) must turn into fixed-size arrays before batching; with
    ``with_landmarks`` the clip's ``landmarks`` float32 [T, 68, 2] and the record's
    ``identity`` (its video id when the corpus names none: I2G needs a donor of another one).
  """
  records.check_raw(raw, sample_rate)
  total = len(raw["frames"])
  if total < num_frames:
    raise records.RecordError(f"{raw['where']}: has {total} frames, fewer than the clip length "
                              f"{num_frames}")
  if not 0 <= start <= total - num_frames:
    raise ValueError(f"{raw['where']}: clip start {start} outside [0, {total - num_frames}]")
  idx = range(start, start + num_frames)
  video = records.decode_frames(raw, idx)
  a0 = records.audio_samples(start, raw["fps"], sample_rate)
  n = records.audio_samples(num_frames, raw["fps"], sample_rate)
  waveform = raw["audio"][a0:a0 + n].astype(np.float32) / 32768.0
  example = {"video": video, "waveform": waveform, "label": np.int32(raw["label"]),
             "video_id": raw["video_id"], "track_id": np.int32(raw["track_id"]),
             "manipulation": raw["manipulation"], "clip_start": np.int32(start)}
  if with_mask:
    if "mask" in raw:
      example["mask"] = records.decode_frames(raw, idx, key="mask")
    else:
      example["mask"] = np.zeros(video.shape[:3], np.uint8)
  if with_landmarks:
    if "landmarks" not in raw:
      raise records.RecordError(f"{raw['where']}: has no landmarks (I2G needs the 68 points of "
                                "every frame; preprocess with landmarks)")
    example["landmarks"] = np.asarray(raw["landmarks"][start:start + num_frames], np.float32)
    example["identity"] = raw.get("identity") or raw["video_id"]
  if with_words:
    t0 = start / raw["fps"]
    example["words"] = list(raw.get("words", []))
    example["word_start"] = np.asarray(raw.get("word_start", []), np.float32) - np.float32(t0)
    example["word_end"] = np.asarray(raw.get("word_end", []), np.float32) - np.float32(t0)
    example["clip_duration"] = np.float32(num_frames / raw["fps"])
  return example


def random_clip(raw: Mapping[str, Any], num_frames: int, rng: np.random.Generator, *,
                sample_rate: int, with_mask: bool = False, with_words: bool = False,
                with_landmarks: bool = False, window: int = 0) -> Dict[str, Any]:
  """Training sampler: a uniformly random window of ``num_frames`` frames, inside the first
  ``window`` frames of the record (0 = anywhere). RealForensics trains on the first 270 frames
  of each FF++ video (its ``max_frames_per_video``): a window keeps fakedet's clips where
  theirs come from, whatever length the records were preprocessed to."""
  total = len(raw["frames"])
  span = min(total, window) if window else total
  start = int(rng.integers(0, span - num_frames + 1)) if span >= num_frames else 0
  return clip(raw, start, num_frames, sample_rate=sample_rate, with_mask=with_mask,
              with_words=with_words, with_landmarks=with_landmarks)


def consecutive_clip_starts(num_frames: int, clip_frames: int, window: int = 0) -> List[int]:
  """Start frames of the RealForensics evaluation clips of a ``num_frames``-frame record.

  Their code (pytorchvideo 0.1.2's ``UniformClipSampler`` with ``backpad_last=True``, a clip
  duration of ``clip_frames / fps - 1 / fps`` s and frames kept with start <= pts <= end)
  cuts clips of ``clip_frames`` frames every ``clip_frames - 1`` frames: neighbours share a
  frame. The span is the first ``window`` frames (FF++ val/test: 110) or, with ``window`` 0,
  the whole record (Celeb-DF, DFDC). The clip that would run past the span is moved back to end
  on the span's end frame, frame ``span`` itself (their end time is inclusive); frames it needs
  beyond the record are zero-padded (``padded_clip``). A clip starting at or after the record's
  last frame ends the video (pytorchvideo gets no frame for it and moves on). Spans shorter
  than a clip give one clip from frame 0. Exact in frames; their float seconds could move an
  endpoint by a frame on some time bases.
  """
  if clip_frames < 2:
    raise ValueError(f"clip_frames={clip_frames}: the consecutive layout needs >= 2 frames")
  span = window or num_frames  # Their FF++ sampler is told 110 frames, however long the video.
  stride = clip_frames - 1
  starts: List[int] = []
  start = 0
  while True:
    if start + stride > span:  # Back-pad: the last clip ends on the span's end frame.
      start = max(0, span - stride)
    if start >= num_frames:
      break
    starts.append(start)
    if start + stride >= span:
      break
    start += stride
  return starts


def padded_clip(raw: Mapping[str, Any], start: int, num_frames: int, *, sample_rate: int,
                with_mask: bool = False, with_words: bool = False,
                with_landmarks: bool = False) -> Dict[str, Any]:
  """``clip`` for a window that may run past the record's end: the frames that exist, then
  zero frames (and zero audio, mask and landmarks) up to ``num_frames``, and ``frame_valid``
  bool [T] saying which frames are real — the RealForensics code pads with zeros after its
  normalisation (``ZeroPadTemp``), so the model needs the flags to do the same on device."""
  total = len(raw["frames"])
  if not 0 <= start < total:
    raise ValueError(f"{raw['where']}: clip start {start} outside [0, {total - 1}]")
  have = min(num_frames, total - start)
  example = clip(raw, start, have, sample_rate=sample_rate, with_mask=with_mask,
                 with_words=with_words, with_landmarks=with_landmarks)
  missing = num_frames - have
  if missing:
    for key in ("video", "waveform", "mask", "landmarks"):
      if key in example:
        x = example[key]
        n = missing if key != "waveform" else (
            records.audio_samples(num_frames, raw["fps"], sample_rate) - len(x))
        example[key] = np.concatenate([x, np.zeros((n,) + x.shape[1:], x.dtype)])
    if with_words:
      example["clip_duration"] = np.float32(num_frames / raw["fps"])
  example["frame_valid"] = np.arange(num_frames) < have
  return example

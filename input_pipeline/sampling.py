"""Cutting a clip (video window + the audio it spans) out of a parsed record.

One function picks the window for audio and video together, so the two modalities can never
drift apart: the audio slice is derived from the video frame range, at the record's own rates.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

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
                with_landmarks: bool = False) -> Dict[str, Any]:
  """Training sampler: a uniformly random window of ``num_frames`` frames."""
  total = len(raw["frames"])
  start = int(rng.integers(0, total - num_frames + 1)) if total >= num_frames else 0
  return clip(raw, start, num_frames, sample_rate=sample_rate, with_mask=with_mask,
              with_words=with_words, with_landmarks=with_landmarks)

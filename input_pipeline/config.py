"""Defaults and schema of the ``config.input`` section shared by every experiment config.

Experiment configs start from ``input_config()`` and change values; ``fakedet.config_check``
compares the final config against these defaults, so a misspelt or mistyped key fails before
anything is built.
"""
from __future__ import annotations

import ml_collections

def source_config(data_dir: str = "", split: str = "train", batch_size: int = 8,
                  labels=(), manipulations=(), balance: str = "none",
                  exclude_manipulations=()) -> ml_collections.ConfigDict:
  """One training source. ``batch_size`` is this source's share of the GLOBAL batch."""
  return ml_collections.ConfigDict(dict(
      data_dir=data_dir,  # Local or gs:// dataset dir, or "synthetic:<preset>".
      split=split,
      batch_size=batch_size,
      labels=tuple(labels),  # () = all; (0,) = reals only.
      manipulations=tuple(manipulations),  # () = all; e.g. ("real", "graphics_swap").
      exclude_manipulations=tuple(exclude_manipulations),  # Held out, e.g. ("neural_texture",).
      balance=balance,  # "none" | "class" (oversample the minority class, FakeOut).
  ))


def input_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      sources=ml_collections.ConfigDict({"main": source_config()}),
      clip_frames=25,  # Tv; the audio spans the same time (Ta = 4·Tv log-mel frames).
      sample_rate=16000,  # Records with another rate are an error, not resampled silently.
      with_mask=False,  # Also return per-frame manipulation masks.
      with_words=False,  # Also return the clip's transcript (for the `narrations` op).
      train_ops="center_crop(size=140, resize=112)|log_mel",
      skip_bad_records=False,  # True: skip-and-count bad records instead of failing.
      num_workers=0,  # grain worker processes (0 = in the main process).
      eval=ml_collections.ConfigDict(dict(
          data_dir="", split="val", batch_size=8,
          clips_per_video=0,  # 0 = every non-overlapping clip of the video.
          labels=(),  # () = all; (0,) = reals only (e.g. representation metrics of stage 1).
          manipulations=(),  # () = all; e.g. ("real", "graphics_swap").
          exclude_manipulations=(),  # Held out, e.g. ("neural_texture",).
          ops="center_crop(size=140, resize=112)|log_mel",
      )),
  ))

"""Defaults and schema of the ``config.input`` section shared by every experiment config.

Experiment configs start from ``input_config()`` and change values; ``fakedet.config_check``
compares the final config against these defaults, so a misspelt or mistyped key fails before
anything is built.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from input_pipeline import i2g


def source_config(data_dir: str = "", split: str = "train", batch_size: int = 8,
                  labels=(), manipulations=(), balance: str = "none",
                  exclude_manipulations=(), samples_per_record: int = 1,
                  frame_window: int = 0) -> ml_collections.ConfigDict:
  """One training source. ``batch_size`` is this source's share of the GLOBAL batch."""
  return ml_collections.ConfigDict(dict(
      data_dir=data_dir,  # Local or gs:// dataset dir, or "synthetic:<preset>".
      split=split,
      batch_size=batch_size,
      labels=tuple(labels),  # () = all; (0,) = reals only.
      manipulations=tuple(manipulations),  # () = all; e.g. ("real", "graphics_swap").
      exclude_manipulations=tuple(exclude_manipulations),  # Held out, e.g. ("neural_texture",).
      balance=balance,  # "none" | "class" (oversample the minority class, FakeOut).
      # Clips drawn from each record per epoch (each at its own random position): frame-level
      # methods see many frames of a video per epoch (PCL: 32), and the epoch length counts them.
      samples_per_record=samples_per_record,
      # Clips start inside the first N frames of each record (0 = anywhere): RealForensics
      # trains on the first 270 frames of each FF++ video (their max_frames_per_video).
      frame_window=frame_window,
  ))


def i2g_config(p: float = 0.0) -> ml_collections.ConfigDict:
  """The online inconsistency image generator (PCL + I2G §3.2; ``input_pipeline.i2g``).

  ``p`` > 0 turns it on for every training source: each real clip becomes an I2G fake with
  probability p (donor: a real of another identity from the same source on this host), every
  clip gets a float32 ``mask`` [T, H, W, 1] (I2G's blend mask, a dataset fake's own mask or its
  DSSIM to the paired real, zeros for reals) and the landmarks it needed are dropped. The other
  keys are ``i2g.I2GConfig``'s fields at their defaults (the paper's values for 256-px frames;
  ``scale_to_frames`` rescales the pixel sizes to the records' frame size).
  """
  fields = {f.name: f.default for f in dataclasses.fields(i2g.I2GConfig)}
  fields["sigma_range"] = tuple(fields["sigma_range"])
  return ml_collections.ConfigDict(dict(
      p=p,
      scale_to_frames=True,  # σ and the blur kernel are the paper's for 256-px crops.
      max_donor_records=2000,  # Donor bank size cap per source and host (evenly subsampled).
      **fields))


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
      i2g=i2g_config(),  # Off unless i2g.p > 0 (PCL + I2G).
      eval=ml_collections.ConfigDict(dict(
          data_dir="", split="val", batch_size=8,
          clips_per_video=0,  # 0 = every clip of the layout; N = N of them, uniformly spaced.
          # Where clips start: "uniform" (non-overlapping clips covering the video, the last one
          # aligned to its end) or "consecutive" (the RealForensics code: a clip every
          # clip_frames - 1 frames, the last moved back to end on the window's end frame, frames
          # past the record zero-padded and flagged by a `frame_valid` [T] field).
          clip_layout="uniform",
          frame_window=0,  # Clips inside the first N frames (0 = whole video; RF FF++: 110).
          subset="",  # A file of video names (one a line) to keep, e.g. a DFDC subset list.
          labels=(),  # () = all; (0,) = reals only (e.g. representation metrics of stage 1).
          manipulations=(),  # () = all; e.g. ("real", "graphics_swap").
          exclude_manipulations=(),  # Held out, e.g. ("neural_texture",).
          ops="center_crop(size=140, resize=112)|log_mel",
          # A face track's score from its clips: "mean_logit" (σ of the mean logit, the
          # RealForensics code) or "mean_prob" (mean probability, PCL); max over tracks.
          video_score="mean_logit",
      )),
  ))

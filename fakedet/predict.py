"""Predict entry point: fake probabilities for raw video files from a trained detector.

  python -m fakedet.predict [--config=configs/<experiment>.py[:variant]] --checkpoint=WORKDIR \
      video.mp4 [more.mp4 ...] [--output=preds.json] [--clips_per_track=N] [--aligned] \
      [--landmarks_dir=DIR] [--heatmap_dir=DIR] [--config.a.b=value ...]

Each file is decoded and preprocessed in memory exactly as the records were (25 fps, 16 kHz,
faces, tracks, alignment at the records' crop size; ``--aligned``: the input already is an aligned
face crop video), cut into clips per face track as the evaluator cuts a record
(``input.eval.clip_layout``, ``frame_window``, ``clips_per_video``), passed through
the config's eval ops and the jitted ``objective.predict``. Output: per-clip, per-track and
video-level fake probabilities as JSON (``--output``, else stdout) and a short table (stdout, or
stderr when the JSON goes to stdout). A file that cannot be scored gets an error entry and the
others go on; the exit code is 1 only when no file could be scored. See docs/predict.md.
"""
from __future__ import annotations

import json
import logging
import sys

from absl import app, flags
from etils import epath
from ml_collections import config_flags

from fakedet import cli, trainers
from fakedet.prediction import predictor as predictor_lib
from input_pipeline import records

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The experiment config the checkpoint was trained with (default: the "
    "config.json the trainer saved in the checkpoint's workdir).", lock_config=True)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Training workdir (or <workdir>/best), its checkpoints/ folder, or one "
    "step folder.")
_STEP = flags.DEFINE_integer("step", -1, "Checkpoint step; -1 = the latest.")
_OUTPUT = flags.DEFINE_string("output", "", "JSON output file; empty = JSON to stdout.")
_CLIPS = flags.DEFINE_integer(
    "clips_per_track", -1, "Clips per face track, laid out as config.input.eval.clip_layout "
    "(uniform: spread, non-overlapping; consecutive: back to back) and kept uniformly spaced; "
    "0 = all, -1 = config.input.eval.clips_per_video (what the detector was evaluated with).")
_WINDOW = flags.DEFINE_integer(
    "frame_window", -1, "Clips within each track's first N frames; 0 = the whole track, "
    "-1 = config.input.eval.frame_window (RealForensics' FF++ protocol: 110).")
_ALIGNED = flags.DEFINE_bool(
    "aligned", False, "The inputs are already aligned face-crop videos: no face detection, "
    "frames resized to the records' crop size, one track per file.")
_LANDMARKS = flags.DEFINE_string(
    "landmarks_dir", "", "Directory of <file name without extension>.npy/.json landmark files "
    "(docs/preprocessing.md format) used instead of MTCNN where present.")
_HEATMAP_DIR = flags.DEFINE_string(
    "heatmap_dir", "", "Write an occlusion-sensitivity PNG per face track here.")
_HEATMAP_PATCH = flags.DEFINE_float(
    "heatmap_patch", 40 / 112, "Occluding patch side as a fraction of the model input side "
    "(RealForensics: 40 px of 112).")
_HEATMAP_STRIDE = flags.DEFINE_float(
    "heatmap_stride", 0.5, "Patch step as a fraction of the patch side.")
_CROP = flags.DEFINE_integer(
    "crop_size", 0, "Aligned crop side (px); 0 = the records' size, read from "
    "config.input.eval.data_dir.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Clips per forward pass; 0 = "
                              "config.input.eval.batch_size.")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", None, "Score only the first seconds of a file.")
_DETECT_EVERY = flags.DEFINE_integer("detect_every", 1, "MTCNN on every n-th frame (faster).")
flags.mark_flags_as_required(["checkpoint"])



def exit_code(result) -> int:
  """0 if at least one file was scored: a batch job should not fail over one broken file (its
  error is in the JSON and the table); 1 when nothing was, which is a setup problem more often
  than bad media (wrong --aligned, no detector, every file missing)."""
  return 0 if result["num_ok"] else 1


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError("no video files given: python -m fakedet.predict --config=... "
                         "--checkpoint=... video.mp4 [more.mp4 ...]")
  cli.setup()
  try:
    config = cli.config_for(_CONFIG.value, _CHECKPOINT.value)
    clips = config.input.eval.clips_per_video if _CLIPS.value < 0 else _CLIPS.value
    options = predictor_lib.Options(
        clips_per_track=int(clips), frame_window=_WINDOW.value, aligned=_ALIGNED.value,
        landmarks_dir=_LANDMARKS.value,
        heatmap_dir=_HEATMAP_DIR.value, heatmap_patch=_HEATMAP_PATCH.value,
        heatmap_stride=_HEATMAP_STRIDE.value, max_seconds=_MAX_SECONDS.value,
        detect_every=_DETECT_EVERY.value)
    trainers.get(config.trainer).check(config)  # Same fail-fast validation as training.
    if _LANDMARKS.value and not epath.Path(_LANDMARKS.value).is_dir():
      raise FileNotFoundError(f"--landmarks_dir {_LANDMARKS.value} is not a directory")
    if not 0 < options.heatmap_patch <= 1 or options.heatmap_stride <= 0:
      raise ValueError("--heatmap_patch must be in (0, 1] and --heatmap_stride > 0")
    predictor = predictor_lib.Predictor.from_checkpoint(
        config, _CHECKPOINT.value, _STEP.value, _CROP.value, _BATCH.value)
  except (FileNotFoundError, ValueError, KeyError) as e:
    cli.fail(e)
  table_out = sys.stdout if _OUTPUT.value else sys.stderr
  result = predictor_lib.predict_files(
      predictor, paths, options,
      progress=lambda v: logging.info("%s: %s", v["path"], v["status"]))
  text = json.dumps(result, indent=1)
  if _OUTPUT.value:
    records.write_json(_OUTPUT.value, result)
  else:
    print(text)
  print(predictor_lib.summary(result), file=table_out)
  if _OUTPUT.value:
    print(f"predictions written to {_OUTPUT.value}", file=table_out)
  return exit_code(result)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)

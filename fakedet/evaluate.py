"""Evaluation entry point: score a trained detector's checkpoint on the config's eval split.

  python -m fakedet.evaluate [--config=configs/<experiment>.py[:variant]] --checkpoint=WORKDIR \
      [--protocol=standard|robustness] [--step=N] [--output_dir=DIR] [--config.a.b=value ...]
      [--eval_sets=NAME=DATA_DIR[:SPLIT][@KEY=VALUE]...,...]   # several test sets, one table

``--checkpoint`` is the training workdir (or its ``checkpoints/`` folder, or one step folder);
the latest step is used unless ``--step`` says otherwise. Reports go to ``--output_dir``
(default ``<workdir>/eval/<protocol>_step<N>``); see docs/evaluation.md for the files.
"""
from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

from fakedet import cli, distributed, trainers
from fakedet.evaluation import detector, protocols

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The experiment config the checkpoint was trained with (default: the "
    "config.json the trainer saved in the checkpoint's workdir).", lock_config=True)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Training workdir, its checkpoints/ folder, or one step folder.")
_STEP = flags.DEFINE_integer("step", -1, "Checkpoint step; -1 = the latest.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Where reports go; default <workdir>/eval/<protocol>_step<N>.")
_PROTOCOL = flags.DEFINE_enum("protocol", "standard", ["standard", "robustness"],
                              "standard: the eval split as configured; robustness: also every "
                              "DeeperForensics corruption × severity.")
_CORRUPTIONS = flags.DEFINE_list("corruptions", [], "Robustness: corruption kinds (default all 7).")
_SEVERITIES = flags.DEFINE_list("severities", ["1", "2", "3", "4", "5"],
                                "Robustness: severities 1-5.")
_EVAL_SETS = flags.DEFINE_list(
    "eval_sets", [], "Score several test sets in one call, NAME=DATA_DIR[:SPLIT][@KEY=VALUE]... "
    "(split default 'test'; KEY one of clip_layout, frame_window, clips_per_video, subset: that "
    "set's input.eval.KEY), e.g. ffpp=gs://b/ffpp_c23:test@frame_window=110,"
    "dfdc=gs://b/dfdc@frame_window=0@subset=/lists/dfdc_all_vids.txt: a report per set in "
    "<output_dir>/<NAME>/ and one cross-dataset table (cross_dataset.md/.json).")
_MAPS = flags.DEFINE_integer(
    "maps_per_class", 2, "Methods with localisation maps (PCL, RFFR): write them for this many "
    "clips of each class to <output_dir>/maps (0 = none).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-host job (jax.distributed.initialize from the "
    "environment, plus fakedet.distributed's watchdog).")
flags.mark_flags_as_required(["checkpoint"])


def default_output_dir(manager_dir: str, protocol: str, step: int) -> str:
  """Next to the checkpoints: ``<workdir>/eval/<protocol>_step<N>``."""
  return os.path.join(os.path.dirname(manager_dir), "eval", f"{protocol}_step{step}")



def prepare(config, checkpoint: str, step: int):
  """Every check that needs no model: config, detector objective, checkpoint and step.

  Returns (Orbax manager directory, step). Raises ValueError/KeyError/FileNotFoundError with a
  message naming the bad key or path.
  """
  trainers.get(config.trainer).check(config)  # Same fail-fast validation as training.
  return detector.find(config, checkpoint, step)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.setup()
  try:
    config = cli.config_for(_CONFIG.value, _CHECKPOINT.value)
    directory, step = prepare(config, _CHECKPOINT.value, _STEP.value)
    severities = [int(s) for s in _SEVERITIES.value]
    sets = protocols.parse_eval_sets(_EVAL_SETS.value) if _EVAL_SETS.value else None
    if sets and _PROTOCOL.value != "standard":
      raise ValueError("--eval_sets runs the standard protocol on each set; drop --protocol")
  except (FileNotFoundError, ValueError, KeyError) as e:
    cli.fail(e)
  if _DISTRIBUTED.value:
    distributed.initialize()
  kind = "cross_dataset" if sets else _PROTOCOL.value
  output_dir = _OUTPUT_DIR.value or default_output_dir(directory, kind, step)
  if sets:
    result = protocols.evaluate_sets(config, directory, output_dir, sets, step=step)
  else:
    result = protocols.evaluate_checkpoint(
        config, directory, output_dir, _PROTOCOL.value, step=step,
        corruptions=_CORRUPTIONS.value, severities=severities, maps_per_class=_MAPS.value)
  print(protocols.summary(result))
  print(f"reports written to {output_dir}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)

"""Entry point: ``python -m fakedet.main --config=configs/<experiment>.py[:variant] --workdir=DIR``.

Thin on purpose: parse flags, optionally join a multi-host job, validate the whole config, then
hand over to the trainer that ``config.trainer`` names. Overrides: ``--config.a.b=value``.
"""
from __future__ import annotations

import logging

import jax
from absl import app, flags
from ml_collections import config_flags

from fakedet import cli, trainers

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/data_preview.py:demo.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and summaries.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host TPU/GPU jobs).")
flags.mark_flags_as_required(["config", "workdir"])



def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.setup()
  config = _CONFIG.value
  trainer = trainers.get(config.trainer)  # Unknown name → error listing the registered ones.
  trainer.check(config)  # Unknown keys, wrong types, bad op specs: before anything is built.
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  logging.info("config:\n%s", config)
  trainer.run(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)

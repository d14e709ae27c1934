"""Entry point: ``python -m fakedet.main --config=configs/<experiment>.py[:variant] --workdir=DIR``.

Thin on purpose: parse flags, optionally join a multi-host job, validate the whole config, then
hand over to the trainer that ``config.trainer`` names. Overrides: ``--config.a.b=value``.
"""
from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from fakedet import cli, distributed, trainers

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/data_preview.py:demo.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and summaries.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-host job (jax.distributed.initialize from the "
    "environment, plus fakedet.distributed's watchdog).")
_PREEMPTED_EXIT_CODE = flags.DEFINE_integer(
    "preempted_exit_code", 0, "Exit status when a SIGTERM stopped the run after its checkpoint "
    "(0: a clean exit). A launcher that retries failed tasks sets a non-zero one, so the "
    "retried task resumes instead of the job counting as done (launch/gcp_batch.py: 143).")
flags.mark_flags_as_required(["config", "workdir"])



def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.setup()
  config = _CONFIG.value
  try:
    trainer = trainers.get(config.trainer)  # Unknown name → error listing the registered ones.
    trainer.check(config)  # Unknown keys, wrong types, bad values: before anything is built.
  except (KeyError, TypeError, ValueError) as e:
    cli.fail(e)
  if _DISTRIBUTED.value:
    distributed.initialize()
  logging.info("config:\n%s", config)
  try:
    result = trainer.run(config, _WORKDIR.value)
  except Exception:  # pylint: disable=broad-except
    distributed.wait_for_verdict()  # A peer that went away is named in one line, not this.
    raise
  if _DISTRIBUTED.value:
    distributed.shutdown()
  if isinstance(result, dict) and result.get("stopped") == "preempted":
    sys.exit(_PREEMPTED_EXIT_CODE.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)

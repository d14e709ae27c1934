"""Steps per second of the shared training loop (not just the jitted step): input pipeline,
device transfer, step dispatch, logging hooks, the non-finite and preemption checks.

  python benchmarks/train_loop.py [--steps=300] [--log_every=50] [--batch=8]

Runs ``fakedet.trainers.train.run`` on the tiny stage-1 model (tests/tiny_configs.py) and
``synthetic:tiny`` once and reads the trainer's own ``steps_per_sec`` reports (clu's
ReportProgress, logged every ``log_every`` steps); the first report includes compilation and is
dropped, the median of the others is printed. Only public trainer entry points and log lines are
used, so the same script measures an older checkout (run it from that checkout's root) for a
before/after.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.getcwd())  # The checkout being measured (fakedet, tests).
sys.path.insert(1, ROOT)

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()


class _Reports(logging.Handler):
  """Collects the ``steps_per_sec=<x>`` values the trainer logs."""

  def __init__(self):
    super().__init__()
    self.values = []

  def emit(self, record):
    match = re.search(r"steps_per_sec=([0-9.]+)", record.getMessage())
    if match:
      self.values.append(float(match.group(1)))


def steps_per_sec(steps: int, log_every: int, batch: int) -> list:
  from fakedet.trainers import train  # pylint: disable=import-outside-toplevel
  from tests import tiny_configs  # pylint: disable=import-outside-toplevel
  config = tiny_configs.get_config("stage1")
  config.total_steps = steps
  config.log_every = log_every
  config.checkpoint.every_steps = 10 * steps  # Only the final save.
  config.input.sources.reals.batch_size = batch
  reports = _Reports()
  logging.getLogger().addHandler(reports)
  for name in ("", "absl"):  # absl's verbosity flag (unparsed here) would keep it at WARNING.
    logging.getLogger(name).setLevel(logging.INFO)
  with tempfile.TemporaryDirectory() as workdir:
    train.run(config, workdir)
  return reports.values


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--log_every", type=int, default=50)
  p.add_argument("--batch", type=int, default=8)
  args = p.parse_args(argv)
  t0 = time.perf_counter()
  values = steps_per_sec(args.steps, args.log_every, args.batch)
  if len(values) < 2:
    raise SystemExit(f"only {len(values)} steps_per_sec reports: raise --steps")
  warm = values[1:]
  print(f"checkout {os.getcwd()}: {statistics.median(warm):.2f} steps/s (median of {len(warm)} "
        f"reports after the first: {', '.join(f'{v:.2f}' for v in warm)}; batch {args.batch}, "
        f"{time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
  main()

"""Steps per second of the shared training loop (not just the jitted step): input pipeline,
device transfer, step dispatch, logging hooks, the non-finite and preemption checks.

  python benchmarks/train_loop.py [--steps=60] [--log_every=20] [--batch=8]

Runs ``fakedet.trainers.train.run`` on the tiny stage-1 model (tests/tiny_configs.py) and
``synthetic:tiny`` twice, for N and 2N steps in fresh workdirs; the loop's time per step is the
difference of the two runs' loop seconds divided by N, so compilation, restore and the final
evaluation cancel out. Prints steps/s. Only public trainer entry points are used, so the same
script measures an older checkout (run it from that checkout's root) for a before/after.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.getcwd())  # The checkout being measured (fakedet, tests).
sys.path.insert(1, ROOT)

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()


def loop_seconds(steps: int, log_every: int, batch: int) -> float:
  from fakedet.trainers import train  # pylint: disable=import-outside-toplevel
  from tests import tiny_configs  # pylint: disable=import-outside-toplevel
  config = tiny_configs.get_config("stage1")
  config.total_steps = steps
  config.log_every = log_every
  config.checkpoint.every_steps = 10 * steps  # Only the final save.
  config.input.sources.reals.batch_size = batch
  with tempfile.TemporaryDirectory() as workdir:
    return float(train.run(config, workdir)["seconds"])


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--log_every", type=int, default=20)
  p.add_argument("--batch", type=int, default=8)
  args = p.parse_args(argv)
  t0 = time.perf_counter()
  short = loop_seconds(args.steps, args.log_every, args.batch)
  long = loop_seconds(2 * args.steps, args.log_every, args.batch)
  per_step = (long - short) / args.steps
  print(f"checkout {os.getcwd()}: {1 / per_step:.2f} steps/s ({1000 * per_step:.1f} ms/step; "
        f"runs of {args.steps} and {2 * args.steps} steps took {short:.1f} s and {long:.1f} s "
        f"of loop time, {time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
  main()

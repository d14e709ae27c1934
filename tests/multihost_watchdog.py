"""One process of an N-process job that joins through fakedet.distributed and then runs a
collective every second (as a training loop would); the test kills one of them."""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--process_id", type=int, required=True)
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--timeout", type=float, default=6.0)
  args = parser.parse_args()
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  from fakedet import distributed  # pylint: disable=import-outside-toplevel
  distributed.initialize(watchdog_timeout=args.timeout,
                         coordinator_address=f"127.0.0.1:{args.port}",
                         num_processes=args.num_processes,
                         process_id=args.process_id)
  print("joined", flush=True)
  try:
    while True:  # A collective every second, as a training loop's steps would be.
      multihost_utils.process_allgather(np.ones(1))
      time.sleep(1.0)
  except Exception:  # pylint: disable=broad-except
    distributed.wait_for_verdict()  # As fakedet.main does.
    raise


if __name__ == "__main__":
  main()

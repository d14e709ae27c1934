"""The evaluation driver as one of N processes (CPU collectives over localhost).

  python tests/multihost_evaluate.py --process_id=I --num_processes=N --port=P \
      --workdir=TRAINED --data_dir=DATASET --out=DIR

Every process evaluates the same checkpoint on its share of the clips and writes what it ends up
holding (every clip's logit, the video-level AUC) to DIR/process_I.json; process 0 alone writes
the report files to DIR/report. tests/test_evaluate.py compares that with one process.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  parser = argparse.ArgumentParser()
  for name in ("process_id", "num_processes", "port"):
    parser.add_argument(f"--{name}", type=int, required=True)
  for name in ("workdir", "data_dir", "out"):
    parser.add_argument(f"--{name}", required=True)
  args = parser.parse_args()
  from tests import tiny_configs
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count=2 {tiny_configs.FAST_COMPILE}"
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  import jax
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                             num_processes=args.num_processes, process_id=args.process_id)
  from fakedet.evaluation import protocols
  from tests import tiny_detector_config
  result = protocols.evaluate_checkpoint(tiny_detector_config.multihost_config(args.data_dir),
                                         args.workdir, os.path.join(args.out, "report"))
  with open(os.path.join(args.out, f"process_{args.process_id}.json"), "w") as f:
    json.dump({"processes": jax.process_count(), "devices": jax.device_count(),
               "video_auc": result["video"]["overall"]["auc"],
               "num_clips": result["num_clips"]}, f)


if __name__ == "__main__":
  main()

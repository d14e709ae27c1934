"""A Cloud TPU VM pod slice for one fakedet run: create, copy the code, run the same command on
every worker, tail the logs, delete. Each action is a ``gcloud`` command line, printed before it
runs (``--dry_run`` only prints).

  python launch/tpu_pod.py create --name=fd --zone=us-central2-b --type=v4-32 [--spot]
  python launch/tpu_pod.py copy   --name=fd --zone=us-central2-b     # this checkout → workers
  python launch/tpu_pod.py run    --name=fd --zone=us-central2-b \\
      --config=configs/stage1.py --workdir=gs://BUCKET/runs/stage1 [-- --config.x=y ...]
  python launch/tpu_pod.py logs   --name=fd --zone=us-central2-b [--lines=50]
  python launch/tpu_pod.py delete --name=fd --zone=us-central2-b

Why: every host of a slice must start the same program (JAX's multi-controller model);
``fakedet.main --distributed`` lets ``jax.distributed.initialize()`` discover the slice from the
TPU VM metadata, so the command needs no host list. ``run`` starts the trainer under ``nohup``
with its log in ``~/fakedet.log`` on each worker and returns; ``logs`` reads those files. A run
stopped by a preemption or a ``delete`` resumes from its last gs:// checkpoint when ``run`` is
given the same workdir on a new slice.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from typing import List, Optional, Sequence

RUNTIME = "tpu-ubuntu2204-base"
LOG = "~/fakedet.log"
CODE_DIR = "~/fakedet"


def _ssh(args: argparse.Namespace, remote: str) -> List[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, f"--zone={args.zone}",
          "--worker=all", f"--command={remote}"]


def create(args: argparse.Namespace) -> List[List[str]]:
  cmd = ["gcloud", "compute", "tpus", "tpu-vm", "create", args.name, f"--zone={args.zone}",
         f"--accelerator-type={args.type}", f"--version={args.runtime}"]
  return [cmd + (["--spot"] if args.spot else [])]


def copy(args: argparse.Namespace) -> List[List[str]]:
  """This checkout's tracked files (``git archive``, so no venv or workdir travels) → every
  worker, unpacked and installed with the TPU extra."""
  tarball = "/tmp/fakedet.tar.gz"
  install = (f"rm -rf {CODE_DIR} && mkdir -p {CODE_DIR} && tar xzf {tarball} -C {CODE_DIR} && "
             f"cd {CODE_DIR} && python3 -m pip install -q -c constraints.txt -e '.[tpu]'")
  return [["git", "archive", "--format=tar.gz", "-o", tarball, "HEAD"],
          ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball, f"{args.name}:{tarball}",
           f"--zone={args.zone}", "--worker=all"],
          _ssh(args, install)]


def run(args: argparse.Namespace) -> List[List[str]]:
  if not args.config or not args.workdir:
    raise SystemExit("run: give --config and --workdir")
  if not args.workdir.startswith("gs://"):
    raise SystemExit(f"run: --workdir={args.workdir}: expected a gs:// path (every worker "
                     f"writes its part of each checkpoint there)")
  train = ["python3", "-m", "fakedet.main", f"--config={args.config}",
           f"--workdir={args.workdir}", "--distributed", *args.overrides]
  remote = f"cd {CODE_DIR} && nohup {shlex.join(train)} > {LOG} 2>&1 < /dev/null &"
  return [_ssh(args, remote)]


def logs(args: argparse.Namespace) -> List[List[str]]:
  return [_ssh(args, f"hostname; tail -n {int(args.lines)} {LOG}")]


def delete(args: argparse.Namespace) -> List[List[str]]:
  return [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, f"--zone={args.zone}",
           "--quiet"]]


ACTIONS = {"create": create, "copy": copy, "run": run, "logs": logs, "delete": delete}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("action", choices=sorted(ACTIONS))
  p.add_argument("--name", required=True, help="the TPU VM (slice) name")
  p.add_argument("--zone", required=True, help="e.g. us-central2-b")
  p.add_argument("--type", default="v4-32", help="accelerator type, e.g. v4-32, v5p-64")
  p.add_argument("--runtime", default=RUNTIME, help="TPU VM software version")
  p.add_argument("--spot", action="store_true")
  p.add_argument("--config", default="")
  p.add_argument("--workdir", default="")
  p.add_argument("--lines", type=int, default=50)
  p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  argv = list(sys.argv[1:] if argv is None else argv)
  cut = argv.index("--") if "--" in argv else len(argv)  # After --: more fakedet.main flags.
  args = p.parse_args(argv[:cut])
  args.overrides = argv[cut + 1:]
  return args


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  for cmd in ACTIONS[args.action](args):
    print("+", shlex.join(cmd), flush=True)
    if not args.dry_run:
      code = subprocess.call(cmd)
      if code:
        return code
  return 0


if __name__ == "__main__":
  sys.exit(main())

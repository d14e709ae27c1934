"""End-to-end preprocessing throughput: the local runner vs the Beam pipeline (DirectRunner).

  python benchmarks/preprocess_runners.py [--videos=8] [--seconds=4] [--height=360] \
      [--workers=2] [--detector=none|mtcnn]

Writes the same synthetic mp4s as benchmarks/preprocess.py, then preprocesses them into records
three ways — ``runner.run`` with ``--workers`` processes, Beam's DirectRunner in this process,
and the DirectRunner with ``--workers`` worker processes (``multi_processing``) — and prints
seconds of video per wall-clock second for each (start-up, TF import and writing included), and
whether the three datasets are byte-identical. ``--detector=none`` uses the generator's
landmarks as user landmark files.
"""
import argparse
import dataclasses
import filecmp
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.preprocess import make_videos  # noqa: E402
from input_pipeline.preprocess import beam_pipeline, runner, video  # noqa: E402


def _same(a, b):
  """True when every dataset file (not preprocess.json / run state) is identical."""
  cmp = filecmp.dircmp(a, b, ignore=[runner.REPORT, runner.STATE_DIR])
  def ok(c):
    return (not c.left_only and not c.right_only and not c.diff_files and not c.funny_files
            and all(ok(s) for s in c.subdirs.values()))
  return ok(cmp)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--videos", type=int, default=8)
  parser.add_argument("--seconds", type=float, default=4.0)
  parser.add_argument("--height", type=int, default=360)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--detector", default="none", choices=["none", "mtcnn"])
  args = parser.parse_args()
  tmp = tempfile.mkdtemp(prefix="fakedet_bench_runners_")
  items = make_videos(tmp, args.videos, args.seconds, args.height)
  if args.detector == "mtcnn":
    items = [dataclasses.replace(i, landmarks="") for i in items]
  seconds = args.videos * args.seconds
  config = dataclasses.replace(video.PreprocessConfig(), detect_every=5)
  shards = max(1, args.workers)
  runs = {
      f"local runner, {args.workers} workers": lambda out: runner.run(
          items, out, "bench", config, shards, args.workers, args.detector, progress=False),
      "Beam DirectRunner, in_memory": lambda out: beam_pipeline.run(
          items, out, "bench", config, shards, args.detector),
      f"Beam DirectRunner, multi_processing x{args.workers}": lambda out: beam_pipeline.run(
          items, out, "bench", config, shards, args.detector, pipeline_args=[
              "--direct_running_mode=multi_processing",
              f"--direct_num_workers={args.workers}"]),
  }
  print(f"{args.videos} videos × {args.seconds:g} s at {args.height}p, faces from "
        f"{'landmark files' if args.detector == 'none' else 'MTCNN every 5th frame'}")
  outs = []
  for name, fn in runs.items():
    out = os.path.join(tmp, f"out{len(outs)}")
    t0 = time.perf_counter()
    report = fn(out)
    wall = time.perf_counter() - t0
    assert report["num_written"] == args.videos, report["skipped"]
    outs.append(out)
    print(f"{name:>40}: {wall:6.1f} s wall, {seconds / wall:5.2f} s of video per s")
  print("datasets byte-identical:", all(_same(outs[0], o) for o in outs[1:]))
  if os.environ.get("KEEP"):
    print(tmp)
  else:
    shutil.rmtree(tmp)


if __name__ == "__main__":
  main()

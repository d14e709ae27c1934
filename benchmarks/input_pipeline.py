"""Decode + augment throughput of the training input pipeline, in clips/s per core.

  python benchmarks/input_pipeline.py [--frames=25] [--stored=150] [--crop=140] [--size=112]
  python benchmarks/input_pipeline.py --config=configs/pcl_i2g.py --batch=32   # any config

Builds (once, cached) a small synthetic dataset stored at ``--stored`` px, then times the
RealForensics stage-1 pipeline — random clip, JPEG decode of the window, two independent
140→112 crops (teacher/student views), flip, grayscale, log-mel, random erasing, time and
frequency masking — in ONE process with OpenCV limited to one thread, i.e. per core. Target:
≥ 100 clips/s per core on a 2-core CPU.
"""
import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from input_pipeline import config as input_config  # noqa: E402
from input_pipeline import pipeline  # noqa: E402
from input_pipeline.synthetic import dataset as synthetic  # noqa: E402

STAGE1_OPS = ("random_crop(key='video', out_key='video_masked', size={crop}, resize={size})"
              "|random_crop(key='video', size={crop}, resize={size})"
              "|flip(keys=('video', 'video_masked'))|grayscale(keys=('video', 'video_masked'))"
              "|log_mel|copy(src='audio', dst='audio_masked')|random_erase(key='video_masked')"
              "|time_mask(video_key='video_masked', audio_key='audio_masked', max_frames=12)"
              "|freq_mask(key='audio_masked', max_bins=27)")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--frames", type=int, default=25)
  parser.add_argument("--stored", type=int, default=150)
  parser.add_argument("--crop", type=int, default=140)
  parser.add_argument("--size", type=int, default=112)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--batches", type=int, default=15)
  parser.add_argument("--config", default="", help="time this config's training input instead "
                      "(its ops, I2G stage, clip length), e.g. configs/pcl_i2g.py")
  args = parser.parse_args()
  cv2.setNumThreads(1)
  if args.config:
    return config_input(args)

  t0 = time.perf_counter()
  data_dir = synthetic.ensure(dataclasses.replace(
      synthetic.preset("demo"), name=f"bench{args.stored}", resolution=args.stored,
      identities=(6, 1, 1), videos_per_identity=4, families=()))
  print(f"dataset: {data_dir} ({time.perf_counter() - t0:.1f} s to build or find)")

  cfg = input_config.input_config()
  cfg.clip_frames = args.frames
  cfg.train_ops = STAGE1_OPS.format(crop=args.crop, size=args.size)
  cfg.sources.main = input_config.source_config(data_dir, "train", args.batch)
  it = iter(pipeline.train_dataset(cfg, seed=0, process_index=0, process_count=1))
  batch = next(it)  # Warm-up (opens shards, first allocations).
  shapes = {k: v.shape for k, v in batch.items() if isinstance(v, np.ndarray) and v.ndim > 1}
  t0 = time.perf_counter()
  for _ in range(args.batches):
    next(it)
  seconds = time.perf_counter() - t0
  clips = args.batches * args.batch
  print(f"shapes: {shapes}")
  print(f"decode+augment: {clips / seconds:.1f} clips/s per core "
        f"({args.frames} frames {args.stored}px → crop {args.crop} → {args.size}, with audio; "
        f"{clips} clips in {seconds:.2f} s, 1 process, cv2 threads=1)")


def config_input(args):
  """The config's whole training input (sampling, decode, the I2G stage when on, its ops) on
  synthetic records stored at --stored px with every forgery family, in CPU seconds of this one
  process (cv2 on one thread): per-core cost, unaffected by other jobs on the machine."""
  import importlib.util
  path, _, variant = args.config.partition(":")
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant or None)
  data_dir = synthetic.ensure(dataclasses.replace(
      synthetic.preset("demo"), name=f"bench{args.stored}f", resolution=args.stored,
      identities=(6, 1, 1), videos_per_identity=2))
  icfg = config.input
  icfg.num_workers = 0
  for source in icfg.sources.values():
    source.data_dir, source.batch_size = data_dir, args.batch
  # From before the iterator exists (donor bank included) to the last batch: grain's reader
  # threads prefetch ahead, so a window opened after the first batch would miss work done before
  # it and count work for batches never taken; many batches make both ends small.
  t0 = time.process_time()
  it = iter(pipeline.train_dataset(icfg, seed=0, process_index=0, process_count=1))
  for _ in range(args.batches):
    batch = next(it)
  seconds = time.process_time() - t0
  clips = args.batches * args.batch * len(icfg.sources)
  frames = clips * icfg.clip_frames
  print(f"{args.config}: video {batch['video'].shape[1:]} from {args.stored}px records, "
        f"I2G p={icfg.i2g.p}")
  print(f"  {clips / seconds:.1f} clips/s = {frames / seconds:.1f} frames/s per core "
        f"({clips} clips in {seconds:.2f} CPU s, 1 process, cv2 threads=1)")


if __name__ == "__main__":
  main()

"""Decode + augment throughput of the training input pipeline, in clips/s per core.

  python benchmarks/input_pipeline.py [--frames=25] [--stored=150] [--crop=140] [--size=112]
  python benchmarks/input_pipeline.py --config=configs/pcl_i2g.py --batch=32   # any config

Without ``--config``: builds (once, cached) a small synthetic dataset stored at ``--stored`` px,
then times the RealForensics stage-1 pipeline — random clip, JPEG decode of the window, two
independent 140→112 crops (teacher/student views), flip, grayscale, log-mel, random erasing, time
and frequency masking — in ONE process with OpenCV limited to one thread, i.e. per core. Target:
≥ 100 clips/s per core on a 2-core CPU.

With ``--config``: that config's whole training input (its ops, clip length, sample rate, I2G
stage) on a small twin of the synthetic data its ``:demo`` variant reads, rendered at the size
the config's own crops need (``on_bench_data``; ``--stored`` is not used), in CPU seconds of this
process. ``benchmarks/table.py`` and ``benchmarks/train_step.py`` reuse ``on_bench_data``,
``one_example`` and ``input_rate``.
"""
import argparse
import dataclasses
import importlib.util
import os
import sys
import time
from typing import Dict, Mapping

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from input_pipeline import config as input_config  # noqa: E402
from input_pipeline import ops, pipeline, sources  # noqa: E402
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


def load_config(config_arg: str):
  """``configs/x.py[:variant]`` → that file's ``get_config(variant)``, as ``--config`` loads it
  (configs/ is not a package, so by path)."""
  path, _, variant = config_arg.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--config={config_arg}: no config file {path!r}")
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant or None)


def demo_twin(config_arg: str):
  """The ``:demo`` variant of ``config_arg`` (its other variants kept): where the embedded
  synthetic data for that method is named (which preset each training source reads, the
  vocabulary file)."""
  path, _, variant = config_arg.partition(":")
  flags = [v for v in variant.split(",") if v]
  return load_config(f"{path}:{','.join(flags + ['demo'] if 'demo' not in flags else flags)}")


def crop_size(train_ops: str) -> int:
  """The largest window any op of ``train_ops`` cuts (its ``size=``; 0 when none does): the
  stored frames must be at least this big or the crop op fails."""
  sizes = [kw["size"] for _, kw in ops.parse_spec(train_ops)
           if isinstance(kw.get("size"), int)]
  return max(sizes, default=0)


def bench_preset(data_dir: str, min_size: int, min_frames: int, identities: int = 3,
                 sample_rate: int = 0) -> synthetic.SyntheticConfig:
  """A small train-split-only twin of the preset ``data_dir`` names (``synthetic:<preset>``),
  its frames (full faces, or mouth crops for a mouth preset) at least ``min_size`` px and
  ``min_frames`` long, so a paper config's ops run on it unchanged. Same families, topics and
  audio as the preset; only a few identities (a throughput and shape probe, not a dataset).
  ``sample_rate`` (0: the preset's): the paper config's own rate (FakeOut's 44.1 kHz), since the
  pipeline refuses records at another rate rather than resampling them silently."""
  if not data_dir.startswith(sources.SYNTHETIC_PREFIX):
    raise ValueError(f"the :demo variant reads {data_dir!r}: expected 'synthetic:<preset>'")
  base = synthetic.preset(data_dir[len(sources.SYNTHETIC_PREFIX):])
  if base.mouth_size:
    size = dict(mouth_size=max(base.mouth_size, min_size))
  else:
    size = dict(resolution=max(base.resolution, min_size))
  stored = size.get("mouth_size", size.get("resolution"))
  return dataclasses.replace(
      base, name=f"bench_{base.name}_{stored}px", splits=("train",), identities=(identities,),
      videos_per_identity=2, num_shards=(1,), num_frames=max(base.num_frames, min_frames),
      sample_rate=sample_rate or base.sample_rate, **size)


def _bench_dirs(demo_sources, min_size: int, min_frames: int,
                sample_rate: int) -> Dict[str, str]:
  """Preset name → directory of its (built once, cached) bench twin, for every preset the demo's
  training sources read."""
  dirs = {}
  for scfg in demo_sources.values():
    name = scfg.data_dir[len(sources.SYNTHETIC_PREFIX):]
    if name not in dirs:
      dirs[name] = synthetic.ensure(bench_preset(scfg.data_dir, min_size, min_frames,
                                                 sample_rate=sample_rate))
  return dirs


def _user_file(path: str, dirs: Mapping[str, str]) -> str:
  """``synthetic:<preset>/<file>`` (a file the demo takes from its dataset, e.g. the
  vocabulary) → the same file of that preset's bench twin."""
  name, _, rest = path[len(sources.SYNTHETIC_PREFIX):].partition("/")
  if name not in dirs:
    raise ValueError(f"the :demo variant names {path!r}, but none of its training sources reads "
                     f"synthetic:{name}")
  return os.path.join(dirs[name], rest)


def on_bench_data(config_arg: str):
  """``config_arg``'s config, every training source pointed at a small synthetic twin of the data
  its ``:demo`` variant reads (a source the demo lacks reads the demo's first source), rendered
  big enough for the config's OWN ops; files the user supplies and the paper config leaves empty
  (``vocab_path``: in the ops and in the model) come from that data as the demo's do. Inputs run
  in this process (``num_workers`` 0). The ops, clip length, sample rate and I2G stage are the
  config's: the examples have exactly the shapes and dtypes a real run's would."""
  config = load_config(config_arg)
  demo = demo_twin(config_arg)
  icfg = config.input
  dirs = _bench_dirs(demo.input.sources, crop_size(icfg.train_ops), icfg.clip_frames,
                     icfg.sample_rate)
  first = sorted(demo.input.sources)[0]
  for name, scfg in icfg.sources.items():
    demo_dir = demo.input.sources[name if name in demo.input.sources else first].data_dir
    scfg.data_dir = dirs[demo_dir[len(sources.SYNTHETIC_PREFIX):]]
  icfg.eval.data_dir = dirs[sorted(dirs)[0]]  # Unused here; empty would read as unconfigured.
  icfg.num_workers = 0
  vocab = [kw["vocab_path"] for _, kw in ops.parse_spec(demo.input.train_ops)
           if kw.get("vocab_path", "").startswith(sources.SYNTHETIC_PREFIX)]
  if vocab:
    local = _user_file(vocab[0], dirs)
    # The eval ops too: the config check requires every narrations op to name the model's file.
    icfg.train_ops = icfg.train_ops.replace("vocab_path=''", f"vocab_path={local!r}")
    icfg.eval.ops = icfg.eval.ops.replace("vocab_path=''", f"vocab_path={local!r}")
    _fill_empty(config.model, "vocab_path", local)
  return config


def _fill_empty(node, key: str, value: str) -> None:
  """Sets every empty ``key`` anywhere under the ConfigDict ``node`` to ``value``."""
  for k, v in node.items():
    if hasattr(v, "items"):
      _fill_empty(v, key, value)
    elif k == key and v == "":
      node[k] = value


def one_example(config) -> Dict[str, np.ndarray]:
  """The first training example of ``config``'s own input pipeline (a batch of one clip per
  source, the first row kept): every field a step reads, with the run's shapes and dtypes."""
  icfg = config.input
  saved = {name: s.batch_size for name, s in icfg.sources.items()}
  for s in icfg.sources.values():
    s.batch_size = 1
  try:
    it = iter(pipeline.train_dataset(icfg, seed=0, process_index=0, process_count=1))
    batch = next(it)
  finally:
    for name, s in icfg.sources.items():
      s.batch_size = saved[name]
  return {k: v[0] for k, v in batch.items()}


def input_rate(config, batch: int, batches: int) -> float:
  """Training-input clips per CPU second of this process (cv2 on one thread): sampling, decode,
  the I2G stage when on, the config's ops, ``batches`` batches of ``batch`` clips per source.

  Measured from before the iterator exists (donor bank included) to the last batch: grain's
  reader threads prefetch ahead, so a window opened after the first batch would miss work done
  before it and count work for batches never taken; many batches make both ends small. CPU
  seconds, not wall: a per-core cost unaffected by other jobs on the machine."""
  cv2.setNumThreads(1)
  icfg = config.input
  for source in icfg.sources.values():
    source.batch_size = batch
  t0 = time.process_time()
  it = iter(pipeline.train_dataset(icfg, seed=0, process_index=0, process_count=1))
  for _ in range(batches):
    next(it)
  seconds = time.process_time() - t0
  return batches * batch * len(icfg.sources) / seconds


def config_input(args):
  """``--config``: the config's training input on its bench data (``on_bench_data``)."""
  config = on_bench_data(args.config)
  example = one_example(config)
  rate = input_rate(config, args.batch, args.batches)
  print(f"{args.config}: video {example['video'].shape} from synthetic records, "
        f"I2G p={config.input.i2g.p}")
  print(f"  {rate:.1f} clips/s = {rate * config.input.clip_frames:.1f} frames/s per core "
        f"(1 process, cv2 threads=1, CPU seconds)")


if __name__ == "__main__":
  main()

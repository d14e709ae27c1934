"""I2G throughput on one core: images/s end to end and per stage, on 256×256 face frames.

  python benchmarks/i2g.py [--size=256] [--images=200] [--methods=alpha,hard,...]

I2G runs online in the input workers (PCL + I2G §3.2: "low computational cost ... online data
generation on CPU"), so its cost per image decides how many worker cores a PCL run needs. One
process, OpenCV limited to one thread, i.e. per core. Frames and 68-point landmarks come from the
embedded synthetic dataset (generated in memory, a few seconds). Stages: donor pick from a
DonorBank, align (similarity warp), deform (hull + elastic field + remap), blur (size-16
Gaussian), blend (per method, since Poisson dominates), post-augment (the random mix of §3.2).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from input_pipeline import i2g  # noqa: E402
from input_pipeline.synthetic import dataset as synthetic  # noqa: E402


def _records(size: int):
  """Real synthetic records of 8 identities, one video of 8 frames each, at size × size px."""
  config = synthetic.preset("tiny", resolution=size, families=(), identities=(8, 1, 1),
                            videos_per_identity=1, num_frames=8)
  return list(synthetic.generate_split(config, "train"))


def _time(fn, n: int) -> float:
  """CPU seconds of this process per call of fn(k), k = 0..n-1, after one warm-up call. One
  thread (cv2 limited to one), so CPU time is the per-core cost, and a busy machine (other jobs
  on the same cores) does not inflate it as it would wall time."""
  fn(0)
  t0 = time.process_time()
  for k in range(n):
    fn(k)
  return (time.process_time() - t0) / n


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--images", type=int, default=200)
  parser.add_argument("--methods", default=",".join(i2g.BLEND_METHODS))
  args = parser.parse_args()
  cv2.setNumThreads(1)
  methods = tuple(args.methods.split(","))

  records = _records(args.size)
  frames = np.concatenate([r["frames"] for r in records])
  lms = np.concatenate([r["landmarks"] for r in records])
  ids = np.repeat([r["identity"] for r in records], len(records[0]["frames"]))
  n = len(frames)
  config = i2g.I2GConfig(methods=methods).scaled(args.size)  # Paper's px values at 256.
  bank = i2g.DonorBank(lambda i: records[i], range(len(records)),
                       [r["identity"] for r in records], config)
  rng = np.random.default_rng(0)
  shape = frames.shape[1:3]
  pairs = [(k, (k + n // 2 + 1) % n) for k in range(n)]  # Different identities.
  aligned = [i2g.align_source(frames[s], lms[s], lms[t], shape) for t, s in pairs]
  hulls = [i2g.hull_mask(lms[t], shape) for t, _ in pairs]
  masks = [i2g.blur_mask(i2g.elastic_deform(h, rng, config.sigma_range), config.blur_kernel)
           for h in hulls]

  def pick(k):
    bank.pick(lms[k % n], ids[k % n], rng)

  def align(k):
    t, s = pairs[k % n]
    i2g.align_source(frames[s], lms[s], lms[t], shape)

  def deform(k):
    i2g.elastic_deform(i2g.hull_mask(lms[pairs[k % n][0]], shape), rng, config.sigma_range)

  def blur(k):
    i2g.blur_mask(hulls[k % n], config.blur_kernel)

  def post(k):
    i2g.post_augment(frames[k % n], rng)

  def end_to_end(k):
    t, _ = pairs[k % n]
    donor, donor_lms = bank.pick(lms[t], ids[t], rng)
    i2g.generate(frames[t], lms[t], donor, donor_lms, rng, config)

  print(f"I2G, {args.size}x{args.size} frames, one process, cv2 threads = {cv2.getNumThreads()}")
  stages = [("donor pick", pick), ("align", align), ("deform (hull + elastic)", deform),
            (f"blur (kernel {config.blur_kernel})", blur)]
  for method in methods:
    def blend(k, method=method):
      t, _ = pairs[k % n]
      i2g.blend(frames[t], aligned[k % n], masks[k % n], method)
    stages.append((f"blend {method}", blend))
  stages += [("post-augment", post), (f"end to end (methods: {len(methods)})", end_to_end)]
  for name, fn in stages:
    sec = _time(fn, args.images)
    print(f"  {name:<34s} {sec * 1e3:8.2f} ms  {1 / sec:9.1f} images/s per core")
  print(f"  donor bank: {len(bank)} frames, misses {bank.stats()['misses']} of "
        f"{bank.stats()['picks']} picks at epsilon={config.epsilon}")


if __name__ == "__main__":
  main()

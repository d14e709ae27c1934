"""Training-step speed: the paper-size CSN-101 backbone, and a whole stage-1 step of a config.

  python benchmarks/train_step.py                       # CSN-101 fwd+bwd, 2×25×64×64×3
  python benchmarks/train_step.py --csn_shape=2,25,112,112,3 --impls=native,shifted
  python benchmarks/train_step.py --config=configs/stage1.py:demo --batch=16
  python benchmarks/train_step.py --skip_csn --config=configs/pcl_i2g.py --batch=8
  python benchmarks/train_step.py --skip_csn --config=configs/stage1.py --batch=64 \
      --precision=bfloat16 --peak_tflops=989   # MFU on one H200 (dense bf16 peak)

Part 1 times a jitted forward+backward (train-mode BatchNorm) of the paper-size CSN-101 and
prints the ratio to the authors' PyTorch model on the same input (``--torch_seconds``: their
fwd+bwd measured on the 2-core dev CPU, ~2.7 s for 2×3×25×64×64, ~9 s for 112×112; see
STACK_NOTES.md). Target: ratio ≤ 1 on CPU, which needs the "shifted" depthwise conv.

Part 2 (with ``--config``) times the full jitted train step of any config (stage 1: student and
EMA-teacher forwards, both backbones, projectors, predictors, loss, optimizer and EMA update) on
a random batch of the config's shapes, and prints steps/s and clips/s — the rate the input
pipeline must sustain (``benchmarks/i2g.py`` gives PCL's I2G supply per core), the FLOPs of
one step from XLA's cost analysis of the compiled program, the achieved FLOP/s, and with
``--peak_tflops`` (the device's dense peak at the step's precision) the model FLOPs
utilisation. Medians after a compile + warm-up call.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.depthwise_conv import time_compiled  # noqa: E402
from fakedet.models import csn  # noqa: E402


def _ints(text: str):
  return tuple(int(v) for v in text.split(","))


def csn_step(shape, impl):
  """Jitted (params, video) → grads of a train-mode forward of the paper-size CSN-101."""
  model = csn.CSN(depthwise_impl=impl)
  video = jax.random.normal(jax.random.key(0), shape)
  variables = jax.jit(lambda v: model.init(jax.random.key(1), v, train=False))(video)

  def loss(params, video):
    out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, video,
                         train=True, mutable=["batch_stats"])
    return jnp.mean(jnp.square(out["frames"]))

  return jax.jit(jax.grad(loss)), (variables["params"], video)


def step_flops(fn, args) -> float:
  """FLOPs of one call of ``fn`` as XLA's cost analysis counts them (per device program, so
  multiplied by the device count; 0 when the backend reports none)."""
  analysis = fn.lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older jax: one dict per program.
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0)) * jax.device_count()


def config_step(config_arg: str, batch: int, precision: str = ""):
  """The trainer's jitted step for ``config_arg`` and a random host batch of its shapes."""
  import importlib.util
  from fakedet import objectives, optim, sharding
  from fakedet import train_state as train_state_lib
  from fakedet.trainers import train
  from input_pipeline import ops
  path, _, variant = config_arg.partition(":")
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant or None)
  if precision:
    config.precision = precision
  t = config.input.clip_frames
  # The crop size the ops produce; log-mel bins as in the ops (80 unless the spec says).
  parsed = ops.parse_spec(config.input.train_ops)
  size = next(kw["resize"] for name, kw in parsed if "resize" in kw)
  mels = next((kw["n_mels"] for name, kw in parsed if name == "log_mel" and "n_mels" in kw), 80)
  rng = np.random.default_rng(0)
  video = rng.integers(0, 256, (batch, t, size, size, 3), dtype=np.uint8)
  audio = rng.normal(size=(batch, 4 * t, mels)).astype(np.float32)
  host = {"video": video, "video_masked": video, "audio": audio, "audio_masked": audio,
          "label": rng.integers(0, 2, batch).astype(np.int32),  # Detectors.
          "mask": rng.random((batch, t, size, size, 1)).astype(np.float32)}  # PCL.
  mesh = sharding.make_mesh(config.mesh)
  objective = objectives.build(config)
  example = sharding.device_batch(host, objective.input_keys, mesh)
  tx = optim.make_optimizer(config.optim, 1000)
  state, shardings = train_state_lib.create(objective, tx, example, jax.random.key(0), mesh)
  n_params = train_state_lib.count_params(state.params)
  step = train.jit_train_step(objective, tx, train.ema_momentum_fn(config, batch, 1000),
                              shardings, mesh, donate=False)
  return step, (state, example, jax.random.key(1)), n_params, (t, size)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--csn_shape", type=_ints, default=(2, 25, 64, 64, 3), help="B,T,H,W,C")
  parser.add_argument("--impls", default="auto", help="comma-separated depthwise impls")
  parser.add_argument("--torch_seconds", type=float, default=2.7,
                      help="the authors' PyTorch fwd+bwd on --csn_shape on this machine")
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--config", default="", help="also time a whole train step, e.g. "
                      "configs/stage1.py:demo")
  parser.add_argument("--batch", type=int, default=16, help="global batch for --config")
  parser.add_argument("--precision", default="", help="override config.precision "
                      "(float32 | bfloat16)")
  parser.add_argument("--peak_tflops", type=float, default=0.0, help="the device's dense peak "
                      "TFLOP/s at that precision (H200 bf16: 989): prints MFU")
  parser.add_argument("--skip_csn", action="store_true")
  args = parser.parse_args()
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
        f"{os.cpu_count()} CPU cores; medians of {args.runs} runs")
  if not args.skip_csn:
    print(f"CSN-101 (21.4M params) fwd+bwd, train-mode BN, input {args.csn_shape}:")
    for impl in args.impls.split(","):
      compile_s, run_s = time_compiled(*csn_step(args.csn_shape, impl), args.runs)
      print(f"  {impl:8s} {run_s:7.2f} s/step   compile {compile_s:5.1f} s   "
            f"ratio to PyTorch ({args.torch_seconds:.2f} s): {run_s / args.torch_seconds:.2f}")
  if args.config:
    step, step_args, n_params, (t, size) = config_step(args.config, args.batch, args.precision)
    compile_s, run_s = time_compiled(step, step_args, args.runs)
    flops = step_flops(step, step_args)
    print(f"{args.config}: whole train step, batch {args.batch}×{t}×{size}×{size}, "
          f"{n_params:,} params, precision {args.precision or 'from the config'}")
    print(f"  {run_s:7.3f} s/step = {1 / run_s:6.2f} steps/s = {args.batch / run_s:7.1f} clips/s"
          f"   compile {compile_s:5.1f} s")
    achieved = flops / run_s
    line = f"  {flops / 1e9:.1f} GFLOP/step (XLA cost analysis) = {achieved / 1e9:.1f} GFLOP/s"
    if args.peak_tflops:
      mfu = achieved / (args.peak_tflops * 1e12 * jax.device_count())
      line += f" = MFU {100 * mfu:.1f} % of {args.peak_tflops:g} TFLOP/s × {jax.device_count()}"
    print(line)


if __name__ == "__main__":
  main()

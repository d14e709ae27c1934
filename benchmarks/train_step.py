"""Training-step speed: the paper-size CSN-101 backbone, and a whole train step of any config.

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

Part 2 (with ``--config``) times the full jitted train step of any config (its model,
objective, optimizer, EMA update and precision — stage 1: student and EMA-teacher forwards, both
backbones, projectors, predictors, loss) on a batch built from ONE example of the config's own
input pipeline (its ops, clip length and sample rate, on a small twin of its ``:demo`` data
rendered big enough for those ops: ``benchmarks/input_pipeline.py``'s ``on_bench_data``), tiled
to ``--batch`` (``--fill=zeros``: zeros of the same shapes), so every field the objective reads
(``waveform``, ``text``, ``mask``, ...) has the shape and dtype a real run feeds. It prints
steps/s and clips/s — the rate the input pipeline must sustain (``benchmarks/i2g.py`` gives
PCL's I2G supply per core), the FLOPs of one step from XLA's cost analysis of the compiled
program, the achieved FLOP/s, and with ``--peak_tflops`` (the device's dense peak at the step's
precision) the model FLOPs utilisation. Medians after a compile + warm-up call.
``benchmarks/table.py`` runs this for every method's paper config.
"""
import argparse
import os
import sys
from typing import Dict, Mapping, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import input_pipeline as input_bench  # noqa: E402
from benchmarks.depthwise_conv import compile_and_time, time_compiled  # noqa: E402
from fakedet import objectives, optim, sharding  # noqa: E402
from fakedet import train_state as train_state_lib  # noqa: E402
from fakedet.models import csn  # noqa: E402
from fakedet.trainers import train  # noqa: E402


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
  return compiled_flops(fn.lower(*args).compile())


def compiled_flops(compiled) -> float:
  """``step_flops`` of an already compiled program (the table compiles each step once)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older jax: one dict per program.
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0)) * jax.device_count()


def synth_batch(example: Mapping[str, np.ndarray], keys: Sequence[str], batch: int,
                fill: str = "tile") -> Dict[str, np.ndarray]:
  """A host batch of ``batch`` rows holding the ``keys`` an objective reads, from ONE example of
  the config's input pipeline: ``fill="tile"`` repeats it (with ``label`` alternating 0, 1 so a
  detector's batch holds both classes, as a class-balanced one does); ``"zeros"`` keeps only its
  shapes and dtypes. Either way each field has exactly the shape and dtype a real run feeds."""
  if fill not in ("tile", "zeros"):
    raise ValueError(f"fill={fill!r}: expected 'tile' or 'zeros'")
  if batch < 1:
    raise ValueError(f"batch={batch}: expected >= 1")
  missing = [k for k in keys if k not in example]
  if missing:
    raise KeyError(f"the objective reads {missing}, which the input pipeline's example lacks "
                   f"(it has {sorted(example)}): check config.input.train_ops")
  host = {}
  for k in keys:
    row = np.asarray(example[k])
    if fill == "zeros":
      host[k] = np.zeros((batch,) + row.shape, row.dtype)
    elif k == "label":
      host[k] = (np.arange(batch) % 2).astype(row.dtype)
    else:
      host[k] = np.repeat(row[None], batch, axis=0)
  return host


def config_step(config_arg: str, batch: int, precision: str = "", fill: str = "tile"):
  """The trainer's jitted step for ``config_arg`` (its own model, objective, optimizer and
  precision) and a host batch of ``batch`` clips built from one example of its own input pipeline
  on its bench data (``benchmarks/input_pipeline.py``'s ``on_bench_data``).

  Returns (step, (state, batch, rng), parameter count, the config as run)."""
  config = input_bench.on_bench_data(config_arg)
  if precision:
    config.precision = precision
  train.check(config)
  example = input_bench.one_example(config)
  objective = objectives.build(config)
  mesh = sharding.make_mesh(config.mesh)
  host = synth_batch(example, objective.input_keys, batch, fill)
  device = sharding.device_batch(host, objective.input_keys, mesh)
  steps, optim_cfg = train.schedule_steps(config)
  tx = optim.make_optimizer(optim_cfg, steps)
  state, shardings = train_state_lib.create(objective, tx, device, jax.random.key(0), mesh,
                                            config.mesh)
  n_params = train_state_lib.count_params(state.params)
  step = train.jit_train_step(objective, tx, train.ema_momentum_fn(config, batch, steps),
                              shardings, mesh, donate=False)
  return step, (state, device, jax.random.key(1)), n_params, config


def measure(step, args, runs: int) -> Dict[str, float]:
  """Compiles ``step`` once, then: compile seconds, median seconds per call over ``runs`` calls
  after a warm-up call, and XLA's FLOPs per call."""
  compiled, compile_s, step_s = compile_and_time(step, args, runs)
  return dict(compile_s=compile_s, step_s=step_s, flops=compiled_flops(compiled))


def batch_shapes(batch: Mapping[str, jax.Array]) -> str:
  return ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in sorted(batch.items()))


def mfu(achieved_flops: float, peak_tflops: float) -> float:
  """Achieved FLOP/s over the devices' dense peak (``peak_tflops`` per device)."""
  return achieved_flops / (peak_tflops * 1e12 * jax.device_count())


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
  parser.add_argument("--fill", default="tile", choices=("tile", "zeros"), help="the --config "
                      "batch: one input-pipeline example repeated, or zeros of its shapes")
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
    step, step_args, n_params, config = config_step(args.config, args.batch, args.precision,
                                                    args.fill)
    m = measure(step, step_args, args.runs)
    run_s, flops = m["step_s"], m["flops"]
    print(f"{args.config}: whole train step, global batch {args.batch}, {n_params:,} params, "
          f"precision {config.precision}")
    print(f"  batch: {batch_shapes(step_args[1])}")
    print(f"  {run_s:7.3f} s/step = {1 / run_s:6.2f} steps/s = {args.batch / run_s:7.1f} clips/s"
          f"   compile {m['compile_s']:5.1f} s")
    achieved = flops / run_s
    line = f"  {flops / 1e9:.1f} GFLOP/step (XLA cost analysis) = {achieved / 1e9:.1f} GFLOP/s"
    if args.peak_tflops:
      line += f" = MFU {100 * mfu(achieved, args.peak_tflops):.1f} % of {args.peak_tflops:g} " \
              f"TFLOP/s × {jax.device_count()}"
    print(line)


if __name__ == "__main__":
  main()

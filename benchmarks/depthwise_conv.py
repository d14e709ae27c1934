"""Forward+backward time of the depthwise 3×3×3 conv: "native" vs "shifted" implementation.

  python benchmarks/depthwise_conv.py [--shape=2,25,28,28,128] [--strides=1,1,1] [--runs=5]

Times one jitted step computing the output and the gradients w.r.t. input and kernel (median
of ``--runs`` after a compile + warm-up run) and reports compile time separately. On the
2-core dev CPU (STACK_NOTES.md) native takes ~6 s and shifted ~0.1 s for the default shape;
PyTorch takes 0.16 s. The whole CSN-101 and stage-1 step: ``benchmarks/train_step.py``.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from fakedet.models import depthwise  # noqa: E402


def _ints(text: str):
  return tuple(int(v) for v in text.split(","))


def _conv_step(shape, strides, impl):
  """Jitted (x, k, g) → (dx, dk) of <conv(x, k), g>, plus its example arguments."""
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, shape)
  kernel = jax.random.normal(kk, (3, 3, 3, 1, shape[-1])) * 0.2
  g = jax.random.normal(kg, depthwise.output_shape(shape, strides))

  def loss(x, kernel, g):  # g is an argument: a closed-over array is constant-folded.
    return jnp.vdot(depthwise.depthwise_conv3d(x, kernel, strides, impl), g)

  return jax.jit(jax.grad(loss, argnums=(0, 1))), (x, kernel, g)


def compile_and_time(fn, args, runs):
  """Returns (the compiled ``fn``, compile seconds, median seconds per call after a warm-up
  call): callers that also read the compiled program (e.g. its FLOPs) compile only once."""
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return compiled, compile_s, statistics.median(times)


def time_compiled(fn, args, runs):
  """Returns (compile seconds, median seconds per call after a warm-up call)."""
  return compile_and_time(fn, args, runs)[1:]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--shape", type=_ints, default=(2, 25, 28, 28, 128), help="B,T,H,W,C")
  parser.add_argument("--strides", type=_ints, default=(1, 1, 1))
  parser.add_argument("--impls", default="native,shifted")
  parser.add_argument("--runs", type=int, default=5)
  args = parser.parse_args()
  shape = args.shape
  print(f"depthwise 3x3x3 conv, strides {args.strides}, input {shape}, backend "
        f"{jax.default_backend()}, "
        f"{jax.device_count()} device(s); fwd+bwd, median of {args.runs}")
  for impl in args.impls.split(","):
    compile_s, run_s = time_compiled(*_conv_step(shape, args.strides, impl), args.runs)
    print(f"  {impl:8s} fwd+bwd {run_s * 1e3:9.1f} ms   compile {compile_s:6.1f} s")


if __name__ == "__main__":
  main()

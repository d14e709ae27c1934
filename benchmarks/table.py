"""One markdown table: every method's PAPER config, its train step beside its input pipeline.

  python benchmarks/table.py                                  # all methods, batch 2, 2 steps
  python benchmarks/table.py --methods=stage1,avcl --batch=1 --steps=2
  python benchmarks/table.py --precision=bfloat16 --peak_tflops=989 --batch=32   # one H200

Per method (``METHODS``: name → config argument) one row: parameters, the global batch, the
median step time of ``--steps`` calls after compile + one warm-up call, clips/s, GFLOP per step
from XLA's cost analysis of the compiled step, achieved GFLOP/s, MFU against ``--peak_tflops``
(the device's dense peak at ``--precision``; "—" without it), and the input pipeline's supply
(clips per CPU second of one process on the config's own ops, times ``--host_cores``) next to the
step's demand per host (its clips/s over the process count). The numbers come from
``benchmarks/train_step.py`` (``config_step``, ``measure``) and ``benchmarks/input_pipeline.py``
(``on_bench_data``, ``input_rate``): the paper config's model, objective, optimizer and ops, its
batch tiled from one real example of its input pipeline on a small twin of its ``:demo`` data.

Each method runs in its own subprocess (``--one=NAME``, which prints one ``ROW {json}`` line), so
one method's compiled programs and buffers are freed before the next starts, and one failure
becomes a row saying why instead of ending the table. ``docs/benchmarks.md`` explains the columns.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Method → its paper config (the default variant of each file; ``:baseline`` is stage 2's "only
# CSN" scratch baseline).
METHODS = {
    "stage1": "configs/stage1.py",
    "stage2": "configs/stage2.py",
    "stage2:baseline": "configs/stage2.py:baseline",
    "mmv": "configs/mmv.py",
    "fakeout": "configs/fakeout.py",
    "pcl_i2g": "configs/pcl_i2g.py",
    "avcl": "configs/avcl.py",
    "avcl_finetune": "configs/avcl_finetune.py",
    "rffr_mim": "configs/rffr_mim.py",
    "rffr_detect": "configs/rffr_detect.py",
}
COLUMNS = ("method", "params", "batch", "step s", "clips/s", "GFLOP/step", "GFLOP/s", "MFU",
           "input clips/s/core", "input clips/s/host", "step demand clips/s/host", "compile s")
ROW_PREFIX = "ROW "


def measure_method(name: str, args) -> dict:
  """Everything one row reports, measured in this process. Input first: it needs no jax
  buffers, and the step's compile then has the memory to itself."""
  # Function-level: the parent process only formats rows and must not import jax at all.
  import jax
  from benchmarks import input_pipeline as input_bench
  from benchmarks import train_step
  config_arg = METHODS[name]
  per_core = input_bench.input_rate(input_bench.on_bench_data(config_arg), args.input_batch,
                                    args.input_batches)
  step, step_args, n_params, config = train_step.config_step(config_arg, args.batch,
                                                             args.precision)
  m = train_step.measure(step, step_args, args.steps)
  return dict(method=name, config=config_arg, params=n_params, batch=args.batch,
              precision=config.precision, step_s=m["step_s"], compile_s=m["compile_s"],
              flops=m["flops"], devices=jax.device_count(), processes=jax.process_count(),
              input_per_core=per_core, host_cores=args.host_cores,
              peak_tflops=args.peak_tflops)


def format_row(r: dict) -> str:
  """One markdown row of ``COLUMNS`` from ``measure_method``'s dict (or an error row)."""
  if "error" in r:
    return f"| {r['method']} | failed: {r['error']} |" + " |" * (len(COLUMNS) - 2)
  clips = r["batch"] / r["step_s"]
  achieved = r["flops"] / r["step_s"]
  mfu = (f"{100 * achieved / (r['peak_tflops'] * 1e12 * r['devices']):.1f} %"
         if r["peak_tflops"] else "—")
  cells = (r["method"], f"{r['params'] / 1e6:.1f} M", str(r["batch"]), f"{r['step_s']:.3f}",
           f"{clips:.2f}", f"{r['flops'] / 1e9:.1f}", f"{achieved / 1e9:.1f}", mfu,
           f"{r['input_per_core']:.1f}", f"{r['input_per_core'] * r['host_cores']:.1f}",
           f"{clips / r['processes']:.2f}", f"{r['compile_s']:.0f}")
  return "| " + " | ".join(cells) + " |"


def header() -> str:
  return "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)


def run_child(name: str, args) -> dict:
  """``measure_method(name)`` in a fresh interpreter; its ``ROW`` line, or an error dict with
  the last line of its output (what failed) when it has none."""
  cmd = [sys.executable, os.path.abspath(__file__), f"--one={name}", f"--batch={args.batch}",
         f"--steps={args.steps}", f"--precision={args.precision}",
         f"--peak_tflops={args.peak_tflops}", f"--host_cores={args.host_cores}",
         f"--input_batch={args.input_batch}", f"--input_batches={args.input_batches}"]
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout or None,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  except subprocess.TimeoutExpired:
    return dict(method=name, error=f"over --timeout={args.timeout} s")
  for line in out.stdout.splitlines():
    if line.startswith(ROW_PREFIX):
      return json.loads(line[len(ROW_PREFIX):])
  return dict(method=name, error=error_line(out.stderr + out.stdout, out.returncode))


def error_line(output: str, returncode: int) -> str:
  """What a failed child's row says: its last exception line (``XxxError: ...``), not a
  framework's trailing note (grain prints one after the exception), else its last line."""
  lines = [l for l in output.splitlines() if l.strip()]
  errors = [l for l in lines if re.match(r"\w+(Error|Exception)\b", l)]
  last = (errors or lines or [f"exit status {returncode}"])[-1]
  return last.replace("|", "/")[:200]


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--methods", default=",".join(METHODS),
                      help=f"comma-separated, from: {', '.join(METHODS)}")
  parser.add_argument("--batch", type=int, default=2, help="global batch of each step")
  parser.add_argument("--steps", type=int, default=2, help="timed steps (median) after compile "
                      "and one warm-up step")
  parser.add_argument("--precision", default="", choices=("", "float32", "bfloat16"),
                      help="override config.precision (default: the config's own)")
  parser.add_argument("--peak_tflops", type=float, default=0.0, help="the device's dense peak "
                      "TFLOP/s at that precision (H200 bf16: 989): fills the MFU column")
  parser.add_argument("--host_cores", type=int, default=os.cpu_count(), help="cores a host "
                      "gives its input pipeline (supply per host = per core × this)")
  parser.add_argument("--input_batch", type=int, default=2, help="clips per source per input "
                      "batch in the input measurement")
  parser.add_argument("--input_batches", type=int, default=4)
  parser.add_argument("--timeout", type=int, default=1800, help="seconds per method (0: none)")
  parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # A child: one method.
  args = parser.parse_args(argv)
  names = [m for m in args.methods.split(",") if m] if not args.one else [args.one]
  unknown = [m for m in names if m not in METHODS]
  if unknown:
    parser.error(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
  if args.batch < 1 or args.steps < 1:
    parser.error(f"--batch={args.batch} and --steps={args.steps} must be >= 1")
  return args, names


def main():
  args, names = parse_args()
  if args.one:
    print(ROW_PREFIX + json.dumps(measure_method(args.one, args)), flush=True)
    return
  print(f"batch {args.batch}, median of {args.steps} steps, precision "
        f"{args.precision or 'from each config'}, input supply per host = per core × "
        f"{args.host_cores} cores\n")
  print(header(), flush=True)
  t0 = time.perf_counter()
  for name in names:
    print(format_row(run_child(name, args)), flush=True)
  print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
  main()

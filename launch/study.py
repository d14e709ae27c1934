"""The miniature study on the embedded dataset: pretrain → leave-one-manipulation-out → table.

  python launch/study.py --workdir=/tmp/fakedet_study [--steps=N] [--methods=stage2,baseline]
  python launch/study.py --workdir=/tmp/fakedet_study --methods=pcl,pcl_reals

1. Pretraining: ``configs/stage1.py:demo`` (RealForensics stage 1), for FakeOut
   ``configs/mmv.py:demo``, for the AV contrastive transformer ``configs/avcl.py:demo`` (on
   the mouth-crop twins of the same synthetic videos, ``synthetic:*_mouth``).
2. For every method and every held-out forgery family: train ``<config>:demo,holdout=FAMILY``
   (stage 2 warm-started from step 1's stage 1, FakeOut from its MMV run, the baseline from
   scratch; checkpoint selection by validation AUC on the three seen families) and evaluate the
   selected checkpoint with ``fakedet.evaluate`` on the held-out family + the reals of the
   TEST split (6 identities no step has seen).
   PCL + I2G's reals-only variant trains once on the real videos (I2G makes its fakes) and is
   scored on every family: it never sees a real forgery, so no family is "held out" of it.
3. ``study.md`` and ``study.json`` in the workdir: video-level AUC (and clip-level, AP, EER) per
   held-out family and method, as RealForensics Table 1 / FakeOut Table 2, plus the
   in-distribution AUC (the seen families vs the test reals), each cell the mean ± std over
   ``--seeds``.

One budget rule for every method (``--steps`` / ``--patience``): train until the validation
AUC on the seen families has not improved for ``patience`` evaluations (every 100 steps), at
most ``max_steps``; the best checkpoint is scored. A method is compared with a scratch model
that has learnt what it can, not one stopped while its own validation AUC is at chance.

Every step is a ``python -m fakedet.main`` / ``fakedet.evaluate`` subprocess with its own workdir
under --workdir, so the study is resumable: rerun the same command after a kill and finished
runs are skipped (the trainer resumes an unfinished one from its last checkpoint).

Each scored run is also appended to a ledger (``--ledger``, JSON lines; default
``<workdir>/runs.jsonl``), keyed by method, family, seed and budget (``--steps``,
``--patience``). A run already in the ledger is not run again and the table is built from the
ledger, so a study too long for one machine can be split (``--seeds=1`` here, ``--seeds=2``
there, the ledgers concatenated) and ``--table_only`` rebuilds the table from a ledger alone.
The ledger behind the table in docs/detectors.md is ``docs/study/leave_one_out.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fakedet import config_variants  # noqa: E402
from input_pipeline import records, sources  # noqa: E402

DATA = "synthetic:demo"  # What the demo configs train and evaluate on.

# method → (config file, extra variant flags, pretraining run it starts from or None).
METHODS = {
    "stage2": ("stage2.py", "", "stage1"),
    "baseline": ("stage2.py", ",baseline", None),
    "fakeout": ("fakeout.py", "", "mmv"),
    "fakeout_video": ("fakeout.py", ",video_only", "mmv"),
    "pcl": ("pcl_i2g.py", "", None),
    "pcl_reals": ("pcl_i2g.py", ",reals_only", None),
    "avcl": ("avcl_finetune.py", "", "avcl"),
    "rffr": ("rffr_detect.py", "", "rffr_mim"),
}
# Methods that train on no forgery family: one run serves every held-out family (nothing to
# hold out), and without a validation set of real fakes its final state is scored.
SEES_NO_FORGERY = ("pcl_reals",)
LABELS = {"stage2": "RealForensics (stage 1 → 2)", "baseline": "scratch CSN (plain BCE)",
          "fakeout": "FakeOut (MMV, video + audio)", "fakeout_video": "FakeOut (MMV, video only)",
          "pcl": "PCL + I2G (frames; reals, 3 families, I2G)",
          "pcl_reals": "PCL + I2G, reals only (never sees a real forgery)",
          "avcl": "AV contrastive transformer (mouth crops)",
          "rffr": "RFFR (MAE on reals → dual-branch ViT; final state, no selection)"}
PRETRAIN = {"stage1": "stage1.py:demo", "mmv": "mmv.py:demo", "avcl": "avcl.py:demo",
            "rffr_mim": "rffr_mim.py:demo"}


def _run(args: List[str], log: str) -> None:
  """Runs ``python -m ...`` from the repo root, output to ``log``; fails loudly with its tail."""
  os.makedirs(os.path.dirname(log), exist_ok=True)
  t0 = time.time()
  print(f"$ {' '.join(args)}  (log: {log})", flush=True)
  with open(log, "a") as f:
    code = subprocess.call([sys.executable, "-m", *args], cwd=ROOT, stdout=f,
                           stderr=subprocess.STDOUT)
  if code:
    with open(log) as f:
      tail = "".join(f.readlines()[-20:])
    raise SystemExit(f"failed (exit {code}): {' '.join(args)}\n--- {log} (tail) ---\n{tail}")
  print(f"  done in {time.time() - t0:.0f} s", flush=True)


def _finished(workdir: str, steps: int) -> bool:
  """Whether the run's checkpoints reach its last step (the trainer saves it at the end), or
  its stop rule ended it earlier (``result.json``: the AV contrastive pre-training's plateau)."""
  ckpts = os.path.join(workdir, "checkpoints")
  done = [int(d) for d in os.listdir(ckpts) if d.isdigit()] if os.path.isdir(ckpts) else []
  if bool(done) and max(done) >= steps:
    return True
  result = os.path.join(workdir, "result.json")
  if os.path.exists(result):
    with open(result) as f:
      return json.load(f).get("stopped") in ("plateau", "early_stopping")
  return False


def _total_steps(config: str, overrides: Sequence[str]) -> int:
  """The run's step count as the config (plus overrides) sets it."""
  import importlib.util
  path, _, arg = config.partition(":")
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  steps = module.get_config(arg or None).total_steps
  for o in overrides:
    if o.startswith("--config.total_steps="):
      steps = int(o.split("=", 1)[1])
  return steps


def train(config: str, workdir: str, overrides: Sequence[str] = ()) -> None:
  if _finished(workdir, _total_steps(config, overrides)):
    print(f"  {workdir}: finished earlier, kept", flush=True)
    return
  _run(["fakedet.main", f"--config=configs/{config}", f"--workdir={workdir}", *overrides],
       os.path.join(workdir, "train.log"))


def evaluate(config: str, workdir: str, family: str, overrides: Sequence[str] = (),
             seen: bool = False) -> Dict:
  """The run's best checkpoint (by validation AUC on the seen families; the last one for a run
  without model selection) on the test split's reals and the held-out ``family`` — or, with
  ``seen``, every other family (the in-distribution score)."""
  out = os.path.join(workdir, f"eval_seen_{family}" if seen else f"eval_{family}")
  report = os.path.join(out, "report.json")
  best = os.path.join(workdir, "best")
  flags = (config_variants.unseen_split_overrides(family) if seen  # Unseen by the test: all
           else config_variants.test_split_overrides(family))  # but `family` are seen ones.
  if not os.path.exists(report):
    _run(["fakedet.evaluate", f"--config=configs/{config}",
          f"--checkpoint={best if os.path.isdir(best) else workdir}", f"--output_dir={out}",
          *overrides, *flags], os.path.join(workdir, "eval.log"))
  with open(report) as f:
    return json.load(f)


def _cell(values: Sequence[float], expected: int = 0) -> str:
  """Mean ± std (population, over seeds) in %; '—' for none; ' (n=k)' when only k of the
  ``expected`` seeds are there, so a partial study cannot pass for a full one."""
  if not values:
    return "—"
  mean = sum(values) / len(values)
  std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
  cell = f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1 else f"{100 * mean:.1f}"
  return cell + (f" (n={len(values)})" if len(values) < expected else "")


def table(results: Dict[str, Dict[str, List[Dict]]], families: Sequence[str],
          n_seeds: int = 0) -> str:
  """Markdown: one row per method; per held-out family the video-level AUC (%) on that family,
  then the mean over families, then the in-distribution AUC (seen families, mean over the
  leave-one-out runs); each cell mean ± std over seeds (a seed's mean is taken first, and
  only over a seed with every family in, else it would average a different set of families);
  ``n_seeds``: how many each cell should have."""
  head = "| method | " + " | ".join(families) + " | mean (held out) | in-distribution |"
  lines = [head, "|" + "---|" * (len(families) + 3)]
  for method, per_family in results.items():
    cells = [_cell([r["video_auc"] for r in per_family.get(f, [])], n_seeds) for f in families]
    seeds = sorted({r["seed"] for runs in per_family.values() for r in runs})
    def per_seed_mean(key):
      out = []
      for seed in seeds:
        vals = [r[key] for f in families for r in per_family.get(f, []) if r["seed"] == seed
                and r.get(key) is not None]
        if len(vals) == len(families):
          out.append(sum(vals) / len(vals))
      return out
    lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) +
                 f" | {_cell(per_seed_mean('video_auc'), n_seeds)} | "
                 f"{_cell(per_seed_mean('seen_video_auc'), n_seeds)} |")
  return "\n".join(lines)


def run_directory(work: str, m: str, family: str, seed: int, steps: int, patience: int) -> str:
  """One directory per ledger key. A run's directory must not be shared across budgets: a
  patience-2 run that stopped early looks finished (``result.json``) to a patience-5 request,
  whose ledger entry would then silently score the patience-2 checkpoint."""
  name = "all" if m in SEES_NO_FORGERY else family
  parts = [name] + ([f"seed{seed}"] if seed else []) + ([f"steps{steps}"] if steps else [])
  if patience and m not in SEES_NO_FORGERY:
    parts.append(f"patience{patience}")
  return os.path.join(work, m, "_".join(parts))


def _leave_one_out(m: str, file: str, flags: str, init, family: str, seed: int, work: str,
                   args) -> Dict:
  """One training run (resumable) and its two test scores: held-out and in-distribution."""
  config = f"{file}:demo{flags}" + ("" if m in SEES_NO_FORGERY else f",holdout={family}")
  run_dir = run_directory(work, m, family, seed, args.steps, args.patience)
  overrides = [f"--config.init.workdir={os.path.join(work, init)}"] if init else []
  train_flags = [f"--config.seed={seed}"]
  if args.steps:
    train_flags.append(f"--config.total_steps={args.steps}")
  if args.patience and m not in SEES_NO_FORGERY:
    train_flags += [f"--config.selection.patience={args.patience}"]
  print(f"{m}, held out {family}, seed {seed}", flush=True)
  train(config, run_dir, overrides + train_flags)
  report = evaluate(config, run_dir, family, overrides)
  video, clip = report["video"][family], report["clip"][family]
  out = {"seed": seed, "video_auc": video["auc"], "video_ap": video["ap"],
         "video_eer": video["eer"], "clip_auc": clip["auc"], "step": report["step"],
         "workdir": run_dir, "seen_video_auc": None}
  if m not in SEES_NO_FORGERY:
    seen = evaluate(config, run_dir, family, overrides, seen=True)
    out["seen_video_auc"] = seen["video"]["overall"]["auc"]
  out.update(_run_summary(run_dir))
  return out


def ledger_key(entry: Dict) -> Tuple:
  """What makes two runs the same run: method, held-out family, seed and the budget rule."""
  return (entry["method"], entry["family"], entry["seed"], entry["steps"], entry["patience"])


def read_ledger(path: str) -> Dict[Tuple, Dict]:
  """The ledger's runs by ``ledger_key`` (a later line for the same key wins); a line that is
  not a run fails naming the file and line rather than silently dropping a result."""
  runs: Dict[Tuple, Dict] = {}
  if not os.path.exists(path):
    return runs
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        entry = json.loads(line)
        runs[ledger_key(entry)] = entry
      except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{path}:{n}: not a study run ({type(e).__name__}: {e}); expected a "
                         "JSON object with method, family, seed, steps, patience") from None
  return runs


def append_ledger(path: str, entry: Dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(entry, sort_keys=True) + "\n")


def _run_summary(run_dir: str) -> Dict:
  """How the run ended (``result.json``): last step, why it stopped, the selected step's
  validation AUC — what tells a run the ceiling cut off from one that plateaued."""
  path = os.path.join(run_dir, "result.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    result = json.load(f)
  return {"last_step": result.get("step"), "stopped": result.get("stopped", "ceiling"),
          "best_val": (result.get("best") or {}).get("value")}


def dataset_families(data_dir: str = DATA) -> List[str]:
  """The forgery families of the dataset's training split, from its manifest (not from the
  generator's code: the study runs on whatever data the demo configs name)."""
  manifest = records.read_manifest(sources.resolve_data_dir(data_dir))
  return [m for m in manifest["splits"]["train"]["counts"]["manipulation"] if m != "real"]


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default="/tmp/fakedet_study")
  p.add_argument("--methods", default="stage2,baseline,fakeout",
                 help=f"comma-separated, from {', '.join(METHODS)}")
  p.add_argument("--families", default="", help="held-out families to run (default: every "
                 "family of the dataset)")
  p.add_argument("--steps", type=int, default=0,
                 help="training steps of each leave-one-out run (0: the demo configs' own); "
                 "with --patience the most it may run")
  p.add_argument("--patience", type=int, default=3,
                 help="stop a leave-one-out run once its validation AUC (seen families) has not "
                 "improved for this many evaluations (0: run every step)")
  p.add_argument("--ledger", default="", help="JSON-lines file of scored runs (default: "
                 "<workdir>/runs.jsonl); runs in it are not run again")
  p.add_argument("--table_only", action="store_true",
                 help="run nothing: build the table from the ledger")
  p.add_argument("--seeds", default="0", help="comma-separated config.seed values; each cell "
                 "is the mean ± std over them")
  args = p.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",") if s]
  methods = [m for m in args.methods.split(",") if m]
  known = dataset_families()
  families = [f for f in args.families.split(",") if f] or known
  for m in methods:
    if m not in METHODS:
      p.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
  for f in families:
    if f not in known:
      p.error(f"unknown family {f!r}; {DATA} has {', '.join(known)}")

  work = os.path.abspath(args.workdir)
  ledger_path = args.ledger or os.path.join(work, "runs.jsonl")
  ledger = read_ledger(ledger_path)
  budget = {"steps": args.steps, "patience": args.patience}
  # (method, family, seed, steps, patience): ``ledger_key``'s order.
  wanted = [(m, family, seed, args.steps, args.patience)
            for m in methods for seed in seeds for family in families]
  todo = [w for w in wanted if w not in ledger]
  if args.table_only:
    if todo:
      print(f"{len(todo)} of {len(wanted)} runs are not in {ledger_path}; their cells show "
            "fewer seeds (n=…) or —", flush=True)
    todo = []
  for name in sorted({METHODS[w[0]][2] for w in todo} - {None}):
    print(f"pretraining: {name}", flush=True)
    train(PRETRAIN[name], os.path.join(work, name))
  for m, family, seed, _, _ in todo:
    file, flags, init = METHODS[m]
    entry = {"method": m, "family": family, **budget,
             **_leave_one_out(m, file, flags, init, family, seed, work, args)}
    append_ledger(ledger_path, entry)
    ledger[ledger_key(entry)] = entry

  results: Dict[str, Dict[str, List[Dict]]] = {}
  for w in wanted:
    runs = results.setdefault(w[0], {}).setdefault(w[1], [])
    if w in ledger:
      runs.append(ledger[w])

  ceiling = args.steps or "the demo configs' own"
  os.makedirs(work, exist_ok=True)  # --table_only may be the first thing to use it.
  md = ["# Leave-one-manipulation-out on the embedded synthetic dataset",
        "", "Video-level ROC-AUC (%) on the held-out family vs the reals of the `synthetic:demo` "
        "test split (trained on the other three families; checkpoint chosen by validation AUC "
        "on those three; each run stops once that AUC has not improved for "
        f"{args.patience} evaluations, at most {ceiling} steps); in-distribution: the seen families "
        f"vs the same reals. Mean ± std over seeds {seeds} (n=k: only k of them in the "
        "ledger).", "", table(results, families, len(seeds)), ""]
  with open(os.path.join(work, "study.md"), "w") as f:
    f.write("\n".join(md))
  with open(os.path.join(work, "study.json"), "w") as f:
    json.dump({"families": families, "steps": args.steps or "demo", "patience": args.patience,
               "seeds": seeds, "ledger": ledger_path, "results": results}, f, indent=1)
  print("\n".join(md))


if __name__ == "__main__":
  main()

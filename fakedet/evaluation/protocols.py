"""Evaluation protocols over one restored detector, and ``evaluate_checkpoint`` to run them.

``standard``: the eval split as configured (in-distribution; restrict it with
``input.eval.manipulations`` for a held-out family — the leave-one-manipulation-out protocol
trains on the other families, the evaluator just scores and reports per manipulation).
``robustness``: the standard report on clean clips, then the same model on the same clips with
``corrupt(kind, severity)`` prepended to ``input.eval.ops`` for each DeeperForensics perturbation
and level (RealForensics Table 4 and Figure 7).

Files (process 0 only) go to ``output_dir``: ``report.json``, ``roc.png``, ``clip_scores.csv``,
and for methods with localisation maps (PCL, RFFR) ``maps/*.png`` (``evaluation.maps``);
robustness adds ``robustness.json`` and ``robustness.png``. TensorBoard scalars and images go to
the same directory at the checkpoint's step.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import ml_collections
from etils import epath

from fakedet import writers
from fakedet.evaluation import maps as maps_lib
from fakedet.evaluation import report as report_lib
from fakedet.evaluation.scoring import Scorer
from input_pipeline import corruptions, pipeline

PROTOCOLS = ("standard", "robustness")
SEVERITIES = (1, 2, 3, 4, 5)


def corruption_kinds() -> tuple:
  return tuple(corruptions.LEVELS)


def corrupted_ops(ops: str, kind: str, severity: int) -> str:
  """The eval op string with the perturbation first: DeeperForensics corrupts whole frames,
  before any crop or resize the model's preprocessing does."""
  return f"corrupt(kind={kind!r}, severity={int(severity)})|{ops}"


def corrupted_input(icfg: ml_collections.ConfigDict, kind: str,
                    severity: int) -> ml_collections.ConfigDict:
  out = ml_collections.ConfigDict(icfg.to_dict())
  out.eval.ops = corrupted_ops(icfg.eval.ops, kind, severity)
  return out


def eval_settings(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """What was evaluated, recorded in every report so numbers can be traced to data and clips."""
  return input_settings(config.input)


def input_settings(icfg: ml_collections.ConfigDict) -> Dict[str, Any]:
  """``eval_settings`` of one input section (each ``--eval_sets`` set has its own)."""
  e = icfg.eval
  return {"data_dir": e.data_dir, "split": e.split, "clips_per_video": e.clips_per_video,
          "clip_layout": e.clip_layout, "frame_window": e.frame_window, "subset": e.subset,
          "clip_frames": icfg.clip_frames, "labels": list(e.labels),
          "manipulations": list(e.manipulations),
          "exclude_manipulations": list(e.exclude_manipulations), "ops": e.ops}


class Outputs:
  """Files and TensorBoard summaries of one evaluation; only process 0 writes anything."""

  def __init__(self, output_dir: Optional[str], step: int, tensorboard: bool = True):
    self.dir, self.step = output_dir, step
    self.active = bool(output_dir) and jax.process_index() == 0
    self.writer = None
    if self.active:
      epath.Path(output_dir).mkdir(parents=True, exist_ok=True)
      if tensorboard:
        self.writer = writers.create(output_dir, jsonl=False, asynchronous=False)

  def path(self, name: str) -> str:
    return str(epath.Path(self.dir) / name)

  def json(self, name: str, obj: Any) -> None:
    if self.active:
      report_lib.write_json(self.path(name), obj)

  def figure(self, name: str, fig, tag: str) -> None:
    """PNG file plus the same picture as a TensorBoard image (figures are built on every host
    only when this one writes)."""
    image = report_lib.save_figure(fig, self.path(name))
    if self.writer:
      self.writer.write_images(self.step, {tag: image[None]})

  def scalars(self, values: Mapping[str, float]) -> None:
    if self.writer:
      self.writer.write_scalars(self.step, dict(values))

  def close(self) -> None:
    if self.writer:
      self.writer.flush()
      self.writer.close()


def standard(scorer: Scorer, outputs: Outputs, icfg: Optional[ml_collections.ConfigDict] = None,
             ) -> Dict[str, Any]:
  """The configured eval split: per-clip scores → clip- and video-level report, ROC, scalars."""
  t0 = time.perf_counter()
  scores = scorer(icfg)
  result = report_lib.build_report(scores)
  result["seconds"] = round(time.perf_counter() - t0, 2)
  if outputs.active:
    report_lib.write_clip_csv(outputs.path("clip_scores.csv"), scores)
    outputs.figure("roc.png", report_lib.roc_figure(scores, f"step {scorer.step}"), "eval/roc")
  outputs.scalars(report_lib.flat_scalars(result, "eval"))
  return result


def robustness(scorer: Scorer, outputs: Outputs, clean: Mapping[str, Any],
               kinds: Sequence[str] = (), severities: Sequence[int] = SEVERITIES,
               ) -> Dict[str, Any]:
  """AUC for every (corruption, severity) on the configured split, next to the clean AUC."""
  kinds = tuple(kinds) or corruption_kinds()
  known = corruption_kinds()
  bad = [k for k in kinds if k not in known]
  if bad or not severities or any(s not in SEVERITIES for s in severities):
    raise ValueError(f"robustness: corruptions {list(kinds)} / severities {list(severities)}; "
                     f"allowed corruptions: {', '.join(known)}; severities: 1-5")
  corrupted: Dict[str, Dict[int, Any]] = {}
  for kind in kinds:
    corrupted[kind] = {}
    for severity in severities:
      scores = scorer(corrupted_input(scorer.config.input, kind, severity))
      corrupted[kind][severity] = report_lib.build_report(scores)
      logging.info("robustness %s severity %d: video AUC %.4f", kind, severity,
                   corrupted[kind][severity]["video"]["overall"]["auc"])
  table = report_lib.robustness_table(clean, corrupted)
  outputs.json("robustness.json", table)
  if outputs.active:
    outputs.figure("robustness.png", report_lib.robustness_figure(table), "robustness/auc")
  scalars = {}
  for kind, row in table["corruptions"].items():
    for sev, values in row.items():
      scalars.update({f"robustness/{kind}/{sev}/{k}": v for k, v in values.items()})
  for sev, values in table["severity_mean"].items():
    scalars.update({f"robustness/average/{sev}/{k}": v for k, v in values.items()})
  outputs.scalars(scalars)
  return table


def evaluate_checkpoint(config: ml_collections.ConfigDict, checkpoint: str,
                        output_dir: Optional[str] = None, protocol: str = "standard", *,
                        step: Optional[int] = None, corruptions: Sequence[str] = (),
                        severities: Sequence[int] = SEVERITIES, mesh=None,
                        tensorboard: bool = True, maps_per_class: int = 2) -> Dict[str, Any]:
  """Restores ``checkpoint`` (a workdir, its checkpoints/ folder or one step folder; ``step``
  None = the latest) and runs ``protocol``; returns the report written to ``report.json``.

  ``output_dir`` None writes nothing (the study script may only want the dict). The robustness
  protocol adds the table of ``robustness.json`` under the key ``"robustness"``. ``mesh``
  overrides ``config.mesh`` (tests compare device counts with it). ``maps_per_class`` clips of
  each class get their ``objective.maps`` written (0 = none; methods without maps write none).
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol={protocol!r}; allowed: {', '.join(PROTOCOLS)}")
  scorer = Scorer(config, checkpoint, step, mesh)
  outputs = Outputs(output_dir, scorer.step, tensorboard)
  try:
    result = {"protocol": protocol, "checkpoint": scorer.directory, "step": scorer.step,
              "objective": config.objective.name, "eval": eval_settings(config)}
    result.update(standard(scorer, outputs))
    if maps_per_class > 0:
      result["maps"] = maps_lib.write(scorer.detector, config.input, outputs, maps_per_class)
    if protocol == "robustness":
      result["robustness"] = robustness(scorer, outputs, result, corruptions, severities)
    outputs.json("report.json", {k: v for k, v in result.items() if k != "robustness"})
  finally:
    outputs.close()
  return result


# Per-set options of --eval_sets (``NAME=DATA_DIR[:SPLIT][@KEY=VALUE]...``): input.eval keys
# that belong to a test set's protocol rather than to the model (RealForensics scores FF++ on
# its first 110 frames, Celeb-DF and DFDC whole; FakeOut reports DFDC full and a subset).
SET_OPTIONS = {"clip_layout": str, "frame_window": int, "clips_per_video": int, "subset": str}


def _set_option(item: str, token: str) -> Tuple[str, Any]:
  key, eq, value = token.partition("=")
  if not eq or key not in SET_OPTIONS or not value:
    raise ValueError(f"--eval_sets entry {item!r}: option {token!r}; expected @KEY=VALUE with KEY "
                     f"one of {', '.join(SET_OPTIONS)}")
  try:
    out = SET_OPTIONS[key](value)
  except ValueError:
    raise ValueError(f"--eval_sets entry {item!r}: {key}={value!r} is not an integer") from None
  if isinstance(out, int) and out < 0:
    raise ValueError(f"--eval_sets entry {item!r}: {key}={out} must be >= 0")
  if key == "clip_layout" and out not in pipeline.LAYOUTS:
    raise ValueError(f"--eval_sets entry {item!r}: clip_layout={out!r}; allowed: "
                     f"{', '.join(pipeline.LAYOUTS)}")
  return key, out


def parse_eval_sets(spec: Sequence[str]) -> Dict[str, Dict[str, Any]]:
  """``["ffpp=gs://b/ffpp:test@frame_window=110", "dfdc=gs://b/dfdc@subset=/l/dfdc.txt"]`` →
  ``{name: {"data_dir", "split", **options}}`` (split defaults to "test"; options are the
  ``SET_OPTIONS`` keys of ``input.eval``, each ``@KEY=VALUE``); names must be unique and
  path-safe (they name output folders)."""
  sets: Dict[str, Dict[str, Any]] = {}
  for item in spec:
    name, sep, rest = item.partition("=")
    where, *tokens = rest.split("@")
    data_dir, split = where, "test"
    head, colon, tail = where.rpartition(":")
    # A split is a bare name after the last colon; "gs://..." and "synthetic:<preset>" keep
    # their own colon.
    if colon and tail and "/" not in tail and head not in ("gs", "", "synthetic"):
      data_dir, split = head, tail
    if not sep or not name or not data_dir or not name.replace("_", "").replace("-", "").replace(
        "+", "").isalnum():
      raise ValueError(f"--eval_sets entry {item!r}: expected NAME=DATA_DIR[:SPLIT][@KEY=VALUE]... "
                       "with a name of letters, digits, _ - +")
    if name in sets:
      raise ValueError(f"--eval_sets names {name!r} twice")
    options = dict(_set_option(item, t) for t in tokens)
    if len(options) != len(tokens):
      raise ValueError(f"--eval_sets entry {item!r}: an option is given twice")
    sets[name] = {"data_dir": data_dir, "split": split, **options}
  if not sets:
    raise ValueError("--eval_sets is empty: give NAME=DATA_DIR[:SPLIT][@KEY=VALUE]...,...")
  return sets


def set_input(icfg: ml_collections.ConfigDict, data_dir: str, split: str,
              options: Optional[Mapping[str, Any]] = None) -> ml_collections.ConfigDict:
  """The input section scoring every video of ``split`` in ``data_dir``: the training config's
  label / manipulation filters and video subset belong to its own data and are dropped; the
  clip layout, window and count stay the config's unless ``options`` (``SET_OPTIONS`` keys,
  e.g. ``{"frame_window": 0}``) say otherwise."""
  out = ml_collections.ConfigDict(icfg.to_dict())
  out.eval.update(data_dir=data_dir, split=split, labels=(), manipulations=(),
                  exclude_manipulations=(), subset="")
  out.eval.update(dict(options or {}))
  return out


def _options(where: Mapping[str, Any]) -> Dict[str, Any]:
  return {k: v for k, v in where.items() if k in SET_OPTIONS}


def evaluate_sets(config: ml_collections.ConfigDict, checkpoint: str, output_dir: Optional[str],
                  sets: Mapping[str, Mapping[str, Any]], *, step: Optional[int] = None,
                  mesh=None, tensorboard: bool = True) -> Dict[str, Any]:
  """One restored detector on several test sets (one compilation: the eval ops are shared):
  the standard report of each in ``<output_dir>/<name>/`` and the cross-dataset table
  (``report.cross_dataset_table``) in ``cross_dataset.json`` / ``cross_dataset.md``."""
  first = next(iter(sets.values()))
  base = ml_collections.ConfigDict(config.to_dict())
  base.input = set_input(config.input, first["data_dir"], first["split"], _options(first))
  scorer = Scorer(base, checkpoint, step, mesh)
  reports = {}
  for name, where in sets.items():
    icfg = set_input(config.input, where["data_dir"], where["split"], _options(where))
    outputs = Outputs(str(epath.Path(output_dir) / name) if output_dir else None, scorer.step,
                      tensorboard)
    try:
      rep = {"checkpoint": scorer.directory, "step": scorer.step,
             "objective": config.objective.name, "eval": input_settings(icfg)}
      rep.update(standard(scorer, outputs, icfg))
      outputs.json("report.json", rep)
    finally:
      outputs.close()
    logging.info("%s: video AUC %.4f", name, rep["video"]["overall"]["auc"])
    reports[name] = rep
  table = report_lib.cross_dataset_table(reports)
  result = {"protocol": "cross_dataset", "checkpoint": scorer.directory, "step": scorer.step,
            "objective": config.objective.name, "table": table, "reports": reports}
  if output_dir and jax.process_index() == 0:
    report_lib.write_json(str(epath.Path(output_dir) / "cross_dataset.json"),
                          {k: v for k, v in result.items() if k != "reports"})
    (epath.Path(output_dir) / "cross_dataset.md").write_text(
        "\n".join(report_lib.cross_dataset_lines(table)) + "\n")
  return result


def summary(result: Mapping[str, Any]) -> str:
  """The short text the CLI prints."""
  if result.get("protocol") == "cross_dataset":
    return "\n".join([f"{result['objective']} step {result['step']}: {len(result['reports'])} "
                      "evaluation sets"] + report_lib.cross_dataset_lines(result["table"]))
  lines = [f"{result['objective']} step {result['step']} on {result['eval']['data_dir']} "
           f"{result['eval']['split']}: {result['num_videos']} videos, {result['num_clips']} clips"
           + (f", {result['missing_clips']} not scored" if result["missing_clips"] else "")]
  lines += report_lib.summary_lines(result)
  if "robustness" in result:
    lines += [""] + report_lib.robustness_lines(result["robustness"])
  return "\n".join(lines)

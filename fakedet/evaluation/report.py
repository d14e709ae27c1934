"""Reports from per-clip scores: clip- and video-level metrics, robustness tables, files, plots.

Everything here is host-side and pure given the scores, so a report can be recomputed (and
tested) from the saved per-clip table without a model. Scores are fake probabilities in [0, 1]
(``sigmoid`` of the detector's logit): accuracy is at p = 0.5. A video's score is the sigmoid
of its clips' mean LOGIT (max over face tracks), as the RealForensics evaluation code averages
logits: averaging probabilities saturates with a cosine head's scale s = 64 (sigmoid(40) and
sigmoid(50) are both 1.0 in float64), which makes ties and changes the AUC.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fakedet.evaluation import metrics

LEVELS = ("video", "clip")  # Video level first: it is the number the papers report.
CSV_COLUMNS = ("index", "video_id", "track_id", "manipulation", "label", "clip_start", "logit",
               "prob")


@dataclasses.dataclass(frozen=True)
class ClipScores:
  """One row per evaluated clip, in the eval split's deterministic clip order.

  ``index`` is the clip's position in that order (``input_pipeline.pipeline.eval_clips``); it is
  what crossed hosts, the strings were looked up locally from it.
  """
  index: np.ndarray  # [N] int64
  logits: np.ndarray  # [N] float32, the objective's raw fake logit.
  video_ids: Sequence[str]
  track_ids: np.ndarray  # [N] int64
  manipulations: Sequence[str]
  labels: np.ndarray  # [N] int64, 1 = fake.
  clip_starts: np.ndarray  # [N] int64, first frame of the clip.
  missing: int = 0  # Clips of the split that were not scored (skipped bad records).
  # How a track's clips make its score (``input.eval.video_score``): "mean_logit" (σ of the
  # mean logit, RealForensics' code) or "mean_prob" (the mean probability, PCL's "mean of the
  # frame scores"). A video is the max over its tracks either way.
  video_score: str = "mean_logit"

  @property
  def probs(self) -> np.ndarray:
    """Fake probability per clip; float64 so that averaging per track is exact enough."""
    return 1.0 / (1.0 + np.exp(-np.asarray(self.logits, np.float64)))

  def __len__(self) -> int:
    return len(self.index)


def class_counts(labels: Sequence[int], manipulations: Sequence[str]) -> Dict[str, int]:
  """``{"real": n, "<manipulation>": n, ...}``: how many samples stand behind each row."""
  labels = np.asarray(labels)
  manipulations = np.asarray(manipulations, dtype=object)
  counts = {"real": int(np.sum(labels == 0))}
  for name in sorted(set(manipulations[labels == 1])):
    counts[str(name)] = int(np.sum((labels == 1) & (manipulations == name)))
  return counts


VIDEO_SCORES = ("mean_logit", "mean_prob")


def track_mean(logits, video_ids: Sequence[str], track_ids: Sequence[int],
               rule: str = "mean_logit") -> Dict[str, float]:
  """Video id → fake probability: per track the mean of its clips' logits then σ
  ("mean_logit") or the mean of their probabilities ("mean_prob"); max over tracks."""
  if rule not in VIDEO_SCORES:
    raise ValueError(f"video_score={rule!r}; allowed: {', '.join(VIDEO_SCORES)}")
  logits = np.asarray(logits, np.float64)
  values = logits if rule == "mean_logit" else 1.0 / (1.0 + np.exp(-logits))
  per_video = metrics.video_level(values, video_ids, track_ids)
  if rule == "mean_logit":
    return {v: float(1.0 / (1.0 + np.exp(-x))) for v, x in per_video.items()}
  return per_video


def video_scores(scores: ClipScores) -> Dict[str, Any]:
  """Video-level arrays (sorted by video id): ``scores`` are fake probabilities by the clip
  scores' ``video_score`` rule, ``ranking`` what the ranking metrics use — the mean logit for
  "mean_logit" (see the module docstring for why), the probability itself for "mean_prob"."""
  rule = scores.video_score
  if rule not in VIDEO_SCORES:
    raise ValueError(f"video_score={rule!r}; allowed: {', '.join(VIDEO_SCORES)}")
  values = (np.asarray(scores.logits, np.float64) if rule == "mean_logit" else scores.probs)
  per_video = metrics.video_level(values, scores.video_ids, scores.track_ids)
  labels = metrics.per_video_labels(scores.labels, scores.video_ids, "labels")
  manipulations = metrics.per_video_labels(scores.manipulations, scores.video_ids,
                                           "manipulations")
  ids = sorted(per_video)
  ranking = np.array([per_video[v] for v in ids], np.float64)
  probs = 1.0 / (1.0 + np.exp(-ranking)) if rule == "mean_logit" else ranking
  out = {"video_ids": ids, "scores": probs, "ranking": ranking,
         "labels": np.array([labels[v] for v in ids], np.int64),
         "manipulations": [manipulations[v] for v in ids]}
  if rule == "mean_logit":
    out["logits"] = ranking
  return out


def level_arrays(scores: ClipScores) -> Dict[str, Dict[str, Any]]:
  """``{"clip"|"video": {"scores", "labels", "manipulations", "logit_space"}}``: what each
  level's metrics and ROC curves are computed from. Clip scores are LOGITS, and so are video
  scores under "mean_logit" (a video's mean logit): the ranking metrics are the same as on
  probabilities except that logits never saturate into ties; ``build_report`` moves the
  probability threshold into logit space where ``logit_space``."""
  video = video_scores(scores)
  return {"clip": {"scores": np.asarray(scores.logits, np.float64),
                   "labels": np.asarray(scores.labels),
                   "manipulations": list(scores.manipulations), "logit_space": True},
          "video": {"scores": video["ranking"], "labels": video["labels"],
                    "manipulations": video["manipulations"],
                    "logit_space": scores.video_score == "mean_logit"}}


def _logit(p: float) -> float:
  if not 0.0 < p < 1.0:
    raise ValueError(f"threshold={p}: a fake probability strictly between 0 and 1")
  return float(np.log(p) - np.log1p(-p))


def build_report(scores: ClipScores, threshold: float = 0.5) -> Dict[str, Any]:
  """Metrics overall and per manipulation (each family against all reals), both levels.

  Keys: ``num_clips``, ``num_videos``, ``missing_clips``, ``threshold``, ``counts`` (per level,
  samples per class), then ``video`` and ``clip``: ``{"overall"|"<manipulation>": {"auc",
  "accuracy", "ap", "eer"}}``.
  """
  if not len(scores):
    raise ValueError("no clip was scored: the evaluation set is empty")
  arrays = level_arrays(scores)
  report: Dict[str, Any] = {
      "num_clips": len(scores), "num_videos": len(arrays["video"]["labels"]),
      "missing_clips": int(scores.missing), "threshold": threshold,
      "counts": {lvl: class_counts(arrays[lvl]["labels"], arrays[lvl]["manipulations"])
                 for lvl in LEVELS}}
  for lvl in LEVELS:
    a = arrays[lvl]
    report[lvl] = metrics.detection_report(a["labels"], a["scores"], a["manipulations"],
                                           _logit(threshold) if a["logit_space"] else threshold)
  return report


def flat_scalars(report: Mapping[str, Any], prefix: str = "eval") -> Dict[str, float]:
  """``{prefix}/{group}/{level}_{metric}``, e.g. ``eval/overall/video_auc``, for TensorBoard."""
  out = {}
  for lvl in LEVELS:
    for group, values in report[lvl].items():
      for name, value in values.items():
        out[f"{prefix}/{group}/{lvl}_{name}"] = float(value)
  return out


# ----------------------------------------------------------------------------- robustness
def robustness_table(clean: Mapping[str, Any], corrupted: Mapping[str, Mapping[int, Mapping]],
                     ) -> Dict[str, Any]:
  """AUC per corruption and severity from full reports, with the means the paper reports.

  Args:
    clean: the uncorrupted ``build_report`` output.
    corrupted: ``{kind: {severity: build_report output}}``.

  Returns keys ``clean`` ({"video_auc", "clip_auc"}), ``corruptions`` ({kind: {"1".."5" and
  "mean": {...}}}, the kind's mean over severities is RealForensics Table 4's entry),
  ``severity_mean`` ({"1".."5": mean over kinds}, Figure 7's average curve) and ``mean`` (over
  every kind and severity). Severities are strings so the JSON round-trips unchanged.
  """
  def aucs(report):
    return {f"{lvl}_auc": float(report[lvl]["overall"]["auc"]) for lvl in LEVELS}

  def mean(rows: List[Dict[str, float]]):
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}

  table: Dict[str, Any] = {"clean": aucs(clean), "corruptions": {}, "severity_mean": {}}
  severities = sorted({s for per_kind in corrupted.values() for s in per_kind})
  for kind, per_kind in corrupted.items():
    rows = {str(s): aucs(per_kind[s]) for s in sorted(per_kind)}
    table["corruptions"][kind] = {**rows, "mean": mean(list(rows.values()))}
  for s in severities:
    rows = [table["corruptions"][k][str(s)] for k in corrupted if s in corrupted[k]]
    table["severity_mean"][str(s)] = mean(rows)
  every = [r for k in corrupted for s, r in table["corruptions"][k].items() if s != "mean"]
  table["mean"] = mean(every) if every else {}
  return table


# ----------------------------------------------------------------------------- text
def summary_lines(report: Mapping[str, Any]) -> List[str]:
  """A fixed-width table: one row per group, AUC/AP/EER/accuracy at both levels."""
  head = f"{'group':<20}{'n_video':>8}" + "".join(
      f"{lvl[0]}_{m}".rjust(9) for lvl in LEVELS for m in ("auc", "ap", "eer", "acc"))
  lines = [head]
  for group in report["video"]:
    n = (sum(report["counts"]["video"].values()) if group == "overall"
         else report["counts"]["video"].get(group, 0) + report["counts"]["video"]["real"])
    row = f"{group:<20}{n:>8}"
    for lvl in LEVELS:
      m = report[lvl][group]
      row += "".join(f"{m[k]:9.4f}" for k in ("auc", "ap", "eer", "accuracy"))
    lines.append(row)
  return lines


def robustness_lines(table: Mapping[str, Any], level: str = "video") -> List[str]:
  """AUC per corruption (rows) and severity (columns), plus the means; Table 4 / Figure 7."""
  key = f"{level}_auc"
  severities = list(table["severity_mean"])
  lines = [f"{level}-level AUC; clean {table['clean'][key]:.4f}",
           f"{'corruption':<14}" + "".join(f"{s:>8}" for s in severities) + f"{'mean':>8}"]
  for kind, row in table["corruptions"].items():
    lines.append(f"{kind:<14}" + "".join(f"{row[s][key]:8.4f}" if s in row else f"{'-':>8}"
                                         for s in severities) + f"{row['mean'][key]:8.4f}")
  lines.append(f"{'average':<14}" + "".join(f"{table['severity_mean'][s][key]:8.4f}"
                                            for s in severities)
               + (f"{table['mean'][key]:8.4f}" if table["mean"] else ""))
  return lines


def cross_dataset_table(reports: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
  """One row per evaluation set (its overall clip- and video-level AUC / AP / EER and sizes)
  plus their unweighted mean: the cross-dataset table of the papers (train on one corpus,
  test on several)."""
  metrics_ = ("auc", "ap", "eer")
  rows = {}
  for name, rep in reports.items():
    row = {f"{lvl}_{m}": float(rep[lvl]["overall"][m]) for lvl in LEVELS for m in metrics_}
    row.update(num_videos=int(rep["num_videos"]), num_clips=int(rep["num_clips"]))
    rows[name] = row
  keys = [f"{lvl}_{m}" for lvl in LEVELS for m in metrics_]
  mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in keys} if rows else {}
  return {"sets": rows, "mean": mean}


def cross_dataset_lines(table: Mapping[str, Any]) -> List[str]:
  """Markdown: the sets as rows, video- then clip-level AUC / AP / EER (%) as columns."""
  keys = [f"{lvl}_{m}" for lvl in LEVELS for m in ("auc", "ap", "eer")]
  lines = ["| set | videos | clips | " + " | ".join(keys) + " |",
           "|---|---:|---:|" + "---:|" * len(keys)]
  for name, row in table["sets"].items():
    lines.append(f"| {name} | {row['num_videos']} | {row['num_clips']} | "
                 + " | ".join(f"{100 * row[k]:.2f}" for k in keys) + " |")
  if table["mean"]:
    lines.append("| mean | | | " + " | ".join(f"{100 * table['mean'][k]:.2f}" for k in keys)
                 + " |")
  return lines


# ----------------------------------------------------------------------------- files
def write_json(path: str, obj: Any) -> None:
  epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
  with epath.Path(path).open("w") as f:
    json.dump(obj, f, indent=2, sort_keys=False)
    f.write("\n")


def write_clip_csv(path: str, scores: ClipScores) -> None:
  """The per-clip table the report is computed from (recompute or re-aggregate without a
  model)."""
  probs = scores.probs
  with epath.Path(path).open("w") as f:
    w = csv.writer(f)
    w.writerow(CSV_COLUMNS)
    for i in range(len(scores)):
      w.writerow([int(scores.index[i]), scores.video_ids[i], int(scores.track_ids[i]),
                  scores.manipulations[i], int(scores.labels[i]), int(scores.clip_starts[i]),
                  repr(float(scores.logits[i])), repr(float(probs[i]))])


def read_clip_csv(path: str, video_score: str = "mean_logit") -> ClipScores:
  with epath.Path(path).open("r") as f:
    rows = list(csv.DictReader(f))
  col = lambda k, t: np.array([t(r[k]) for r in rows])
  return ClipScores(index=col("index", int), logits=col("logit", float).astype(np.float32),
                    video_ids=[r["video_id"] for r in rows], track_ids=col("track_id", int),
                    manipulations=[r["manipulation"] for r in rows], labels=col("label", int),
                    clip_starts=col("clip_start", int), video_score=video_score)


# ----------------------------------------------------------------------------- plots
def _figure(size) -> Tuple[Figure, Any]:
  """A (figure, axes) pair drawn by the Agg canvas: headless (no display on training hosts or
  CI) and without pyplot's global state."""
  fig = Figure(figsize=size, dpi=100)
  FigureCanvasAgg(fig)
  return fig, fig.subplots()


def roc_figure(scores: ClipScores, title: str = ""):
  """Video-level ROC overall (bold) and per manipulation; clip-level overall dashed."""
  arrays = level_arrays(scores)
  fig, ax = _figure((5, 5))
  v = arrays["video"]
  labels, manips = v["labels"], np.asarray(v["manipulations"], dtype=object)
  fpr, tpr, _ = metrics.roc_curve(labels, v["scores"])
  ax.plot(fpr, tpr, color="black", lw=2,
          label=f"video, all (AUC {metrics.roc_auc(labels, v['scores']):.3f})")
  for name in sorted(set(manips[labels == 1])):
    keep = (labels == 0) | (manips == name)
    fpr, tpr, _ = metrics.roc_curve(labels[keep], v["scores"][keep])
    ax.plot(fpr, tpr, lw=1, label=f"video, {name} ({metrics.roc_auc(labels[keep], v['scores'][keep]):.3f})")
  c = arrays["clip"]
  fpr, tpr, _ = metrics.roc_curve(c["labels"], c["scores"])
  ax.plot(fpr, tpr, "k--", lw=1, label=f"clip, all ({metrics.roc_auc(c['labels'], c['scores']):.3f})")
  ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls=":")
  ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (reals called fake)",
         ylabel="true positive rate (fakes caught)", title=title or "ROC")
  ax.legend(loc="lower right", fontsize=7)
  fig.tight_layout()
  return fig


def robustness_figure(table: Mapping[str, Any], level: str = "video", title: str = ""):
  """AUC against severity, one line per corruption, severity 0 = clean (RealForensics Fig. 7)."""
  key = f"{level}_auc"
  fig, ax = _figure((6, 4.5))
  clean = table["clean"][key]
  for kind, row in table["corruptions"].items():
    sev = sorted(int(s) for s in row if s != "mean")
    ax.plot([0] + sev, [clean] + [row[str(s)][key] for s in sev], marker="o", ms=3, label=kind)
  sev = sorted(int(s) for s in table["severity_mean"])
  ax.plot([0] + sev, [clean] + [table["severity_mean"][str(s)][key] for s in sev], color="black",
          lw=2.5, label="average")
  ax.set(xlabel="severity (0 = clean)", ylabel=f"{level}-level AUC", xticks=[0] + sev,
         title=title or f"robustness ({level} level)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  return fig


def save_figure(fig, path: Optional[str] = None) -> np.ndarray:
  """Writes ``fig`` as PNG (when ``path``) and returns it as uint8 [H, W, 3] for TensorBoard."""
  if path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
    epath.Path(path).write_bytes(buffer.getvalue())
  fig.canvas.draw()
  return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


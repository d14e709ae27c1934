"""Binary detection metrics (fake = positive class) on host numpy arrays, ties handled exactly.

Deepfake benchmarks report video-level AUC, accuracy at 0.5, average precision and the equal
error rate, overall and per manipulation (each fake family against ALL real videos). Scores are
gathered from every host before these run (a per-host AUC is not a global AUC), so they take
plain numpy arrays. Ties matter: a saturated detector outputs many identical scores, and AUC /
AP / ROC must treat tied scores as one threshold, not in arbitrary sorted order.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

import numpy as np


def _check(labels, scores) -> Tuple[np.ndarray, np.ndarray]:
  labels = np.asarray(labels)
  scores = np.asarray(scores, np.float64)
  if labels.shape != scores.shape or labels.ndim != 1:
    raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be equal-length 1-D")
  if not np.all(np.isin(labels, (0, 1))):
    raise ValueError(f"labels must be 0 (real) or 1 (fake); got values {np.unique(labels)}")
  if not np.all(np.isfinite(scores)):
    raise ValueError(f"{np.sum(~np.isfinite(scores))} scores are NaN/inf")
  counts = np.bincount(labels.astype(np.int64), minlength=2)
  if counts.min() == 0:
    raise ValueError(f"need both classes; got {counts[0]} real and {counts[1]} fake samples")
  return labels.astype(np.int64), scores


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks, tied values sharing the mean of their ranks."""
  order = np.argsort(x, kind="mergesort")
  sorted_x = x[order]
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], len(x)]
  ranks = np.empty(len(x))
  ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
  return ranks


def roc_auc(labels, scores) -> float:
  """P(score of a random fake > score of a random real) + ½ P(tie): Mann–Whitney U / (n₀n₁)."""
  labels, scores = _check(labels, scores)
  n1 = labels.sum()
  n0 = len(labels) - n1
  rank_sum = _average_ranks(scores)[labels == 1].sum()
  return float((rank_sum - n1 * (n1 + 1) / 2.0) / (n0 * n1))


def _threshold_counts(labels, scores):
  """Cumulative (true, false) positives when thresholding at each distinct score, high → low."""
  order = np.argsort(-scores, kind="mergesort")
  s, y = scores[order], labels[order]
  last_of_group = np.r_[s[1:] != s[:-1], True]
  tp = np.cumsum(y)[last_of_group]
  fp = np.cumsum(1 - y)[last_of_group]
  return tp, fp, s[last_of_group]


def roc_curve(labels, scores) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(fpr, tpr, thresholds), starting at (0, 0) with threshold +inf; one point per distinct score."""
  labels, scores = _check(labels, scores)
  tp, fp, thr = _threshold_counts(labels, scores)
  tpr = np.r_[0.0, tp / labels.sum()]
  fpr = np.r_[0.0, fp / (len(labels) - labels.sum())]
  return fpr, tpr, np.r_[np.inf, thr]


def average_precision(labels, scores) -> float:
  """Σₙ (Rₙ − Rₙ₋₁)·Pₙ over distinct-score thresholds (no interpolation)."""
  labels, scores = _check(labels, scores)
  tp, fp, _ = _threshold_counts(labels, scores)
  precision = tp / (tp + fp)
  recall = tp / labels.sum()
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def equal_error_rate(labels, scores) -> float:
  """The rate where false-positive and false-negative rates meet, linearly interpolated on the
  ROC curve between its two points that bracket FPR = 1 − TPR."""
  fpr, tpr, _ = roc_curve(labels, scores)
  fnr = 1.0 - tpr
  diff = fpr - fnr  # Non-decreasing along the curve: −1 at the start, +1 at the end.
  i = int(np.flatnonzero(diff >= 0)[0])
  if diff[i] == 0 or i == 0:
    return float(fpr[i])
  w = -diff[i - 1] / (diff[i] - diff[i - 1])
  return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def accuracy(labels, scores, threshold: float = 0.5) -> float:
  """Fraction classified correctly when ``score > threshold`` means fake."""
  labels, scores = _check(labels, scores)
  return float(np.mean((scores > threshold) == (labels == 1)))


def binary_metrics(labels, scores, threshold: float = 0.5) -> Dict[str, float]:
  return {"auc": roc_auc(labels, scores), "accuracy": accuracy(labels, scores, threshold),
          "ap": average_precision(labels, scores), "eer": equal_error_rate(labels, scores)}


def detection_report(labels, scores, manipulations: Sequence[str],
                     threshold: float = 0.5) -> Dict[str, Dict[str, float]]:
  """``{"overall": metrics, "<manipulation>": metrics, ...}``; each family is scored against
  all real samples (the manipulation of a real sample is ignored), as in per-method tables."""
  labels, scores = _check(labels, scores)
  manipulations = np.asarray(manipulations, dtype=object)
  if manipulations.shape != labels.shape:
    raise ValueError(f"{manipulations.shape[0]} manipulation names for {len(labels)} samples")
  report = {"overall": binary_metrics(labels, scores, threshold)}
  real = labels == 0
  for name in sorted(set(manipulations[labels == 1])):
    keep = real | ((labels == 1) & (manipulations == name))
    report[str(name)] = binary_metrics(labels[keep], scores[keep], threshold)
  return report


def video_level(clip_scores, video_ids: Sequence[str], track_ids: Sequence[int],
                ) -> Dict[str, float]:
  """Video score = max over its face tracks of the mean clip score of the track.

  A video is fake if any face in it is (FakeOut D, multi-face videos): averaging clips smooths
  per-clip noise within a track; the max keeps one forged face from being diluted by real ones.
  """
  clip_scores = np.asarray(clip_scores, np.float64)
  if not (len(clip_scores) == len(video_ids) == len(track_ids)):
    raise ValueError(f"{len(clip_scores)} scores, {len(video_ids)} video ids and "
                     f"{len(track_ids)} track ids must have one entry per clip")
  sums: Dict[Tuple[str, int], list] = {}
  for s, v, t in zip(clip_scores, video_ids, track_ids):
    acc = sums.setdefault((str(v), int(t)), [0.0, 0])
    acc[0] += float(s)
    acc[1] += 1
  videos: Dict[str, float] = {}
  for (v, _), (total, n) in sums.items():
    videos[v] = max(videos.get(v, -np.inf), total / n)
  return videos


def per_video_labels(values: Sequence, video_ids: Sequence[str], what: str) -> Mapping[str, object]:
  """One value per video from per-clip values, failing if a video's clips disagree."""
  out: Dict[str, object] = {}
  for v, x in zip(video_ids, values):
    x = x.item() if hasattr(x, "item") else x
    if out.setdefault(str(v), x) != x:
      raise ValueError(f"video {v!r} has clips with different {what}: {out[str(v)]!r} and {x!r}")
  return out

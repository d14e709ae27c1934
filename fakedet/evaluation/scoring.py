"""Per-clip scores of a trained detector on every evaluation clip, correct on any number of hosts.

Three steps, each a small function:
1. ``detector.load`` restores the state shape-first from the objective (no optimizer needed),
   sharded on the mesh with the trainer's parameter rules.
2. ``host_batches`` tags each row of this host's padded eval batches with the clip's position in
   the split's deterministic clip list (``pipeline.eval_clips``, the same on every host) and pads
   the stream so every host runs the same number of batches (jitted collectives need that).
3. ``score_clips`` runs the detector's jitted score step on global batches whose logits and
   positions come back replicated, so every host holds every clip's score: only numbers cross
   hosts, and each host looks the strings (video id, manipulation) up from the position.
"""
from __future__ import annotations

import itertools
import logging
import math
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from fakedet import sharding as sharding_lib
from fakedet.evaluation import detector as detector_lib
from fakedet.evaluation.detector import INDEX_KEY
from fakedet.evaluation.report import ClipScores
from input_pipeline import pipeline

ScoreFn = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


# ----------------------------------------------------------------------------- clip list
def eval_items(icfg: Mapping[str, Any]):
  """(source, [(record index, clip start)]) in the order ``pipeline.eval_dataset`` reads them."""
  source = pipeline.open_source(icfg["eval"], "input.eval")
  return source, pipeline.eval_clip_list(icfg, source)


def item_metadata(index: Mapping[str, Sequence], items: Sequence[Tuple[int, int]],
                  ) -> Dict[str, Any]:
  """Per-clip metadata columns from the split's index (identical on every host)."""
  rec = [i for i, _ in items]
  col = lambda k: [index[k][i] for i in rec]
  return {"video_ids": [str(v) for v in col("video_id")],
          "track_ids": np.asarray(col("track_id"), np.int64),
          "manipulations": [str(m) for m in col("manipulation")],
          "labels": np.asarray(col("label"), np.int64),
          "clip_starts": np.asarray([s for _, s in items], np.int64)}


def position_lookup(meta: Mapping[str, Any]) -> Dict[Tuple[str, int, int], int]:
  """(video id, track id, clip start) → position; a key that repeats is an index error."""
  lookup: Dict[Tuple[str, int, int], int] = {}
  for pos, key in enumerate(zip(meta["video_ids"], meta["track_ids"].tolist(),
                                meta["clip_starts"].tolist())):
    if key in lookup:
      raise ValueError(f"two evaluation records share video_id/track_id {key[:2]}: every "
                       f"(video, face track) must be one record")
    lookup[key] = pos
  return lookup


def batches_per_host(num_items: int, host_batch: int, process_count: int) -> int:
  """The batch count of the host with the most items; every host runs exactly this many."""
  return math.ceil(math.ceil(num_items / process_count) / host_batch)


def _tag(batch: Dict[str, np.ndarray], lookup) -> Dict[str, np.ndarray]:
  """Adds ``INDEX_KEY``: each valid row's clip position, -1 for padding."""
  positions = np.full(len(batch["valid"]), -1, np.int32)
  for r in np.flatnonzero(batch["valid"]):
    key = (str(batch["video_id"][r]), int(batch["track_id"][r]), int(batch["clip_start"][r]))
    positions[r] = lookup[key]
  return {**batch, INDEX_KEY: positions}


def _blank(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  out = dict(batch)
  out["valid"] = np.zeros_like(batch["valid"])
  if INDEX_KEY in batch:
    out[INDEX_KEY] = np.full_like(batch[INDEX_KEY], -1)
  return out


def padded(batches: Iterable[Dict[str, np.ndarray]], total: int,
           what: str = "evaluation clip") -> Iterator[Dict[str, np.ndarray]]:
  """Exactly ``total`` batches: this host's, then blank copies of its last (``valid`` all
  False). Every host must issue the same number of jitted steps over global arrays, or the host
  with more batches waits forever in a collective for the others."""
  last, n = None, 0
  for n, batch in enumerate(itertools.islice(batches, total), 1):
    last = batch
    yield batch
  if last is None:
    raise ValueError(f"this host got no {what} (process {jax.process_index()} of "
                     f"{jax.process_count()})")
  for _ in range(total - n):
    yield _blank(last)


def host_batches(icfg: Mapping[str, Any], lookup, num_items: int, *,
                 process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> Iterator[Dict[str, np.ndarray]]:
  """This host's eval batches tagged with clip positions, padded with blank batches up to
  ``batches_per_host`` so that no host leaves the jitted loop early."""
  pc = jax.process_count() if process_count is None else process_count
  host_batch = pipeline.per_host(icfg["eval"]["batch_size"], pc, "input.eval.batch_size")
  total = batches_per_host(num_items, host_batch, pc)
  batches = pipeline.eval_dataset(icfg, process_index=process_index, process_count=process_count)
  yield from padded((_tag(b, lookup) for b in batches), total,
                    f"evaluation clip ({num_items} clips for {pc} hosts)")


# ----------------------------------------------------------------------------- scoring
def collect(outputs: Sequence[Mapping[str, np.ndarray]], meta: Mapping[str, Any],
            video_score: str = "mean_logit") -> ClipScores:
  """ClipScores in clip order from replicated (logit, position) batches; padding dropped."""
  logits = np.concatenate([np.asarray(o["logit"], np.float32) for o in outputs])
  index = np.concatenate([np.asarray(o["index"], np.int64) for o in outputs])
  keep = index >= 0
  logits, index = logits[keep], index[keep]
  order = np.argsort(index, kind="stable")
  logits, index = logits[order], index[order]
  if len(index) and np.any(index[1:] == index[:-1]):
    raise RuntimeError("a clip was scored twice: hosts disagree on the evaluation clip list")
  pick = lambda seq: [seq[i] for i in index]
  return ClipScores(index=index, logits=logits, video_ids=pick(meta["video_ids"]),
                    track_ids=meta["track_ids"][index],
                    manipulations=pick(meta["manipulations"]), labels=meta["labels"][index],
                    clip_starts=meta["clip_starts"][index], video_score=video_score,
                    missing=len(meta["labels"]) - len(index))


def score_clips(icfg: ml_collections.ConfigDict, score: ScoreFn,
                log_every: int = 50) -> ClipScores:
  """Every eval clip's fake logit (all hosts get all clips), with its video/track/label.
  ``score`` maps one tagged host batch to replicated ``{"logit", "index"}``."""
  source, items = eval_items(icfg)
  meta = item_metadata(source.index, items)
  lookup = position_lookup(meta)
  outputs = []
  for i, batch in enumerate(host_batches(icfg, lookup, len(items))):
    outputs.append(score(batch))
    if log_every and (i + 1) % log_every == 0:
      logging.info("scored %d batches", i + 1)
  scores = collect(outputs, meta, icfg["eval"]["video_score"])
  if scores.missing:
    logging.warning("%d of %d evaluation clips were not scored (skipped bad records)",
                    scores.missing, len(items))
  return scores


class Scorer:
  """A restored detector scoring eval splits, reused across protocols (the robustness sweep
  re-scores the same model 36 times with one compilation)."""

  def __init__(self, config: ml_collections.ConfigDict, checkpoint: str,
               step: Optional[int] = None, mesh=None):
    self.config = config
    example = next(iter(pipeline.eval_dataset(config.input)))
    self.detector = detector_lib.load(config, checkpoint, step, example, mesh)
    sharding_lib.check_divisible(config.input.eval.batch_size, self.detector.mesh,
                                 "input.eval.batch_size")
    self.directory, self.step = self.detector.directory, self.detector.step

  def __call__(self, icfg: Optional[ml_collections.ConfigDict] = None) -> ClipScores:
    """Scores the eval split of ``icfg`` (default: the config's input section)."""
    return score_clips(self.config.input if icfg is None else icfg, self.detector.score)

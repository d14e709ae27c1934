"""The trainer's periodic evaluation: held-out figures, global (never per host).

A detector has every eval clip scored through the evaluator's own path (``scoring.score_clips``
with the trainer's jitted score step) and gets the evaluator's AUC / accuracy / AP / EER, clip-
and video-level, overall and per manipulation — so the number model selection keeps is the
number ``fakedet.evaluate`` reproduces. Other objectives sum their per-batch ``eval_step``
statistics over the split and divide by the count. Every host runs the same number of steps
(blank batches pad the hosts with fewer clips), or an uneven split would hang the collectives.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional

import jax
import ml_collections

from fakedet import objectives as objectives_lib
from fakedet import sharding as sharding_lib
from fakedet.evaluation import detector as detector_lib
from fakedet.evaluation import report, scoring
from input_pipeline import pipeline


class PeriodicEval:
  """Compiled once per run; called with the current state at every evaluation."""

  def __init__(self, config: ml_collections.ConfigDict, objective, shardings, mesh):
    self.config, self.objective, self.mesh = config, objective, mesh
    self.eval_step = jax.jit(objective.eval_step)
    self.score_step = (detector_lib.jit_score_step(objective, shardings, mesh)
                       if objectives_lib.is_detector(objective) else None)

  def __call__(self, state: Any) -> Dict[str, float]:
    if self.score_step is not None:
      score = functools.partial(detector_lib.score_batch, self.score_step, state,
                                keys=detector_lib.predict_keys(self.objective), mesh=self.mesh)
      scores = scoring.score_clips(self.config.input, score, log_every=0)
      return report.flat_scalars(report.build_report(scores))
    return self._statistics(state)

  def _statistics(self, state: Any) -> Dict[str, float]:
    config = self.config
    totals: Dict[str, float] = {}
    keys = tuple(self.objective.eval_keys) + ("valid",)
    _, items = scoring.eval_items(config.input)
    host_batch = pipeline.per_host(config.input.eval.batch_size, jax.process_count(),
                                   "input.eval.batch_size")
    steps = scoring.batches_per_host(len(items), host_batch, jax.process_count())
    if config.eval_batches:
      steps = min(steps, config.eval_batches)
    for batch in scoring.padded(pipeline.eval_dataset(config.input), steps):
      out = jax.device_get(self.eval_step(state, sharding_lib.device_batch(batch, keys,
                                                                            self.mesh)))
      for k, v in out.items():
        totals[k] = totals.get(k, 0.0) + float(v)
    count: Optional[float] = totals.pop("count", 0.0)
    if not count:
      return {}
    return {f"eval/{k}": v / count for k, v in totals.items()}

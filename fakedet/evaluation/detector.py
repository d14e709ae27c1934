"""A trained detector restored for scoring: the one place that checks, locates and restores it.

The evaluator (``scoring.Scorer``), the predict CLI (``prediction.Predictor``) and the trainer's
periodic evaluation all score clips through ``score_step``: ``objective.predict`` jitted with the
trainer's parameter shardings in and REPLICATED outputs, so every host receives the whole global
batch's logits and clip positions (a few bytes per clip) and looks strings up locally.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fakedet import checkpointing
from fakedet import objectives as objectives_lib
from fakedet import sharding as sharding_lib
from fakedet import train_state as train_state_lib

INDEX_KEY = "eval_index"  # Batch field: the clip's position in the split's clip list; -1 = pad.


def _score_step(state, batch, *, objective):
  logits = objective.predict(state, batch).astype(jnp.float32)
  return {"logit": logits, "index": jnp.where(batch["valid"], batch[INDEX_KEY], -1)}


def jit_score_step(objective, state_shardings: Any, mesh):
  """``objective.predict`` jitted with the trainer's shardings in and replicated outputs."""
  return jax.jit(functools.partial(_score_step, objective=objective),
                 in_shardings=(state_shardings, sharding_lib.batch_sharding(mesh)),
                 out_shardings=sharding_lib.replicated(mesh))


def score_batch(score_step, state, batch: Mapping[str, np.ndarray], keys, mesh,
                ) -> Mapping[str, np.ndarray]:
  """Replicated ``{"logit", "index"}`` of one host batch (``INDEX_KEY`` and ``valid`` set)."""
  return jax.device_get(score_step(state, sharding_lib.device_batch(batch, keys, mesh)))


def predict_keys(objective) -> Tuple[str, ...]:
  """Numeric batch fields sent to devices: what the objective evaluates on, plus the mask and the
  clip position."""
  return tuple(dict.fromkeys(tuple(objective.eval_keys) + ("valid", INDEX_KEY)))


def find(config: ml_collections.ConfigDict, checkpoint: str,
         step: Optional[int] = None) -> Tuple[str, int]:
  """Every check that needs no model: the objective is a detector, the checkpoint and step
  exist. Returns (Orbax manager directory, step)."""
  objectives_lib.require_detector(config.objective.name)
  return checkpointing.find(checkpoint, step)


@dataclasses.dataclass
class Detector:
  """A restored detector state bound to its objective, mesh and jitted score step."""
  config: ml_collections.ConfigDict
  objective: Any
  state: Any
  shardings: Any
  mesh: Any
  directory: str
  step: int

  def __post_init__(self):
    self.score_step = jit_score_step(self.objective, self.shardings, self.mesh)
    self.keys = predict_keys(self.objective)

  def score(self, batch: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """Replicated ``{"logit", "index"}`` of one host batch (``INDEX_KEY`` and ``valid`` set)."""
    return score_batch(self.score_step, self.state, batch, self.keys, self.mesh)


def load(config: ml_collections.ConfigDict, checkpoint: str, step: Optional[int],
         example: Mapping[str, np.ndarray], mesh=None) -> Detector:
  """Restores ``params``/``batch_stats`` (and EMA copies), never the optimizer state, into the
  trainer's shardings; ``example`` is any host batch with the eval fields (shapes only)."""
  directory, step = find(config, checkpoint, step)
  objective = objectives_lib.build(config)
  mesh = mesh if mesh is not None else sharding_lib.make_mesh(config.mesh)
  abstract, shardings = train_state_lib.abstract_inference_state(
      objective, train_state_lib.abstract_batch(example, objective.eval_keys, 1), mesh,
      config.mesh)
  state = checkpointing.restore_inference(directory, step, abstract)
  logging.info("restored %s step %d (%s parameters)", directory, step,
               f"{train_state_lib.count_params(state.params):,}")
  return Detector(config, objective, state, shardings, mesh, directory, step)

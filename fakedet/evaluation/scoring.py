"""Per-clip scores of a trained detector on every evaluation clip, correct on any number of hosts.

Three steps, each a small function:
1. ``restore`` builds the state shape-first from the objective (no optimizer needed) and reads
   only ``step``/``params``/``batch_stats`` (+ the EMA copy for EMA objectives) from the
   trainer's Orbax checkpoint, sharded on the mesh with the trainer's parameter rules.
2. ``host_batches`` tags each row of this host's padded eval batches with the clip's position in
   the split's deterministic clip list (``pipeline.eval_clips``, the same on every host) and pads
   the stream so every host runs the same number of batches (jitted collectives need that).
3. ``score_clips`` runs the jitted ``objective.predict`` on global batches whose logits and
   positions come back replicated, so every host holds every clip's score: only numbers cross
   hosts, and each host looks the strings (video id, manipulation) up from the position.
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import re
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fakedet import sharding as sharding_lib
from fakedet import train_state as train_state_lib
from fakedet.evaluation.report import ClipScores
from fakedet.objectives import Objective

INDEX_KEY = "eval_index"  # Batch field: the clip's position in the split's clip list; -1 = pad.


# ----------------------------------------------------------------------------- checkpoints
def has_predict(objective) -> bool:
  """Whether an objective (class or instance) overrides ``predict``, i.e. is a detector."""
  cls = objective if isinstance(objective, type) else type(objective)
  return cls.predict is not Objective.predict


def require_predict(objective, name: str) -> None:
  """Fails before anything is restored when the objective (class or instance) cannot score."""
  if not has_predict(objective):
    from fakedet import objectives as objectives_lib
    detectors = [n for n in objectives_lib.OBJECTIVES.names()
                 if has_predict(objectives_lib.OBJECTIVES.get(n))]
    raise ValueError(f"config.objective.name={name!r} is not a detector: its objective has no "
                     f"predict(state, batch) to score clips with. Evaluate a config whose "
                     f"objective is one of: {', '.join(detectors) or '(none)'}")


def checkpoint_location(path: str) -> Tuple[str, Optional[int]]:
  """(Orbax manager directory, step or None) from a workdir, its ``checkpoints/`` folder or one
  step folder inside it (``.../checkpoints/1200``) — whichever the user has at hand."""
  if not path:
    raise FileNotFoundError("--checkpoint is empty: give a training workdir or its checkpoints/ "
                            "folder")
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint path {path} does not exist (expected a training workdir, "
                            f"its checkpoints/ folder or one step folder)")
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return os.path.join(path, "checkpoints"), None
  name = os.path.basename(path)
  if re.fullmatch(r"\d+", name) and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(name)
  return path, None


def _manager(directory: str):
  """A manager that can read the ``state`` item's metadata and restore it (the grain iterator
  item ``data`` is never read here)."""
  import grain
  import orbax.checkpoint as ocp
  return ocp.CheckpointManager(directory, item_handlers={
      "state": ocp.PyTreeCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()})


def resolve_step(directory: str, step: Optional[int]) -> int:
  """The requested step (None or negative: the latest) after checking it exists."""
  manager = _manager(directory)
  steps = sorted(manager.all_steps())
  manager.close()
  if not steps:
    raise FileNotFoundError(f"no checkpoint under {directory}: expected step folders written by "
                            f"the trainer (workdir/checkpoints/<step>)")
  if step is None or step < 0:
    return steps[-1]
  if step not in steps:
    raise FileNotFoundError(f"step {step} is not in {directory}; it has steps {steps}")
  return step


def abstract_batch(batch: Mapping[str, np.ndarray], keys: Sequence[str],
                   process_count: int) -> Dict[str, jax.ShapeDtypeStruct]:
  """Global-batch shapes of ``keys`` from one host batch (for shape-first init)."""
  return {k: jax.ShapeDtypeStruct((np.shape(batch[k])[0] * process_count,)
                                  + np.shape(batch[k])[1:], np.asarray(batch[k]).dtype)
          for k in keys}


def abstract_state(objective: Objective, example: Mapping[str, jax.ShapeDtypeStruct], mesh,
                   param_rules=()) -> Tuple[train_state_lib.TrainState, Any]:
  """(abstract TrainState without optimizer state, its shardings) — the trainer's layout, so
  ``config.mesh.param_rules`` match the same paths."""
  def init(rng, batch):
    variables = objective.init(rng, batch)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    ema = objective.uses_ema
    return train_state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, opt_state={},
        ema_params=params if ema else {}, ema_batch_stats=batch_stats if ema else {})

  shapes = jax.eval_shape(init, jax.random.key(0), dict(example))
  shardings = sharding_lib.param_shardings(shapes, mesh, param_rules)
  return train_state_lib.abstract_with_shardings(shapes, shardings), shardings


def _key_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def mismatches(saved: Any, target: Any) -> list:
  """Target leaves the saved tree (nested dicts of array metadata) lacks or holds with another
  shape, as readable strings; checked before restoring so the error names the parameter."""
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]:
    node = saved
    for k in path:
      key = getattr(k, "key", getattr(k, "idx", None))
      node = node.get(key) if isinstance(node, Mapping) else None
      if node is None:
        break
    if node is None:
      out.append(f"{_key_str(path)} (missing)")
    elif tuple(node.shape) != tuple(leaf.shape):
      out.append(f"{_key_str(path)} (saved {tuple(node.shape)}, config {tuple(leaf.shape)})")
  return out


def restore(directory: str, step: int, abstract: train_state_lib.TrainState,
            ) -> train_state_lib.TrainState:
  """Reads only what scoring needs (never the optimizer state) into the abstract's shardings."""
  import orbax.checkpoint as ocp
  target = {k: getattr(abstract, k) for k in ("step", "params", "batch_stats", "ema_params",
                                              "ema_batch_stats")
            if jax.tree.leaves(getattr(abstract, k))}
  manager = _manager(directory)
  try:
    saved = manager.item_metadata(step)["state"]
    bad = mismatches(getattr(saved, "tree", saved), target)
    if bad:
      raise ValueError(f"checkpoint {directory}/{step} does not fit config.model: {len(bad)} "
                       f"arrays differ, e.g. {bad[:3]}; was it trained with this config.model?")
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))["state"]
  finally:
    manager.close()
  return abstract.replace(**restored)


# ----------------------------------------------------------------------------- clip list
def eval_items(icfg: Mapping[str, Any]):
  """(source, [(record index, clip start)]) in the order ``pipeline.eval_dataset`` reads them."""
  from input_pipeline import pipeline, sources
  ecfg = icfg["eval"]
  source = sources.ClipSource(sources.resolve_data_dir(ecfg["data_dir"]), ecfg["split"])
  selection = sources.Selection(tuple(ecfg["labels"]), tuple(ecfg["manipulations"]))
  items = pipeline.eval_clips(source, icfg["clip_frames"], ecfg["clips_per_video"],
                              icfg["skip_bad_records"], selection)
  return source, items


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
  from input_pipeline import pipeline
  pc = jax.process_count() if process_count is None else process_count
  host_batch = pipeline.per_host(icfg["eval"]["batch_size"], pc, "input.eval.batch_size")
  total = batches_per_host(num_items, host_batch, pc)
  batches = pipeline.eval_dataset(icfg, process_index=process_index, process_count=process_count)
  yield from padded((_tag(b, lookup) for b in batches), total,
                    f"evaluation clip ({num_items} clips for {pc} hosts)")


# ----------------------------------------------------------------------------- scoring
def _score_step(state, batch, *, objective):
  logits = objective.predict(state, batch).astype(jnp.float32)
  return {"logit": logits, "index": jnp.where(batch["valid"], batch[INDEX_KEY], -1)}


def jit_score_step(objective: Objective, state_shardings: Any, mesh):
  """``objective.predict`` jitted with the trainer's shardings in and REPLICATED outputs: every
  host receives the whole global batch's logits and clip positions (a few bytes per clip)."""
  return jax.jit(functools.partial(_score_step, objective=objective),
                 in_shardings=(state_shardings, sharding_lib.batch_sharding(mesh)),
                 out_shardings=sharding_lib.replicated(mesh))


def predict_keys(objective: Objective) -> Tuple[str, ...]:
  """Numeric batch fields sent to devices: what the objective evaluates on, plus the mask and the
  clip position."""
  return tuple(dict.fromkeys(tuple(objective.eval_keys) + ("valid", INDEX_KEY)))


def collect(outputs: Sequence[Mapping[str, np.ndarray]], meta: Mapping[str, Any]) -> ClipScores:
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
                    clip_starts=meta["clip_starts"][index],
                    missing=len(meta["labels"]) - len(index))


def score_clips(icfg: ml_collections.ConfigDict, objective: Objective, state: Any, mesh,
                score_step, log_every: int = 50) -> ClipScores:
  """Every eval clip's fake logit (all hosts get all clips), with its video/track/label."""
  from fakedet.trainers.train import device_batch
  source, items = eval_items(icfg)
  meta = item_metadata(source.index, items)
  lookup = position_lookup(meta)
  keys = predict_keys(objective)
  outputs = []
  for i, batch in enumerate(host_batches(icfg, lookup, len(items))):
    outputs.append(jax.device_get(score_step(state, device_batch(batch, keys, mesh))))
    if log_every and (i + 1) % log_every == 0:
      logging.info("scored %d batches", i + 1)
  scores = collect(outputs, meta)
  if scores.missing:
    logging.warning("%d of %d evaluation clips were not scored (skipped bad records)",
                    scores.missing, len(items))
  return scores


class Scorer:
  """A restored detector bound to its mesh and jitted score step, reused across protocols (the
  robustness sweep re-scores the same model 36 times with one compilation)."""

  def __init__(self, config: ml_collections.ConfigDict, checkpoint: str,
               step: Optional[int] = None, mesh=None):
    from fakedet import objectives as objectives_lib
    from input_pipeline import pipeline
    self.config = config
    self.objective = objectives_lib.get(config.objective.name)(config)
    require_predict(self.objective, config.objective.name)
    self.directory, path_step = checkpoint_location(checkpoint)
    self.step = resolve_step(self.directory, step if step is not None else path_step)
    self.mesh = mesh if mesh is not None else sharding_lib.make_mesh(config.mesh)
    example = next(iter(pipeline.eval_dataset(config.input)))
    abstract, shardings = abstract_state(
        self.objective, abstract_batch(example, self.objective.eval_keys, jax.process_count()),
        self.mesh, config.mesh.param_rules)
    self.state = restore(self.directory, self.step, abstract)
    self.score_step = jit_score_step(self.objective, shardings, self.mesh)
    logging.info("restored %s step %d (%s parameters)", self.directory, self.step,
                 f"{train_state_lib.count_params(self.state.params):,}")

  def __call__(self, icfg: Optional[ml_collections.ConfigDict] = None) -> ClipScores:
    """Scores the eval split of ``icfg`` (default: the config's input section)."""
    return score_clips(self.config.input if icfg is None else icfg, self.objective, self.state,
                       self.mesh, self.score_step)

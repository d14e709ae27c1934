"""Every checkpoint read and write: locate, resolve steps, save/restore, best-state, warm starts.

Layout of a workdir (what the trainer writes and every reader expects)::

  <workdir>/checkpoints/<step>/{state,data,selection}   train state, grain iterator, and the
                                              model-selection record as of that step
  <workdir>/best/checkpoints/<step>/state     model selection (``BestCheckpoint``)
  <workdir>/best/best.json                    a readable copy of the record of the newest
                                              checkpoint (metric, best value and step, stale count)

Writers: ``Checkpointer`` saves the whole train state (params, batch stats, optimizer state, EMA
teacher, step) together with the input iterator position, asynchronously, every
``every_steps`` steps, keeping the newest ``keep``; restoring both means a resumed run continues
with exactly the batches the uninterrupted run would have seen. A save interrupted by a kill
leaves only a temporary directory, which the manager ignores on restart. SIGTERM (TPU/GCP
preemption) sets a flag that the training loop polls: it saves and exits cleanly.

Readers: ``locate`` + ``resolve_step`` turn whatever path the user has at hand into (manager
directory, step); ``restore_inference`` reads only what scoring needs (never the optimizer
state) into given shardings, after checking the arrays fit the config's model;
``load_tree`` reads a whole saved state as host arrays (warm starts graft sub-trees of it).
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
from typing import Any, Dict, List, Mapping, Optional, Tuple

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

CHECKPOINTS = "checkpoints"  # Sub-folder of a workdir holding the step folders.
_INFERENCE_KEYS = ("step", "params", "batch_stats", "ema_params", "ema_batch_stats")


def manager_path(path: str) -> epath.Path:
  """An Orbax-ready directory: absolute for local paths (Orbax requires it), a cloud URL
  (``gs://...``) as given."""
  return epath.Path(path if "://" in path else os.path.abspath(path))


def _reader(directory: epath.Path) -> ocp.CheckpointManager:
  """A manager that can read the ``state`` item's metadata and restore it (the grain iterator
  item ``data`` is registered so the folder layout is understood, but is never read)."""
  return ocp.CheckpointManager(directory, item_handlers={
      "state": ocp.PyTreeCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()})


# ----------------------------------------------------------------------------- locating
def locate(path: str) -> Tuple[str, Optional[int]]:
  """(Orbax manager directory, step or None) from a workdir, its ``checkpoints/`` folder or one
  step folder inside it (``.../checkpoints/1200``) — whichever the user has at hand."""
  if not path:
    raise FileNotFoundError("the checkpoint path is empty: give a training workdir or its "
                            "checkpoints/ folder")
  p = manager_path(path)
  if not p.is_dir():
    raise FileNotFoundError(f"checkpoint path {p} does not exist (expected a training workdir, "
                            f"its checkpoints/ folder or one step folder)")
  if (p / CHECKPOINTS).is_dir():
    return str(p / CHECKPOINTS), None
  if re.fullmatch(r"\d+", p.name) and (p / "state").is_dir():
    return str(p.parent), int(p.name)
  return str(p), None


def resolve_step(directory: str, step: Optional[int]) -> int:
  """The requested step (None or negative: the latest) after checking it exists."""
  manager = _reader(manager_path(directory))
  steps = sorted(manager.all_steps())
  manager.close()
  if not steps:
    raise FileNotFoundError(f"no checkpoint under {directory}: expected step folders written by "
                            f"the trainer (workdir/{CHECKPOINTS}/<step>)")
  if step is None or step < 0:
    return steps[-1]
  if step not in steps:
    raise FileNotFoundError(f"step {step} is not in {directory}; it has steps {steps}")
  return step


def find(path: str, step: Optional[int] = None) -> Tuple[str, int]:
  """``locate`` then ``resolve_step``: (manager directory, existing step). An explicit ``step``
  (>= 0) wins over a step folder in the path."""
  directory, path_step = locate(path)
  return directory, resolve_step(directory, step if step is not None and step >= 0 else path_step)


# ----------------------------------------------------------------------------- reading
def _key_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def mismatches(saved: Any, target: Any) -> List[str]:
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


def restore_inference(directory: str, step: int, abstract: Any) -> Any:
  """``abstract`` (a TrainState of ShapeDtypeStructs with shardings, no optimizer state) filled
  with the checkpoint's step, params, batch stats and EMA copies — never the optimizer state."""
  target = {k: getattr(abstract, k) for k in _INFERENCE_KEYS
            if jax.tree.leaves(getattr(abstract, k))}
  manager = _reader(manager_path(directory))
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


def load_tree(workdir: str, step: int = -1, what: str = "init.workdir") -> Dict[str, Any]:
  """The whole saved train state of ``workdir`` (or of any path ``locate`` accepts) as nested
  dicts of host arrays; ``what`` names the config key in errors."""
  try:
    directory, step = find(workdir, step)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{what}={workdir!r}: {e}") from None
  manager = _reader(manager_path(directory))
  try:
    # As numpy, never onto the devices that wrote it: a checkpoint from a 4-host job has no
    # sharding that this process could reproduce (orbax refuses to guess one).
    tree = manager.item_metadata(step)["state"].tree
    is_leaf = lambda x: hasattr(x, "shape")
    host = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree,
                        is_leaf=is_leaf)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(restore_args=host)))
  finally:
    manager.close()
  return jax.tree.map(np.asarray, restored["state"])


# ----------------------------------------------------------------------------- training
class Checkpointer:
  """Save/restore (train state, data iterator) of one run, and the preemption flag."""

  def __init__(self, workdir: str, every_steps: int, keep: int, async_save: bool = True):
    self.every_steps = every_steps
    self.manager = ocp.CheckpointManager(
        manager_path(workdir) / CHECKPOINTS,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save),
        item_names=("state", "data", "selection"))
    self._stop_requested = False
    self.input_restored = True  # False after a restore from another process count.

  def install_sigterm_handler(self):
    def handler(signum, frame):
      del frame
      logging.warning("received signal %d: will save a checkpoint and stop", signum)
      self._stop_requested = True
    signal.signal(signal.SIGTERM, handler)

  def should_stop(self, step: int, every: int = 1) -> bool:
    """True on every host if any host got SIGTERM or orbax saw a preemption notice. With several
    hosts they agree (a collective) only every ``every`` steps, so the loop does not wait on the
    other hosts at each step; between those steps a SIGTERM waits its turn."""
    stop = self._stop_requested or self.manager.reached_preemption(step)
    if jax.process_count() > 1:
      if step % every:
        return False
      stop = bool(np.any(multihost_utils.process_allgather(np.array(stop))))
    return stop

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iter: Any, force: bool = False,
           selection: Optional[Mapping[str, Any]] = None) -> bool:
    """Saves the state, the iterator position and the model-selection record (``selection``),
    together: a resumed run continues model selection exactly where this step left it."""
    if not force and step % self.every_steps:
      return False
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iter),
        selection=ocp.args.JsonSave(dict(selection or {}))), force=force)

  def restore(self, abstract_state: Any, data_iter: Any,
              step: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
    """(state restored into ``abstract_state``, the selection record saved with it); sets the
    iterator when the checkpoint holds its state for this process count. A checkpoint written
    by another number of processes (4 hosts, resumed on 2) holds none: ``input_restored`` is
    then False and the caller starts its input at global batch ``step`` (the pipeline's global
    batches do not depend on the process count). Orbax reshards the state itself."""
    step = self.latest_step() if step is None else step
    self.input_restored = self.has_input_state(step)
    items = dict(state=ocp.args.StandardRestore(abstract_state),
                 selection=ocp.args.JsonRestore())
    if self.input_restored:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], dict(restored["selection"] or {})

  def has_input_state(self, step: int) -> bool:
    """Whether checkpoint ``step`` holds this process's iterator state for this process count
    (grain writes ``process_<i>-of-<n>.json`` per process)."""
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    return (epath.Path(self.manager.directory) / str(step) / "data" / name).exists()

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


class BestCheckpoint:
  """Model selection: keeps the state with the best value of one evaluation metric.

  The state goes to ``<workdir>/best/checkpoints/<step>`` (a workdir-shaped folder, so
  ``fakedet.evaluate --checkpoint=<workdir>/best`` scores it). The record — the metric, its
  best value and step, and how many evaluations since then did not improve it, which is what
  early stopping counts — is saved inside every training checkpoint (``Checkpointer.save``)
  and restored with it, so a run killed between an evaluation and the next checkpoint does not
  count that evaluation twice when it resumes; ``best/best.json`` mirrors the newest one.
  """

  def __init__(self, workdir: str, metric: str, mode: str = "max", patience: int = 0,
               record: Optional[Mapping[str, Any]] = None):
    if mode not in ("max", "min"):
      raise ValueError(f"selection.mode={mode!r}; allowed: max, min")
    self.metric, self.mode, self.patience = metric, mode, patience
    self.dir = manager_path(workdir) / "best"
    self.manager = ocp.CheckpointManager(
        self.dir / CHECKPOINTS,
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                             enable_async_checkpointing=False),
        item_names=("state",))
    self.record = {"metric": metric, "mode": mode, "value": None, "step": None, "stale": 0}
    if record:  # From the checkpoint a run resumes from.
      self.record.update(record)

  def _better(self, value: float) -> bool:
    best = self.record["value"]
    return best is None or (value > best if self.mode == "max" else value < best)

  def update(self, step: int, state: Any, metrics: Mapping[str, float]) -> bool:
    """Saves ``state`` if ``metrics[metric]`` improved; returns whether it did."""
    if self.metric not in metrics:
      raise KeyError(f"selection.metric={self.metric!r} is not an evaluation metric of this "
                     f"run; it has {sorted(metrics)}")
    value = float(metrics[self.metric])
    improved = self._better(value)
    if improved:
      if step in self.manager.all_steps():  # Saved by a run killed before its checkpoint:
        self.manager.delete(step)  # the resumed run recomputed it (bit-exact); replace it.
      self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                        force=True)
      self.manager.wait_until_finished()
      self.record.update(value=value, step=step, stale=0)
    else:
      self.record["stale"] += 1
    return improved

  def write_record(self) -> None:
    """``best/best.json``: the record as saved with the newest checkpoint (process 0)."""
    if jax.process_index() == 0:
      (self.dir / "best.json").write_text(json.dumps(self.record, indent=1))

  @property
  def should_stop(self) -> bool:
    """Early stopping: ``patience`` evaluations in a row without improvement (0 = never)."""
    return self.patience > 0 and self.record["stale"] >= self.patience

  def close(self):
    self.manager.close()

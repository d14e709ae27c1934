"""Orbax checkpoints of the whole train state plus the input iterator position.

One ``CheckpointManager`` item ``state`` (params, batch stats, optimizer state, EMA teacher,
step) and one item ``data`` (grain iterator state) are saved together, asynchronously, every
``every_steps`` steps, keeping the newest ``keep``. Restoring both means a resumed run continues
with exactly the batches the uninterrupted run would have seen. A save interrupted by a kill
leaves only a temporary directory, which the manager ignores on restart.

SIGTERM (TPU/GCP preemption) sets a flag that the training loop polls: it saves and exits cleanly.
"""
from __future__ import annotations

import json
import logging
import os
import signal
from typing import Any, Mapping, Optional

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Thin wrapper: save/restore (state, data iterator) and the preemption flag."""

  def __init__(self, workdir: str, every_steps: int, keep: int, async_save: bool = True):
    import grain
    self._grain = grain
    self.every_steps = every_steps
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save),
        item_names=("state", "data"))
    self._stop_requested = False

  # ------------------------------------------------------------------ preemption
  def install_sigterm_handler(self):
    def handler(signum, frame):
      del frame
      logging.warning("received signal %d: will save a checkpoint and stop", signum)
      self._stop_requested = True
    signal.signal(signal.SIGTERM, handler)

  def should_stop(self, step: int) -> bool:
    """True on every host if any host got SIGTERM or orbax saw a preemption notice."""
    stop = self._stop_requested or self.manager.reached_preemption(step)
    if jax.process_count() > 1:
      import numpy as np
      from jax.experimental import multihost_utils
      stop = bool(np.any(multihost_utils.process_allgather(np.array(stop))))
    return stop

  # ------------------------------------------------------------------ save / restore
  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iter: Any, force: bool = False) -> bool:
    if not force and step % self.every_steps:
      return False
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=self._grain.checkpoint.CheckpointSave(data_iter)), force=force)

  def restore(self, abstract_state: Any, data_iter: Any, step: Optional[int] = None) -> Any:
    """Restores into ``abstract_state`` (ShapeDtypeStructs with shardings); sets the iterator."""
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=self._grain.checkpoint.CheckpointRestore(data_iter)))
    return restored["state"]

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


class BestCheckpoint:
  """Model selection: keeps the state with the best value of one evaluation metric.

  The state goes to ``<workdir>/best/checkpoints/<step>`` (a workdir-shaped folder, so
  ``fakedet.evaluate --checkpoint=<workdir>/best`` scores it) and ``best/best.json`` records
  the metric, its best value and step, and how many evaluations since then did not improve
  it — which is what early stopping counts, and what a resumed run reads back.
  """

  def __init__(self, workdir: str, metric: str, mode: str = "max", patience: int = 0):
    if mode not in ("max", "min"):
      raise ValueError(f"selection.mode={mode!r}; allowed: max, min")
    self.metric, self.mode, self.patience = metric, mode, patience
    self.dir = os.path.join(workdir, "best")
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(self.dir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                             enable_async_checkpointing=False),
        item_names=("state",))
    self.record = {"metric": metric, "mode": mode, "value": None, "step": None, "stale": 0}
    path = os.path.join(self.dir, "best.json")
    if os.path.exists(path):
      with open(path) as f:
        self.record.update(json.load(f))

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
      self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                        force=True)
      self.manager.wait_until_finished()
      self.record.update(value=value, step=step, stale=0)
    else:
      self.record["stale"] += 1
    if jax.process_index() == 0:
      with open(os.path.join(self.dir, "best.json"), "w") as f:
        json.dump(self.record, f, indent=1)
    return improved

  @property
  def should_stop(self) -> bool:
    """Early stopping: ``patience`` evaluations in a row without improvement (0 = never)."""
    return self.patience > 0 and self.record["stale"] >= self.patience

  def close(self):
    self.manager.close()

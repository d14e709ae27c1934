"""``train``: the one training loop every method shares (objective chosen by config).

Pure ``train_step(state, batch, rng) -> (state, metrics)`` jitted once with explicit shardings
and a donated state; RNG folded by step so results do not depend on the device count; EMA
teacher update inside the step; Orbax checkpoints with the input iterator position; clu writers
and ReportProgress; periodic evaluation; a non-finite loss stops the run before it can be saved.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import re
import time
from typing import Any, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import periodic_actions

from fakedet import checkpointing
from fakedet import config_check
from fakedet import objectives as objectives_lib
from fakedet import optim
from fakedet import sharding as sharding_lib
from fakedet import train_state as train_state_lib
from fakedet import warm_start
from fakedet import workdir as workdir_lib
from fakedet import writers
from fakedet.evaluation import periodic
from fakedet.trainers import TRAINERS, Trainer
from input_pipeline import config as input_config
from input_pipeline import pipeline, sources


class NonFiniteLossError(FloatingPointError):
  pass


class DivergenceError(FloatingPointError):
  pass


class DivergenceGuard:
  """Watches the logged ``train/loss`` and ``train/l2_params``: a value above ``factor`` × the
  median of its last ``window`` logged values means the run is blowing up without (yet) going
  non-finite — e.g. an lr 1e6 detector reaching loss 1e13 — which the non-finite check alone
  would let run to the end and exit 0. The parameter norm's history starts with the initial
  parameters' norm (``seed``) and the loss's with step 1's (always logged), so a run that blows
  up before its first regular log step is still caught."""

  KEYS = ("train/loss", "train/l2_params")

  def __init__(self, factor: float, window: int):
    self.factor, self.window = factor, window
    self.history = {k: collections.deque(maxlen=window) for k in self.KEYS}
    self.warnings = []  # Every message, for the run's final summary.

  def seed(self, key: str, value: float) -> None:
    self.history[key].append(abs(float(value)))

  def check(self, step: int, scalars: Mapping[str, float]) -> Optional[str]:
    """A message when a watched value diverged at this logged step, else None."""
    message = None
    for key, past in self.history.items():
      if key not in scalars:
        continue
      value = abs(float(scalars[key]))
      if self.factor and past:
        median = float(np.median(past))
        if median > 0 and value > self.factor * median and message is None:
          message = (f"{key}={value:.4g} at step {step} is more than {self.factor:g}x its median "
                     f"{median:.4g} over the last {len(past)} logged values")
      past.append(value)
    if message:
      self.warnings.append(message)
    return message


def reference_config() -> ml_collections.ConfigDict:
  """Every top-level key the shared trainer reads, with defaults (objective/model are open)."""
  return ml_collections.ConfigDict(dict(
      trainer="train", seed=0,
      # Mixed precision: "bfloat16" = bf16 compute, float32 parameters, optimizer state and
      # losses (objectives.with_precision); "float32" everywhere by default.
      precision="float32",
      total_steps=0,  # > 0 wins; else num_epochs × (records of the first source / batch).
      num_epochs=0.0,
      warmup_epochs=0.0,  # > 0 overrides optim.warmup_steps (converted with the epoch size).
      log_every=50, eval_every=0, eval_batches=0,  # eval_every 0 = only at the end.
      checkpoint=ml_collections.ConfigDict(dict(
          every_steps=1000, keep=3, async_save=True,
          # Multi-host: how often the hosts agree on a SIGTERM seen by any of them (a collective;
          # every step would block asynchronous dispatch). Single-host runs check every step.
          preemption_check_every=10)),
      # clu's profiler: a trace of num_steps steps from first_step, in <workdir>/plugins/profile
      # for TensorBoard's profile tab.
      profile=ml_collections.ConfigDict(dict(enabled=False, first_step=10, num_steps=5)),
      # An optional Weights & Biases writer beside TensorBoard and metrics.jsonl (pip install
      # wandb; mode "offline" writes the run to the workdir for a later `wandb sync`).
      wandb=ml_collections.ConfigDict(dict(enabled=False, project="fakedet", entity="",
                                           name="", mode="online")),
      # Divergence guard, at every logged step: train/loss or train/l2_params above
      # divergence_factor × its median over the last `window` logged values warns (and with
      # stop=True ends the run, naming the last checkpoint); 0 = off. Non-finite losses always
      # stop the run.
      guard=ml_collections.ConfigDict(dict(divergence_factor=10.0, window=20, stop=False)),
      ema=ml_collections.ConfigDict(dict(momentum=0.999, reference_batch=256,
                                         scale_with_batch=True, schedule="constant")),
      mesh=sharding_lib.mesh_config(),
      init=warm_start.init_config(),  # Start sub-trees from another run's checkpoint.
      selection=selection_config(),
      optim=optim.default_config(),
      objective=ml_collections.ConfigDict(dict(name="")),
      model=ml_collections.ConfigDict(),
      input=input_config.input_config()))


def selection_config(metric: str = "", mode: str = "max", patience: int = 0,
                     plateau_epochs: int = 0) -> ml_collections.ConfigDict:
  """Model selection on the periodic evaluations: keep the best state in <workdir>/best by
  ``metric`` (e.g. "eval/overall/video_auc" for a detector; "" = off), and stop after
  ``patience`` evaluations without improvement (0 = never). Independently, ``plateau_epochs``
  > 0 stops the run once the epoch-mean training loss has not fallen below its best for that
  many epochs (``LossPlateau``; the AV contrastive transformer's pre-training rule, 3)."""
  return ml_collections.ConfigDict(dict(metric=metric, mode=mode, patience=patience,
                                        plateau_epochs=plateau_epochs))


@jax.jit
def _accumulate(total: jax.Array, loss: jax.Array) -> jax.Array:
  return total + loss.astype(jnp.float32)


class LossPlateau:
  """Stops a run whose training loss stopped falling: the mean loss of each epoch (steps
  ``k·epoch_steps + 1 … (k+1)·epoch_steps``) is compared with the best epoch so far, and
  ``patience`` epochs in a row without a lower mean end the run (0 = never).

  The sum runs on device (one host read per epoch). The record — best mean, epochs without
  improvement, and the partial sum of the epoch in progress — is saved inside every training
  checkpoint beside model selection's (key ``KEY``), so a resumed run counts exactly as an
  uninterrupted one.
  """

  KEY = "train_loss_plateau"

  def __init__(self, patience: int, epoch_steps: int, record: Optional[Mapping[str, Any]] = None):
    if epoch_steps < 1:
      raise ValueError(f"an epoch of {epoch_steps} steps: expected >= 1")
    self.patience, self.epoch_steps = patience, epoch_steps
    record = dict(record or {})
    self._sum = jnp.asarray(record.pop("partial_sum", 0.0), jnp.float32)
    self._steps = int(record.pop("partial_steps", 0))
    self.record = {"epoch": 0, "best": None, "best_epoch": None, "stale": 0}  # Closed epochs.
    self.record.update(record)

  def add(self, step: int, loss: jax.Array) -> Optional[float]:
    """Counts the loss of training step ``step`` (1-based); at an epoch's last step closes
    the epoch and returns its mean loss, else None."""
    self._sum = _accumulate(self._sum, loss)
    self._steps += 1
    if step % self.epoch_steps:
      return None
    mean = float(self._sum) / self._steps
    self._sum, self._steps = jnp.zeros((), jnp.float32), 0
    self.end_epoch(mean)
    return mean

  def end_epoch(self, mean: float) -> bool:
    """Records one epoch's mean loss; returns whether it is a new best (strictly lower)."""
    r = self.record
    r["epoch"] += 1
    improved = r["best"] is None or mean < r["best"]
    if improved:
      r.update(best=mean, best_epoch=r["epoch"], stale=0)
    else:
      r["stale"] += 1
    return improved

  def state(self) -> Dict[str, Any]:
    """The record to save with a checkpoint (reads the device sum)."""
    return dict(self.record, partial_sum=float(self._sum), partial_steps=self._steps)

  @property
  def should_stop(self) -> bool:
    return self.patience > 0 and self.record["stale"] >= self.patience


def check_batch_split(config: ml_collections.ConfigDict, mesh) -> None:
  """The training and evaluation batches split evenly over the mesh's batch devices."""
  sharding_lib.check_divisible(pipeline.global_batch_size(config.input), mesh,
                               "the training batch (sum of input.sources.*.batch_size)")
  sharding_lib.check_divisible(config.input.eval.batch_size, mesh, "input.eval.batch_size")


def check_selection(sel: ml_collections.ConfigDict, patterns) -> None:
  """``selection.metric`` must be a name this objective's periodic evaluation reports (a typo
  would otherwise surface at the first evaluation, possibly hours into a pod job)."""
  if sel.mode not in ("max", "min"):
    raise ValueError(f"selection.mode={sel.mode!r}; allowed: max, min")
  if sel.patience < 0:
    raise ValueError(f"selection.patience={sel.patience}: expected >= 0 (0 = never stop early)")
  if sel.get("plateau_epochs", 0) < 0:
    raise ValueError(f"selection.plateau_epochs={sel.plateau_epochs}: expected >= 0 (0 = never "
                     f"stop on the training loss)")
  if sel.metric and not any(re.fullmatch(p, sel.metric) for p in patterns):
    raise ValueError(f"selection.metric={sel.metric!r} is not reported by this objective's "
                     f"evaluation; its metric names match {list(patterns)}")


def check(config: ml_collections.ConfigDict) -> None:
  ref = reference_config()
  missing = sorted(set(ref) - set(config))
  if missing:
    raise KeyError(f"config lacks {missing}; the trainer reads every top-level key of "
                   "fakedet.trainers.train.reference_config() (start from its defaults, e.g. "
                   "config.selection = train.selection_config())")
  config_check.check_against(
      {k: v for k, v in config.items() if k not in ("objective", "model", "optim")}, ref,
      "config", open_keys=("config.input.sources",))
  config_check.check_input(config.input)
  config_check.check_ranges(config)
  objective_cls = objectives_lib.get(config.objective.name)
  objectives_lib.with_precision(config)  # An unknown precision fails here, before compiling.
  if hasattr(objective_cls, "check"):
    objective_cls.check(config)
  check_selection(config.selection, objectives_lib.metric_patterns(objective_cls))
  if config.total_steps <= 0 and config.num_epochs <= 0:
    raise ValueError("set config.total_steps or config.num_epochs to a positive value")
  optim_cfg = config.optim
  if optim_cfg.get("decay_epochs", 0.0) > 0:  # Steps per epoch are known once the data is open.
    optim_cfg = ml_collections.ConfigDict(optim_cfg.to_dict())
    optim_cfg.decay_steps = 1
  optim.make_optimizer(optim_cfg, max(1, config.total_steps))  # Validates names and fields.


def steps_per_epoch(config: ml_collections.ConfigDict) -> float:
  """Epoch = one pass over the FIRST source's selected records at its batch share (each
  record ``samples_per_record`` times)."""
  name = sorted(config.input.sources)[0]
  scfg = config.input.sources[name]
  source = pipeline.open_source(scfg, f"input.sources.{name}")
  n = len(sources.Selection.from_config(scfg).indices(source.index)) * scfg.samples_per_record
  return n / scfg.batch_size


def schedule_steps(config: ml_collections.ConfigDict):
  """(total steps, optim config with warm-up in steps) from the step- or epoch-based config."""
  optim_cfg = ml_collections.ConfigDict(config.optim.to_dict())
  epoch = None
  if config.total_steps > 0:
    steps = int(config.total_steps)
  else:
    epoch = steps_per_epoch(config)
    steps = max(1, int(math.ceil(config.num_epochs * epoch)))
  if config.warmup_epochs > 0:
    epoch = epoch or steps_per_epoch(config)
    optim_cfg.warmup_steps = int(round(config.warmup_epochs * epoch))
  if optim_cfg.get("decay_epochs", 0.0) > 0:
    epoch = epoch or steps_per_epoch(config)
    optim_cfg.decay_steps = max(1, int(round(optim_cfg.decay_epochs * epoch)))
  return steps, optim_cfg


def ema_momentum_fn(config: ml_collections.ConfigDict, batch_size: int, steps: int):
  base = config.ema.momentum
  if config.ema.scale_with_batch:
    base = optim.scale_momentum_for_batch(base, batch_size, config.ema.reference_batch)
  return lambda step: optim.ema_momentum(step, base, steps, config.ema.schedule)


def train_step(state: train_state_lib.TrainState, batch: Mapping[str, jax.Array], rng: jax.Array,
               *, objective, tx: optax.GradientTransformation, momentum_fn):
  rng = jax.random.fold_in(rng, state.step)
  grad_fn = jax.value_and_grad(objective.loss, has_aux=True)
  (loss, (metrics, updated)), grads = grad_fn(state.params, state, batch, rng)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new = dict(step=state.step + 1, params=params, opt_state=opt_state,
             batch_stats=updated.get("batch_stats", state.batch_stats))
  if objective.uses_ema:
    mu = momentum_fn(state.step)
    new["ema_params"] = optim.ema_update(state.ema_params, params, mu)
    new["ema_batch_stats"] = updated.get("ema_batch_stats", state.ema_batch_stats)
    metrics["ema_momentum"] = mu
  metrics.update(loss=loss, l2_grads=optax.global_norm(grads), l2_params=optax.global_norm(params),
                 l2_updates=optax.global_norm(updates))
  return state.replace(**new), metrics


def jit_train_step(objective, tx: optax.GradientTransformation, momentum_fn, shardings, mesh,
                   donate: bool = True):
  """``train_step`` jitted once with explicit shardings: state as ``shardings``, batch over the
  batch axes, rng and metrics replicated. ``donate=False`` keeps the input state alive (tests
  and benchmarks call the step repeatedly on the same state)."""
  return jax.jit(
      functools.partial(train_step, objective=objective, tx=tx, momentum_fn=momentum_fn),
      in_shardings=(shardings, sharding_lib.batch_sharding(mesh), sharding_lib.replicated(mesh)),
      out_shardings=(shardings, sharding_lib.replicated(mesh)),
      donate_argnums=(0,) if donate else ())


@jax.jit
def _track_finite(ok: jax.Array, first_bad: jax.Array, loss: jax.Array, step: jax.Array):
  """On device, so the loop never waits for a step's loss: (all finite so far, first step whose
  loss was not)."""
  finite = jnp.isfinite(loss)
  return ok & finite, jnp.where(ok & ~finite, step, first_bad)


def hparams(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """The whole config as flat ``a.b.c`` → scalar (TensorBoard's hparams take bool, number or
  text; tuples and None become their text)."""
  flat = {}
  def walk(node, prefix):
    for k, v in node.items():
      if isinstance(v, Mapping):
        walk(v, f"{prefix}{k}.")
      else:
        flat[f"{prefix}{k}"] = v if isinstance(v, (bool, int, float, str)) else repr(v)
  walk(config.to_dict(), "")
  return flat


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  mesh = sharding_lib.make_mesh(config.mesh)
  check_batch_split(config, mesh)
  objective = objectives_lib.build(config)
  steps, optim_cfg = schedule_steps(config)
  batch_size = pipeline.global_batch_size(config.input)
  skipped_before = pipeline.skipped_records()  # The count is per process; report this run's.
  ds = pipeline.train_dataset(config.input, config.seed)
  with contextlib.closing(iter(ds)) as first:
    example = sharding_lib.device_batch(next(first), objective.input_keys, mesh)  # Shapes only.
  tx = optim.make_optimizer(optim_cfg, steps)
  rng = jax.random.key(config.seed)
  init_rng, train_rng = jax.random.split(rng)
  state, shardings = train_state_lib.create(objective, tx, example, init_rng, mesh,
                                            config.mesh)
  logging.info("parameters: %s", f"{train_state_lib.count_params(state.params):,}")

  train_iter = iter(ds)
  ckpt = checkpointing.Checkpointer(workdir, config.checkpoint.every_steps,
                                    config.checkpoint.keep, config.checkpoint.async_save)
  selection_record = None
  if ckpt.latest_step() is not None:
    state, selection_record = ckpt.restore(
        train_state_lib.abstract_with_shardings(state, shardings), train_iter)
    logging.info("resumed from the checkpoint at step %d", int(state.step))
    if not ckpt.input_restored:  # Written by another process count: global batch = step.
      logging.info("the checkpoint holds no input state for %d process(es): starting the input "
                   "at global batch %d", jax.process_count(), int(state.step))
      train_iter.close()
      train_iter = iter(pipeline.train_dataset(config.input, config.seed,
                                               start_batch=int(state.step)))
  elif warm_start.sections(config.init):  # Only a fresh run warm-starts; a resumed one has
    state = warm_start.warm_start(state, config.init)  # its own weights.
    for source, _, rules in warm_start.sections(config.init):
      logging.info("warm-started %s from %s", [r[1] for r in rules], source)
  ckpt.install_sigterm_handler()
  step = int(state.step)
  workdir_lib.save_config(workdir, config, step)

  step_fn = jit_train_step(objective, tx, ema_momentum_fn(config, batch_size, steps), shardings,
                           mesh)
  evaluate = periodic.PeriodicEval(config, objective, shardings, mesh)
  sel = config.selection
  plateau_record = (selection_record or {}).pop(LossPlateau.KEY, None)
  best = (checkpointing.BestCheckpoint(workdir, sel.metric, sel.mode, sel.patience,
                                       selection_record) if sel.metric else None)
  plateau = (LossPlateau(sel.plateau_epochs, max(1, int(round(steps_per_epoch(config)))),
                         plateau_record) if sel.get("plateau_epochs", 0) > 0 else None)

  def selection_state():
    """What a checkpoint saves beside the state: model selection's and the plateau's records."""
    record = dict(best.record) if best is not None else {}
    if plateau is not None:
      record[LossPlateau.KEY] = plateau.state()
    return record
  writer = writers.create(workdir, just_logging=jax.process_index() > 0, wandb=config.wandb)
  hooks = [periodic_actions.ReportProgress(num_train_steps=steps, writer=writer,
                                           every_steps=config.log_every, every_secs=None)]
  if config.profile.enabled and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(
        logdir=workdir, num_profile_steps=config.profile.num_steps, profile_duration_ms=None,
        first_profile=config.profile.first_step, every_steps=None, every_secs=None))
  if step == 0:
    writer.write_hparams(hparams(config))

  ok, first_bad = jnp.asarray(True), jnp.asarray(-1, jnp.int32)

  def check_finite():
    """Raises before anything non-finite can be logged as good or saved: called at the steps
    that read metrics or write checkpoints, not every step."""
    if not bool(ok):
      ckpt.wait()
      raise NonFiniteLossError(
          f"the loss became non-finite at step {int(first_bad)}; stopping. The last good "
          f"checkpoint (step {ckpt.latest_step()}) is intact; lower optim.lr or check the data.")

  def run_eval(step):
    check_finite()
    metrics = evaluate(state)
    writer.write_scalars(step, metrics)
    if best is not None and metrics:
      best.update(step, state, metrics)
    return metrics

  guard = DivergenceGuard(config.guard.divergence_factor, config.guard.window)
  guard.seed("train/l2_params", optax.global_norm(state.params))
  last_good = step
  history = []
  lr_fns = optim.learning_rates(optim_cfg, steps)
  t0 = time.perf_counter()
  plateaued = lambda: plateau is not None and plateau.should_stop
  stop = False  # Set by a SIGTERM (any host's, on multi-host jobs).
  while step < steps and not (best is not None and best.should_stop) and not plateaued():
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      batch = sharding_lib.device_batch(next(train_iter), objective.input_keys, mesh)
      state, metrics = step_fn(state, batch, train_rng)
    step += 1
    ok, first_bad = _track_finite(ok, first_bad, metrics["loss"], step)
    for hook in hooks:
      hook(step)
    if step % config.log_every == 0 or step == steps or step == 1:  # Step 1: the guard's start.
      check_finite()
      scalars = {f"train/{k}": float(v) for k, v in jax.device_get(metrics).items()}
      # optax used schedule(step - 1) for the update that produced `step`.
      scalars.update({f"train/lr_{g}": float(fn(step - 1)) for g, fn in lr_fns.items()})
      writer.write_scalars(step, scalars)
      history.append({"step": step, **scalars})
      diverged = guard.check(step, scalars)
      if diverged and config.guard.stop:
        ckpt.wait()
        raise DivergenceError(f"{diverged}; stopping (guard.stop). The last checkpoint (step "
                              f"{ckpt.latest_step()}) was saved before this was seen.")
      if diverged:
        logging.warning("diverging? %s (set guard.stop=True to stop such runs)", diverged)
    epoch_loss = plateau.add(step, metrics["loss"]) if plateau is not None else None
    if epoch_loss is not None:
      check_finite()
      writer.write_scalars(step, {"train/epoch_loss": epoch_loss})
    if config.eval_every and step % config.eval_every == 0 and step < steps:
      run_eval(step)
    early = best is not None and best.should_stop
    if early:
      logging.warning("early stopping at step %d: %s has not improved for %d evaluations "
                      "(best %.4f at step %d)", step, sel.metric, sel.patience,
                      best.record["value"], best.record["step"])
    if plateaued():
      early = True
      logging.warning("stopping at step %d: the epoch-mean training loss has not fallen for %d "
                      "epochs (best %.4f in epoch %d)", step, sel.plateau_epochs,
                      plateau.record["best"], plateau.record["best_epoch"])
    stop = ckpt.should_stop(step, config.checkpoint.preemption_check_every)
    if stop or early or step % config.checkpoint.every_steps == 0 or step == steps:
      check_finite()
      ckpt.save(step, state, train_iter, force=True, selection=selection_state())
      if best is not None:
        best.write_record()
      last_good = step
    if stop:
      logging.warning("stopping at step %d after saving (preemption/SIGTERM)", step)
      break
  ckpt.close()
  train_iter.close()  # Stops read-ahead threads (remote reads would outlive the run).
  result = {"step": step, "last_checkpoint": last_good,
            "seconds": time.perf_counter() - t0, "train": history[-1] if history else {},
            "skipped_records": pipeline.skipped_records() - skipped_before,
            "divergence_warnings": len(guard.warnings)}
  if stop:
    result["stopped"] = "preempted"  # Saved on SIGTERM; `fakedet.main --preempted_exit_code`.
  if best is not None and best.should_stop:
    result["stopped"] = "early_stopping"  # Finished: the selection metric stopped improving.
  if plateau is not None:
    result["plateau"] = plateau.state()
    if plateaued():
      result["stopped"] = "plateau"  # Finished before total_steps by the stop rule.
  if step == steps or plateaued():  # A run the plateau stopped is finished: score it too.
    result["eval"] = run_eval(step)
  if best is not None:
    best.write_record()  # The final evaluation came after the final checkpoint.
    result["best"] = dict(best.record)
    best.close()
  writer.flush()
  writer.close()
  workdir_lib.save_result(workdir, result)
  logging.info("finished: %s", result)
  return result


TRAINERS.register("train")(Trainer(run=run, check=check, defaults=reference_config))

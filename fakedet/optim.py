"""Optimisers, learning-rate schedules and EMA-teacher helpers, built from ``config.optim``.

* ``scale_by_adamp`` / ``adamp``: AdamP (Heo et al., ICLR 2021), RealForensics' optimiser, which
  optax lacks. Adam's radial update component only inflates the norm of scale-invariant weights
  (those followed by a normalisation layer) and so shrinks their effective step; AdamP removes it.
* ``make_optimizer``: the optimiser named by the config, with per-parameter-group learning rates,
  schedules, weight decay and freezing (RealForensics keeps its predictors' LR fixed).
* ``ema_update`` / ``ema_momentum`` / ``scale_momentum_for_batch``: the BYOL teacher.

Config (``default_config()``; RealForensics stage 1 = AdamP, lr 7e-4, weight decay 1e-2)::

  optim.name            "adamp" | "adamw" (decoupled decay) | "adam" (decay as L2 on the grad,
                        like torch.optim.Adam) | "sgd" (heavy-ball momentum b1, decay as L2)
  optim.lr, weight_decay, b1, b2, eps
  optim.warmup_steps    linear warm-up from 0 (the first update, at step 0, uses LR 0)
  optim.schedule        "cosine" (to cosine_alpha · lr at total_steps; FakeOut's α = 0.95,
                        default 0) | "constant" (after warm-up) |
                        "trapezoid" (the warm-up mirrored at the end: linear to 0 over the
                        last warmup_steps; PCL's quarter up, quarter down) |
                        "exponential" (after warm-up, × decay_rate every decay_steps steps,
                        never below min_lr; the AV contrastive transformer's ×0.9 per epoch
                        down to 1e-4)
  optim.decay_rate, decay_steps, min_lr, decay_epochs
                        the "exponential" schedule's factor, period and floor; decay_epochs > 0
                        sets decay_steps from the trainer's epoch size (like warmup_epochs)
  optim.grad_clip_norm  global-norm clipping of the trainable gradients; 0 = off
  optim.groups.NAME     pattern (regex, full match on the '/'-joined parameter path) and any of
                        lr, weight_decay, schedule, warmup_steps, freeze; a missing key inherits
                        the top-level value. A group's lr does NOT follow optim.lr: set both.

A parameter joins the first group, in name order (ConfigDict sorts keys), whose pattern matches;
the rest form the group ``"default"``.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fakedet import config_check

OPTIMIZERS = ("adamp", "adamw", "adam", "sgd")
SCHEDULES = ("cosine", "constant", "trapezoid", "exponential")
EMA_SCHEDULES = ("constant", "cosine")
DEFAULT_GROUP = "default"

# Keys a group may override, with their types (for validation only; values come from the config).
_GROUP_KEYS = dict(pattern="", lr=0.0, weight_decay=0.0, schedule="", warmup_steps=0,
                   freeze=False)


# ----------------------------------------------------------------------------------------------
# AdamP.


class ScaleByAdamPState(NamedTuple):
  count: jax.Array  # Number of updates so far, int32 [].
  mu: optax.Updates  # First moment, like params.
  nu: optax.Updates  # Second moment, like params.


def _norm(x: jax.Array, axis) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))


def _abs_cosine(x: jax.Array, y: jax.Array, axis, eps: float) -> jax.Array:
  """|cos(x, y)| over ``axis`` (kept), norms clamped at ``eps`` like torch's cosine_similarity."""
  dot = jnp.sum(x * y, axis=axis, keepdims=True)
  return jnp.abs(dot / (jnp.maximum(_norm(x, axis), eps) * jnp.maximum(_norm(y, axis), eps)))


def _remove_radial(p: jax.Array, perturb: jax.Array, axis, eps: float) -> jax.Array:
  """``perturb`` minus its component along ``p`` (per slice over ``axis``)."""
  p_hat = p / (_norm(p, axis) + eps)
  return perturb - p_hat * jnp.sum(p_hat * perturb, axis=axis, keepdims=True)


def _project(p: jax.Array, g: jax.Array, perturb: jax.Array, delta: float, wd_ratio: float,
             eps: float) -> Tuple[jax.Array, jax.Array]:
  """AdamP's projection for one weight of rank > 1; returns (perturb, weight-decay ratio).

  A weight counts as scale-invariant when its gradient is (nearly) orthogonal to it: first per
  output channel (flax keeps it on the last axis: Dense [in, out], Conv [..., in, out]), then for
  the whole tensor. The threshold delta / sqrt(dim) is what a random direction would give.
  """
  channel_axes = tuple(range(p.ndim - 1))
  channel_dim = math.prod(p.shape[:-1])
  channel = jnp.max(_abs_cosine(g, p, channel_axes, eps)) < delta / math.sqrt(channel_dim)
  layer = jnp.max(_abs_cosine(g, p, None, eps)) < delta / math.sqrt(p.size)
  projected = jnp.where(channel, _remove_radial(p, perturb, channel_axes, eps),
                        jnp.where(layer, _remove_radial(p, perturb, None, eps), perturb))
  ratio = jnp.where(channel | layer, wd_ratio, 1.0)
  return projected, ratio


def scale_by_adamp(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   weight_decay: float = 0.0, delta: float = 0.1, wd_ratio: float = 0.1,
                   nesterov: bool = False) -> optax.GradientTransformation:
  """AdamP's update direction including its decoupled weight decay; multiply by -lr.

  For each parameter p: u = perturb / (1 - b1^t) + weight_decay * r * p, where perturb is Adam's
  m / (sqrt(v / (1 - b2^t)) + eps) with, for rank > 1 weights the gradient of which is nearly
  orthogonal to them, the component along p removed and r = wd_ratio (else r = 1). After
  ``optax.scale_by_learning_rate(lr)`` this equals the reference PyTorch step
  p <- p (1 - lr wd r) - lr / (1 - b1^t) perturb. ``eps`` also guards the norms, as there.
  ``update`` needs ``params``.
  """

  def init_fn(params):
    return ScaleByAdamPState(count=jnp.zeros([], jnp.int32),
                             mu=jax.tree.map(jnp.zeros_like, params),
                             nu=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_adamp needs params: call tx.update(grads, state, params)")
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)

    def leaf(g, m, v, p):
      denom = jnp.sqrt(v) / jnp.sqrt(bc2) + eps
      perturb = ((b1 * m + (1 - b1) * g) if nesterov else m) / denom
      ratio = 1.0
      if p.ndim > 1:
        perturb, ratio = _project(p, g, perturb, delta, wd_ratio, eps)
      return (perturb / bc1 + weight_decay * ratio * p).astype(g.dtype)

    new_updates = jax.tree.map(leaf, updates, mu, nu, params)
    return new_updates, ScaleByAdamPState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def adamp(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 0.0, delta: float = 0.1,
          wd_ratio: float = 0.1, nesterov: bool = False) -> optax.GradientTransformation:
  """AdamP with a fixed or scheduled learning rate (``update`` needs ``params``)."""
  return optax.chain(
      scale_by_adamp(b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, delta=delta,
                     wd_ratio=wd_ratio, nesterov=nesterov),
      optax.scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------------------------
# Config-driven optimiser with parameter groups.


def default_config() -> ml_collections.ConfigDict:
  """RealForensics stage 1: AdamP lr 7e-4, wd 1e-2, cosine decay, predictors at a fixed LR."""
  return ml_collections.ConfigDict(dict(
      name="adamp", lr=7e-4, weight_decay=1e-2, b1=0.9, b2=0.999, eps=1e-8,
      warmup_steps=0, schedule="cosine", grad_clip_norm=0.0,
      # "exponential" only (read with these defaults when a config predates them).
      decay_rate=0.9, decay_steps=0, min_lr=0.0, decay_epochs=0.0,
      # "cosine" only: the fraction of lr it ends at (optax's alpha).
      cosine_alpha=0.0,
      groups=dict(
          predictor=dict(pattern=r".*predictor.*", lr=7e-4, schedule="constant",
                         warmup_steps=0, freeze=False),
      )))


def _check_choice(value: str, allowed, field: str) -> None:
  if value not in allowed:
    raise ValueError(f"{field}={value!r} is not supported; allowed: {', '.join(allowed)}")


# Read with these defaults when a config predates them (e.g. an older run's config.json).
LATER_DEFAULTS = dict(decay_rate=0.9, decay_steps=0, min_lr=0.0, cosine_alpha=0.0)


def _group_settings(optim_cfg: ml_collections.ConfigDict) -> Dict[str, Dict[str, Any]]:
  """Validated, fully resolved settings per group, the default group first."""
  top = {k: optim_cfg[k] for k in ("lr", "weight_decay", "schedule", "warmup_steps")}
  top.update({k: optim_cfg.get(k, v) for k, v in LATER_DEFAULTS.items()})
  settings = {DEFAULT_GROUP: dict(top, pattern=None, freeze=False)}
  for name, group in optim_cfg.groups.items():
    where = f"optim.groups.{name}"
    if name == DEFAULT_GROUP:
      raise ValueError(f"{where}: {DEFAULT_GROUP!r} names the parameters no group matches; "
                       "choose another group name")
    config_check.check_against(group, _GROUP_KEYS, where)
    if "pattern" not in group:
      raise ValueError(f"{where} needs a 'pattern' (regex over '/'-joined parameter paths)")
    try:
      re.compile(group["pattern"])
    except re.error as e:
      raise ValueError(f"{where}.pattern={group['pattern']!r} is not a valid regex: {e}") from e
    settings[name] = dict(top, freeze=False)
    settings[name].update(group.items())
  return settings


def _check(optim_cfg: ml_collections.ConfigDict, total_steps: int) -> Dict[str, Dict[str, Any]]:
  """Fails on unknown keys or values before anything is traced; returns the group settings."""
  reference = default_config()
  del reference["groups"]
  config_check.check_against({k: v for k, v in optim_cfg.items() if k != "groups"}, reference,
                             "optim")
  _check_choice(optim_cfg.name, OPTIMIZERS, "optim.name")
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive, got {total_steps}")
  settings = _group_settings(optim_cfg)
  for name, s in settings.items():
    prefix = "optim" if name == DEFAULT_GROUP else f"optim.groups.{name}"
    _check_choice(s["schedule"], SCHEDULES, f"{prefix}.schedule")
    if not 0 <= s["warmup_steps"] <= total_steps:
      raise ValueError(f"{prefix}.warmup_steps={s['warmup_steps']} must lie in "
                       f"[0, total_steps={total_steps}]")
    if s["schedule"] == "trapezoid" and 2 * s["warmup_steps"] > total_steps:
      raise ValueError(f"{prefix}.schedule='trapezoid' ramps up and down over warmup_steps="
                       f"{s['warmup_steps']} each: at most half of total_steps={total_steps}")
    if s["schedule"] == "exponential" and not s["freeze"]:
      _check_exponential(s, prefix)
    if not 0 <= s["cosine_alpha"] <= 1:
      raise ValueError(f"optim.cosine_alpha={s['cosine_alpha']}: expected the fraction of lr "
                       "the cosine ends at, in [0, 1]")
  return settings


def _check_exponential(s: Dict[str, Any], prefix: str) -> None:
  if s["decay_steps"] < 1:
    raise ValueError(f"{prefix}.schedule='exponential' needs optim.decay_steps >= 1 (or "
                     f"config.optim.decay_epochs > 0 for the trainer to set it); got "
                     f"{s['decay_steps']}")
  if not 0 < s["decay_rate"] <= 1:
    raise ValueError(f"optim.decay_rate={s['decay_rate']}: expected a factor in (0, 1]")
  if not 0 <= s["min_lr"] <= s["lr"]:
    raise ValueError(f"optim.min_lr={s['min_lr']}: expected a floor in [0, {prefix}.lr="
                     f"{s['lr']}]")


def exponential_decay(lr: float, decay_rate: float, decay_steps: int, min_lr: float = 0.0,
                      warmup_steps: int = 0) -> optax.Schedule:
  """lr × decay_rate^⌊(step − warmup) / decay_steps⌋, floored at ``min_lr``, after an optional
  linear warm-up from 0: a staircase, so every step of one epoch (decay_steps = its length)
  uses the same rate. AV contrastive transformer §4.1: lr 0.01, × 0.9 per epoch, minimum 1e-4."""
  def decayed(step):  # join_schedules hands it the steps since the warm-up ended.
    k = jnp.floor(jnp.maximum(step, 0) / decay_steps)
    return jnp.maximum(lr * jnp.power(decay_rate, k), min_lr)

  if warmup_steps == 0:
    return decayed
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), decayed],
                              [warmup_steps])


def _schedule(s: Dict[str, Any], total_steps: int) -> optax.Schedule:
  if s["freeze"]:
    return optax.constant_schedule(0.0)
  lr, warmup = s["lr"], s["warmup_steps"]
  if s["schedule"] == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total_steps,
                                              end_value=s["cosine_alpha"] * lr)
  if s["schedule"] == "exponential":
    return exponential_decay(lr, s["decay_rate"], s["decay_steps"], s["min_lr"], warmup)
  if warmup == 0:  # optax.linear_schedule with 0 steps would stay at its init value, 0.
    return optax.constant_schedule(lr)
  if s["schedule"] == "trapezoid":
    # Reaches lr at step `warmup` and 0 at `total_steps` (the last step runs just above 0).
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr),
         optax.linear_schedule(lr, 0.0, warmup)], [warmup, total_steps - warmup])
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])


def learning_rates(optim_cfg: ml_collections.ConfigDict,
                   total_steps: int) -> Dict[str, optax.Schedule]:
  """Group name ("default" for the rest) -> LR schedule (step -> LR), for logging."""
  settings = _check(optim_cfg, total_steps)
  return {name: _schedule(s, total_steps) for name, s in settings.items()}


def _base_optimizer(optim_cfg, lr: optax.Schedule,
                    weight_decay: float) -> optax.GradientTransformation:
  b1, b2, eps = optim_cfg.b1, optim_cfg.b2, optim_cfg.eps
  if optim_cfg.name == "adamp":
    return adamp(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
  if optim_cfg.name == "adamw":
    return optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
  # Adam and SGD: weight decay as an L2 term added to the gradient, like torch.optim.
  if optim_cfg.name == "sgd":  # Linear in the gradient: what gradient-equality tests compare.
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr, momentum=b1))
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.adam(lr, b1=b1, b2=b2, eps=eps))


def path_str(path) -> str:
  """A pytree path as "params/backbone/conv/kernel", the form group patterns and warm-start
  rules are written in."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _labeller(settings: Dict[str, Dict[str, Any]]) -> Callable[[Any], Any]:
  """params -> pytree of group names; raises for a group that matches nothing."""
  groups = [(name, re.compile(s["pattern"])) for name, s in settings.items()
            if name != DEFAULT_GROUP]

  def labels(params):
    used = set()

    def label(path, _):
      path = path_str(path)
      for name, pattern in groups:
        if pattern.fullmatch(path):
          used.add(name)
          return name
      return DEFAULT_GROUP

    out = jax.tree_util.tree_map_with_path(label, params)
    unused = [name for name, _ in groups if name not in used]
    if unused:
      examples = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0][:5]]
      raise ValueError(f"optim.groups {unused} match no parameter that an earlier group (in "
                       f"name order) has not taken; patterns must fully match paths like "
                       f"{examples}")
    return out

  return labels


def make_optimizer(optim_cfg: ml_collections.ConfigDict,
                   total_steps: int) -> optax.GradientTransformation:
  """The optimiser ``optim_cfg`` describes; its ``update`` needs ``params``.

  Config errors raise here; a group pattern matching no parameter raises at ``init``.
  """
  settings = _check(optim_cfg, total_steps)
  labels = _labeller(settings)
  per_group = {}
  for name, s in settings.items():
    if s["freeze"]:
      per_group[name] = optax.set_to_zero()
    else:
      per_group[name] = _base_optimizer(optim_cfg, _schedule(s, total_steps), s["weight_decay"])
  stages = []
  if optim_cfg.grad_clip_norm > 0:
    frozen = [name for name, s in settings.items() if s["freeze"]]
    if frozen:  # Frozen weights get no gradient in PyTorch, so they must not count in the norm.
      stages.append(optax.multi_transform(
          {n: optax.set_to_zero() if n in frozen else optax.identity() for n in settings}, labels))
    stages.append(optax.clip_by_global_norm(optim_cfg.grad_clip_norm))
  stages.append(optax.multi_transform(per_group, labels))
  return optax.chain(*stages)


# ----------------------------------------------------------------------------------------------
# EMA teacher.


def ema_update(teacher: Any, student: Any, momentum: jax.typing.ArrayLike) -> Any:
  """teacher <- momentum * teacher + (1 - momentum) * student, leaf by leaf."""
  return jax.tree.map(lambda t, s: (momentum * t + (1 - momentum) * s).astype(t.dtype),
                      teacher, student)


def ema_momentum(step: jax.typing.ArrayLike, base: float, total_steps: int,
                 schedule: str = "constant") -> jax.Array:
  """EMA momentum at ``step``: ``base`` throughout, or BYOL's cosine rise from base to 1.

  BYOL: mu_k = 1 - (1 - base) (cos(pi k / K) + 1) / 2, with K = total_steps.
  """
  _check_choice(schedule, EMA_SCHEDULES, "ema.schedule")
  if schedule == "constant":
    return jnp.asarray(base, jnp.float32)
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
  return 1 - (1 - base) * (jnp.cos(jnp.pi * frac) + 1) / 2


def scale_momentum_for_batch(base_momentum: float, batch_size: int,
                             reference_batch: int = 256) -> float:
  """Momentum for ``batch_size`` given ``base_momentum`` tuned at ``reference_batch``.

  RealForensics uses mu = 0.999 at batch 256 and scales 1 - mu linearly with the batch size, so
  the teacher averages over the same number of samples: mu' = 1 - (1 - mu) batch / reference.
  (A first-order form of the exact rule mu' = mu ** (batch / reference).)
  """
  if batch_size <= 0 or reference_batch <= 0:
    raise ValueError(f"batch sizes must be positive, got {batch_size} and {reference_batch}")
  scaled = 1 - (1 - base_momentum) * batch_size / reference_batch
  if not 0 <= scaled <= 1:
    raise ValueError(f"EMA momentum {base_momentum} at batch {reference_batch} scales to "
                     f"{scaled} at batch {batch_size}, outside [0, 1]")
  return scaled

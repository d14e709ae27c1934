"""Fail-fast validation of an experiment config before anything is built.

``ml_collections`` already rejects unknown keys and wrong types given on the command line; this
module catches the same mistakes made inside config files (a typo there would otherwise create a
new key that nothing reads) and checks the strings that name registered objects.
"""
from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from input_pipeline import config as input_config_lib
from input_pipeline import ops, pipeline

_NUMBER = (int, float)


def check_against(cfg: Mapping[str, Any], reference: Mapping[str, Any], path: str,
                  open_keys=()) -> None:
  """Every key of ``cfg`` must exist in ``reference`` with a compatible type.

  ``open_keys`` are sub-dicts whose keys are user-chosen names (e.g. ``input.sources``): each of
  their values is checked against the reference's first entry.
  """
  for key, value in cfg.items():
    where = f"{path}.{key}"
    if where in open_keys:
      template = next(iter(reference[key].values()))
      for name, sub in value.items():
        check_against(sub, template, f"{where}.{name}", open_keys)
      continue
    if key not in reference:
      raise KeyError(f"unknown config key {where!r}; allowed keys under {path!r}: "
                     f"{sorted(reference)}")
    ref = reference[key]
    if isinstance(ref, (ml_collections.ConfigDict, dict)):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise TypeError(f"config key {where!r} must be a dict, got {value!r}")
      check_against(value, ref, where, open_keys)
    elif not _compatible(value, ref):
      raise TypeError(f"config key {where!r} = {value!r} has type {type(value).__name__}, "
                      f"expected {type(ref).__name__} (like the default {ref!r})")


def _compatible(value: Any, ref: Any) -> bool:
  if ref is None or value is None:
    return True
  if isinstance(ref, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(ref, bool)
  if isinstance(ref, _NUMBER):
    return isinstance(value, _NUMBER) and (isinstance(ref, float) or isinstance(value, int))
  if isinstance(ref, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(ref))


def check_input(icfg: Mapping[str, Any]) -> None:
  """Checks the ``input`` section: keys, types, op specs and source settings."""
  check_against(icfg, input_config_lib.input_config(), "input", open_keys=("input.sources",))
  ops.check_spec(icfg.train_ops)
  ops.check_spec(icfg.eval.ops)
  if icfg.eval.video_score not in ("mean_logit", "mean_prob"):
    raise ValueError(f"input.eval.video_score={icfg.eval.video_score!r}; allowed: 'mean_logit' "
                     "(σ of the mean clip logit), 'mean_prob' (mean clip probability)")
  pipeline.check_eval_clips(icfg)
  for name, src in icfg.sources.items():
    pipeline.check_window(f"input.sources.{name}.frame_window", src.frame_window,
                          icfg.clip_frames)
    if src.balance not in ("none", "class"):
      raise ValueError(f"input.sources.{name}.balance={src.balance!r}; allowed: 'none', 'class'")
    if src.batch_size <= 0:
      raise ValueError(f"input.sources.{name}.batch_size must be positive, got {src.batch_size}")


# ----------------------------------------------------------------------------- value ranges
def _positive(v) -> bool:
  return v > 0


def _non_negative(v) -> bool:
  return v >= 0


def _unit_open(v) -> bool:
  return 0 <= v < 1


# (dotted key, predicate, what is expected). Keys a config lacks are skipped: the schema check
# (check_against) already decided which keys exist.
TRAINER_RANGES = (
    ("seed", _non_negative, ">= 0"),
    ("total_steps", _non_negative, ">= 0 (0: use num_epochs)"),
    ("num_epochs", _non_negative, ">= 0"),
    ("warmup_epochs", _non_negative, ">= 0"),
    ("log_every", _positive, "> 0 (steps between logged scalars)"),
    ("eval_every", _non_negative, ">= 0 (0: evaluate only at the end)"),
    ("eval_batches", _non_negative, ">= 0 (0: the whole split)"),
    ("checkpoint.every_steps", _positive, "> 0 (steps between checkpoints)"),
    ("checkpoint.keep", _positive, ">= 1 (0 would keep no checkpoint to resume from)"),
    ("checkpoint.preemption_check_every", _positive, "> 0"),
    ("profile.first_step", _non_negative, ">= 0"),
    ("profile.num_steps", _positive, "> 0"),
    ("selection.patience", _non_negative, ">= 0 (0: never stop early)"),
    ("guard.divergence_factor", lambda v: v == 0 or v > 1, "0 (off) or > 1"),
    ("guard.window", _positive, "> 0 (logged values in the running median)"),
    ("ema.momentum", _unit_open, "in [0, 1)"),
    ("ema.reference_batch", _positive, "> 0"),
    ("optim.lr", _non_negative, ">= 0"),
    ("optim.weight_decay", _non_negative, ">= 0"),
    ("optim.b1", _unit_open, "in [0, 1)"),
    ("optim.b2", _unit_open, "in [0, 1)"),
    ("optim.eps", _positive, "> 0"),
    ("optim.warmup_steps", _non_negative, ">= 0"),
    ("optim.grad_clip_norm", _non_negative, ">= 0 (0: off)"),
    ("input.clip_frames", _positive, "> 0 (frames per clip)"),
    ("input.sample_rate", _positive, "> 0 (Hz)"),
    ("input.num_workers", _non_negative, ">= 0 (0: in the main process)"),
    ("input.eval.batch_size", _positive, "> 0 (the global evaluation batch)"),
    ("input.eval.clips_per_video", _non_negative, ">= 0 (0: every clip)"),
    ("mesh.shard_min_size", _non_negative, ">= 0 (elements; smaller state leaves stay replicated)"),
)


def _is_dict(node: Any) -> bool:
  return isinstance(node, (Mapping, ml_collections.ConfigDict))  # ConfigDict is no Mapping.


def _lookup(cfg: Mapping[str, Any], dotted: str):
  node = cfg
  for part in dotted.split("."):
    if not _is_dict(node) or part not in node:
      return None
    node = node[part]
  return node


def check_ranges(config: Mapping[str, Any], ranges=TRAINER_RANGES) -> None:
  """Every numeric field of the table in its range, and every source's batch size positive;
  raises naming the key, its value and what is expected."""
  for key, ok, expected in ranges:
    value = _lookup(config, key)
    if value is None or isinstance(value, bool) or not isinstance(value, _NUMBER):
      continue
    if not ok(value):
      raise ValueError(f"config.{key}={value!r}: expected {expected}")
  mesh = _lookup(config, "mesh")
  for axis in ("data", "fsdp", "model") if _is_dict(mesh) else ():
    size = mesh[axis]
    if not (size == -1 or size >= 1):
      raise ValueError(f"config.mesh.{axis}={size!r}: expected a positive size or -1 (the rest)")

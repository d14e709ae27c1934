"""Fail-fast validation of an experiment config before anything is built.

``ml_collections`` already rejects unknown keys and wrong types given on the command line; this
module catches the same mistakes made inside config files (a typo there would otherwise create a
new key that nothing reads) and checks the strings that name registered objects.
"""
from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from input_pipeline import config as input_config_lib
from input_pipeline import ops

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
  for name, src in icfg.sources.items():
    if src.balance not in ("none", "class"):
      raise ValueError(f"input.sources.{name}.balance={src.balance!r}; allowed: 'none', 'class'")
    if src.batch_size <= 0:
      raise ValueError(f"input.sources.{name}.batch_size must be positive, got {src.batch_size}")

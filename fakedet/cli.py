"""What the command-line entry points (train, evaluate, predict, import_weights) share.

Each CLI module defines its own flags (absl flags are global, so one module cannot import
another's), runs ``app.run(main, flags_parser=cli.parse_flags)`` and calls ``setup()`` first:
INFO chatter from orbax/grain internals is dropped while their warnings and errors still show,
and a config file or ``--config.a.b=value`` override that does not fit ends the program with one
line naming the key and the closest valid keys, instead of ml_collections' chained tracebacks.
"""
from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

import ml_collections
from absl import flags

from fakedet import trainers
from fakedet import workdir as workdir_lib

CONFIG_FLAG = "config"


class QuietLibraries(logging.Filter):
  """Drops INFO records logged from inside orbax or grain."""

  def filter(self, record: logging.LogRecord) -> bool:
    noisy = "/orbax/" in record.pathname or "/grain/" in record.pathname
    return record.levelno >= logging.WARNING or not noisy


def setup() -> None:
  """Installs ``QuietLibraries`` on every root handler (absl's included)."""
  for handler in logging.getLogger().handlers:
    handler.addFilter(QuietLibraries())


# ----------------------------------------------------------------------------- config errors
def flat_keys(tree: Mapping[str, Any], prefix: str = "") -> List[str]:
  """Every dotted key of a nested config (sub-dicts included), e.g. ``input.eval.batch_size``."""
  keys = []
  for k, v in tree.items():
    key = f"{prefix}{k}"
    keys.append(key)
    if isinstance(v, Mapping):
      keys.extend(flat_keys(v, key + "."))
  return keys


def _flag_value(argv: Sequence[str], name: str) -> Optional[str]:
  """The flag's value as absl reads it: the last occurrence wins."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _overrides(argv: Sequence[str]) -> Dict[str, str]:
  """``{"input.foo": "1"}`` from ``--config.input.foo=1`` arguments, in order."""
  out = {}
  for arg in argv:
    if arg.startswith(f"--{CONFIG_FLAG}."):
      key, _, value = arg[len(CONFIG_FLAG) + 3:].partition("=")
      out[key] = value
  return out


def load_config_file(spec: str):
  """``path.py[:variant]`` → the ConfigDict its ``get_config`` returns (as ml_collections
  loads it)."""
  path, _, variant = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_fakedet_cli_config", path)
  if module_spec is None or not os.path.exists(path):
    raise FileNotFoundError(f"--{CONFIG_FLAG}={spec}: no config file {path}")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)


def describe_config_error(argv: Sequence[str], error: BaseException) -> str:
  """One line for a config file or override that does not fit: which argument, which key, the
  closest valid keys."""
  spec = _flag_value(argv, CONFIG_FLAG)
  if spec is None:
    return f"{type(error).__name__}: {error}"
  try:
    config = load_config_file(spec)
  except Exception as e:  # pylint: disable=broad-except
    return f"--{CONFIG_FLAG}={spec}: {type(e).__name__}: {str(e).strip(chr(34))}"
  keys = flat_keys(config.to_dict())
  for key, value in _overrides(argv).items():
    if key not in keys:
      parent = key.rpartition(".")[0]
      siblings = [k for k in keys if k.rpartition(".")[0] == parent]
      close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6) or siblings[:8]
      return (f"--{CONFIG_FLAG}.{key}={value}: {spec} has no key {key!r}; closest: "
              f"{', '.join(close) or '(none)'}")
  lines = [l for l in str(error).strip(chr(34)).splitlines() if l.strip()]
  return lines[0] if lines else type(error).__name__


def fail(error: BaseException) -> None:
  """Ends a CLI on a bad config, path or argument: one line on stderr, exit status 2."""
  message = str(error).strip(chr(34)) or type(error).__name__
  print(f"error: {message.splitlines()[0] if message else message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: Sequence[str]) -> List[str]:
  """absl ``flags_parser``: parses ``argv``; a config that fails to load or an override that
  does not fit ends the program with exit status 2 and one line (see ``describe_config_error``)."""
  try:
    return flags.FLAGS(list(argv))
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    # absl wraps some of ml_collections' errors in IllegalFlagValueError, not others.
    print(f"error: {describe_config_error(argv, e)}", file=sys.stderr)
    sys.exit(2)


def _is_dict(node) -> bool:
  return isinstance(node, (Mapping, ml_collections.ConfigDict))  # ConfigDict is no Mapping.


def _merge(base, saved) -> None:
  """``saved`` over ``base`` in place, recursively (open sub-dicts such as ``input.sources``
  take the saved entries as they are)."""
  for key, value in saved.items():
    if key in base and _is_dict(base[key]) and _is_dict(value):
      _merge(base[key], value)
    else:
      base[key] = value


def config_for(config, checkpoint: str):
  """``--config`` when given, else the config saved in the checkpoint's workdir (evaluate and
  predict need not have the config file, variant and overrides typed again), read over the
  trainer's current defaults so a workdir saved before a key existed still loads."""
  if config is not None:
    return config
  if not checkpoint:
    raise ValueError("give --checkpoint (and --config when the workdir holds no config.json)")
  saved = workdir_lib.load_config(checkpoint)
  merged = trainers.get(saved.trainer).defaults()
  with merged.unlocked():
    if "input" in saved and "sources" in saved.input:
      merged.input.sources = ml_collections.ConfigDict()  # User-named: the saved ones only.
    _merge(merged, saved)
  return merged

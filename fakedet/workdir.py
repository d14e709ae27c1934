"""What a workdir says about itself: the resolved config that made it, and its final result.

``<workdir>/config.json`` is written once, by process 0, when a run starts (a resumed run keeps
the original and, if its own config differs, writes ``config.resumed_at_<step>.json`` beside
it), so ``fakedet.evaluate`` / ``fakedet.predict`` can score a checkpoint without the config
file, variant and overrides typed again. ``<workdir>/result.json`` holds the trainer's final
summary; ``metrics.jsonl`` (``fakedet.writers``) every logged scalar.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any, Mapping, Optional

import jax
import ml_collections
from etils import epath

CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"


def _tuples(value: Any) -> Any:
  """JSON lists back to tuples: configs hold tuples (hashable module attributes, op args)."""
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=1, sort_keys=True)


def save_config(workdir: str, config: ml_collections.ConfigDict, step: int = 0) -> None:
  """Writes the resolved config once (process 0); see the module docstring for resumes."""
  if jax.process_index() != 0:
    return
  d = epath.Path(workdir)
  d.mkdir(parents=True, exist_ok=True)
  text = to_json(config)
  path = d / CONFIG_FILE
  if not path.exists():
    path.write_text(text)
  elif path.read_text() != text:
    other = d / f"config.resumed_at_{step}.json"
    other.write_text(text)
    logging.warning("this run's config differs from the one that started %s; kept that one and "
                    "wrote this one to %s", workdir, other)


def find_config(path: str) -> Optional[epath.Path]:
  """``config.json`` of the workdir that ``path`` belongs to: the workdir itself, its ``best/``
  folder, its ``checkpoints/`` folder or one step folder; None when there is none."""
  p = epath.Path(path)
  for candidate in (p, p.parent, p.parent.parent, p.parent.parent.parent):
    if (candidate / CONFIG_FILE).exists():
      return candidate / CONFIG_FILE
    if not re.fullmatch(r"\d+|checkpoints|best", candidate.name):
      break  # Only climb out of the folders the trainer makes inside a workdir.
  return None


def load_config(path: str) -> ml_collections.ConfigDict:
  """The config saved in the workdir of ``path`` (see ``find_config``)."""
  found = find_config(path)
  if found is None:
    raise FileNotFoundError(f"{path} holds no {CONFIG_FILE} (runs before it was written, or not "
                            f"a training workdir): pass --config=configs/<experiment>.py[:variant]")
  return ml_collections.ConfigDict(_tuples(json.loads(found.read_text())))


def save_result(workdir: str, result: Mapping[str, Any]) -> None:
  if jax.process_index() == 0:
    (epath.Path(workdir) / RESULT_FILE).write_text(json.dumps(result, indent=1, default=float))

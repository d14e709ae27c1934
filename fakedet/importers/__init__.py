"""Importers: released weights (the authors', or the pretrained parts a paper starts from) →
fakedet variables.

Adapters at the edge (house style 20): each format module converts a flat mapping
``{released parameter name: numpy array}`` into the flax variables of one fakedet model, and
``python -m fakedet.import_weights`` writes the result as an ordinary workdir, so the trainer,
evaluator and predictor never know where weights came from.

Every converter reads its tensors through a ``Tensors`` view, which records what was read and
checks shapes, so a wrong file fails with ONE error that lists every missing, unexpected and
mis-shaped name (a renamed layer in a checkpoint shows up as a missing/unexpected pair).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np


class WeightsError(ValueError):
  """A weights file that does not fit the requested format or model; the message names keys."""


def _preview(names: Sequence[str], limit: int = 8) -> str:
  shown = ", ".join(names[:limit])
  return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


class Tensors:
  """Read-tracking view of a released state dict.

  ``get(name, shape)`` returns the array (float32 unless ``dtype`` says otherwise) and records a
  problem instead of raising, so one ``finish()`` reports everything at once; ``ignore(prefix)``
  marks names a converter deliberately drops (e.g. an optimizer's state, ``num_batches_tracked``).
  """

  def __init__(self, tensors: Mapping[str, Any], source: str = "weights file"):
    self.tensors = {str(k): v for k, v in tensors.items()}
    self.source = source
    self.used: set = set()
    self.missing: List[str] = []
    self.misshaped: List[str] = []

  def __contains__(self, name: str) -> bool:
    return name in self.tensors

  def has_prefix(self, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in self.tensors)

  def get(self, name: str, shape: Optional[Tuple[int, ...]] = None,
          dtype: Any = np.float32) -> np.ndarray:
    """The array at ``name`` (zeros of ``shape`` when it is missing or mis-shaped, so a
    converter can run to the end and report every problem)."""
    if name not in self.tensors:
      self.missing.append(name)
      return np.zeros(shape or (), dtype)
    self.used.add(name)
    value = np.asarray(self.tensors[name])
    if shape is not None and tuple(value.shape) != tuple(shape):
      self.misshaped.append(f"{name} {tuple(value.shape)} (expected {tuple(shape)})")
      return np.zeros(shape, dtype)
    return value.astype(dtype)

  def ignore(self, *patterns: str) -> None:
    """Marks names that start with, or end with, any pattern as deliberately unused."""
    for k in self.tensors:
      if any(k.startswith(p) or k.endswith(p) for p in patterns):
        self.used.add(k)

  def unexpected(self) -> List[str]:
    return sorted(set(self.tensors) - self.used)

  def finish(self, what: str, allow_unexpected: bool = False) -> None:
    """Raises ``WeightsError`` naming every missing, mis-shaped and (unless allowed) unexpected
    tensor; ``what`` says which model the file was read as."""
    problems = []
    if self.missing:
      problems.append(f"missing {len(self.missing)}: {_preview(self.missing)}")
    if self.misshaped:
      problems.append(f"mis-shaped {len(self.misshaped)}: {_preview(self.misshaped)}")
    extra = [] if allow_unexpected else self.unexpected()
    if extra:
      problems.append(f"unexpected {len(extra)}: {_preview(extra)}")
    if problems:
      raise WeightsError(f"{self.source} does not fit {what}: " + "; ".join(problems))


def nest(flat: Mapping[str, Any], sep: str = "/") -> Dict[str, Any]:
  """``{"a/b/c": x}`` → ``{"a": {"b": {"c": x}}}`` (flax variable trees from path strings)."""
  out: Dict[str, Any] = {}
  for path, value in flat.items():
    node = out
    keys = path.split(sep)
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = value
  return out


def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = "/") -> Dict[str, Any]:
  """Inverse of ``nest``: nested dicts → ``{"a/b/c": leaf}``."""
  out: Dict[str, Any] = {}
  for k, v in tree.items():
    path = f"{prefix}{sep}{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(flatten(v, path, sep))
    else:
      out[path] = v
  return out


# ----------------------------------------------------------------------------- layouts
# PyTorch → flax layout conversions shared by every converter.
def linear(w: np.ndarray) -> np.ndarray:
  """torch Linear weight [out, in] → flax Dense kernel [in, out]."""
  return np.ascontiguousarray(w.T)


def conv(w: np.ndarray) -> np.ndarray:
  """torch ConvNd weight [out, in/groups, *k] → flax Conv kernel [*k, in/groups, out]."""
  return np.ascontiguousarray(np.moveaxis(w, (0, 1), (-1, -2)))


def names_with(tensors: Iterable[str], prefix: str) -> List[str]:
  return sorted(k for k in tensors if k.startswith(prefix))

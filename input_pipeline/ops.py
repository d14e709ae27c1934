"""Builds data-op chains from config strings (``"random_crop(size=140, resize=112)|flip"``).

The registry and the parser are in ``input_pipeline.op_registry``; importing this module
registers every built-in op (the op modules below), so ``check_spec`` and ``build`` see them all.
"""
from __future__ import annotations

import inspect

import numpy as np

# The op modules register their ops on import.
from input_pipeline import audio, augment, corruptions, narrations  # pylint: disable=unused-import
from input_pipeline.op_registry import OPS, Example, parse_spec

__all__ = ["OPS", "Chain", "build", "check_spec", "parse_spec"]


def check_spec(spec: str) -> None:
  """Fails fast on unknown op names or arguments, naming the op and the allowed arguments."""
  for name, kwargs in parse_spec(spec):
    factory = OPS.get(name)
    allowed = inspect.signature(factory).parameters
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
      raise TypeError(f"data op {name!r} got unknown argument(s) {unknown}; "
                      f"allowed: {sorted(allowed)}")


class Chain:
  """The ops of one spec applied in order; pickles as its spec so grain workers can rebuild it."""

  def __init__(self, spec: str):
    check_spec(spec)
    self.spec = spec
    self._fns = [OPS.get(name)(**kwargs) for name, kwargs in parse_spec(spec)]

  def __call__(self, example: Example, rng: np.random.Generator) -> Example:
    for fn in self._fns:
      example = fn(example, rng)
    return example

  def __reduce__(self):
    return (Chain, (self.spec,))

  def __repr__(self):
    return f"Chain({self.spec!r})"


def build(spec: str) -> Chain:
  """Builds one callable that applies every op in ``spec`` in order (fails fast on bad specs)."""
  return Chain(spec)

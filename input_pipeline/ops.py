"""Registry and parser for the input pipeline's data ops.

A data op is built from a config string such as ``"random_crop(size=140, resize=112)|flip"``
(big_vision-style, so a whole pipeline can be overridden from the command line). Each registered
name is a *factory*: called with the keyword arguments from the string it returns
``fn(example: dict, rng: np.random.Generator) -> dict``. Ops are pure: they return a new dict
(shallow copy) and never modify input arrays in place, because two views may share a buffer.
Deterministic ops simply ignore ``rng``.
"""
from __future__ import annotations

import ast
import inspect
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from fakedet.registry import Registry

Example = Dict[str, Any]
Op = Callable[[Example, np.random.Generator], Example]

OPS = Registry("data op")
register = OPS.register


def parse_spec(spec: str) -> List[Tuple[str, Dict[str, Any]]]:
  """Parses ``"a(x=1)|b"`` into ``[("a", {"x": 1}), ("b", {})]``; only keyword arguments."""
  parsed = []
  for part in (p.strip() for p in spec.split("|")):
    if not part:
      continue
    try:
      node = ast.parse(part, mode="eval").body
    except SyntaxError as e:
      raise ValueError(f"data op {part!r} in {spec!r} is not valid `name(key=value, ...)` syntax") from e
    if isinstance(node, ast.Name):
      parsed.append((node.id, {}))
      continue
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)) or node.args:
      raise ValueError(f"data op {part!r} in {spec!r}: expected `name` or `name(key=value, ...)` "
                       "with keyword arguments only")
    try:
      kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
    except ValueError as e:
      raise ValueError(f"data op {part!r}: arguments must be Python literals") from e
    parsed.append((node.func.id, kwargs))
  return parsed


def _register_builtin_ops():
  # Imported here, not at the top: those modules import `register` from this one.
  from input_pipeline import audio, augment, corruptions, narrations  # pylint: disable=unused-import,import-outside-toplevel
  del audio, augment, corruptions, narrations


def check_spec(spec: str) -> None:
  """Fails fast on unknown op names or arguments, naming the op and the allowed arguments."""
  _register_builtin_ops()
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


@register("copy")
def copy(src: str, dst: str):
  """Duplicates a field under a new name (e.g. the log-mel the student's masking will edit)."""

  def apply(example: Example, rng: np.random.Generator) -> Example:
    del rng
    if src not in example:
      raise KeyError(f"data op 'copy': field {src!r} not in the example; has {sorted(example)}")
    return {**example, dst: example[src]}

  return apply

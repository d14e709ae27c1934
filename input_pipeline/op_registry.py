"""The data-op registry and the op-string parser (no ops live here).

A data op is built from a config string such as ``"random_crop(size=140, resize=112)|flip"``
(big_vision-style, so a whole pipeline can be overridden from the command line). Each registered
name is a *factory*: called with the keyword arguments from the string it returns
``fn(example: dict, rng: np.random.Generator) -> dict``. Ops are pure: they return a new dict
(shallow copy) and never modify input arrays in place, because two views may share a buffer.
Deterministic ops simply ignore ``rng``.

Op modules (audio, augment, corruptions, narrations) import ``register`` from here and
``input_pipeline.ops`` imports them to build chains, so imports point one way.
"""
from __future__ import annotations

import ast
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from input_pipeline.registry import Registry

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

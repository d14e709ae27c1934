"""Name -> object registries keyed by config strings.

Config files name models, objectives, trainers and data ops by string; a registry turns the
string into the object and, for an unknown name, fails listing every valid name so that a typo
in a config is reported before anything is built.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable


class Registry:
  """A named mapping from strings to objects with helpful lookup errors."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, Any] = {}

  def register(self, name: str) -> Callable[[Any], Any]:
    """Decorator: `@REGISTRY.register("name")`. Registering a name twice is an error."""

    def wrap(obj):
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is already registered")
      self._entries[name] = obj
      return obj

    return wrap

  def get(self, name: str) -> Any:
    try:
      return self._entries[name]
    except KeyError:
      raise KeyError(
          f"unknown {self.kind} {name!r}; registered {self.kind}s: "
          f"{', '.join(sorted(self._entries)) or '(none)'}") from None

  def names(self) -> Iterable[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

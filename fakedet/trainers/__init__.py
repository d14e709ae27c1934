"""Trainers, registered by the name that ``config.trainer`` gives.

A trainer is ``fn(config, workdir) -> None`` plus an optional ``check(config)`` run before
anything is built. Methods share trainers; they differ by config (model, objective, data ops).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import ml_collections

from fakedet.registry import Registry


@dataclasses.dataclass(frozen=True)
class Trainer:
  run: Callable[[ml_collections.ConfigDict, str], Any]  # (config, workdir) -> summary
  check: Callable[[ml_collections.ConfigDict], None]  # Raises on a bad config; builds nothing.
  # Every key the trainer reads, at its default: a config saved by an older fakedet (without
  # keys added since) is read over it.
  defaults: Callable[[], ml_collections.ConfigDict]

TRAINERS = Registry("trainer")

# Modules that register trainers when imported.
_MODULES = ("fakedet.trainers.data_preview", "fakedet.trainers.train")


def _load_all():
  for module in _MODULES:
    importlib.import_module(module)


def get(name: str):
  _load_all()
  return TRAINERS.get(name)


def names():
  _load_all()
  return TRAINERS.names()

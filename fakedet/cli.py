"""What the command-line entry points (train, evaluate, predict) share.

Each CLI module defines its own flags (absl flags are global, so one module cannot import
another's) and calls ``setup()`` first: INFO chatter from orbax/grain internals is dropped while
their warnings and errors still show.
"""
from __future__ import annotations

import logging


class QuietLibraries(logging.Filter):
  """Drops INFO records logged from inside orbax or grain."""

  def filter(self, record: logging.LogRecord) -> bool:
    noisy = "/orbax/" in record.pathname or "/grain/" in record.pathname
    return record.levelno >= logging.WARNING or not noisy


def setup() -> None:
  """Installs ``QuietLibraries`` on every root handler (absl's included)."""
  for handler in logging.getLogger().handlers:
    handler.addFilter(QuietLibraries())

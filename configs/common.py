"""The base every experiment config starts from, and the variant parser they all use.

``base_config()`` is the shared trainer's whole schema with its defaults
(``fakedet.trainers.train.reference_config``: the same object the trainer validates a config
against, so the two cannot drift); an experiment file changes only what differs and says in a
comment where each value comes from (paper section, or the authors' released code).
"""
import ml_collections

from fakedet import config_variants
from fakedet.trainers import train


def base_config() -> ml_collections.ConfigDict:
  """Every key the trainer reads, at its default (checkpoint every 1000 steps keeping 3,
  asynchronously; log every 50 steps; evaluate only at the end; no warm start; no model
  selection; data parallel over every device)."""
  return train.reference_config()


def variants(arg, where: str, flags=(), keys=()):
  """``arg`` (``"demo,holdout=neural_texture"``) → ``{"demo": True, "holdout": "..."}``;
  anything the config does not offer fails, listing what it does."""
  return config_variants.parse(arg, flags=flags, keys=keys, where=where)

"""Model registry: ``config.model.name`` → a flax.linen Module class.

Models are Linen modules whose ``__call__(x, *, train: bool)`` returns a dict of named outputs
(shapes in each docstring), so trainers and tests address outputs by name, not position.
"""
from __future__ import annotations

import importlib

from fakedet.registry import Registry

MODELS = Registry("model")

# Modules that register models when imported (added as models land).
_MODULES = (
    "fakedet.models.av_byol",
    "fakedet.models.csn",
    "fakedet.models.resnet_audio",
    "fakedet.models.video_detector",
    "fakedet.models.tsm_resnet", "fakedet.models.resnet50_audio", "fakedet.models.text",
    "fakedet.models.mmv",
    "fakedet.models.wav2vec2", "fakedet.models.avcl",  # AV contrastive transformer.
    "fakedet.models.resnet2d", "fakedet.models.pcl",  # PCL + I2G.
    "fakedet.models.vit", "fakedet.models.rffr",  # RFFR.
)


def get(name: str):
  for module in _MODULES:
    importlib.import_module(module)
  return MODELS.get(name)


def build(spec, name: str, registry_get=None):
  """A named sub-module from a config spec ``{"name": registered_name, **kwargs}``, looked up
  in ``registry_get`` (default: this model registry; heads pass ``heads.HEADS.get``)."""
  kwargs = dict(spec)
  kind = kwargs.pop("name")
  return (registry_get or get)(kind)(name=name, **kwargs)

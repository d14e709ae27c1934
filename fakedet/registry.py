"""Name → object registries for models, objectives and trainers.

The class lives in the data layer (``input_pipeline.registry``), whose data-op registry uses it
too; ``input_pipeline`` never imports ``fakedet``, so the one implementation sits at the bottom.
"""
from __future__ import annotations

from input_pipeline.registry import Registry

__all__ = ["Registry"]

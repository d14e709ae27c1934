"""Embedded synthetic audio-visual talking-face dataset with four forgery families.

No real talking-face corpus can be downloaded here, so fakedet generates one (numpy only,
deterministic by seed): identities with persistent faces and voices, one latent phoneme sequence
per video driving both the formant audio and the mouth, 68-point landmarks, and fakes made after
FaceForensics++ (`FAMILIES`) with per-frame blend masks. See `dataset` for configs and caching:

  path = ensure(preset("demo"))  # Built once into $FAKEDET_CACHE (~/.cache/fakedet).
"""
from input_pipeline.synthetic.dataset import (PRESETS, SyntheticConfig, build, ensure,
                                              generate_split, preset)
from input_pipeline.synthetic.forgeries import FAMILIES

__all__ = ["FAMILIES", "PRESETS", "SyntheticConfig", "build", "ensure", "generate_split",
           "preset"]

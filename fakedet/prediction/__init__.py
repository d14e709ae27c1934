"""Scoring raw video files with a trained detector (``python -m fakedet.predict``).

Modules, one concern each: ``tracks`` (a raw or aligned video → face tracks as in-memory clip
records, through the preprocessing pipeline's own transforms), ``predictor`` (restore, clips,
jitted scoring, per-file JSON entries that never raise, the summary table), ``occlusion``
(occlusion-sensitivity heatmaps, RealForensics appendix C). See docs/predict.md.
"""

"""Evaluation: detection metrics and video-level scoring shared by every detector."""

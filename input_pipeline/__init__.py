"""Clip records, the input pipeline and the embedded synthetic audio-visual dataset."""

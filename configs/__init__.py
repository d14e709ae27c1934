"""Experiment configs: one file per experiment, each ``get_config(arg)`` (``file.py:variant``).

A package so that experiment files share ``configs.common``; ``--config=configs/<name>.py`` loads
them by path, as ml_collections does.
"""

"""Clip records, the input pipeline and the embedded synthetic audio-visual dataset.

``gs://`` (and other object-store) paths: every library fakedet uses that reads or writes files
through ``etils.epath`` (fakedet itself, orbax, grain, array_record's Python side) is pointed at
epath's fsspec backend (``gcsfs``) rather than TensorFlow's file system, so one GCS client
serves them all, with Google's default credentials, and honours ``STORAGE_EMULATOR_HOST``
(tests run against a local emulator). ``EPATH_USE_TF=true`` in the environment restores
TensorFlow's client. ArrayRecord's C++ reader and TensorStore (orbax's arrays) have their own
clients: see docs/gcs.md.
"""
import os as _os

_os.environ.setdefault("EPATH_USE_TF", "false")

"""Metric writers for a workdir that may be local or ``gs://``.

``create(workdir, ...)`` gives what every run logs to (clu ``MetricWriter``s behind one
asynchronous multi-writer, so logging never blocks the training loop):

* the console (clu ``LoggingWriter``);
* TensorBoard events in the workdir. For ``gs://`` they are written to a local folder by clu's
  ``SummaryWriter`` and uploaded whole on every flush (``StagedSummaryWriter``): object stores
  cannot append, and uploading through ``etils.epath`` keeps one GCS client for every file
  fakedet writes (TensorFlow's own client would be a second one, with its own credentials);
* ``metrics.jsonl`` (``JsonLinesWriter``): every scalar as a JSON line, for scripts and notebooks
  that should not need TensorBoard to read a run;
* optionally Weights & Biases (``WandbWriter``, ``config.wandb.enabled``).

Processes other than 0 only log to their console.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
from clu import metric_writers
from clu.metric_writers import interface
from etils import epath

METRICS_FILE = "metrics.jsonl"


def is_remote(path: str) -> bool:
  return "://" in str(path)


class _Forwarding(interface.MetricWriter):
  """Forwards every call to ``self.inner`` (subclasses change a few)."""

  inner: interface.MetricWriter

  def write_summaries(self, step, values, metadata=None):
    self.inner.write_summaries(step, values, metadata)

  def write_scalars(self, step, scalars):
    self.inner.write_scalars(step, scalars)

  def write_images(self, step, images):
    self.inner.write_images(step, images)

  def write_videos(self, step, videos):
    self.inner.write_videos(step, videos)

  def write_audios(self, step, audios, *, sample_rate):
    self.inner.write_audios(step, audios, sample_rate=sample_rate)

  def write_texts(self, step, texts):
    self.inner.write_texts(step, texts)

  def write_histograms(self, step, arrays, num_buckets=None):
    self.inner.write_histograms(step, arrays, num_buckets)

  def write_hparams(self, hparams):
    self.inner.write_hparams(hparams)

  def flush(self):
    self.inner.flush()

  def close(self):
    self.inner.close()


class StagedSummaryWriter(_Forwarding):
  """clu's TensorBoard writer on a local folder, mirrored to ``logdir`` at every flush."""

  def __init__(self, logdir: str):
    self.remote = epath.Path(logdir)
    self.local = tempfile.mkdtemp(prefix="fakedet-events-")
    self.inner = metric_writers.SummaryWriter(self.local)

  def _upload(self):
    for folder, _, files in os.walk(self.local):
      for name in files:
        path = os.path.join(folder, name)
        target = self.remote / os.path.relpath(path, self.local)
        target.parent.mkdir(parents=True, exist_ok=True)
        epath.Path(path).copy(target, overwrite=True)

  def flush(self):
    self.inner.flush()
    self._upload()

  def close(self):
    self.inner.close()
    self._upload()
    shutil.rmtree(self.local, ignore_errors=True)


class JsonLinesWriter(interface.MetricWriter):
  """Scalars as JSON lines ``{"step": s, "<name>": value, ...}`` in ``<logdir>/metrics.jsonl``.

  A resumed run appends to the file; steps logged again after a resume (the ones since the
  checkpoint it resumed from) appear twice, the later line being the one that counts. Remote
  files are rewritten whole on flush (no appends on object stores); local ones appended to.
  """

  def __init__(self, logdir: str):
    self.path = epath.Path(logdir) / METRICS_FILE
    self.remote = is_remote(logdir)
    self._lines: List[str] = []
    self._pending: List[str] = []
    if self.remote and self.path.exists():
      self._lines = self.path.read_text().splitlines()

  def write_scalars(self, step, scalars):
    row = {"step": int(step)}
    row.update({k: _number(v) for k, v in scalars.items()})
    self._pending.append(json.dumps(row))

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_texts(self, step, texts):
    del step, texts

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    if not self._pending:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if self.remote:
      self._lines += self._pending
      self.path.write_text("".join(line + "\n" for line in self._lines))
    else:
      with open(self.path, "a") as f:
        f.write("".join(line + "\n" for line in self._pending))
    self._pending = []

  def close(self):
    self.flush()


def _number(value: Any):
  value = np.asarray(value)
  return value.item() if value.size == 1 else value.tolist()


class WandbWriter(interface.MetricWriter):
  """Weights & Biases run (scalars, images, texts, the config as hparams); ``mode="offline"``
  writes it to disk for a later ``wandb sync``. Imports wandb only when enabled."""

  def __init__(self, logdir: str, project: str, entity: str = "", name: str = "",
               mode: str = "online"):
    import wandb  # Optional extra ([wandb]); only runs that enable it pay for the import.
    self._wandb = wandb
    local = logdir if not is_remote(logdir) else tempfile.mkdtemp(prefix="fakedet-wandb-")
    os.makedirs(local, exist_ok=True)
    self.run = wandb.init(project=project, entity=entity or None, name=name or None,
                          dir=local, mode=mode, resume="allow")

  def write_scalars(self, step, scalars):
    self.run.log({k: _number(v) for k, v in scalars.items()}, step=int(step))

  def write_images(self, step, images):
    self.run.log({k: self._wandb.Image(np.asarray(v)[0] if np.ndim(v) == 4 else np.asarray(v))
                  for k, v in images.items()}, step=int(step))

  def write_texts(self, step, texts):
    self.run.log({k: self._wandb.Html(f"<pre>{v}</pre>") for k, v in texts.items()},
                 step=int(step))

  def write_hparams(self, hparams):
    self.run.config.update(dict(hparams), allow_val_change=True)

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def flush(self):
    pass

  def close(self):
    self.run.finish()


def tensorboard(logdir: str) -> interface.MetricWriter:
  """clu's SummaryWriter for a local logdir, the staged one for a remote one."""
  return StagedSummaryWriter(logdir) if is_remote(logdir) else metric_writers.SummaryWriter(logdir)


def create(logdir: str, *, just_logging: bool = False,
           wandb: Optional[Mapping[str, Any]] = None, jsonl: bool = True,
           asynchronous: bool = True) -> interface.MetricWriter:
  """Console + TensorBoard (+ ``metrics.jsonl``, + W&B when ``wandb["enabled"]``); only the
  console when ``just_logging`` (processes other than 0)."""
  writers: List[interface.MetricWriter] = [metric_writers.LoggingWriter()]
  if not just_logging:
    epath.Path(logdir).mkdir(parents=True, exist_ok=True)
    writers.append(tensorboard(logdir))
    if jsonl:
      writers.append(JsonLinesWriter(logdir))
    if wandb is not None and wandb["enabled"]:
      writers.append(WandbWriter(logdir, project=wandb["project"], entity=wandb["entity"],
                                 name=wandb["name"], mode=wandb["mode"]))
      logging.info("logging to Weights & Biases project %s (%s)", wandb["project"], wandb["mode"])
  if asynchronous:
    return metric_writers.AsyncMultiWriter(writers)
  return metric_writers.MultiWriter(writers)


def read_metrics(logdir: str) -> List[Dict[str, Any]]:
  """The rows of ``<logdir>/metrics.jsonl``, a later row for the same step replacing an earlier
  one (a resumed run logs again the steps since its checkpoint)."""
  path = epath.Path(logdir) / METRICS_FILE
  rows: Dict[int, Dict[str, Any]] = {}
  if path.exists():
    for line in path.read_text().splitlines():
      if line.strip():
        row = json.loads(line)
        rows.setdefault(row["step"], {}).update(row)
  return [rows[s] for s in sorted(rows)]

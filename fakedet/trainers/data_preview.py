"""``data_preview``: run the configured input pipeline end to end and report what it produces.

Before spending accelerator hours, a researcher wants to see the clips a config feeds the model:
shapes, value ranges, label and manipulation mix per batch, how much of each view the masking
removes, and the throughput. This trainer pulls ``num_steps`` global batches, logs those figures
through clu writers (TensorBoard + console) with ``ReportProgress``, writes a contact sheet of
every view and the log-mel spectrograms, and keeps the iterator state in the workdir, so a killed
preview resumes where it stopped (the same mechanism the model trainers checkpoint).
"""
from __future__ import annotations

import collections
import json
import logging
import time
from typing import Any, Dict, Mapping

import cv2
import jax
import ml_collections
import numpy as np
from clu import periodic_actions
from etils import epath

from fakedet import config_check
from fakedet import writers
from fakedet.trainers import TRAINERS, Trainer
from input_pipeline import config as input_config
from input_pipeline import pipeline, records

STATE_FILE = "data_state.json"
SUMMARY_FILE = "data_summary.json"
SHEET_FILE = "data_preview.png"


def reference_config() -> ml_collections.ConfigDict:
  """Every key this trainer reads, with its default (used to reject unknown keys)."""
  return ml_collections.ConfigDict(dict(
      trainer="data_preview", seed=0, num_steps=20, log_every=5,
      input=input_config.input_config()))


def check(config: ml_collections.ConfigDict) -> None:
  config_check.check_against(config, reference_config(), "config",
                             open_keys=("config.input.sources",))
  config_check.check_input(config.input)
  config_check.check_ranges(config, config_check.TRAINER_RANGES + (
      ("num_steps", lambda v: v > 0, "> 0 (batches to pull)"),))


def batch_stats(batch: Mapping[str, np.ndarray]) -> Dict[str, float]:
  """Scalars that reveal a broken pipeline: ranges, label mix, how much masking removed."""
  stats: Dict[str, float] = {"data/fake_fraction": float(np.mean(batch["label"]))}
  for key, value in batch.items():
    if value.dtype.kind not in "fui" or value.ndim < 3:
      continue
    v = value.astype(np.float32)
    stats[f"data/{key}_mean"] = float(v.mean())
    stats[f"data/{key}_std"] = float(v.std())
    # Fraction of all-zero frames/time steps: what erasing and time masking removed.
    axes = tuple(range(2, v.ndim))
    stats[f"data/{key}_zero_steps"] = float(np.mean(np.all(v == 0, axis=axes)))
  return stats


def contact_sheet(batch: Mapping[str, np.ndarray], rows: int = 4) -> np.ndarray:
  """uint8 image: per clip, frames 0, T/2, T-1 of every video view, then its log-mel."""
  views = [k for k, v in batch.items() if v.ndim == 5]
  audios = [k for k, v in batch.items() if v.ndim == 3 and v.dtype.kind == "f"]
  lines = []
  for i in range(min(rows, len(batch["label"]))):
    tiles = []
    for k in views:
      clip = batch[k][i]
      h = clip.shape[1]
      for t in (0, len(clip) // 2, len(clip) - 1):
        f = clip[t]
        tiles.append(f if f.dtype == np.uint8 else np.clip(f * 255, 0, 255).astype(np.uint8))
    for k in audios:
      mel = batch[k][i].T[::-1]  # [mels, time], low frequencies at the bottom.
      mel = np.clip((mel + 1) * 127.5, 0, 255).astype(np.uint8)
      mel = cv2.resize(mel, (2 * h, h), interpolation=cv2.INTER_NEAREST)
      tiles.append(np.repeat(mel[..., None], 3, axis=-1))
    lines.append(np.concatenate(tiles, axis=1))
  return np.concatenate(lines, axis=0)


def _load_state(workdir: str):
  path = epath.Path(workdir) / STATE_FILE
  if not path.exists():
    return 0, None
  saved = json.loads(path.read_text())
  return saved["step"], saved["iterator"]


def _save_state(workdir: str, step: int, iterator_state: Any):
  records.write_json(str(epath.Path(workdir) / STATE_FILE),
                     {"step": step, "iterator": iterator_state})


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  ds = pipeline.train_dataset(config.input, config.seed)
  iterator = iter(ds)
  step, saved = _load_state(workdir)
  if saved is not None:
    iterator.set_state(saved)
    logging.info("resumed the data iterator at step %d", step)
  writer = writers.create(workdir, just_logging=jax.process_index() > 0)
  report = periodic_actions.ReportProgress(num_train_steps=config.num_steps, writer=writer,
                                           every_steps=config.log_every, every_secs=None)
  counts = collections.Counter()
  clips, t0 = 0, time.perf_counter()
  while step < config.num_steps:
    batch = next(iterator)
    step += 1
    clips += len(batch["label"])
    counts.update(f"{s}/{m}" for s, m in zip(batch["source"], batch["manipulation"]))
    report(step)
    if step == 1 or step % config.log_every == 0 or step == config.num_steps:
      writer.write_scalars(step, batch_stats(batch))
      _save_state(workdir, step, iterator.get_state())
    if step == 1:
      sheet = contact_sheet(batch)
      (epath.Path(workdir) / SHEET_FILE).write_bytes(
          cv2.imencode(".png", sheet[..., ::-1])[1].tobytes())
      writer.write_images(step, {"data/contact_sheet": sheet[None]})
  seconds = time.perf_counter() - t0
  iterator.close()  # Stops read-ahead threads.
  summary = {"steps": step, "clips_this_run": clips,
             "clips_per_second": clips / seconds if clips else None,
             "skipped_records": pipeline.skipped_records(),
             "clips_per_source_manipulation": dict(sorted(counts.items())),
             "global_batch_size": pipeline.global_batch_size(config.input)}
  writer.write_texts(step, {"data/summary": json.dumps(summary)})
  writer.flush()
  writer.close()
  records.write_json(str(epath.Path(workdir) / SUMMARY_FILE), summary)
  logging.info("data preview summary: %s", json.dumps(summary))
  return summary


TRAINERS.register("data_preview")(Trainer(run=run, check=check, defaults=reference_config))

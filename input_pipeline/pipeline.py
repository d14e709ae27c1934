"""Deterministic, resumable, per-process-sharded grain pipelines built from the config.

Training: every source (e.g. the forgery set and an extra real corpus) is an infinite, seeded,
reshuffled-per-epoch stream of record indices; each index becomes a random clip plus its
augmented views (``random_map``: the per-element RNG depends only on the seed and the position,
so results do not depend on worker count), and every global batch holds exactly
``sources.<name>.batch_size`` clips of each source. Every process builds the same global stream
and reads its rows of each global batch (``HostRows``): the global batches do not depend on the
process count. Iterator state (``get_state``/``set_state``)
goes into the checkpoint so a resumed run sees exactly the batches of an uninterrupted one.

Evaluation: every (record, clip start) pair of the selected records' clips, in order, the last
batch padded and flagged by ``valid``. ``input.eval.clip_layout`` says where clips start:
``uniform`` (non-overlapping clips covering the video, ``clips_per_video`` of them uniformly
spaced) or ``consecutive`` (the RealForensics code's clips, ``sampling.consecutive_clip_starts``;
frames past a record's end are zeros flagged by ``frame_valid``); ``input.eval.frame_window``
keeps clips inside the first N frames and ``input.eval.subset`` the videos a list file names
(e.g. the DFDC subset a paper reports).
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import grain
import numpy as np
from etils import epath

from input_pipeline import i2g_stage, ops, records, sampling, sources
from input_pipeline.corpora import base as corpora_base

_skipped = set()  # Distinct records this process skipped in skip_bad_records mode.


def _process(process_index: Optional[int], process_count: Optional[int]) -> Tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # Only the main process asks; grain workers unpickle this module without jax.
    return jax.process_index(), jax.process_count()
  return process_index, process_count


def _derive_seed(seed: int, *keys: int) -> int:
  return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def open_source(cfg: Mapping[str, Any], what: str) -> sources.ClipSource:
  """The split ``cfg`` (a source or eval section) names; an error says which section: a run
  with several sources should not leave the user guessing which data_dir is wrong."""
  try:
    return sources.ClipSource(sources.resolve_data_dir(cfg["data_dir"], f"{what}.data_dir"),
                              cfg["split"])
  except (FileNotFoundError, KeyError, ValueError, records.RecordError) as e:
    message = str(e).strip('"')
    if message.startswith(what):
      raise
    raise type(e)(f"{what}: {message}") from None


def per_host(global_batch: int, process_count: int, what: str) -> int:
  if global_batch % process_count:
    raise ValueError(f"{what}={global_batch} is not divisible by the {process_count} processes")
  return global_batch // process_count


def _guard(fn, skip_bad_records: bool, where_fn):
  """Runs ``fn``; a RecordError either propagates or, in skip mode, is logged and counted."""
  try:
    return fn()
  except records.RecordError as e:
    if not skip_bad_records:
      raise
    if where_fn() not in _skipped:  # Log each bad record once, not once per epoch.
      _skipped.add(where_fn())
      logging.warning("skipping bad record (%d distinct so far in this process): %s",
                      len(_skipped), e)
    return None
  except Exception as e:  # Anything else from a record is a bug or bad data: say which record.
    raise RuntimeError(f"while processing {where_fn()}: {type(e).__name__}: {e}") from e


def skipped_records() -> int:
  """Distinct records skipped by this process so far (skip_bad_records mode)."""
  return len(_skipped)


# ----------------------------------------------------------------------------- training
def _train_example(index: int, rng: np.random.Generator, *, source: sources.ClipSource,
                   clip_frames: int, sample_rate: int, with_mask: bool, chain: ops.Chain,
                   skip_bad_records: bool, name: str, with_words: bool = False,
                   frame_window: int = 0, group_sizes: Optional[Mapping[Any, int]] = None,
                   skipped_by_group: Optional[Dict[Any, set]] = None,
                   i2g: Optional[i2g_stage.I2GStage] = None):
  def run():
    raw = source[index]
    example = sampling.random_clip(raw, clip_frames, rng, sample_rate=sample_rate,
                                   with_mask=with_mask and i2g is None, with_words=with_words,
                                   with_landmarks=i2g is not None, window=frame_window)
    example["source"] = name
    if i2g is not None:  # On the stored frames, before any op moves them off the landmarks.
      example = i2g(example, raw, index, rng)
    return chain(example, rng)
  example = _guard(run, skip_bad_records, lambda: source.where(index))
  if example is None and group_sizes:
    _check_group(name, source, index, group_sizes, skipped_by_group)
  return example


def _check_group(name: str, source: sources.ClipSource, index: int,
                 group_sizes: Mapping[Any, int], skipped_by_group: Dict[Any, set]) -> None:
  """Fails once every record of a training group (a source, or one class of a class-balanced
  source) on this host has been skipped: grain drops the Nones, so the stream would otherwise
  look for a good record forever. `skipped_by_group` belongs to one dataset (not the module):
  two datasets built in one process must not pool their bad records."""
  label = int(source.index["label"][index])
  group = label if label in group_sizes else None
  bad = skipped_by_group.setdefault(group, set())
  bad.add(int(index))
  if len(bad) >= group_sizes[group]:
    which = f"input.sources.{name}" + (f" (label {label})" if group is not None else "")
    raise records.RecordError(
        f"{which}: all {group_sizes[group]} selected records on this process are bad and were "
        f"skipped (input.skip_bad_records=True); nothing is left to train on — check the data "
        f"with python -m input_pipeline.validate {source.data_dir}")


def _index_stream(selected: np.ndarray, labels: np.ndarray, balance: str, seed: int,
                  samples_per_record: int = 1):
  """Infinite MapDataset of record indices, reshuffled every epoch; each record appears
  ``samples_per_record`` times per epoch (a clip at a fresh random position each time)."""
  if samples_per_record < 1:
    raise ValueError(f"samples_per_record={samples_per_record}: expected an integer >= 1")
  selected = np.repeat(selected, samples_per_record)
  if balance == "none":
    return grain.MapDataset.source(selected.tolist()).shuffle(seed=seed).repeat(None)
  if balance == "class":  # Oversample the minority class: alternate real / fake.
    per_class = [selected[labels[selected] == c] for c in (0, 1)]
    for c, members in enumerate(per_class):
      if not len(members):
        raise ValueError(f"balance='class' needs both classes, but label {c} has no records")
    streams = [grain.MapDataset.source(m.tolist()).shuffle(seed=_derive_seed(seed, c)).repeat(None)
               for c, m in enumerate(per_class)]
    return grain.MapDataset.mix(streams, [0.5, 0.5])
  raise ValueError(f"balance={balance!r}: expected 'none' or 'class'")


class HostRows(grain.MapDataset):
  """This process's rows of every global batch of ``parent`` (a global stream):
  element j is global element (j // h)·B + index·h + j % h, with h = B / count.

  Every process builds the same global stream (same records, same shuffles, same per-element
  RNG from the global position) and reads only its rows, so the global batch k is the same
  clips in the same order whatever the number of processes — one process included. A run
  checkpointed by 4 processes can therefore resume on 2 (or 1) at the same input position:
  batch k of the global stream, k = the step."""

  def __init__(self, parent: grain.MapDataset, global_batch: int, index: int, count: int):
    super().__init__(parent)
    self._global = global_batch
    self._host = per_host(global_batch, count, "global batch")
    self._offset = index * self._host
    self._length = len(parent) // global_batch * self._host

  def __len__(self) -> int:
    return self._length

  def _global_index(self, j: int) -> int:
    return j // self._host * self._global + self._offset + j % self._host

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._global_index(index)]

  def _getitems(self, indices: Sequence[int]):
    parent = self._parent
    return parent._getitems([self._global_index(j) for j in indices])  # pylint: disable=protected-access

  def __str__(self) -> str:
    return f"HostRows[{self._offset}:+{self._host} of {self._global}]"


def _source_dataset(name: str, scfg: Mapping[str, Any], icfg: Mapping[str, Any], seed: int,
                    process_index: int, process_count: int, start_batch: int = 0):
  source = open_source(scfg, f"input.sources.{name}")
  selection = sources.Selection.from_config(scfg)
  selected = selection.indices(source.index)
  if not len(selected):
    raise ValueError(f"input.sources.{name}: no records of {source} match {selection}")
  check_window(f"input.sources.{name}.frame_window", scfg["frame_window"], icfg["clip_frames"])
  labels = np.asarray(source.index["label"])
  stream = _index_stream(selected, labels, scfg["balance"], seed, scfg["samples_per_record"])
  if scfg["balance"] == "class":
    group_sizes = {c: int(np.sum(labels[selected] == c)) for c in (0, 1)}
  else:
    group_sizes = {None: len(selected)}
  fn = functools.partial(_train_example, source=source, clip_frames=icfg["clip_frames"],
                         sample_rate=icfg["sample_rate"], with_mask=icfg["with_mask"],
                         with_words=icfg["with_words"], frame_window=scfg["frame_window"],
                         chain=ops.build(icfg["train_ops"]),
                         skip_bad_records=icfg["skip_bad_records"], name=name,
                         group_sizes=group_sizes, skipped_by_group={},
                         i2g=(i2g_stage.I2GStage.build(source, selected, icfg["i2g"],
                                                       f"input.sources.{name}")
                              if icfg["i2g"]["p"] > 0 else None))
  host_batch = per_host(scfg["batch_size"], process_count, f"input.sources.{name}.batch_size")
  clips = HostRows(stream.random_map(fn, seed=_derive_seed(seed, 1)), scfg["batch_size"],
                   process_index, process_count)
  if start_batch:
    clips = clips[start_batch * host_batch:]
  return clips.to_iter_dataset().batch(host_batch, drop_remainder=True)


def _concat(batches: Sequence[Mapping[str, np.ndarray]]) -> Dict[str, np.ndarray]:
  keys = batches[0].keys()
  for b in batches[1:]:
    if b.keys() != keys:
      raise ValueError(f"sources produce different fields: {sorted(keys)} vs {sorted(b.keys())}")
  return {k: np.concatenate([b[k] for b in batches]) for k in keys}


def train_dataset(icfg: Mapping[str, Any], seed: int, *, process_index: Optional[int] = None,
                  process_count: Optional[int] = None, start_batch: int = 0):
  """grain IterDataset of this process's share of every global training batch.

  Args:
    icfg: the ``config.input`` section (see configs/common.py for its fields).
    seed: the run's data seed.
    start_batch: the first global batch to produce (a resume whose checkpoint holds no
      iterator state for this process count; ``HostRows`` makes batch k well defined).
  """
  pi, pc = _process(process_index, process_count)
  names = sorted(icfg["sources"])
  if not names:
    raise ValueError("input.sources is empty: configure at least one training source")
  datasets = [_source_dataset(n, icfg["sources"][n], icfg, _derive_seed(seed, k), pi, pc,
                              start_batch) for k, n in enumerate(names)]
  ds = datasets[0] if len(datasets) == 1 else grain.experimental.ZipIterDataset(datasets).map(_concat)
  if icfg["num_workers"] > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=icfg["num_workers"]))
  return ds


def global_batch_size(icfg: Mapping[str, Any]) -> int:
  return sum(s["batch_size"] for s in icfg["sources"].values())


# ----------------------------------------------------------------------------- evaluation
LAYOUTS = ("uniform", "consecutive")


def check_window(key: str, window: int, clip_frames: int) -> None:
  """A frame window is 0 (the whole video) or holds at least one clip."""
  if window and not window >= clip_frames:
    raise ValueError(f"{key}={window}: expected 0 (the whole video) or at least "
                     f"input.clip_frames={clip_frames} frames")


def check_eval_clips(icfg: Mapping[str, Any]) -> None:
  """``input.eval``'s clip layout and frame window (also run by the config check, so a typo
  fails before training rather than at the first evaluation)."""
  ecfg = icfg["eval"]
  if ecfg["clip_layout"] not in LAYOUTS:
    raise ValueError(f"input.eval.clip_layout={ecfg['clip_layout']!r}; allowed: "
                     f"{', '.join(LAYOUTS)}")
  check_window("input.eval.frame_window", ecfg["frame_window"], icfg["clip_frames"])


def _eval_example(item: Tuple[int, int], *, source: sources.ClipSource, clip_frames: int,
                  sample_rate: int, with_mask: bool, chain: ops.Chain, skip_bad_records: bool,
                  with_words: bool = False, pad: bool = False):
  index, start = item

  def run():
    return eval_clip(source[index], start, clip_frames=clip_frames, sample_rate=sample_rate,
                     with_mask=with_mask, with_words=with_words, chain=chain, pad=pad)
  return _guard(run, skip_bad_records, lambda: source.where(index))


def eval_clip(raw: Mapping[str, Any], start: int, *, clip_frames: int, sample_rate: int,
              with_mask: bool, with_words: bool, chain: ops.Chain, pad: bool) -> Dict[str, Any]:
  """One evaluation example of a parsed record (or of a track ``fakedet.predict`` decoded):
  the clip (zero-padded past the end with ``pad``), flagged valid, through the eval ops."""
  cut = sampling.padded_clip if pad else sampling.clip
  example = cut(raw, start, clip_frames, sample_rate=sample_rate, with_mask=with_mask,
                with_words=with_words)
  example["valid"] = np.bool_(True)
  return chain(example, np.random.default_rng(0))  # Eval ops are deterministic.


def eval_batch(icfg: Mapping[str, Any], source: sources.ClipSource,
               items: Sequence[Tuple[int, int]]) -> Dict[str, np.ndarray]:
  """The eval examples of ``items`` ((record, start) pairs) stacked into one batch, built
  exactly as ``eval_dataset`` builds them (for a few clips picked by the caller)."""
  fn = functools.partial(_eval_example, source=source, clip_frames=icfg["clip_frames"],
                         sample_rate=icfg["sample_rate"], with_mask=icfg["with_mask"],
                         with_words=icfg["with_words"], chain=ops.build(icfg["eval"]["ops"]),
                         skip_bad_records=False, pad=pads_past_end(icfg["eval"]))
  examples = [fn(item) for item in items]
  return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}


def pads_past_end(ecfg: Mapping[str, Any]) -> bool:
  """Whether clips may run past a record's end (zero frames + ``frame_valid``): the
  consecutive layout's last clip does (``sampling.padded_clip``)."""
  return ecfg["clip_layout"] == "consecutive"


def clip_starts(num_frames: int, clip_frames: int, clips_per_video: int = 0,
                layout: str = "uniform", frame_window: int = 0) -> List[int]:
  """The evaluation clip starts of one record (see the module docstring for the layouts);
  ``clips_per_video`` > 0 keeps that many of them, uniformly spaced."""
  if layout == "uniform":
    span = min(num_frames, frame_window) if frame_window else num_frames
    return sources.eval_clip_starts(span, clip_frames, clips_per_video or None)
  if layout != "consecutive":
    raise ValueError(f"input.eval.clip_layout={layout!r}; allowed: {', '.join(LAYOUTS)}")
  starts = sampling.consecutive_clip_starts(num_frames, clip_frames, frame_window)
  if clips_per_video and clips_per_video < len(starts):
    picks = np.linspace(0, len(starts) - 1, clips_per_video).round().astype(int)
    starts = [starts[p] for p in picks]
  return starts


def read_subset(path: str) -> List[str]:
  """A list file's video names (``corpora.base.line_name``: the last token that is not a label,
  its folder and extension dropped) — exactly how ``input_pipeline.corpora.dfdc``'s ``subset``
  reads the same file, so a list that selected videos at preprocessing time selects them here
  too (LipForensics' ``dfdc_all_vids.txt``, RealForensics' ``name.avi label`` list). A missing
  or empty file is an error naming ``input.eval.subset``."""
  p = epath.Path(path)
  if not p.exists():
    raise FileNotFoundError(f"input.eval.subset={path!r}: no such file (a list of video names, "
                            "one a line)")
  names = [corpora_base.line_name(line) for line in p.read_text().splitlines() if line.strip()]
  if not names:
    raise ValueError(f"input.eval.subset={path!r}: the file names no video")
  return names


def subset_indices(index: Mapping[str, Sequence], selected: np.ndarray, names: Sequence[str],
                   path: str = "input.eval.subset") -> np.ndarray:
  """The ``selected`` records whose video is in ``names``, matched on the video id's last
  path component (DFDC's ids are ``dfdc/<file stem>``); a listed name the split lacks is an
  error: a subset from another copy of the data would silently score a different test set."""
  stem = lambda v: str(v).rsplit("/", 1)[-1]
  wanted = set(names)
  have = {stem(v) for v in index["video_id"]}
  unknown = sorted(wanted - have)
  if unknown:
    raise ValueError(f"{path}: {len(unknown)} of its {len(wanted)} videos are not in this split "
                     f"(e.g. {', '.join(unknown[:5])}); ids are matched on the video_id's last "
                     f"component, e.g. {stem(index['video_id'][0]) if have else '(empty split)'}")
  keep = [i for i in selected if stem(index["video_id"][int(i)]) in wanted]
  return np.asarray(keep, np.int64)


def eval_clips(source: sources.ClipSource, clip_frames: int, clips_per_video: int,
               skip_bad_records: bool,
               selection: sources.Selection = sources.Selection(), *,
               layout: str = "uniform", frame_window: int = 0,
               subset: Sequence[str] = ()) -> List[Tuple[int, int]]:
  """(record index, start frame) of every evaluation clip of the selected records (and of the
  ``subset`` video names, when given), from the index alone."""
  selected = selection.indices(source.index)
  if subset:
    selected = subset_indices(source.index, selected, subset)
  items = []
  for i in selected:
    i, n = int(i), source.index["num_frames"][i]
    starts = clip_starts(n, clip_frames, clips_per_video, layout, frame_window)
    if not starts:
      msg = f"{source.where(i)}: {n} frames, fewer than one {clip_frames}-frame clip"
      if not skip_bad_records:
        raise records.RecordError(msg + " (set input.skip_bad_records=True to skip it)")
      logging.warning("not evaluated: %s", msg)
    items.extend((i, s) for s in starts)
  return items


def eval_clip_list(icfg: Mapping[str, Any], source: sources.ClipSource) -> List[Tuple[int, int]]:
  """``eval_clips`` as ``icfg`` (the input section) configures it: the one clip list the
  evaluation dataset and the scorer's position lookup share."""
  ecfg = icfg["eval"]
  check_eval_clips(icfg)
  subset = read_subset(ecfg["subset"]) if ecfg["subset"] else ()
  return eval_clips(source, icfg["clip_frames"], ecfg["clips_per_video"],
                    icfg["skip_bad_records"], sources.Selection.from_config(ecfg),
                    layout=ecfg["clip_layout"], frame_window=ecfg["frame_window"], subset=subset)


def _pad(batch: Dict[str, np.ndarray], size: int) -> Dict[str, np.ndarray]:
  n = len(batch["valid"])
  if n == size:
    return batch
  out = {}
  for k, v in batch.items():
    pad = np.repeat(v[-1:], size - n, axis=0)
    out[k] = np.concatenate([v, pad])
  out["valid"][n:] = False
  return out


def eval_dataset(icfg: Mapping[str, Any], *, process_index: Optional[int] = None,
                 process_count: Optional[int] = None):
  """grain IterDataset of padded evaluation batches (``valid`` marks real clips)."""
  ecfg = icfg["eval"]
  pi, pc = _process(process_index, process_count)
  source = open_source(ecfg, "input.eval")
  items = eval_clip_list(icfg, source)
  if not items:
    raise ValueError(f"input.eval selects no clip from split {ecfg['split']!r} of "
                     f"{source.data_dir} (labels={tuple(ecfg['labels'])}, manipulations="
                     f"{tuple(ecfg['manipulations'])}, subset={ecfg['subset']!r})")
  host_batch = per_host(ecfg["batch_size"], pc, "input.eval.batch_size")
  fn = functools.partial(_eval_example, source=source, clip_frames=icfg["clip_frames"],
                         sample_rate=icfg["sample_rate"], with_mask=icfg["with_mask"],
                         with_words=icfg["with_words"],
                         chain=ops.build(ecfg["ops"]), skip_bad_records=icfg["skip_bad_records"],
                         pad=pads_past_end(ecfg))
  ds = grain.MapDataset.source(items)[pi::pc].map(fn).to_iter_dataset()
  return ds.batch(host_batch).map(functools.partial(_pad, size=host_batch))

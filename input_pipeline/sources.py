"""Random-access sources of parsed clip records (ArrayRecord shards + the per-split index)."""
from __future__ import annotations

import bisect
import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

import grain

from input_pipeline import records
from input_pipeline.synthetic import dataset as synthetic

SYNTHETIC_PREFIX = "synthetic:"


def resolve_data_dir(data_dir: str, what: str = "input data_dir") -> str:
  """``"synthetic:<preset>"`` → the cached embedded dataset (built on first use); else as is.
  ``what`` names the config key in the error for an empty value."""
  if data_dir.startswith(SYNTHETIC_PREFIX):
    return synthetic.ensure(synthetic.preset(data_dir[len(SYNTHETIC_PREFIX):]))
  if not data_dir:
    raise ValueError(f"{what} is empty: set it to a dataset directory (local or gs://) or to "
                     "'synthetic:demo' for the embedded dataset")
  return data_dir


def resolve_path(path: str) -> str:
  """A file inside a dataset: ``"synthetic:<preset>/<file>"`` → that file of the cached embedded
  dataset (e.g. its ``vocabulary.txt``); any other path as is."""
  if not path.startswith(SYNTHETIC_PREFIX):
    return path
  name, sep, rest = path.partition("/")
  if not sep or not rest:
    raise ValueError(f"{path!r}: expected 'synthetic:<preset>/<file>'")
  return f"{resolve_data_dir(name)}/{rest}"


def open_shards(files: Sequence[str], counts: Sequence[int]):
  """grain's ArrayRecord source over ``files``; a shard that cannot be opened (truncated,
  corrupt, missing) or holds another record count than the manifest says fails naming it —
  array_record's own errors name no file."""
  try:
    source = grain.sources.ArrayRecordDataSource(list(files))
  except Exception:  # pylint: disable=broad-except
    source = None
  if source is None or len(source) != sum(counts):
    for path, count in zip(files, counts):
      try:
        found = grain.sources.ArrayRecordDataSource([path])
      except Exception as e:  # pylint: disable=broad-except
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise records.RecordError(f"{path}: cannot be opened as an ArrayRecord shard ({first}); "
                                  "rewrite the dataset, or run python -m "
                                  "input_pipeline.validate on it") from None
      if len(found) != count:
        raise records.RecordError(f"{path}: holds {len(found)} records, the manifest says "
                                  f"{count}")
    if source is None:  # Every shard opens alone: retry together, letting the error show.
      source = grain.sources.ArrayRecordDataSource(list(files))
  return source


class ClipSource:
  """grain ``RandomAccessDataSource`` of parsed raw records of one split.

  Each element is ``records.parse(...)`` output whose ``where`` names the shard file and the
  record's index within it, so every later error can point at the exact record.
  """

  def __init__(self, data_dir: str, split: str):
    self.data_dir, self.split = data_dir, split
    manifest = records.read_manifest(data_dir)
    self.files = records.split_files(data_dir, manifest, split, "array_record")
    counts = [f["records"] for f in manifest["splits"][split]["files"]
              if f["format"] == "array_record"]
    self._starts = np.cumsum([0] + counts[:-1]).tolist()
    self._source = open_shards(self.files, counts)
    self.index = records.read_index(data_dir, manifest, split)
    if len(self._source) != len(self.index["video_id"]):
      raise ValueError(f"{data_dir}: split {split!r} has {len(self._source)} records but its "
                       f"index lists {len(self.index['video_id'])}")

  def __len__(self) -> int:
    return len(self._source)

  def where(self, i: int) -> str:
    shard = bisect.bisect_right(self._starts, i) - 1
    return f"{self.files[shard]} record {i - self._starts[shard]}"

  def __getitem__(self, i: int) -> Dict[str, Any]:
    i = int(i)
    where = self.where(i)
    try:
      data = self._source[i]
    except Exception as e:  # array_record raises plain RuntimeError/ValueError on corruption.
      raise records.RecordError(f"{where}: could not be read ({e})") from None
    return records.parse(data, where)

  def __repr__(self):
    return f"ClipSource({self.data_dir!r}, {self.split!r}, {len(self)} records)"


@dataclasses.dataclass(frozen=True)
class Selection:
  """Which records of a split to use (filters applied with the index, without decoding)."""
  labels: Sequence[int] = ()  # Empty = all labels.
  manipulations: Sequence[str] = ()  # Empty = all; e.g. ("real", "graphics_swap").
  exclude_manipulations: Sequence[str] = ()  # Held out, e.g. ("neural_texture",).

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any]) -> "Selection":
    """From a source or eval config section (``labels``, ``manipulations``,
    ``exclude_manipulations``)."""
    return cls(tuple(cfg["labels"]), tuple(cfg["manipulations"]),
               tuple(cfg["exclude_manipulations"]))

  def indices(self, index: Dict[str, List[Any]]) -> np.ndarray:
    keep = np.ones(len(index["label"]), bool)
    if self.labels:
      keep &= np.isin(index["label"], list(self.labels))
    known = set(index["manipulation"])
    for what, names in (("manipulations", self.manipulations),
                        ("exclude_manipulations", self.exclude_manipulations)):
      unknown = sorted(set(names) - known)
      if unknown:  # The families come from the data: a name it lacks is a typo or wrong data.
        raise ValueError(f"{what} {unknown} not in this split; it has {sorted(known)}")
    if self.manipulations:
      keep &= np.isin(index["manipulation"], list(self.manipulations))
    if self.exclude_manipulations:
      keep &= ~np.isin(index["manipulation"], list(self.exclude_manipulations))
    return np.flatnonzero(keep)


def eval_clip_starts(num_frames: int, clip_frames: int,
                     num_clips: Optional[int] = None) -> List[int]:
  """Start frames of uniform non-overlapping clips covering the whole video.

  Clips tile the video from frame 0; a remainder gets one last clip aligned to the final frame
  (overlapping its neighbour) so no frame is left out. ``num_clips`` keeps that many of them,
  uniformly spaced. Videos shorter than a clip get no clips (the caller reports them).
  """
  if num_frames < clip_frames:
    return []
  starts = list(range(0, num_frames - clip_frames + 1, clip_frames))
  if starts[-1] + clip_frames < num_frames:
    starts.append(num_frames - clip_frames)
  if num_clips and num_clips < len(starts):
    picks = np.linspace(0, len(starts) - 1, num_clips).round().astype(int)
    starts = [starts[p] for p in picks]
  return starts

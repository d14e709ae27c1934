"""Local runner: many videos → sharded clip records, in parallel, resumable, with a skip manifest.

Videos are split into ``num_shards`` contiguous blocks per split; shard ``s`` holds the tracks of
block ``s`` in input order. Worker processes run ``video.process_video`` (and JPEG-encode the
crops, the costly part of writing) while the parent writes each shard through
``records.ShardWriter`` and, once the shard is committed, a small done-marker in
``OUT/.preprocess/``. A rerun after a crash or kill keeps every committed shard and processes
only the rest; the plan (videos, config, shard count) must not change in between, which a
fingerprint in ``OUT/.preprocess/plan.json`` enforces.

When every shard is done the runner writes ``OUT/preprocess.json`` (config, counts, speed, and
every skipped video with its kind and message), then the record indexes and ``manifest.json``
(last, so a reader never sees a half-written dataset). Mouth crops, when enabled, form a second
complete dataset in ``OUT/mouth/`` with the same records in the same order.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

from etils import epath
from tqdm import tqdm

from input_pipeline import records
from input_pipeline.preprocess import decode, faces, video

STATE_DIR = ".preprocess"
REPORT = "preprocess.json"
MOUTH_DIR = "mouth"

_worker: Dict[str, Any] = {}  # Per-process state: the config and the (expensive) detector.


def shard_blocks(items: Sequence[video.VideoItem], num_shards: int) -> List[List[video.VideoItem]]:
  """Contiguous, near-equal blocks (shard s = items[s*n//k:(s+1)*n//k]) so output follows input
  order, which keeps a corpus' natural grouping (e.g. per identity) inside few shards."""
  n = len(items)
  return [list(items[s * n // num_shards:(s + 1) * n // num_shards]) for s in range(num_shards)]


def split_blocks(items: Sequence[video.VideoItem],
                 num_shards: Mapping[str, int]) -> Dict[str, List[List[video.VideoItem]]]:
  """Each split's ``shard_blocks`` (splits in ``num_shards``' order): the plan both runners
  follow."""
  return {s: shard_blocks([i for i in items if i.split == s], n) for s, n in num_shards.items()}


def kinds(mouth: bool) -> List[str]:
  """The datasets a run writes: faces, and mouth crops (OUT/mouth) when configured."""
  return ["faces", "mouths"] if mouth else ["faces"]


def fingerprint(items: Sequence[video.VideoItem], config: video.PreprocessConfig, name: str,
                num_shards: Mapping[str, int], detector: str) -> str:
  blob = json.dumps([[_plan_item(i) for i in items], dataclasses.asdict(config), name,
                     dict(num_shards), detector], sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()


def _plan_item(item: video.VideoItem) -> Dict[str, Any]:
  """An item as the plan fingerprint sees it: an empty ``original`` is left out, so a run
  planned before the field existed still resumes."""
  row = dataclasses.asdict(item)
  if not row["original"]:
    del row["original"]
  return row


def init_worker(config: video.PreprocessConfig, detector: str):
  """Per-process setup for ``work``: single-threaded TF/OpenCV and the detector, built once."""
  faces.set_single_thread(tensorflow=detector == "mtcnn")
  _worker["config"] = config
  _worker["detector"] = video.make_detector(config) if detector == "mtcnn" else None


def work(item: video.VideoItem) -> Dict[str, Any]:
  """``process_and_encode`` with this worker process' config and detector (``init_worker``)."""
  return process_and_encode(item, _worker["config"], _worker["detector"])


def process_and_encode(item: video.VideoItem, config: video.PreprocessConfig,
                       detector: Optional[video.Detector]) -> Dict[str, Any]:
  """Processes and encodes one video; never raises, so one bad file cannot stop the batch."""
  try:
    result = video.process_video(item, config, detector)
    return video.encode_result(result, config.jpeg_quality)
  except Exception as e:  # pylint: disable=broad-except
    tb = traceback.format_exception_only(type(e), e)[-1].strip()
    return _failed(item, f"{item.path}: {tb}")


def _failed(item: video.VideoItem, message: str) -> Dict[str, Any]:
  return {"item": dataclasses.asdict(item), "skip": (decode.INTERNAL_ERROR, message),
          "faces": [], "mouths": [], "seconds": 0.0, "elapsed": 0.0, "stats": None}


@contextlib.contextmanager
def _results(items: List[video.VideoItem], config: video.PreprocessConfig, detector: str,
             num_workers: int) -> Iterator[Iterator[Dict[str, Any]]]:
  """Results in input order, from spawned worker processes (safe after TF/JAX started
  threads) or inline for ``num_workers <= 1``."""
  if num_workers <= 1:
    init_worker(config, detector)
    yield map(work, items)
    return
  pool = _Pool(num_workers, config, detector)
  try:
    yield pool.ordered(items)
  finally:
    pool.executor.shutdown(cancel_futures=True)


class _Pool:
  """A process pool that survives worker deaths.

  A worker killed by the OOM killer or by a crash inside a native decoder breaks a
  ``ProcessPoolExecutor`` (``multiprocessing.Pool`` would hang forever instead). Then every
  video that was in flight is retried alone in a fresh pool, so only the one that really kills
  its worker is skipped (kind ``error``) and the batch goes on.
  """

  def __init__(self, num_workers: int, config: video.PreprocessConfig, detector: str):
    self.args = (num_workers, config, detector)
    self.executor = self._new()

  def _new(self):
    n, config, detector = self.args
    return ProcessPoolExecutor(n, multiprocessing.get_context("spawn"), init_worker,
                               (config, detector))

  def _restart(self):
    self.executor.shutdown(wait=False, cancel_futures=True)
    self.executor = self._new()

  def ordered(self, items: Sequence[video.VideoItem]) -> Iterator[Dict[str, Any]]:
    ahead = 2 * self.args[0]  # Bounded look-ahead: results hold JPEG bytes of whole videos.
    queue = collections.deque()
    it = iter(items)
    for item in itertools.islice(it, ahead):
      queue.append((item, self.executor.submit(work, item)))
    while queue:
      item, future = queue.popleft()
      try:
        result = future.result()
      except BrokenProcessPool:
        self._restart()
        result = self._alone(item)
        queue = collections.deque((i, self.executor.submit(work, i)) for i, _ in queue)
      yield result
      for nxt in itertools.islice(it, 1):
        queue.append((nxt, self.executor.submit(work, nxt)))

  def _alone(self, item: video.VideoItem) -> Dict[str, Any]:
    try:
      return self.executor.submit(work, item).result()
    except BrokenProcessPool:
      self._restart()
      return _failed(item, f"{item.path}: its worker process died (out of memory, or a crash "
                     "in native code while decoding it)")


def _write_shard(out_dir: str, name: str, split: str, shard: int, num_shards: int,
                 formats: Sequence[str], results: Iterator[Dict[str, Any]], count: int,
                 mouth: bool, bar, tally: collections.Counter) -> Dict[str, Any]:
  """Consumes ``count`` results into one shard (faces, and mouths if enabled) and commits it."""
  dirs = {"faces": out_dir, "mouths": records.join(out_dir, MOUTH_DIR)}
  writers = {k: records.ShardWriter(dirs[k], {f: records.shard_name(name, split, f, shard,
                                                                    num_shards)
                                              for f in formats}) for k in kinds(mouth)}
  done = empty_marker(mouth)
  for _ in range(count):
    r = next(results)
    for k in writers:
      for data, row in r[k]:
        writers[k].write(data)
        done["rows"][k].append(row)
    if r["skip"]:
      done["skipped"].append(skip_entry(r))
    else:
      done["videos"].append(video_entry(r))
    tally["skipped"] += bool(r["skip"])
    bar.set_postfix(skipped=tally["skipped"], refresh=False)
    bar.update()
  done["files"] = {}
  for k, w in writers.items():
    w.close()
    files = w.commit()
    if w.count == 0:  # An all-skipped block: no empty shard files for readers to trip on.
      for f in files:
        epath.Path(records.join(dirs[k], f["file"])).unlink()
      files = []
    done["files"][k] = files
  return done


def run(items: Sequence[video.VideoItem], out_dir: str, name: str,
        config: video.PreprocessConfig = video.PreprocessConfig(),
        num_shards: Union[int, Mapping[str, int]] = 1, num_workers: int = 1,
        detector: str = "mtcnn", formats: Sequence[str] = records.DEFAULT_FORMATS,
        progress: bool = True) -> Dict[str, Any]:
  """Preprocesses ``items`` into ``out_dir`` (local or ``gs://``; resuming a previous run);
  returns the report.

  Args:
    detector: ``"mtcnn"``, or ``"none"`` when every item has a landmark file.
    num_shards: per split, or one number for all; more shards than videos leaves some empty
      (they are not written).
  """
  records.check_formats(formats)
  splits, shards = check_items(items, detector, num_shards)
  state = records.join(out_dir, STATE_DIR)
  epath.Path(state).mkdir(parents=True, exist_ok=True)
  if config.mouth:
    epath.Path(records.join(out_dir, MOUTH_DIR)).mkdir(parents=True, exist_ok=True)
  _check_plan(state, fingerprint(items, config, name, shards, detector), out_dir)
  blocks = split_blocks(items, shards)
  todo = [(s, k, b) for s in splits for k, b in enumerate(blocks[s])
          if not epath.Path(_marker(state, s, k)).exists()]
  pending = [i for _, _, b in todo for i in b]
  start, tally = time.perf_counter(), collections.Counter()
  with tqdm(total=len(items), initial=len(items) - len(pending), unit="video",
            desc=f"preprocess {name}", disable=not progress) as bar, \
      _results(pending, config, detector, num_workers) as results:
    for split, k, block in todo:
      done = _write_shard(out_dir, name, split, k, shards[split], formats, results, len(block),
                          config.mouth, bar, tally)
      records.write_json(_marker(state, split, k), done)
  wall = time.perf_counter() - start
  return _finish(out_dir, name, state, splits, shards, config, formats, detector, num_workers,
                 wall, len(pending))


def check_items(items: Sequence[video.VideoItem], detector: str,
                num_shards: Union[int, Mapping[str, int]]):
  """The splits (in input order) and their shard counts; refuses what would corrupt a dataset."""
  if detector not in ("mtcnn", "none"):
    raise ValueError(f"detector {detector!r}: expected 'mtcnn' or 'none'")
  ids = collections.Counter((i.split, i.video_id) for i in items)
  dup = [k for k, c in ids.items() if c > 1]
  if dup:
    raise ValueError(f"duplicate video ids (split, video_id): {dup[:5]}")
  reals = [i.video_id for i in items if i.original and not i.label]
  if reals:
    raise ValueError(f"real videos (label 0) with an 'original': {reals[:5]}; only fakes name the "
                     "real video they were made from")
  splits = list(dict.fromkeys(i.split for i in items))
  if not isinstance(num_shards, int) and set(splits) - set(num_shards):
    raise ValueError(f"num_shards {dict(num_shards)} has no entry for splits "
                     f"{sorted(set(splits) - set(num_shards))}")
  shards = {s: num_shards if isinstance(num_shards, int) else num_shards[s] for s in splits}
  bad = {s: n for s, n in shards.items() if n < 1}
  if bad:
    raise ValueError(f"num_shards {bad}: expected at least 1 shard per split")
  return splits, shards


def _marker(state: str, split: str, shard: int) -> str:
  return records.join(state, marker_name(split, shard))


def marker_name(split: str, shard: int) -> str:
  """A committed shard's done-marker in ``OUT/.preprocess/`` (both runners write the same)."""
  return f"{split}-{shard:05d}.json"


def empty_marker(mouth: bool) -> Dict[str, Any]:
  return {"rows": {k: [] for k in kinds(mouth)}, "skipped": [], "videos": [],
          "files": {k: [] for k in kinds(mouth)}}


def check_plan(fp: str, out_dir: str, read: Any, write: Any):
  """Refuses to resume into ``out_dir`` with another plan (``read()`` → the stored plan.json
  object or None; ``write(obj)`` stores it), so shards of two different runs never mix."""
  old = read()
  if old is None:
    write({"fingerprint": fp})
  elif old["fingerprint"] != fp:
    raise ValueError(f"{out_dir} holds a run with other videos, settings or shard counts; "
                     "resume with the same arguments or use a new out_dir")


def _check_plan(state: str, fp: str, out_dir: str):
  path = epath.Path(records.join(state, "plan.json"))
  read = lambda: json.loads(path.read_text()) if path.exists() else None
  check_plan(fp, out_dir, read, lambda obj: records.write_json(str(path), obj))


def assemble(markers: Mapping[str, List[Dict[str, Any]]], mouth: bool):
  """Each split's done-markers (in shard order) → per kind ``{split: (files, rows, shards)}`` for
  ``records.write_manifest``, the skipped list and the report's totals."""
  per_kind = {"faces": {}, "mouths": {}}
  skipped, videos = [], []
  for s, ms in markers.items():
    skipped += [x for m in ms for x in m["skipped"]]
    videos += [v for m in ms for v in m["videos"]]
    for kind in kinds(mouth):
      files = [f for m in ms for f in m["files"][kind]]
      rows = [r for m in ms for r in m["rows"][kind]]
      per_kind[kind][s] = (files, rows, sum(1 for m in ms if m["files"][kind]))
  totals = {"num_written": len(videos), "num_tracks": sum(v["tracks"] for v in videos),
            "video_seconds": sum(v["seconds"] for v in videos),
            "worker_seconds": sum(v["elapsed"] for v in videos)}
  return per_kind, skipped, totals


def video_entry(result: Mapping[str, Any]) -> Dict[str, Any]:
  """A written video's entry in its shard's done-marker."""
  return {"video_id": result["item"]["video_id"], "seconds": result["seconds"],
          "elapsed": result["elapsed"], **(result["stats"] or {})}


def _finish(out_dir, name, state, splits, shards, config, formats, detector, num_workers, wall,
            processed) -> Dict[str, Any]:
  """Gathers the done-markers into preprocess.json, the indexes and the manifests."""
  markers = {}
  for s in splits:
    markers[s] = []
    for k in range(shards[s]):
      markers[s].append(json.loads(epath.Path(_marker(state, s, k)).read_text()))
  per_kind, skipped, totals = assemble(markers, config.mouth)
  report = summarize(name, config, detector, totals, skipped,
                     {"videos_processed": processed, "wall_seconds": wall,
                      "workers": num_workers})
  records.write_json(records.join(out_dir, REPORT), report)
  if config.mouth:
    records.write_manifest(records.join(out_dir, MOUTH_DIR), f"{name}", per_kind["mouths"],
                           formats)
  records.write_manifest(out_dir, name, per_kind["faces"], formats)
  return report


def summarize(name: str, config: video.PreprocessConfig, detector: str,
              totals: Mapping[str, Any], skipped: List[Dict[str, Any]],
              last_run: Mapping[str, Any]) -> Dict[str, Any]:
  """The ``preprocess.json`` report (local and Beam runners write the same one).

  ``totals``: ``num_written``, ``num_tracks``, ``video_seconds`` and ``worker_seconds`` summed
  over the written videos; ``skipped``: one entry per skipped video.
  """
  seconds, busy = totals["video_seconds"], totals["worker_seconds"]
  return {
      "name": name, "config": dataclasses.asdict(config), "detector": detector,
      "num_videos": totals["num_written"] + len(skipped), "num_written": totals["num_written"],
      "num_skipped": len(skipped),
      "skipped_by_kind": dict(collections.Counter(x["kind"] for x in skipped)),
      "num_tracks": totals["num_tracks"], "video_seconds": seconds, "worker_seconds": busy,
      # Per core: a worker uses one core (TF and OpenCV are single-threaded there).
      "video_seconds_per_worker_second": seconds / busy if busy else None,
      "last_run": dict(last_run), "skipped": skipped,
  }


def skip_entry(result: Mapping[str, Any]) -> Dict[str, Any]:
  """The ``preprocess.json["skipped"]`` entry of a ``work`` result that was skipped."""
  item = result["item"]
  return {"path": item["path"], "video_id": item["video_id"], "split": item["split"],
          "kind": result["skip"][0], "message": result["skip"][1]}


# ----------------------------------------------------------------------------- inputs
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v")


def scan(root: str, landmarks_dir: Optional[str] = None, **meta: Any) -> List[video.VideoItem]:
  """Every video file under ``root`` (sorted) as items with ``video_id`` = relative path without
  extension; ``meta`` sets the other ``VideoItem`` fields. A landmark file
  ``landmarks_dir/<video_id>.npy`` (or ``.json``) is attached where it exists."""
  items = []
  for dirpath, _, files in os.walk(root):
    for fn in files:
      if fn.lower().endswith(VIDEO_EXTENSIONS):
        path = os.path.join(dirpath, fn)
        vid = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")
        items.append(video.VideoItem(path=path, video_id=vid,
                                     landmarks=_landmark_file(landmarks_dir, vid), **meta))
  return sorted(items, key=lambda i: i.video_id)


def _landmark_file(landmarks_dir: Optional[str], video_id: str) -> str:
  if not landmarks_dir:
    return ""
  for ext in (".npy", ".json"):
    p = records.join(landmarks_dir, video_id + ext)
    if epath.Path(p).exists():
      return p
  return ""


def read_list(path: str, **defaults: Any) -> List[video.VideoItem]:
  """Items from a JSON-lines file, one ``VideoItem`` object per line (``path`` required,
  ``video_id`` defaults to the file name without extension); ``defaults`` fill absent fields."""
  with epath.Path(path).open() as f:
    return items_from_lines(f, path, **defaults)


def items_from_lines(lines: Iterable[str], where: str, **defaults: Any) -> List[video.VideoItem]:
  """``read_list`` on lines from anywhere (the Beam runner reads ``gs://`` lists); errors name
  ``where`` and the line number."""
  fields = {f.name for f in dataclasses.fields(video.VideoItem)}
  items = []
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{where}:{n}: not a JSON object: {e}") from None
    if not isinstance(row, dict):
      raise ValueError(f"{where}:{n}: expected a JSON object per line, got {type(row).__name__}")
    unknown = sorted(set(row) - fields)
    if unknown or "path" not in row:
      raise ValueError(f"{where}:{n}: needs 'path'; unknown keys {unknown}; "
                       f"allowed: {sorted(fields)}")
    row.setdefault("video_id", os.path.splitext(os.path.basename(row["path"]))[0])
    items.append(video.VideoItem(**{**defaults, **row}))
  return items

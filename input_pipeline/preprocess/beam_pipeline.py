"""Preprocessing as an Apache Beam pipeline, for corpora one machine cannot get through.

VoxCeleb2 (≈ 1 M clips) or HowTo100M take CPU-years of decoding and face detection; Beam spreads
them over a Dataflow (or Flink/Spark) cluster. The pipeline applies the local runner's own
per-video function (``runner.process_and_encode``) and writes the same dataset — same shard
assignment, same record order, same index, manifest, done-markers and ``preprocess.json`` — so a
dataset made either way reads the same, byte for byte:

  driver     check the items and the plan, assign shards (contiguous blocks of each split, as
             locally), drop the shards an earlier run committed
             → OUT/.preprocess/beam_items.jsonl (read by the workers: a million items would
             not fit in the pipeline graph)
  pipeline   ReadFromText → Reshuffle → ProcessVideo → records and per-video outcomes keyed
             (split, shard) → GroupByKey → WriteShard (shard files, then its done-marker)
             → Finish: preprocess.json, indexes, manifest.json (last)

Inputs and ``out_dir`` may be on any filesystem Beam knows (``gs://`` with apache-beam[gcp]);
remote videos and landmark files are copied to the worker's local disk first because FFmpeg and
NumPy read local files. A shard's records are held in memory by the worker that writes it
(sorted for a deterministic order): pick ``num_shards`` so that a shard stays ≲ 1 GB.
Resumable like the local runner: a rerun (or a local run into the same ``out_dir``) keeps every
shard whose done-marker exists and processes only the rest.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

try:
  import apache_beam as beam
  from apache_beam.io.filesystem import CompressionTypes
  from apache_beam.io.filesystems import FileSystems
  from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
except ImportError as _e:  # pragma: no cover - exercised only without the extra.
  raise ImportError("the Beam preprocessing pipeline needs Apache Beam: "
                    "pip install -e '.[beam]'") from _e

from input_pipeline import records
from input_pipeline.preprocess import faces, runner, video

ITEMS = "beam_items.jsonl"
METRICS = "fakedet_preprocess"  # Beam metrics namespace (Dataflow UI, DirectRunner summary).


# ----------------------------------------------------------------------------- filesystems
def _is_remote(path: str) -> bool:
  return FileSystems.get_scheme(path) not in (None, "file")


def _create(path: str):
  return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _upload(local: str, dest: str):
  with open(local, "rb") as src, _create(dest) as dst:
    shutil.copyfileobj(src, dst, 1 << 22)


def _write_text(dest: str, text: str):
  with _create(dest) as f:
    f.write(text.encode())


def read_list(path: str, **defaults: Any) -> List[video.VideoItem]:
  """``runner.read_list`` for a list on any Beam filesystem (``gs://bucket/voxceleb2.jsonl``)."""
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    lines = f.read().decode().splitlines()
  return runner.items_from_lines(lines, path, **defaults)


@contextlib.contextmanager
def _local_inputs(item: video.VideoItem):
  """The item with its remote video / landmark file copied to a local temporary directory.

  A file that cannot be copied is left missing, so decoding reports it like a missing local
  file (the caller rewrites the temporary path in the message back to the original).
  """
  remote = {f: p for f in ("path", "landmarks") if (p := getattr(item, f)) and _is_remote(p)}
  if not remote:
    yield item
    return
  with tempfile.TemporaryDirectory(prefix="fakedet_in_") as tmp:
    local = {}
    for field, path in remote.items():
      local[field] = os.path.join(tmp, field + os.path.splitext(path)[1])
      try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src, \
            open(local[field], "wb") as dst:
          shutil.copyfileobj(src, dst, 1 << 22)
      except Exception:  # pylint: disable=broad-except
        with contextlib.suppress(OSError):
          os.remove(local[field])
    yield dataclasses.replace(item, **local)


# ----------------------------------------------------------------------------- transforms
class ProcessVideo(beam.DoFn):
  """One planned item → its encoded records, keyed by shard, and one outcome (tagged output).

  Never raises for a bad video (``runner.process_and_encode`` turns every failure into a skip),
  so one bad file cannot fail a bundle and make the runner retry it four times.
  """

  def __init__(self, config: video.PreprocessConfig, detector: str):
    super().__init__()
    self.config, self.detector_name = config, detector
    self.detector = None

  def setup(self):  # Once per worker: MTCNN's graph takes seconds to build.
    faces.set_single_thread(tensorflow=self.detector_name == "mtcnn")
    if self.detector_name == "mtcnn":
      self.detector = video.make_detector(self.config)

  def process(self, planned: Mapping[str, Any]):
    item = video.VideoItem(**planned["item"])
    with _local_inputs(item) as local:
      result = runner.process_and_encode(local, self.config, self.detector)
    result["item"] = planned["item"]
    key, position = (planned["split"], planned["shard"]), planned["position"]
    if result["skip"]:
      kind, message = result["skip"]
      for field in ("path", "landmarks"):  # Name the user's files, not the temporary copies.
        if getattr(local, field) != getattr(item, field):
          message = message.replace(getattr(local, field), getattr(item, field))
      result["skip"] = (kind, message)
      beam.metrics.Metrics.counter(METRICS, f"skipped_{kind}").inc()
      yield key, ("skipped", position, runner.skip_entry(result))
      return
    beam.metrics.Metrics.counter(METRICS, "videos_written").inc()
    beam.metrics.Metrics.counter(METRICS, "tracks").inc(result["stats"]["tracks"])
    yield key, ("videos", position, runner.video_entry(result))
    for kind in ("faces", "mouths"):
      for data, row in result[kind]:
        yield key, (kind, position, row["track_id"], data, row)


class WriteShard(beam.DoFn):
  """Everything of one (split, shard) → its files in every format (faces, mouths), then its
  done-marker — the local runner's ``_write_shard`` layout, so either runner can resume it.

  Records are sorted by (input position, track), the local runner's order, and written through
  ``records.ShardWriter`` to local disk, then copied to ``out_dir``. A retried bundle rewrites
  the same bytes.
  """

  def __init__(self, out_dir: str, name: str, num_shards: Mapping[str, int],
               formats: Sequence[str], mouth: bool):
    super().__init__()
    self.out_dir, self.name, self.num_shards = out_dir, name, num_shards
    self.formats, self.mouth = formats, mouth

  def process(self, keyed):
    (split, shard), values = keyed
    done = runner.empty_marker(self.mouth)
    by_kind = {k: [] for k in ("faces", "mouths", "skipped", "videos")}
    for v in values:
      by_kind[v[0]].append(v)
    for kind in ("skipped", "videos"):
      done[kind] = [v[2] for v in sorted(by_kind[kind], key=lambda v: v[1])]
    with tempfile.TemporaryDirectory(prefix="fakedet_shard_") as tmp:
      for kind in done["files"]:
        mine = sorted(by_kind[kind], key=lambda v: (v[1], v[2]))
        if not mine:  # An all-skipped block: no empty shard files (as locally).
          continue
        writer = records.ShardWriter(tmp, {
            f: records.shard_name(self.name, split, f, shard, self.num_shards[split])
            for f in self.formats})
        for v in mine:
          writer.write(v[3])
        writer.close()
        done["files"][kind] = writer.commit()
        done["rows"][kind] = [v[4] for v in mine]
        for f in done["files"][kind]:
          _upload(os.path.join(tmp, f["file"]), _kind_path(self.out_dir, kind, f["file"]))
    _write_text(_marker_path(self.out_dir, split, shard), json.dumps(done, indent=1))
    beam.metrics.Metrics.counter(METRICS, "shards_written").inc()
    yield (split, shard), done


def _marker_path(out_dir: str, split: str, shard: int) -> str:
  return FileSystems.join(out_dir, runner.STATE_DIR, runner.marker_name(split, shard))


def _read_text(path: str) -> str:
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    return f.read().decode()


def _kind_path(out_dir: str, kind: str, file: str) -> str:
  return (FileSystems.join(out_dir, file) if kind == "faces"
          else FileSystems.join(out_dir, runner.MOUTH_DIR, file))


def finish(_, fresh: List[Any], *, out_dir: str, name: str, config: video.PreprocessConfig,
           detector: str, formats: Sequence[str], block_sizes: Mapping[str, List[int]],
           started: float, runner_name: str, processed: int):
  """Writes preprocess.json, then each dataset's indexes and manifest (last: its presence
  means the dataset is complete), from the done-markers of this run (``fresh``) and of earlier
  runs (read back), exactly as ``runner._finish`` lays them out."""
  fresh = {tuple(k): m for k, m in fresh}
  markers = {}
  for s, sizes in block_sizes.items():
    markers[s] = [fresh[(s, k)] if (s, k) in fresh
                  else runner.empty_marker(config.mouth) if not n  # No videos, never written.
                  else json.loads(_read_text(_marker_path(out_dir, s, k)))
                  for k, n in enumerate(sizes)]
  per_kind, skipped, totals = runner.assemble(markers, config.mouth)
  report = runner.summarize(name, config, detector, totals, skipped, {
      "videos_processed": processed, "wall_seconds": time.time() - started,
      "runner": f"beam/{runner_name}"})
  _write_text(FileSystems.join(out_dir, runner.REPORT), json.dumps(report, indent=1))
  for kind in reversed(runner.kinds(config.mouth)):  # Faces' manifest last, as locally.
    with tempfile.TemporaryDirectory(prefix="fakedet_manifest_") as tmp:
      records.write_manifest(tmp, name, per_kind[kind], formats)
      for s in block_sizes:
        index = records.index_name(name, s)
        _upload(os.path.join(tmp, index), _kind_path(out_dir, kind, index))
      _upload(os.path.join(tmp, records.MANIFEST), _kind_path(out_dir, kind, records.MANIFEST))
  return report


# ----------------------------------------------------------------------------- driver
def plan(blocks: Mapping[str, List[List[video.VideoItem]]]) -> List[Dict[str, Any]]:
  """Each item of ``runner.split_blocks`` with its split, shard and position there."""
  planned = []
  for s, split_blocks in blocks.items():
    for shard, block in enumerate(split_blocks):
      for position, item in enumerate(block):
        planned.append({"split": s, "shard": shard, "position": position,
                        "item": dataclasses.asdict(item)})
  return planned


def build(pipeline: "beam.Pipeline", items_path: str, out_dir: str, name: str,
          config: video.PreprocessConfig, detector: str, formats: Sequence[str],
          num_shards: Mapping[str, int], block_sizes: Mapping[str, List[int]], started: float,
          runner_name: str, processed: int):
  """Adds the preprocessing transforms to ``pipeline`` (compose it into a larger one)."""
  shards = (pipeline
            | "ReadItems" >> beam.io.ReadFromText(items_path)
            | "Parse" >> beam.Map(json.loads)
            | "Spread" >> beam.Reshuffle()  # Else all items stay fused on one reader worker.
            | "ProcessVideo" >> beam.ParDo(ProcessVideo(config, detector))
            | "ByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(WriteShard(out_dir, name, dict(num_shards), formats,
                                                    config.mouth)))
  return (pipeline
          | "Once" >> beam.Create([None])
          | "Finish" >> beam.Map(finish, beam.pvalue.AsList(shards), out_dir=out_dir, name=name,
                                 config=config, detector=detector, formats=list(formats),
                                 block_sizes=dict(block_sizes), started=started,
                                 runner_name=runner_name, processed=processed))


def _committed(out_dir: str) -> set:
  """(split, shard) of every done-marker in OUT/.preprocess (one listing, not one request per
  shard: Dataflow jobs have thousands)."""
  pattern = FileSystems.join(out_dir, runner.STATE_DIR, "*.json")
  found = FileSystems.match([pattern])[0].metadata_list
  done = set()
  for m in found:
    match = re.fullmatch(r"(.+)-(\d{5})\.json", os.path.basename(m.path))
    if match:
      done.add((match.group(1), int(match.group(2))))
  return done


def run(items: Sequence[video.VideoItem], out_dir: str, name: str,
        config: video.PreprocessConfig = video.PreprocessConfig(),
        num_shards: Union[int, Mapping[str, int]] = 1, detector: str = "mtcnn",
        formats: Sequence[str] = records.DEFAULT_FORMATS,
        pipeline_args: Optional[Iterable[str]] = None) -> Dict[str, Any]:
  """Preprocesses ``items`` into ``out_dir`` with Beam; returns the report when the pipeline
  is done. ``pipeline_args``: Beam options (default: the DirectRunner on this machine), e.g.
  ``["--runner=DataflowRunner", "--project=P", "--region=R", "--temp_location=gs://B/tmp"]``.
  """
  _, shards = runner.check_items(items, detector, num_shards)
  if not items:
    raise ValueError("no videos to preprocess")
  started = time.time()
  state = FileSystems.join(out_dir, runner.STATE_DIR)
  plan_path = FileSystems.join(state, "plan.json")
  runner.check_plan(
      runner.fingerprint(items, config, name, shards, detector), out_dir,
      lambda: json.loads(_read_text(plan_path)) if FileSystems.exists(plan_path) else None,
      lambda obj: _write_text(plan_path, json.dumps(obj)))
  blocks = runner.split_blocks(items, shards)
  planned = plan(blocks)
  done = _committed(out_dir)
  todo = [p for p in planned if (p["split"], p["shard"]) not in done]
  items_path = FileSystems.join(state, ITEMS)
  _write_text(items_path, "".join(json.dumps(p) + "\n" for p in todo))
  block_sizes = {s: [len(b) for b in bs] for s, bs in blocks.items()}
  options = PipelineOptions(list(pipeline_args or []))
  runner_name = options.view_as(StandardOptions).runner or "DirectRunner"
  with beam.Pipeline(options=options) as pipeline:
    build(pipeline, items_path, out_dir, name, config, detector, formats, shards, block_sizes,
          started, runner_name, len(todo))
  return json.loads(_read_text(FileSystems.join(out_dir, runner.REPORT)))

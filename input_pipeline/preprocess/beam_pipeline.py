"""Preprocessing as an Apache Beam pipeline, for corpora one machine cannot get through.

VoxCeleb2 (≈ 1 M clips) or HowTo100M take CPU-years of decoding and face detection; Beam spreads
them over a Dataflow (or Flink/Spark) cluster. The pipeline applies the local runner's own
per-video function (``runner.process_and_encode``) and writes the same dataset — same shard
assignment, same record order, same index, manifest and ``preprocess.json`` — so a dataset made
either way reads the same, byte for byte:

  driver     check the items, assign shards (contiguous blocks of each split, as locally)
             → OUT/.preprocess/beam_items.jsonl (read by the workers: a million items would
             not fit in the pipeline graph)
  pipeline   ReadFromText → Reshuffle → ProcessVideo ─┬ records keyed (split, shard)
                                                        │  → GroupByKey → WriteShard (OUT)
                                                        └ per-video outcomes → Tally
             → Finish: preprocess.json, indexes, manifest.json (last)

Inputs and ``out_dir`` may be on any filesystem Beam knows (``gs://`` with apache-beam[gcp]);
remote videos and landmark files are copied to the worker's local disk first because FFmpeg and
NumPy read local files. A shard's records are held in memory by the worker that writes it
(sorted for a deterministic order): pick ``num_shards`` so that a shard stays ≲ 1 GB.
There is no resume across pipeline runs (a failed job is rerun whole); inside a run the
runner retries failed bundles, and a bad video is a skip, never a failed bundle.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

try:
  import apache_beam as beam
  from apache_beam.io.filesystem import CompressionTypes
  from apache_beam.io.filesystems import FileSystems
except ImportError as _e:  # pragma: no cover - exercised only without the extra.
  raise ImportError("the Beam preprocessing pipeline needs Apache Beam: "
                    "pip install -e '.[beam]'") from _e

from input_pipeline import records
from input_pipeline.preprocess import runner, video

ITEMS = "beam_items.jsonl"
METRICS = "fakedet_preprocess"  # Beam metrics namespace (Dataflow UI, DirectRunner summary).
_RECORDS, _OUTCOMES = "records", "outcomes"


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
    from input_pipeline.preprocess import faces  # pylint: disable=import-outside-toplevel
    faces.set_single_thread(tensorflow=self.detector_name == "mtcnn")
    if self.detector_name == "mtcnn":
      self.detector = video.make_detector(self.config)

  def process(self, planned: Mapping[str, Any]):
    item = video.VideoItem(**planned["item"])
    with _local_inputs(item) as local:
      result = runner.process_and_encode(local, self.config, self.detector)
    result["item"] = planned["item"]
    if result["skip"]:
      kind, message = result["skip"]
      for field in ("path", "landmarks"):  # Name the user's files, not the temporary copies.
        if getattr(local, field) != getattr(item, field):
          message = message.replace(getattr(local, field), getattr(item, field))
      result["skip"] = (kind, message)
      beam.metrics.Metrics.counter(METRICS, f"skipped_{kind}").inc()
      yield beam.pvalue.TaggedOutput(_OUTCOMES, {"index": planned["index"],
                                                 "skip": runner.skip_entry(result)})
      return
    beam.metrics.Metrics.counter(METRICS, "videos_written").inc()
    beam.metrics.Metrics.counter(METRICS, "tracks").inc(result["stats"]["tracks"])
    key = (planned["split"], planned["shard"])
    for kind in ("faces", "mouths"):
      for data, row in result[kind]:
        yield key, (kind, planned["position"], row["track_id"], data, row)
    yield beam.pvalue.TaggedOutput(_OUTCOMES, {
        "index": planned["index"], "tracks": result["stats"]["tracks"],
        "seconds": result["seconds"], "elapsed": result["elapsed"]})


class WriteShard(beam.DoFn):
  """All records of one (split, shard) → its files in every format, faces and mouths.

  Records are sorted by (input position, track) — the local runner's order — and written
  through ``records.ShardWriter`` to local disk, then copied to ``out_dir``. A retried bundle
  rewrites the same bytes.
  """

  def __init__(self, out_dir: str, name: str, num_shards: Mapping[str, int],
               formats: Sequence[str]):
    super().__init__()
    self.out_dir, self.name, self.num_shards, self.formats = out_dir, name, num_shards, formats

  def process(self, keyed):
    (split, shard), values = keyed
    values = sorted(values, key=lambda v: (v[1], v[2]))
    done = {"split": split, "shard": shard, "files": {}, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="fakedet_shard_") as tmp:
      for kind in ("faces", "mouths"):
        mine = [v for v in values if v[0] == kind]
        if not mine:
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
    beam.metrics.Metrics.counter(METRICS, "shards_written").inc()
    yield done


class Tally(beam.CombineFn):
  """Per-video outcomes → the report's totals and the skipped list (in input order)."""

  def create_accumulator(self):
    return {"num_written": 0, "num_tracks": 0, "video_seconds": 0.0, "worker_seconds": 0.0,
            "skipped": []}

  def add_input(self, acc, outcome):
    if "skip" in outcome:
      acc["skipped"].append((outcome["index"], outcome["skip"]))
    else:
      acc["num_written"] += 1
      acc["num_tracks"] += outcome["tracks"]
      acc["video_seconds"] += outcome["seconds"]
      acc["worker_seconds"] += outcome["elapsed"]
    return acc

  def merge_accumulators(self, accs):
    accs = list(accs)
    out = self.create_accumulator()
    for a in accs:
      for k in ("num_written", "num_tracks", "video_seconds", "worker_seconds"):
        out[k] += a[k]
      out["skipped"] += a["skipped"]
    return out

  def extract_output(self, acc):
    return dict(acc, skipped=[s for _, s in sorted(acc["skipped"], key=lambda x: x[0])])


def _kind_path(out_dir: str, kind: str, file: str) -> str:
  return (FileSystems.join(out_dir, file) if kind == "faces"
          else FileSystems.join(out_dir, runner.MOUTH_DIR, file))


def finish(_, shard_results: List[Dict[str, Any]], totals: Dict[str, Any], *, out_dir: str,
           name: str, config: video.PreprocessConfig, detector: str, formats: Sequence[str],
           splits: Sequence[str], started: float, runner_name: str):
  """Writes preprocess.json, then each dataset's indexes and manifest (last: its presence
  means the dataset is complete), exactly as ``runner._finish`` lays them out."""
  report = runner.summarize(name, config, detector, totals, totals["skipped"], {
      "videos_processed": totals["num_written"] + len(totals["skipped"]),
      "wall_seconds": time.time() - started, "runner": f"beam/{runner_name}"})
  _write_text(FileSystems.join(out_dir, runner.REPORT), json.dumps(report, indent=1))
  ordered = sorted(shard_results, key=lambda r: (r["split"], r["shard"]))
  for kind in (["mouths", "faces"] if config.mouth else ["faces"]):
    per_split = {}
    for s in splits:
      mine = [r for r in ordered if r["split"] == s and kind in r["files"]]
      per_split[s] = ([f for r in mine for f in r["files"][kind]],
                      [row for r in mine for row in r["rows"][kind]], len(mine))
    with tempfile.TemporaryDirectory(prefix="fakedet_manifest_") as tmp:
      records.write_manifest(tmp, name, per_split, formats)
      for s in splits:
        index = records.index_name(name, s)
        _upload(os.path.join(tmp, index), _kind_path(out_dir, kind, index))
      _upload(os.path.join(tmp, records.MANIFEST), _kind_path(out_dir, kind, records.MANIFEST))
  return report


# ----------------------------------------------------------------------------- driver
def plan(items: Sequence[video.VideoItem], splits: Sequence[str],
         num_shards: Mapping[str, int]) -> List[Dict[str, Any]]:
  """Each item with its split, shard and position there: ``runner.shard_blocks``' layout."""
  planned = []
  for s in splits:
    blocks = runner.shard_blocks([i for i in items if i.split == s], num_shards[s])
    for shard, block in enumerate(blocks):
      for position, item in enumerate(block):
        planned.append({"index": len(planned), "split": s, "shard": shard,
                        "position": position, "item": dataclasses.asdict(item)})
  return planned


def build(pipeline: "beam.Pipeline", items_path: str, out_dir: str, name: str,
          config: video.PreprocessConfig, detector: str, formats: Sequence[str],
          splits: Sequence[str], num_shards: Mapping[str, int], started: float,
          runner_name: str):
  """Adds the preprocessing transforms to ``pipeline`` (compose it into a larger one)."""
  planned = (pipeline
             | "ReadItems" >> beam.io.ReadFromText(items_path)
             | "Parse" >> beam.Map(json.loads)
             | "Spread" >> beam.Reshuffle())  # Else all items stay fused on one reader worker.
  processed = planned | "ProcessVideo" >> beam.ParDo(ProcessVideo(config, detector)).with_outputs(
      _OUTCOMES, main=_RECORDS)
  shards = (processed[_RECORDS]
            | "ByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(WriteShard(out_dir, name, dict(num_shards), formats)))
  totals = processed[_OUTCOMES] | "Tally" >> beam.CombineGlobally(Tally())
  return (pipeline
          | "Once" >> beam.Create([None])
          | "Finish" >> beam.Map(finish, beam.pvalue.AsList(shards),
                                 beam.pvalue.AsSingleton(totals), out_dir=out_dir, name=name,
                                 config=config, detector=detector, formats=list(formats),
                                 splits=list(splits), started=started,
                                 runner_name=runner_name))


def run(items: Sequence[video.VideoItem], out_dir: str, name: str,
        config: video.PreprocessConfig = video.PreprocessConfig(),
        num_shards: Union[int, Mapping[str, int]] = 1, detector: str = "mtcnn",
        formats: Sequence[str] = records.FORMATS,
        pipeline_args: Optional[Iterable[str]] = None) -> Dict[str, Any]:
  """Preprocesses ``items`` into ``out_dir`` with Beam; returns the report when the pipeline
  is done. ``pipeline_args``: Beam options (default: the DirectRunner on this machine), e.g.
  ``["--runner=DataflowRunner", "--project=P", "--region=R", "--temp_location=gs://B/tmp"]``.
  """
  from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions  # pylint: disable=import-outside-toplevel
  splits, shards = runner.check_items(items, detector, num_shards)
  if not items:
    raise ValueError("no videos to preprocess")
  started = time.time()
  items_path = FileSystems.join(out_dir, runner.STATE_DIR, ITEMS)
  _write_text(items_path, "".join(json.dumps(p) + "\n" for p in plan(items, splits, shards)))
  options = PipelineOptions(list(pipeline_args or []))
  runner_name = options.view_as(StandardOptions).runner or "DirectRunner"
  with beam.Pipeline(options=options) as pipeline:
    build(pipeline, items_path, out_dir, name, config, detector, formats, splits, shards,
          started, runner_name)
  with FileSystems.open(FileSystems.join(out_dir, runner.REPORT),
                        compression_type=CompressionTypes.UNCOMPRESSED) as f:
    return json.loads(f.read().decode())

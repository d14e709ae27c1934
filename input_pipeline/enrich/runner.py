"""Record directory in → the same records with their original audio out, resumable, reported.

The output has the input's shard files (same names, same records in the same order, same index
and manifest counts); only each enriched record's ``audio`` bytes change. Records are edited as
serialised examples, so frames, landmarks and masks keep their exact bytes (no JPEG re-encode).
A shard is written through ``records.ShardWriter`` and then gets a done-marker in
``OUT/.enrich/``; a rerun keeps committed shards and does the rest, and refuses to resume into a
directory made from other inputs or settings (``plan.json``). ``OUT/enrich.json`` lists every
record left silent with its reason; ``manifest.json`` is written last.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from array_record.python import array_record_module
from etils import epath
from tqdm import tqdm

from input_pipeline import records
from input_pipeline.enrich import mapping as mapping_lib
from input_pipeline.enrich import originals
from input_pipeline.preprocess import runner as preprocess_runner

STATE_DIR = ".enrich"
REPORT = "enrich.json"
CACHE_SIZE = 64  # Originals' spans kept decoded: a real and its fakes share up to 7 ids.
ENRICHED, SILENT, PASSED = "enriched", "silent", "passed_through"


# ----------------------------------------------------------------------------- track starts
class TrackStarts:
  """Whether a record's first frame is its video's first frame.

  Records do not store where a face track starts in its video, and the frame list maps video
  frames, so only a track known to start at frame 0 can be given audio. The preprocessing
  done-markers (``.preprocess/``, kept in the output of ``python -m input_pipeline.preprocess``)
  hold every video's frame count: a track with all of its video's frames starts at 0. Without
  them, ``assume_whole_video`` takes every video with a single track to be one whole track (FF++
  sequences were chosen to show one trackable face throughout).
  """

  def __init__(self, records_dir: str, manifest: Mapping[str, Any], assume_whole_video: bool):
    self.video_frames = _preprocessed_frames(records_dir)
    self.assume = assume_whole_video
    if self.video_frames is None and not assume_whole_video:
      raise ValueError(
          f"{records_dir} has no preprocessing state ({preprocess_runner.STATE_DIR}/), so where "
          "each face track starts in its video is unknown; pass --assume_whole_video if every "
          "single-track video's record spans the whole video")
    self.tracks = collections.Counter()
    for split in manifest["splits"]:
      if manifest["splits"][split]["num_records"]:
        self.tracks.update((split, v) for v in
                           records.read_index(records_dir, manifest, split)["video_id"])

  def check(self, split: str, video_id: str, num_frames: int) -> str:
    """"" when the record starts at its video's first frame, else why that is unknown."""
    if self.video_frames is not None and video_id in self.video_frames:
      total = self.video_frames[video_id]
      return "" if total == num_frames else (
          f"the track has {num_frames} of the video's {total} frames; where it starts is not "
          "recorded")
    if not self.assume:
      return f"{video_id} is not in the preprocessing state"
    n = self.tracks[(split, video_id)]
    return "" if n == 1 else f"{n} face tracks; where each starts in the video is not recorded"


def _preprocessed_frames(records_dir: str) -> Optional[Dict[str, int]]:
  """video_id → decoded frame count from the preprocessing done-markers, or None without them
  (a mouth-crop dataset, ``OUT/mouth``, shares its parent's)."""
  state = epath.Path(records_dir) / preprocess_runner.STATE_DIR
  if not state.exists() and epath.Path(records_dir).name == preprocess_runner.MOUTH_DIR:
    state = epath.Path(records_dir).parent / preprocess_runner.STATE_DIR
  if not state.exists():
    return None
  frames = {}
  for marker in state.glob("*.json"):
    if marker.name != "plan.json":
      for v in json.loads(marker.read_text()).get("videos", []):
        if "frames" in v:
          frames[v["video_id"]] = int(v["frames"])
  return frames


# ----------------------------------------------------------------------------- one record
@dataclasses.dataclass
class Enricher:
  """Decides and attaches one record's audio."""
  mapping: mapping_lib.Mapping
  originals_dir: str
  starts: TrackStarts

  def __post_init__(self):
    self._span = functools.lru_cache(maxsize=CACHE_SIZE)(self._read_span)

  def _read_span(self, path: str, first: int, count: int, sample_rate: int):
    try:  # Failures are cached too (lru_cache keeps only returned values).
      return originals.read_span(path, first, count, sample_rate), None
    except originals.OriginalError as e:
      return None, e

  def __call__(self, data: bytes, split: str, where: str) -> Tuple[bytes, Dict[str, Any]]:
    """(the record's bytes, its report entry)."""
    raw = records.parse(data, where)
    entry = {"split": split, "video_id": raw["video_id"], "track_id": raw["track_id"],
             "manipulation": raw["manipulation"]}
    src, reason = mapping_lib.audio_source(raw["video_id"], raw["manipulation"])
    if src is None:
      status = PASSED if reason == "not_ffpp" else SILENT
      return data, dict(entry, status=status, reason=reason, message=_WHY[reason])
    entry.update(audio_from=src.ff_id, role=src.role)
    audio, reason, message, detail = self._audio(raw, split, src)
    if audio is None:
      return data, dict(entry, status=SILENT, reason=reason, message=message)
    return with_audio(data, audio), dict(entry, status=ENRICHED, **detail)

  def _audio(self, raw, split: str, src: mapping_lib.AudioSource):
    """(int16 audio, "", "", details) or (None, reason, message, None)."""
    num_frames, fps, rate = len(raw["frames"]), raw["fps"], raw["sample_rate"]
    why = self.starts.check(split, raw["video_id"], num_frames)
    if why:
      return None, "track_start_unknown", why, None
    seq, reason, message = self.mapping.sequence(src.ff_id)
    if seq is None:
      return None, reason, message, None
    path = originals.find(self.originals_dir, seq.youtube_id)
    if path is None:
      return None, "no_audio_file", (f"no {seq.youtube_id}.<ext> (nor {seq.youtube_id}/"
                                     f"{seq.youtube_id}.<ext>) in {self.originals_dir}"), None
    span, error = self._span(path, seq.first, seq.count, rate)
    if error is not None:
      return None, error.kind, error.message, None
    if num_frames / fps > seq.count / span.fps + 1e-3:
      return None, "sequence_shorter_than_record", (
          f"{src.ff_id}'s sequence is {seq.count} frames ({seq.count / span.fps:.2f} s at "
          f"{span.fps:g} fps); the record is {num_frames / fps:.2f} s"), None
    n = max(len(raw["audio"]), records.audio_samples(num_frames, fps, rate))
    if n > span.available:
      return None, "audio_too_short", (
          f"{path}: its audio ends {(n - span.available) / rate:.2f} s before the record's "
          "last frame"), None
    detail = {"youtube_id": seq.youtube_id, "first_frame": seq.first,
              "start_seconds": round(span.start, 6), "file": path}
    return span.audio[:n], "", "", detail


_WHY = {
    "not_ffpp": "not a FaceForensics++-derived video (passed through unchanged)",
    "not_youtube": "FF++ DeepFakeDetection / actors video: not from YouTube, no original audio",
    "unknown_manipulation": (f"neither a face swap {mapping_lib.SWAPS} nor a reenactment "
                             f"{mapping_lib.REENACTMENTS}: whose audio it needs is unknown"),
}


def with_audio(data: bytes, audio: np.ndarray) -> bytes:
  """The serialised record with its ``audio`` replaced; every other byte of every field kept."""
  ex = records.Example()
  ex.ParseFromString(data)
  values = ex.features.feature["audio"].bytes_list.value
  del values[:]
  values.append(np.asarray(audio, np.int16).astype("<i2").tobytes())
  return ex.SerializeToString(deterministic=True)


# ----------------------------------------------------------------------------- the run
def run(records_dir: str, out_dir: str, originals_dir: str, conversion_dict: str,
        sequences_dir: Optional[str] = None, verified: Optional[str] = None,
        assume_whole_video: bool = False, progress: bool = True) -> Dict[str, Any]:
  """Writes ``out_dir``: the records of ``records_dir`` with their original audio; returns the
  report (also ``OUT/enrich.json``). Rerunning resumes.

  Args:
    originals_dir: the YouTube originals, ``<youtube id>.<ext>`` or ``<id>/<id>.<ext>``.
    conversion_dict: FF++'s ``conversion_dict.json``.
    sequences_dir: holds ``<youtube id>/extracted_sequences/<k>.json`` (default:
      ``originals_dir``, as in FF++'s ``downloaded_videos``).
    verified: optional JSON list of the ids whose enrichment was checked (FakeOut's
      ``proper_audio_files.json``); other ids stay silent (``unverified``).
    assume_whole_video: see ``TrackStarts``.
  """
  if os.path.abspath(records_dir) == os.path.abspath(out_dir):
    raise ValueError(f"out_dir {out_dir} is the input directory; write to a new directory")
  manifest = records.read_manifest(records_dir)
  sequences_dir = sequences_dir or originals_dir
  enrich = Enricher(mapping_lib.Mapping(conversion_dict, sequences_dir, verified), originals_dir,
                    TrackStarts(records_dir, manifest, assume_whole_video))
  state = epath.Path(out_dir) / STATE_DIR
  state.mkdir(parents=True, exist_ok=True)
  _check_plan(state, out_dir, _fingerprint(manifest, originals_dir, conversion_dict,
                                           sequences_dir, verified, assume_whole_video))
  shards = [(split, f["file"]) for split, info in manifest["splits"].items()
            for f in info["files"] if f["format"] == "array_record"]
  todo = [s for s in shards if not (state / _marker(s[1])).exists()]
  started = time.perf_counter()
  with tqdm(total=len(shards), initial=len(shards) - len(todo), unit="shard", desc="enrich",
            disable=not progress) as bar:
    for split, name in todo:
      done = _enrich_shard(records_dir, out_dir, split, name, manifest["formats"], enrich)
      records.write_json(str(state / _marker(name)), done)
      bar.update()
  return _finish(records_dir, out_dir, manifest, state, shards,
                 {"shards_processed": len(todo), "wall_seconds": time.perf_counter() - started})


def _marker(shard_file: str) -> str:
  return shard_file + ".json"


def _enrich_shard(records_dir: str, out_dir: str, split: str, name: str, formats, enrich):
  """Rewrites one input shard (all formats) and returns its done-marker."""
  path = records.join(records_dir, name)
  names = {fmt: name.replace(".array_record-", f".{fmt}-") for fmt in formats}
  writer = records.ShardWriter(out_dir, names)
  entries = []
  reader = array_record_module.ArrayRecordReader(path)
  try:
    for i in range(reader.num_records()):
      data, entry = enrich(reader.read([i])[0], split, f"{path} record {i}")
      writer.write(data)
      entries.append(entry)
  finally:
    reader.close()
  writer.close()
  return {"files": writer.commit(), "entries": entries}


def _fingerprint(manifest, originals_dir, conversion_dict, sequences_dir, verified,
                 assume_whole_video) -> str:
  """The inputs as the plan sees them: the input shards' checksums, the mapping files' bytes,
  the directories and the setting (the originals themselves are too large to hash)."""
  def digest(path):
    return records.sha256(path) if path else None
  blob = json.dumps([[f["sha256"] for s in manifest["splits"].values() for f in s["files"]],
                     digest(conversion_dict), digest(verified),
                     os.path.abspath(originals_dir), os.path.abspath(sequences_dir),
                     bool(assume_whole_video)], sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()


def _check_plan(state: epath.Path, out_dir: str, fingerprint: str):
  plan = state / "plan.json"
  if not plan.exists():
    records.write_json(str(plan), {"fingerprint": fingerprint})
  elif json.loads(plan.read_text())["fingerprint"] != fingerprint:
    raise ValueError(f"{out_dir} holds an enrichment of other records, mapping files or "
                     "settings; rerun with the same arguments or use a new out_dir")


def _finish(records_dir, out_dir, manifest, state, shards, last_run) -> Dict[str, Any]:
  """Report, indexes (the input's: no indexed field changes) and the manifest, last."""
  markers = {name: json.loads((state / _marker(name)).read_text()) for _, name in shards}
  entries = [e for _, name in shards for e in markers[name]["entries"]]
  report = summarize(manifest["name"], records_dir, entries, last_run)
  records.write_json(records.join(out_dir, REPORT), report)
  splits = {}
  for split, info in manifest["splits"].items():
    files = [f for s, name in shards if s == split for f in markers[name]["files"]]
    rows = []
    if info["num_records"]:
      index = records.read_index(records_dir, manifest, split)
      rows = [{c: index[c][i] for c in records.INDEX_COLUMNS} for i in range(info["num_records"])]
    splits[split] = (files, rows, info["num_shards"])
  records.write_manifest(out_dir, manifest["name"], splits, manifest["formats"])
  return report


def summarize(name: str, records_dir: str, entries: List[Dict[str, Any]],
              last_run: Mapping[str, Any]) -> Dict[str, Any]:
  """The ``enrich.json`` report: counts, every silent record with its reason, every enriched
  record with the stretch of the original it got."""
  by_status = collections.Counter(e["status"] for e in entries)
  silent = [e for e in entries if e["status"] == SILENT]
  return {
      "name": name, "records_dir": records_dir, "num_records": len(entries),
      "num_enriched": by_status[ENRICHED], "num_silent": by_status[SILENT],
      "num_passed_through": by_status[PASSED],
      "silent_by_reason": dict(sorted(collections.Counter(e["reason"] for e in silent).items())),
      "silent": silent, "enriched": [e for e in entries if e["status"] == ENRICHED],
      "last_run": dict(last_run),
  }


def summary_line(report: Mapping[str, Any], out_dir: str) -> str:
  return (f"{report['num_enriched']} records enriched, {report['num_silent']} left silent "
          f"{report['silent_by_reason']}, {report['num_passed_through']} passed through (not "
          f"FF++-derived); details in {records.join(out_dir, REPORT)}")

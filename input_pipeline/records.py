"""The clip record format: the single source of truth for what a stored video looks like.

One record = one face track of one video, serialised as a ``tf.train.Example`` (so any tf.data
reader can parse it with the feature spec in ``FEATURES``). Frames are JPEG-encoded aligned face
crops; audio is the int16 mono waveform. Shards are written in one or both formats, the same
serialised bytes in each:

* ``<name>-<split>.array_record-00003-of-00016`` — the default and what training reads: random
  access for grain (deterministic global shuffles, checkpointable iterators), read directly from
  local disk or ``gs://``;
* ``<name>-<split>.tfrecord-00003-of-00016`` — opt-in (``formats=("array_record", "tfrecord")``)
  for users who stream with tf.data: sequential, CRC-checked.

Every writer here takes local or ``gs://`` directories (``etils.epath``): a shard is written to
a local temporary file (neither format can append to an object store) and copied into place when
it is complete.

``manifest.json`` is written last (its presence means the dataset is complete) and holds the
counts per split/label/manipulation, the shard list with record counts and SHA-256 checksums.
``<name>-<split>.index.json`` holds per-record metadata (video id, label, manipulation, number of
frames, ...) in global record order, so samplers can balance classes or enumerate evaluation clips
without decoding a single record.

The proto classes are built here from a descriptor that is wire-identical to TensorFlow's
``tf.train.Example``, so reading records never needs to import TensorFlow.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import threading
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
from array_record.python import array_record_module
from etils import epath
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FORMATS = ("array_record", "tfrecord")  # Every format a dataset may hold.
DEFAULT_FORMATS = ("array_record",)  # What writers produce unless asked for TFRecord too.
REAL = "real"  # The `manipulation` value of real videos.


# ----------------------------------------------------------------------------- schema
@dataclasses.dataclass(frozen=True)
class Field:
  kind: str  # "bytes" | "int64" | "float" (the tf.train.Feature list type)
  required: bool
  doc: str


FEATURES: Dict[str, Field] = {
    "frames": Field("bytes", True, "JPEG-encoded RGB aligned face frames, one per video frame."),
    "audio": Field("bytes", True, "Mono waveform, little-endian int16 PCM, as raw bytes."),
    "fps": Field("float", True, "Video frame rate (frames/s)."),
    "sample_rate": Field("int64", True, "Audio sample rate (Hz)."),
    "video_id": Field("bytes", True, "Unique id of the video (UTF-8)."),
    "track_id": Field("int64", True, "Face-track index within the video (0 for one face)."),
    "source": Field("bytes", True, "Source dataset name (UTF-8)."),
    "label": Field("int64", True, "0 = real, 1 = fake."),
    "manipulation": Field("bytes", True, "Forgery family name, 'real' for real videos."),
    "identity": Field("bytes", False, "Subject identity, used to split by identity."),
    "original": Field("bytes", False, "video_id of the real video a fake was made from (UTF-8); "
                      "absent for reals and for fakes without a known source."),
    "landmarks": Field("float", False, "[T, 68, 2] (x, y) pixel landmarks, flattened."),
    "mask": Field("bytes", False, "Per-frame PNG-encoded uint8 manipulation masks [H, W]."),
    "words": Field("bytes", False, "Word tokens (UTF-8), e.g. ASR narrations."),
    "word_start": Field("float", False, "Start time of each word (s)."),
    "word_end": Field("float", False, "End time of each word (s)."),
}
_LIST_FIELD = {"bytes": "bytes_list", "int64": "int64_list", "float": "float_list"}


class RecordError(ValueError):
  """A record is malformed; the message names the file, the record index and the problem."""


def _example_classes():
  """Builds proto classes wire-identical to tensorflow/core/example/{example,feature}.proto."""
  fdp = descriptor_pb2.FileDescriptorProto(name="fakedet_example.proto", package="tensorflow",
                                           syntax="proto3")
  F = descriptor_pb2.FieldDescriptorProto
  rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL

  def message(name, fields, packed=False):
    msg = fdp.message_type.add(name=name)
    for fname, number, ftype, label, type_name in fields:
      f = msg.field.add(name=fname, number=number, type=ftype, label=label)
      if type_name:
        f.type_name = type_name
      if packed:
        f.options.packed = True
    return msg

  message("BytesList", [("value", 1, F.TYPE_BYTES, rep, None)])
  message("FloatList", [("value", 1, F.TYPE_FLOAT, rep, None)], packed=True)
  message("Int64List", [("value", 1, F.TYPE_INT64, rep, None)], packed=True)
  feature = message("Feature", [("bytes_list", 1, F.TYPE_MESSAGE, opt, ".tensorflow.BytesList"),
                                ("float_list", 2, F.TYPE_MESSAGE, opt, ".tensorflow.FloatList"),
                                ("int64_list", 3, F.TYPE_MESSAGE, opt, ".tensorflow.Int64List")])
  feature.oneof_decl.add(name="kind")
  for f in feature.field:
    f.oneof_index = 0
  features = message("Features", [("feature", 1, F.TYPE_MESSAGE, rep,
                                   ".tensorflow.Features.FeatureEntry")])
  entry = features.nested_type.add(name="FeatureEntry")
  entry.options.map_entry = True
  entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
  entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=opt,
                  type_name=".tensorflow.Feature")
  message("Example", [("features", 1, F.TYPE_MESSAGE, opt, ".tensorflow.Features")])
  pool = descriptor_pool.DescriptorPool()
  pool.Add(fdp)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


Example = _example_classes()


# ----------------------------------------------------------------------------- encode
def _check(cond: bool, where: str, msg: str):
  if not cond:
    raise RecordError(f"{where}: {msg}")


def encode(record: Mapping[str, Any], jpeg_quality: int = 95, where: str = "record") -> bytes:
  """Validates a decoded record (see docs/record_format.md) and serialises it.

  Args:
    record: ``frames`` uint8 [T, H, W, 3] RGB, ``audio`` int16 [N], ``fps``, ``sample_rate``,
      ``video_id``, ``track_id``, ``source``, ``label``, ``manipulation`` and optionally
      ``identity``, ``original`` (fakes only; an empty string means none), ``landmarks``
      [T, 68, 2], ``mask`` uint8 [T, H, W], ``words``, ``word_start``, ``word_end``.
  """
  unknown = sorted(set(record) - set(FEATURES))
  _check(not unknown, where, f"unknown field(s) {unknown}; schema fields: {sorted(FEATURES)}")
  missing = sorted(k for k, f in FEATURES.items() if f.required and k not in record)
  _check(not missing, where, f"missing required field(s) {missing}")
  frames = np.asarray(record["frames"])
  _check(frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3 and
         len(frames) > 0, where, f"frames must be uint8 [T, H, W, 3], got {frames.dtype} "
         f"{frames.shape}")
  audio = np.asarray(record["audio"])
  _check(audio.dtype == np.int16 and audio.ndim == 1, where,
         f"audio must be int16 [N], got {audio.dtype} {audio.shape}")
  _check(int(record["label"]) in (0, 1), where, f"label must be 0 or 1, got {record['label']}")
  original = str(record.get("original") or "")
  _check(not original or int(record["label"]) == 1, where,
         f"original {original!r} on a real record: only fakes name the real they were made from")
  t = len(frames)
  ex = Example()
  feats = ex.features.feature

  def put(name, values):
    getattr(feats[name], _LIST_FIELD[FEATURES[name].kind]).value.extend(values)

  params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
  put("frames", [_imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), params, where)
                 for f in frames])
  put("audio", [audio.astype("<i2").tobytes()])
  put("fps", [float(record["fps"])])
  put("sample_rate", [int(record["sample_rate"])])
  for key in ("video_id", "source", "manipulation", "identity"):
    if key in record:
      put(key, [str(record[key]).encode()])
  if original:
    put("original", [original.encode()])
  put("track_id", [int(record["track_id"])])
  put("label", [int(record["label"])])
  if "landmarks" in record:
    lm = np.asarray(record["landmarks"], np.float32)
    _check(lm.shape == (t, 68, 2), where, f"landmarks must be [T={t}, 68, 2], got {lm.shape}")
    put("landmarks", lm.ravel().tolist())
  if "mask" in record:
    mask = np.asarray(record["mask"])
    _check(mask.dtype == np.uint8 and mask.shape == frames.shape[:3], where,
           f"mask must be uint8 {frames.shape[:3]}, got {mask.dtype} {mask.shape}")
    put("mask", [_imencode(".png", m, [], where) for m in mask])
  if "words" in record:
    words = [str(w) for w in record["words"]]
    start = np.asarray(record.get("word_start", []), np.float32)
    end = np.asarray(record.get("word_end", []), np.float32)
    _check(len(start) == len(end) == len(words), where,
           "words, word_start and word_end must have the same length")
    put("words", [w.encode() for w in words])
    put("word_start", start.tolist())
    put("word_end", end.tolist())
  # Sorted map keys: otherwise the feature order (and so the bytes, shard checksums, and any
  # comparison of two writers' output) varies from process to process.
  return ex.SerializeToString(deterministic=True)


def _imencode(ext, image, params, where):
  ok, buf = cv2.imencode(ext, np.ascontiguousarray(image), params)
  _check(ok, where, f"could not encode an image as {ext}")
  return buf.tobytes()


# ----------------------------------------------------------------------------- decode
_PARSE_LOCK = threading.Lock()


def parse(serialized: bytes, where: str = "record") -> Dict[str, Any]:
  """Parses serialised bytes into a *raw* record: frames and masks stay encoded.

  Frames are decoded lazily (``decode_frames``) because training samples a short window from a
  long video; decoding every frame would waste most of the pipeline's time.
  """
  # One protobuf parse at a time per process: grain's read-ahead threads parse concurrently,
  # and the demo run once died in a segfault inside upb's map access here (protobuf 6.33).
  # Parsing is ~1 % of a record's cost (the JPEGs decode later), so the lock costs nothing
  # measurable; every value is copied out of the message before the lock is released.
  with _PARSE_LOCK:
    ex = Example()
    try:
      ex.ParseFromString(serialized)
    except Exception as e:  # protobuf raises DecodeError, a plain Exception subclass.
      raise RecordError(f"{where}: not a serialised tf.train.Example ({e})") from None
    feats = ex.features.feature
    out: Dict[str, Any] = {"where": where}
    for name, field in FEATURES.items():
      if name not in feats:
        _check(not field.required, where, f"missing required field {name!r}")
        continue
      out[name] = list(getattr(feats[name], _LIST_FIELD[field.kind]).value)
    del ex, feats
  _check(len(out["audio"]) == 1, where, "audio must be a single bytes value")
  out["audio"] = np.frombuffer(out["audio"][0], dtype="<i2")
  out["frames"] = list(out["frames"])
  for key in ("video_id", "source", "manipulation", "identity", "original"):
    if key in out:
      out[key] = out[key][0].decode()
  for key, cast in (("fps", float), ("sample_rate", int), ("track_id", int), ("label", int)):
    out[key] = cast(out[key][0])
  if "landmarks" in out:
    lm = np.asarray(out["landmarks"], np.float32)
    _check(lm.size == len(out["frames"]) * 136, where,
           f"landmarks has {lm.size} values, expected {len(out['frames'])}x68x2")
    out["landmarks"] = lm.reshape(-1, 68, 2)
  if "mask" in out:
    out["mask"] = list(out["mask"])
  if "words" in out:
    out["words"] = [w.decode() for w in out["words"]]
    out["word_start"] = np.asarray(out.get("word_start", []), np.float32)
    out["word_end"] = np.asarray(out.get("word_end", []), np.float32)
  return out


def decode_frames(raw: Mapping[str, Any], indices: Optional[Sequence[int]] = None,
                  key: str = "frames") -> np.ndarray:
  """Decodes the frames (or ``key="mask"``) at ``indices`` → uint8 [n, H, W, 3] (mask: [n, H, W])."""
  encoded = raw[key]
  indices = range(len(encoded)) if indices is None else indices
  # IMREAD_COLOR_RGB: libjpeg-turbo writes RGB directly (OpenCV's default is BGR), so no
  # channel swap or negative-stride view that would make every later cv2 call copy.
  flag = cv2.IMREAD_COLOR_RGB if key == "frames" else cv2.IMREAD_GRAYSCALE
  out = None
  for n, i in enumerate(indices):
    img = cv2.imdecode(np.frombuffer(encoded[i], np.uint8), flag)
    _check(img is not None, raw["where"], f"{key}[{i}] is not a decodable image")
    if out is None:
      out = np.empty((len(indices),) + img.shape, np.uint8)
    _check(img.shape == out.shape[1:], raw["where"],
           f"{key}[{i}] is {img.shape[:2]}, other frames are {out.shape[1:3]}")
    out[n] = img
  _check(out is not None, raw["where"], f"no {key} requested")
  return out


def check_raw(raw: Mapping[str, Any], sample_rate: Optional[int] = None) -> None:
  """Checks a parsed record's consistency; raises RecordError naming the record and problem."""
  where, t = raw["where"], len(raw["frames"])
  _check(t > 0, where, "has no frames")
  _check(raw["fps"] > 0, where, f"fps must be positive, got {raw['fps']}")
  _check(raw["label"] in (0, 1), where, f"label must be 0 or 1, got {raw['label']}")
  if sample_rate is not None:
    _check(raw["sample_rate"] == sample_rate, where,
           f"sample_rate is {raw['sample_rate']} Hz, expected {sample_rate} Hz")
  needed = audio_samples(t, raw["fps"], raw["sample_rate"])
  _check(len(raw["audio"]) >= needed, where,
         f"audio has {len(raw['audio'])} samples, shorter than the {t} video frames "
         f"({needed} samples at {raw['sample_rate']} Hz, {raw['fps']} fps)")
  if "mask" in raw:
    _check(len(raw["mask"]) == t, where, f"{len(raw['mask'])} masks for {t} frames")
  _check(raw["label"] == 1 or "original" not in raw, where,
         f"original {raw.get('original')!r} on a real record: only fakes name their real video")


def audio_samples(num_frames: int, fps: float, sample_rate: int) -> int:
  """Audio samples spanned by ``num_frames`` video frames (rounded down)."""
  return int(num_frames * sample_rate // fps)


# ----------------------------------------------------------------------------- files
def shard_name(name: str, split: str, fmt: str, shard: int, num_shards: int) -> str:
  return f"{name}-{split}.{fmt}-{shard:05d}-of-{num_shards:05d}"


def index_name(name: str, split: str) -> str:
  return f"{name}-{split}.index.json"


INDEX_COLUMNS = ("video_id", "track_id", "label", "manipulation", "source", "identity",
                 "num_frames", "fps", "original")
# Columns added after datasets were first written, with the value their absence means: an index
# (or a preprocessing done-marker's rows) from before the column existed reads as all default.
ADDED_INDEX_COLUMNS = {"original": ""}


class ShardWriter:
  """Writes one shard in every format to local temporary files; ``commit`` moves them into place.

  Public so that writers which produce records incrementally (``input_pipeline.preprocess``,
  resumable shard by shard) share the exact file layout of ``write_dataset``. The final
  directory may be local or ``gs://``: the temporary files are local either way.
  """

  def __init__(self, out_dir: str, names: Dict[str, str]):
    self.final = {fmt: join(out_dir, n) for fmt, n in names.items()}
    # Local: beside the final file (renamed into place); gs://: in a local temporary folder.
    self._staging = tempfile.mkdtemp(prefix="fakedet-shard-") if "://" in out_dir else None
    self.tmp = {fmt: (os.path.join(self._staging, n) if self._staging else self.final[fmt] + ".tmp")
                for fmt, n in names.items()}
    self.writers = {}
    if "tfrecord" in names:
      import tensorflow as tf  # Heavy and only for the opt-in TFRecord copy; readers never need it.
      self.writers["tfrecord"] = tf.io.TFRecordWriter(self.tmp["tfrecord"])
    if "array_record" in names:
      self.writers["array_record"] = array_record_module.ArrayRecordWriter(
          self.tmp["array_record"], "group_size:1,uncompressed")  # JPEGs: compression buys
      # ~12% of space for 2x the read time, and input hosts are CPU-bound.
    self.count = 0

  def write(self, data: bytes):
    for w in self.writers.values():
      w.write(data)
    self.count += 1

  def close(self):
    for w in self.writers.values():
      w.close()

  def commit(self) -> List[Dict[str, Any]]:
    """Moves the closed shard files into place; returns their manifest entries."""
    files = []
    for fmt, final in self.final.items():
      digest = sha256(self.tmp[fmt])
      put_file(self.tmp[fmt], final)
      files.append({"file": os.path.basename(final), "format": fmt, "records": self.count,
                    "sha256": digest})
    if self._staging:
      shutil.rmtree(self._staging, ignore_errors=True)
    return files


def join(directory: str, name: str) -> str:
  """``directory/name`` for local paths and URLs alike (``os.path.join`` would mangle none, but
  says nothing of ``gs://``)."""
  return f"{directory.rstrip('/')}/{name}" if "://" in directory else os.path.join(directory, name)


def put_file(local: str, final: str) -> None:
  """Moves a finished local file to ``final`` (a rename in the same folder, or a copy to
  ``gs://``, where one upload is all-or-nothing): readers never see a partial shard under its
  final name."""
  if "://" not in final:
    os.replace(local, final)
    return
  epath.Path(local).copy(epath.Path(final), overwrite=True)
  os.remove(local)


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with epath.Path(path).open("rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def check_formats(formats: Sequence[str]) -> None:
  bad = sorted(set(formats) - set(FORMATS))
  if bad or not formats or "array_record" not in formats:
    raise ValueError(f"formats {list(formats)}: expected 'array_record' (what training reads), "
                     f"optionally with 'tfrecord'")


def write_dataset(out_dir: str, name: str, splits: Mapping[str, Iterable[Mapping[str, Any]]],
                  num_shards: Mapping[str, int] | int = 1, jpeg_quality: int = 95,
                  formats: Sequence[str] = DEFAULT_FORMATS) -> Dict[str, Any]:
  """Writes decoded records as sharded ArrayRecord (+ optional TFRecord) files, then the
  manifest, to a local or ``gs://`` directory.

  Records go round-robin over the shards. Shards are written locally and moved into place only
  after all splits are complete; ``manifest.json`` is written last, so a crashed or killed
  writer never leaves something that looks like a finished dataset.
  """
  check_formats(formats)
  epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
  pending = []
  for split, records in splits.items():
    n = num_shards if isinstance(num_shards, int) else num_shards[split]
    shards = [ShardWriter(out_dir, {f: shard_name(name, split, f, s, n) for f in formats})
              for s in range(n)]
    rows = [[] for _ in range(n)]
    for i, record in enumerate(records):
      where = f"split {split!r} record {i} ({record.get('video_id', '?')})"
      s = i % n
      shards[s].write(encode(record, jpeg_quality, where))
      rows[s].append(index_row(record))
    for w in shards:
      w.close()
    pending.append((split, shards, [r for shard_rows in rows for r in shard_rows]))
  committed = {split: ([f for w in shards for f in w.commit()], rows, len(shards))
               for split, shards, rows in pending}
  return write_manifest(out_dir, name, committed, formats)


def index_row(record: Mapping[str, Any]) -> Dict[str, Any]:
  """The ``INDEX_COLUMNS`` entry of one decoded record (its line in ``NAME-SPLIT.index.json``)."""
  return {"video_id": str(record["video_id"]), "track_id": int(record["track_id"]),
          "label": int(record["label"]), "manipulation": str(record["manipulation"]),
          "source": str(record["source"]), "identity": str(record.get("identity", "")),
          "num_frames": int(len(record["frames"])), "fps": float(record["fps"]),
          "original": str(record.get("original") or "")}


def write_manifest(out_dir: str, name: str,
                   splits: Mapping[str, Tuple[List[Dict[str, Any]], List[Dict[str, Any]], int]],
                   formats: Sequence[str] = DEFAULT_FORMATS) -> Dict[str, Any]:
  """Writes each split's index and then ``manifest.json`` for shards already committed.

  Args:
    splits: per split ``(files, rows, num_shards)``: the ``ShardWriter.commit`` entries of its
      shards in shard order, the ``index_row`` of every record in global (shard-major) order,
      and the number of shards.
  """
  manifest: Dict[str, Any] = {"name": name, "format_version": FORMAT_VERSION,
                              "formats": list(formats), "splits": {}}
  for split, (files, rows, num_shards) in splits.items():
    index = {c: [_column_value(r, c) for r in rows] for c in INDEX_COLUMNS}
    write_json(join(out_dir, index_name(name, split)), index)
    manifest["splits"][split] = {"num_records": len(rows), "counts": _counts(rows),
                                 "num_shards": num_shards, "files": files,
                                 "index": index_name(name, split)}
  write_json(join(out_dir, MANIFEST), manifest)
  return manifest


def _column_value(row: Mapping[str, Any], column: str) -> Any:
  """``row[column]``; a column added later defaults for rows made before it (a preprocessing run
  resumed across the upgrade has done-markers without it)."""
  if column not in row and column in ADDED_INDEX_COLUMNS:
    return ADDED_INDEX_COLUMNS[column]
  return row[column]


def _counts(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, int]]:
  counts: Dict[str, Dict[str, int]] = {"label": {}, "manipulation": {}}
  for r in rows:
    for key in counts:
      counts[key][str(r[key])] = counts[key].get(str(r[key]), 0) + 1
  return counts


def write_json(path: str, obj: Any) -> None:
  """Writes JSON so that a reader never sees half a file: rename into place locally; on an
  object store a single upload is already all-or-nothing."""
  text = json.dumps(obj, indent=1)
  if "://" in path:
    epath.Path(path).write_text(text)
    return
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def read_manifest(data_dir: str) -> Dict[str, Any]:
  """Reads ``manifest.json``; a missing directory or manifest is a clear error."""
  d = epath.Path(data_dir)
  if not d.exists():
    raise FileNotFoundError(f"data directory {data_dir!r} does not exist")
  if not (d / MANIFEST).exists():
    raise FileNotFoundError(
        f"{d / MANIFEST} not found: {data_dir!r} is not a finished fakedet dataset (a writer may "
        "have been interrupted; rerun it)")
  return json.loads((d / MANIFEST).read_text())


def split_files(data_dir: str, manifest: Mapping[str, Any], split: str, fmt: str) -> List[str]:
  """The shard paths of one split in one format, in global record order."""
  if split not in manifest["splits"]:
    raise KeyError(f"split {split!r} not in {data_dir}/{MANIFEST}; available splits: "
                   f"{sorted(manifest['splits'])}")
  info = manifest["splits"][split]
  if info["num_records"] == 0:
    raise ValueError(f"split {split!r} of {data_dir} is empty")
  return [join(data_dir, f["file"]) for f in info["files"] if f["format"] == fmt]


def read_index(data_dir: str, manifest: Mapping[str, Any], split: str) -> Dict[str, list]:
  """The split's ``INDEX_COLUMNS`` (column → one value per record, in global record order).

  An index written before a column in ``ADDED_INDEX_COLUMNS`` existed gets that column filled
  with its default, so old datasets load unchanged.
  """
  split_files(data_dir, manifest, split, "array_record")  # Validates the split name.
  index = json.loads((epath.Path(data_dir) / manifest["splits"][split]["index"]).read_text())
  n = len(index["video_id"])
  for column, default in ADDED_INDEX_COLUMNS.items():
    index.setdefault(column, [default] * n)
  return index

"""Validator CLI: scan every shard of a dataset and report every bad record with file and index.

  python -m input_pipeline.validate /path/to/dataset [--splits=train,val] [--sample_rate=16000]

Checks: manifest present; every listed shard exists with its SHA-256; record counts match the
manifest and the index; every record parses, is self-consistent (audio long enough, rates,
labels, masks) and every JPEG/PNG decodes; the TFRecord copy (CRC-checked) holds the same bytes
as the ArrayRecord copy. Exit status 1 if anything is wrong.
"""
from __future__ import annotations

import sys
from typing import Iterator, List, Optional, Tuple

from absl import app, flags
from array_record.python import array_record_module
from etils import epath
from tqdm import tqdm

from input_pipeline import records

_SPLITS = flags.DEFINE_list("splits", None, "Splits to check (default: all in the manifest).")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", None, "Expected audio sample rate (Hz).")
_CHECKSUMS = flags.DEFINE_bool("checksums", True, "Verify the SHA-256 of every shard.")


def _array_records(path: str) -> Iterator[Tuple[int, Optional[bytes], Optional[str]]]:
  def unopenable(e: Exception) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{path}: cannot be opened as an ArrayRecord shard ({first})"
  try:  # Truncated or corrupt files fail here, or in num_records / close.
    reader = array_record_module.ArrayRecordReader(path)
    count = reader.num_records()
  except Exception as e:  # pylint: disable=broad-except
    yield 0, None, unopenable(e)
    return
  close_error = None
  try:
    for i in range(count):
      try:
        yield i, reader.read([i])[0], None
      except Exception as e:  # pylint: disable=broad-except
        yield i, None, f"unreadable ({e})"
  finally:
    try:
      reader.close()
    except Exception as e:  # pylint: disable=broad-except
      close_error = e  # Reported below (a generator must not yield while being closed).
  if close_error is not None:
    yield count, None, unopenable(close_error)


def _tfrecords(path: str) -> Iterator[Tuple[int, Optional[bytes], Optional[str]]]:
  import tensorflow as tf  # Heavy; only TFRecord shards need it (a CRC-checking reader).
  i = 0
  try:
    for data in tf.data.TFRecordDataset(path).as_numpy_iterator():
      yield i, data, None
      i += 1
  except tf.errors.DataLossError as e:
    yield i, None, f"corrupted TFRecord framing/CRC; the rest of the file is unreadable ({e.message})"


def check_record(data: bytes, where: str, sample_rate: Optional[int]) -> Optional[str]:
  try:
    raw = records.parse(data, where)
    records.check_raw(raw, sample_rate)
    records.decode_frames(raw)
    if "mask" in raw:
      records.decode_frames(raw, key="mask")
  except records.RecordError as e:
    return str(e)
  return None


def validate(data_dir: str, splits: Optional[List[str]] = None, sample_rate: Optional[int] = None,
             checksums: bool = True, progress: bool = True) -> List[str]:
  """Returns one message per problem found (empty list = valid dataset)."""
  try:
    manifest = records.read_manifest(data_dir)
  except FileNotFoundError as e:
    return [str(e)]
  problems: List[str] = []
  for split in splits or sorted(manifest["splits"]):
    if split not in manifest["splits"]:
      problems.append(f"split {split!r} not in the manifest (has {sorted(manifest['splits'])})")
      continue
    info = manifest["splits"][split]
    try:
      index = records.read_index(data_dir, manifest, split)
      if len(index["video_id"]) != info["num_records"]:
        problems.append(f"{info['index']}: {len(index['video_id'])} rows, manifest says "
                        f"{info['num_records']}")
    except (OSError, ValueError, KeyError) as e:
      problems.append(f"split {split!r}: index unreadable ({e})")
    by_shard = {}
    for f in info["files"]:
      by_shard.setdefault(f["file"].replace(f["format"], "*"), []).append(f)
    bar = tqdm(total=info["num_records"] * len(manifest["formats"]), desc=f"validate {split}",
               disable=not progress, unit="rec")
    for files in by_shard.values():
      contents = {}
      for f in files:
        path = records.join(data_dir, f["file"])
        if not epath.Path(path).exists():
          problems.append(f"{path}: missing (listed in the manifest)")
          continue
        if checksums and records.sha256(path) != f["sha256"]:
          problems.append(f"{path}: SHA-256 differs from the manifest (file changed or corrupt)")
        reader = _array_records if f["format"] == "array_record" else _tfrecords
        n, unopened = 0, False
        for i, data, error in reader(path):
          bar.update()
          where = f"{path} record {i}"
          if error and error.startswith(f"{path}: cannot be opened"):
            problems.append(error)
            unopened = True
            break
          n += 1
          error = error or check_record(data, where, sample_rate)
          if error:
            problems.append(error if error.startswith(path) else f"{where}: {error}")
          contents.setdefault(i, set()).add(data)
        if not unopened and n != f["records"]:
          problems.append(f"{path}: {n} records, manifest says {f['records']}")
      differing = sorted(i for i, v in contents.items() if len(v) > 1)
      if len(files) > 1 and differing:
        problems.append(f"{[f['file'] for f in files]}: the formats hold different bytes at "
                        f"record(s) {differing[:10]}")
    bar.close()
  return problems


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: python -m input_pipeline.validate DATA_DIR [--splits=...]")
  problems = validate(argv[1], _SPLITS.value, _SAMPLE_RATE.value, _CHECKSUMS.value)
  for p in problems:
    print(f"BAD: {p}")
  print(f"{len(problems)} problem(s) found in {argv[1]}")
  sys.exit(1 if problems else 0)


if __name__ == "__main__":
  app.run(main)

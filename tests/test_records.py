"""Clip record schema: round trip, TensorFlow compatibility, atomic sharded writing, manifest."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from input_pipeline import records
from tests.conftest import make_record, write_tiny


def test_round_trip_keeps_every_field():
  rec = make_record(3, num_frames=7, label=1, manipulation="swap", with_mask=True)
  rec["landmarks"] = np.random.default_rng(0).normal(size=(7, 68, 2)).astype(np.float32)
  rec["original"] = "vid000"
  raw = records.parse(records.encode(rec))
  frames = records.decode_frames(raw)
  assert frames.shape == rec["frames"].shape and frames.dtype == np.uint8
  err = np.abs(frames.astype(int) - rec["frames"])
  assert err.mean() < 1.5 and err.max() <= 8  # JPEG q95 on smooth images.
  np.testing.assert_array_equal(records.decode_frames(raw, key="mask"), rec["mask"])  # PNG: exact.
  np.testing.assert_array_equal(raw["audio"], rec["audio"])
  np.testing.assert_array_equal(raw["landmarks"], rec["landmarks"])
  for key in ("fps", "sample_rate", "video_id", "track_id", "source", "label", "manipulation",
              "identity", "original", "words"):
    assert raw[key] == rec[key], key
  np.testing.assert_allclose(raw["word_start"], rec["word_start"])
  np.testing.assert_allclose(raw["word_end"], rec["word_end"])


def test_decode_only_requested_frames():
  raw = records.parse(records.encode(make_record(0, num_frames=10)))
  sub = records.decode_frames(raw, [2, 5])
  assert sub.shape[0] == 2
  assert abs(int(sub[0, 0, 0, 0]) - 10) <= 3 and abs(int(sub[1, 0, 0, 0]) - 22) <= 3


def test_tensorflow_parses_our_bytes():
  tf = pytest.importorskip("tensorflow")
  rec = make_record(1, num_frames=4)
  spec = {"frames": tf.io.VarLenFeature(tf.string), "label": tf.io.FixedLenFeature([], tf.int64),
          "video_id": tf.io.FixedLenFeature([], tf.string),
          "fps": tf.io.FixedLenFeature([], tf.float32),
          "word_end": tf.io.VarLenFeature(tf.float32)}
  parsed = tf.io.parse_single_example(records.encode(rec), spec)
  assert parsed["video_id"].numpy() == b"vid001" and parsed["label"].numpy() == 0
  assert parsed["fps"].numpy() == 25.0
  assert tf.sparse.to_dense(parsed["frames"]).shape == (4,)
  np.testing.assert_allclose(tf.sparse.to_dense(parsed["word_end"]).numpy(), [0.4, 0.9])


@pytest.mark.parametrize("change, message", [
    (dict(frames=np.zeros((3, 8, 8), np.uint8)), "frames must be uint8"),
    (dict(audio=np.zeros(100, np.float32)), "audio must be int16"),
    (dict(label=2), "label must be 0 or 1"),
    (dict(color="red"), "unknown field"),
    (dict(landmarks=np.zeros((2, 68, 2))), "landmarks must be"),
])
def test_encode_rejects_bad_records_naming_the_problem(change, message):
  rec = dict(make_record(0, num_frames=3), **change)
  with pytest.raises(records.RecordError, match=message):
    records.encode(rec, where="rec7")


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_encoding_is_byte_identical_across_processes():
  """Protobuf map order varies per process unless serialisation is deterministic; without it two
  writers (local workers, Beam workers, a resumed run) disagree on shard bytes and checksums."""
  code = ("import hashlib, sys; sys.path.insert(0, sys.argv[1]); from tests.conftest import "
          "make_record; from input_pipeline import records; "
          "print(hashlib.sha256(records.encode(make_record(3, num_frames=2))).hexdigest())")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  digests = {subprocess.run([sys.executable, "-c", code, root], capture_output=True, text=True,
                            check=True, timeout=120).stdout for _ in range(3)}
  assert len(digests) == 1 and len(digests.pop().strip()) == 64


def test_encode_requires_fields():
  rec = make_record(0, num_frames=3)
  del rec["label"]
  with pytest.raises(records.RecordError, match=r"missing required field\(s\) \['label'\]"):
    records.encode(rec)


def test_array_record_is_the_default_and_tfrecord_opt_in(tmp_path):
  recs = [make_record(i) for i in range(3)]
  manifest = records.write_dataset(str(tmp_path / "a"), "d", {"train": recs})
  assert {f["format"] for f in manifest["splits"]["train"]["files"]} == {"array_record"}
  assert manifest["formats"] == ["array_record"]
  with pytest.raises(ValueError, match="expected 'array_record'"):
    records.write_dataset(str(tmp_path / "b"), "d", {"train": recs}, formats=("tfrecord",))


def test_sharded_writer_layout_manifest_and_index(tmp_path):
  manifest = write_tiny(tmp_path, num_real=5, num_fake=2, num_shards=3)
  names = sorted(os.listdir(tmp_path))
  assert "unit-train.tfrecord-00000-of-00003" in names
  assert "unit-train.array_record-00002-of-00003" in names
  assert not [n for n in names if n.endswith(".tmp")]
  train = manifest["splits"]["train"]
  assert train["num_records"] == 7 and train["num_shards"] == 3
  assert train["counts"]["label"] == {"0": 5, "1": 2}
  assert train["counts"]["manipulation"] == {"real": 5, "reenact": 1, "swap": 1}
  assert sum(f["records"] for f in train["files"] if f["format"] == "tfrecord") == 7
  for f in train["files"]:
    assert f["sha256"] == records.sha256(os.path.join(tmp_path, f["file"]))
  assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
  # The index lists records in the global (shard-major) order the random-access source uses.
  import grain
  index = records.read_index(str(tmp_path), manifest, "train")
  source = grain.sources.ArrayRecordDataSource(
      records.split_files(str(tmp_path), manifest, "train", "array_record"))
  assert [records.parse(source[i])["video_id"] for i in range(7)] == index["video_id"]
  assert index["num_frames"] == [30] * 7
  assert set(index) == set(records.INDEX_COLUMNS) and index["original"] == [""] * 7


def test_interrupted_writer_leaves_no_manifest(tmp_path):
  def records_then_crash():
    yield make_record(0)
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    records.write_dataset(str(tmp_path), "unit", {"train": records_then_crash()})
  assert not (tmp_path / "manifest.json").exists()
  assert not [n for n in os.listdir(tmp_path) if "-of-" in n and not n.endswith(".tmp")]
  with pytest.raises(FileNotFoundError, match="not a finished fakedet dataset"):
    records.read_manifest(str(tmp_path))


def test_missing_dir_and_unknown_or_empty_split(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    records.read_manifest(str(tmp_path / "nope"))
  manifest = records.write_dataset(str(tmp_path), "unit", {"train": [make_record(0)], "val": []})
  with pytest.raises(KeyError, match="available splits"):
    records.split_files(str(tmp_path), manifest, "test", "array_record")
  with pytest.raises(ValueError, match="'val' .* is empty"):
    records.split_files(str(tmp_path), manifest, "val", "array_record")

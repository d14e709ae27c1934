"""Input pipeline: determinism, resume, per-process sharding, clip sampling, mixing, bad data."""
import json
import os

import ml_collections
import numpy as np
import pytest

from input_pipeline import config as input_config
from input_pipeline import pipeline, records, sampling, sources
from tests.conftest import make_record, write_tiny

OPS = "center_crop(size=40, resize=32)|log_mel"


def _cfg(data_dir, **source_overrides):
  cfg = input_config.input_config()
  cfg.clip_frames = 10
  cfg.train_ops = OPS
  cfg.eval.ops = OPS
  cfg.eval.data_dir = data_dir
  cfg.eval.batch_size = 4
  cfg.sources.main = input_config.source_config(data_dir, "train", 4, **source_overrides)
  return cfg


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_train_batch_shapes_and_alignment(tiny_dir):
  batch = next(iter(pipeline.train_dataset(_cfg(tiny_dir), seed=0, process_index=0,
                                           process_count=1)))
  assert batch["video"].shape == (4, 10, 32, 32, 3) and batch["video"].dtype == np.uint8
  assert batch["waveform"].shape == (4, 6400)
  assert batch["audio"].shape == (4, 40, 80)  # Ta = 4·Tv log-mel frames, 80 mel bins.
  assert batch["label"].dtype == np.int32
  # Video frame t of the window carries 4·(start+t)+2 in channel 0: check the window is
  # contiguous, starts at clip_start, and the audio is the same time span of the same record.
  for i in range(4):
    red = batch["video"][i, :, 16, 16, 0].astype(int)
    np.testing.assert_allclose(red, 4 * (batch["clip_start"][i] + np.arange(10)) + 2, atol=4)
    rec = make_record(int(batch["video_id"][i][3:]))
    s = int(batch["clip_start"][i]) * 640
    np.testing.assert_allclose(batch["waveform"][i], rec["audio"][s:s + 6400] / 32768.0)


def test_same_seed_same_batches_other_seed_different(tiny_dir):
  mk = lambda seed: iter(pipeline.train_dataset(_cfg(tiny_dir), seed, process_index=0,
                                                process_count=1))
  _assert_batches_equal(_take(mk(3), 4), _take(mk(3), 4))
  a, b = next(mk(3)), next(mk(4))
  assert not (np.array_equal(a["video_id"], b["video_id"]) and
              np.array_equal(a["clip_start"], b["clip_start"]))


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_resume_from_saved_iterator_state_sees_the_same_batches(tiny_dir):
  cfg = _cfg(tiny_dir)
  full = iter(pipeline.train_dataset(cfg, 0, process_index=0, process_count=1))
  expected = _take(full, 9)
  it = iter(pipeline.train_dataset(cfg, 0, process_index=0, process_count=1))
  _take(it, 5)
  state = json.loads(json.dumps(it.get_state()))  # It must survive serialisation.
  resumed = iter(pipeline.train_dataset(cfg, 0, process_index=0, process_count=1))
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 4), expected[5:])


def test_epochs_cover_every_record_and_reshuffle(tiny_dir):
  cfg = _cfg(tiny_dir)
  cfg.sources.main.batch_size = 16  # = the 16 train records: one batch is one epoch.
  it = iter(pipeline.train_dataset(cfg, 0, process_index=0, process_count=1))
  e1, e2 = next(it)["video_id"], next(it)["video_id"]
  assert sorted(e1) == sorted(e2) == [f"vid{i:03d}" for i in range(16)]
  assert list(e1) != list(e2)


def test_processes_get_disjoint_shares_of_the_global_batch(tiny_dir):
  cfg = _cfg(tiny_dir)
  cfg.sources.main.batch_size = 8
  ids = []
  for p in range(2):
    batch = next(iter(pipeline.train_dataset(cfg, 0, process_index=p, process_count=2)))
    assert len(batch["video_id"]) == 4  # per-host = global // process_count
    ids.append(set(batch["video_id"]))
  assert not ids[0] & ids[1]
  cfg.sources.main.batch_size = 7
  with pytest.raises(ValueError, match="batch_size=7 is not divisible by the 2 processes"):
    pipeline.train_dataset(cfg, 0, process_index=0, process_count=2)


def test_mixing_sources_fixed_counts_per_batch(tiny_dir):
  cfg = _cfg(tiny_dir)
  cfg.sources = ml_collections.ConfigDict({
      "forgery": input_config.source_config(tiny_dir, "train", 2, balance="class"),
      "reals": input_config.source_config(tiny_dir, "train", 6, labels=(0,)),
  })
  assert pipeline.global_batch_size(cfg) == 8
  for batch in _take(iter(pipeline.train_dataset(cfg, 0, process_index=0, process_count=1)), 5):
    assert list(batch["source"]) == ["forgery"] * 2 + ["reals"] * 6
    assert list(batch["label"][2:]) == [0] * 6
    assert sorted(batch["label"][:2]) == [0, 1]  # class-balanced: one real, one fake


def test_class_balance_oversamples_the_minority(tiny_dir):
  cfg = _cfg(tiny_dir, balance="class")  # 12 reals, 4 fakes in the split.
  labels = np.concatenate([b["label"] for b in _take(
      iter(pipeline.train_dataset(cfg, 0, process_index=0, process_count=1)), 10)])
  assert labels.mean() == 0.5


def test_selection_by_manipulation(tiny_dir):
  cfg = _cfg(tiny_dir, manipulations=("real", "swap"))
  batches = _take(iter(pipeline.train_dataset(cfg, 0, process_index=0, process_count=1)), 8)
  seen = set(np.concatenate([b["manipulation"] for b in batches]))
  assert seen == {"real", "swap"}
  with pytest.raises(ValueError, match=r"manipulations \['faceswap'\] not in this split"):
    pipeline.train_dataset(_cfg(tiny_dir, manipulations=("faceswap",)), 0, process_index=0,
                           process_count=1)


def test_masks_follow_the_clip(tiny_dir):
  cfg = _cfg(tiny_dir, labels=(1,))
  cfg.with_mask = True
  cfg.train_ops = "log_mel"
  batch = next(iter(pipeline.train_dataset(cfg, 0, process_index=0, process_count=1)))
  assert batch["mask"].shape == (4, 10, 48, 48)
  assert (batch["mask"][:, :, 24, 24] == 255).all() and (batch["mask"][:, :, 0, 0] == 0).all()


def test_eval_clip_starts_cover_the_video():
  assert sources.eval_clip_starts(50, 25) == [0, 25]
  assert sources.eval_clip_starts(60, 25) == [0, 25, 35]  # last clip aligned to the end
  assert sources.eval_clip_starts(20, 25) == []
  assert sources.eval_clip_starts(250, 25, num_clips=3) == [0, 100, 225]  # clips 0, 4, 9 of 10
  starts = sources.eval_clip_starts(97, 10)
  covered = set().union(*(range(s, s + 10) for s in starts))
  assert covered == set(range(97))


def test_eval_dataset_enumerates_every_clip_and_pads(tiny_dir):
  cfg = _cfg(tiny_dir)
  batches = list(pipeline.eval_dataset(cfg, process_index=0, process_count=1))
  valid = np.concatenate([b["valid"] for b in batches])
  # 6 val records x 30 frames → 3 clips each = 18 clips; 5 batches of 4, 2 padding rows.
  assert valid.sum() == 18 and len(valid) == 20 and not valid[-2:].any()
  ids = np.concatenate([b["video_id"] for b in batches])[valid]
  starts = np.concatenate([b["clip_start"] for b in batches])[valid]
  assert sorted(set(zip(ids, starts))) == sorted(
      (v, s) for v in set(ids) for s in (0, 10, 20))
  again = list(pipeline.eval_dataset(cfg, process_index=0, process_count=1))
  _assert_batches_equal(batches, again)


def test_eval_dataset_selects_labels_and_clips_per_video(tiny_dir):
  """Reals only, one clip each: what within-batch retrieval needs (a fake shares its source's
  audio, and clips of one video resemble each other)."""
  cfg = _cfg(tiny_dir)
  cfg.eval.labels = (0,)
  cfg.eval.clips_per_video = 1
  batches = list(pipeline.eval_dataset(cfg, process_index=0, process_count=1))
  valid = np.concatenate([b["valid"] for b in batches])
  ids = np.concatenate([b["video_id"] for b in batches])[valid]
  labels = np.concatenate([b["label"] for b in batches])[valid]
  assert len(ids) == 4 == len(set(ids))  # 4 real val records, one clip each
  assert not labels.any()
  cfg.eval.manipulations = ("swap",)
  with pytest.raises(ValueError, match=r"selects no clip from split 'val'"):
    list(pipeline.eval_dataset(cfg, process_index=0, process_count=1))


# ----------------------------------------------------------------------------- bad data
def _corrupt_dataset(tmp_path, bad):
  """A one-shard dataset whose record 2 is replaced by ``bad`` (dict overrides or raw bytes)."""
  recs = [make_record(i, 30) for i in range(4)]
  manifest = records.write_dataset(str(tmp_path), "bad", {"train": recs}, formats=records.FORMATS)
  path = records.split_files(str(tmp_path), manifest, "train", "array_record")[0]
  from array_record.python import array_record_module
  w = array_record_module.ArrayRecordWriter(path, "group_size:1")
  for i, rec in enumerate(recs):
    if i != 2:
      w.write(records.encode(rec))
    elif isinstance(bad, bytes):
      w.write(bad)
    else:
      raw = records.encode(make_record(2, 30))
      ex = records.Example()
      ex.ParseFromString(raw)
      for key, values in bad.items():
        feat = ex.features.feature[key]
        kind = feat.WhichOneof("kind")
        getattr(feat, kind).ClearField("value")
        getattr(feat, kind).value.extend(values)
      w.write(ex.SerializeToString())
  w.close()
  return str(tmp_path), path


BAD_CASES = {
    "corrupt record": (b"\x00garbage\xff" * 3, "not a serialised tf.train.Example"),
    "undecodable JPEG": ({"frames": [b"notajpeg"] * 30}, r"frames\[\d+\] is not a decodable"),
    "audio shorter than video": ({"audio": [np.zeros(100, "<i2").tobytes()]},
                                 "audio has 100 samples, shorter than the 30 video frames"),
    "wrong sample rate": ({"sample_rate": [44100]}, "sample_rate is 44100 Hz, expected 16000"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_record_error_names_file_and_index(tmp_path, case):
  bad, message = BAD_CASES[case]
  data_dir, path = _corrupt_dataset(tmp_path, bad)
  cfg = _cfg(data_dir)
  cfg.sources.main.batch_size = 4
  with pytest.raises(records.RecordError, match=f"{path} record 2: .*{message}"):
    next(iter(pipeline.train_dataset(cfg, 0, process_index=0, process_count=1)))


def test_skip_bad_records_mode_skips_and_counts(tmp_path):
  data_dir, _ = _corrupt_dataset(tmp_path, b"garbage")
  cfg = _cfg(data_dir)
  cfg.skip_bad_records = True
  cfg.sources.main.batch_size = 3
  before = pipeline.skipped_records()
  batch = next(iter(pipeline.train_dataset(cfg, 0, process_index=0, process_count=1)))
  assert sorted(batch["video_id"]) == ["vid000", "vid001", "vid003"]
  assert pipeline.skipped_records() == before + 1


def test_missing_dir_and_empty_selection(tmp_path, tiny_dir):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    pipeline.train_dataset(_cfg(str(tmp_path / "missing")), 0, process_index=0, process_count=1)
  with pytest.raises(ValueError, match="no records .* match"):
    cfg = _cfg(tiny_dir, manipulations=("swap",), labels=(0,))
    pipeline.train_dataset(cfg, 0, process_index=0, process_count=1)


def test_video_shorter_than_clip_is_an_error(tmp_path):
  records.write_dataset(str(tmp_path), "short", {"train": [make_record(0, 5)]})
  cfg = _cfg(str(tmp_path))
  with pytest.raises(records.RecordError, match="has 5 frames, fewer than the clip length 10"):
    next(iter(pipeline.train_dataset(cfg, 0, process_index=0, process_count=1)))


# ----------------------------------------------------------------------------- devices
def test_to_global_shards_over_8_devices(tiny_dir):
  import jax
  from fakedet import sharding
  assert jax.device_count() == 8, "tests run with 8 simulated CPU devices (conftest.py)"
  mesh = sharding.make_mesh(sharding.mesh_config())
  cfg = _cfg(tiny_dir)
  cfg.sources.main.batch_size = 8
  batch = next(iter(pipeline.train_dataset(cfg, 0, process_index=0, process_count=1)))
  g = sharding.to_global(batch, mesh)
  assert g["video"].shape == (8, 10, 32, 32, 3) and len(g["video"].sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(g["audio"]), batch["audio"])
  assert isinstance(g["video_id"], np.ndarray)  # strings stay on the host

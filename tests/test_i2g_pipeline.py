"""The I2G stage in the training pipeline (PCL + I2G §4.2) and the frame-level input path.

A tiny synthetic dataset (landmarks, identities, fakes with masks, `original` names) goes
through ``pipeline.train_dataset`` with ``input.i2g.p > 0``: every frame leaves with a mask that
follows the frame through crop / flip / rotate, half the reals become I2G fakes, the run is
deterministic and resumes exactly, and a dataset fake without its own mask gets the DSSIM mask
of its paired real.
"""
import dataclasses
import os

import numpy as np
import pytest

from input_pipeline import augment, config as input_config, i2g, i2g_stage, pipeline, records
from input_pipeline.synthetic import dataset as synthetic

SIZE = 64
OPS = ("random_crop(size=56, resize=32, also=('mask',))|flip(keys=('video', 'mask'))"
       "|rotate(keys=('video', 'mask'), degrees=10.0, p=0.5)")


def _records():
  config = synthetic.preset("tiny", identities=(3, 1, 1), videos_per_identity=2, num_frames=6,
                            resolution=SIZE, families=("graphics_swap",))
  return list(synthetic.generate_split(config, "train"))


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("synth_i2g")
  recs = _records()
  records.write_dataset(str(d), "synthetic", {"train": recs, "val": recs[:2]},
                        num_shards={"train": 2, "val": 1})
  return str(d)


@pytest.fixture(scope="module")
def maskless_dir(tmp_path_factory):
  """The same records with the fakes' own masks removed (as most corpora ship them)."""
  d = tmp_path_factory.mktemp("synth_nomask")
  recs = [{k: v for k, v in r.items() if k != "mask"} for r in _records()]
  records.write_dataset(str(d), "synthetic", {"train": recs}, num_shards={"train": 1})
  return str(d)


def _cfg(data_dir, p=0.5, **source):
  cfg = input_config.input_config()
  cfg.clip_frames = 1
  cfg.train_ops = OPS
  cfg.i2g = input_config.i2g_config(p=p)
  cfg.sources.main = input_config.source_config(data_dir, "train", 8, **source)
  return cfg


def _batches(cfg, n, seed=0):
  it = iter(pipeline.train_dataset(cfg, seed=seed, process_index=0, process_count=1))
  return [next(it) for _ in range(n)]


def test_every_frame_gets_a_mask_and_half_the_reals_become_i2g_fakes(synth_dir):
  batches = _batches(_cfg(synth_dir, labels=(0,)), 6)
  b = batches[0]
  assert b["video"].shape == (8, 1, 32, 32, 3) and b["video"].dtype == np.uint8
  assert b["mask"].shape == (8, 1, 32, 32, 1) and b["mask"].dtype == np.float32
  assert not {"landmarks", "identity", "real_video"} & set(b)
  labels = np.concatenate([x["label"] for x in batches])
  manip = np.concatenate([x["manipulation"] for x in batches])
  masks = np.concatenate([x["mask"] for x in batches])
  assert set(manip[labels == 1]) == {i2g.MANIPULATION}
  assert 0.25 < labels.mean() < 0.75  # p = 0.5 over 48 reals.
  assert np.all(masks[labels == 0] == 0)
  fake_area = masks[labels == 1].mean(axis=(1, 2, 3, 4))
  assert np.all(fake_area > 0.02) and np.all(masks[labels == 1] <= 1.0)


def test_deterministic_and_resumable(synth_dir):
  cfg = _cfg(synth_dir)
  a, b = _batches(cfg, 3), _batches(cfg, 3)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
  it = iter(pipeline.train_dataset(cfg, seed=0, process_index=0, process_count=1))
  next(it)
  state = it.get_state()
  expected = next(it)
  resumed = iter(pipeline.train_dataset(cfg, seed=0, process_index=0, process_count=1))
  resumed.set_state(state)
  got = next(resumed)
  for k in expected:
    np.testing.assert_array_equal(expected[k], got[k], err_msg=k)


def test_dataset_fakes_keep_their_own_mask(synth_dir):
  """A record's mask goes through unchanged up to the shared crop (no flip / rotation here)."""
  cfg = _cfg(synth_dir, p=1e-6)  # I2G on (every frame gets its mask) but never drawn.
  cfg.train_ops = "center_crop(size=64, resize=None, also=('mask',))"
  cfg.i2g.augment_all = False
  b = _batches(cfg, 2)[1]
  source = pipeline.open_source(cfg.sources.main, "main")
  by_id = {source.index["video_id"][i]: i for i in range(len(source))}
  assert set(b["label"]) == {0, 1}
  for row in range(len(b["label"])):
    raw = source[by_id[str(b["video_id"][row])]]
    t = int(b["clip_start"][row])
    want = (records.decode_frames(raw, [t], key="mask")[0].astype(np.float32) / 255
            if "mask" in raw else np.zeros((SIZE, SIZE), np.float32))
    np.testing.assert_allclose(b["mask"][row, 0, ..., 0], want, atol=1e-6)


def test_maskless_fakes_get_the_dssim_mask_of_their_paired_real(maskless_dir, synth_dir):
  cfg = _cfg(maskless_dir, p=1e-6)
  cfg.train_ops = "center_crop(size=64, resize=None, also=('mask',))"
  cfg.i2g.augment_all = False
  b = _batches(cfg, 2)[1]
  truth = pipeline.open_source(_cfg(synth_dir).sources.main, "main")
  by_id = {truth.index["video_id"][i]: i for i in range(len(truth))}
  ious = []
  for row in np.flatnonzero(b["label"] == 1):
    raw = truth[by_id[str(b["video_id"][row])]]
    want = records.decode_frames(raw, [int(b["clip_start"][row])], key="mask")[0] > 127
    got = b["mask"][row, 0, ..., 0] > 0.5
    ious.append((want & got).sum() / max((want | got).sum(), 1))
  assert np.mean(ious) > 0.5, ious


def test_mask_follows_the_frame_through_crop_flip_and_rotate():
  """A mask that marks one bright square stays on that square whatever the geometry drew."""
  video = np.zeros((2, 48, 48, 3), np.uint8)
  video[:, 10:20, 28:40] = 255
  mask = (video[..., :1] > 0).astype(np.float32)
  chain = [augment.random_crop(size=40, resize=32, also=("mask",)),
           augment.flip(keys=("video", "mask"), p=1.0),
           augment.rotate(keys=("video", "mask"), degrees=30.0, p=1.0)]
  for seed in range(5):
    rng = np.random.default_rng(seed)
    ex = {"video": video, "mask": mask}
    for op in chain:
      ex = op(ex, rng)
    assert ex["mask"].shape == (2, 32, 32, 1)
    bright = ex["video"][..., 0].astype(np.float32) / 255
    np.testing.assert_allclose(ex["mask"][..., 0], bright, atol=0.02)


def test_samples_per_record_repeats_each_record_per_epoch(synth_dir):
  cfg = _cfg(synth_dir, p=0.0, samples_per_record=3)
  cfg.train_ops = "center_crop(size=64, resize=16)"
  cfg.sources.main.batch_size = 6
  n = len(pipeline.open_source(cfg.sources.main, "main"))
  ids = np.concatenate([b["video_id"] for b in _batches(cfg, n * 3 // 6)])
  _, counts = np.unique(ids, return_counts=True)
  assert len(counts) == n and set(counts) == {3}


def test_i2g_errors_name_the_problem(tmp_path, synth_dir):
  recs = [dict(r, identity="same") for r in _records() if r["label"] == 0]
  records.write_dataset(str(tmp_path), "synthetic", {"train": recs}, num_shards={"train": 1})
  with pytest.raises(ValueError, match="at least 2 identities"):
    _batches(_cfg(str(tmp_path)), 1)
  with pytest.raises(ValueError, match="no real records"):
    _batches(_cfg(synth_dir, labels=(1,)), 1)
  bad = input_config.i2g_config(p=0.5)
  bad.grid = 1
  with pytest.raises(ValueError, match="grid"):
    i2g_stage.generator_config(bad, 64)


def test_generator_config_scales_pixel_sizes_to_the_frames():
  cfg = i2g_stage.generator_config(input_config.i2g_config(p=0.5), 128)
  assert cfg.sigma_range == (3.0, 6.0) and cfg.blur_kernel == 8
  fields = {f.name for f in dataclasses.fields(i2g.I2GConfig)}
  assert fields <= set(input_config.i2g_config())

"""Paired reals (PCL + I2G §4.2): the `original` field, the lookup, the alignment and the masks.

A small synthetic dataset (2 identities, their fakes of every family, 4 frames at 96 px) is
written to disk, so records, index and `sources.ClipSource` are the real ones.
"""
import json
import os
import pickle

import cv2
import numpy as np
import pytest

from input_pipeline import i2g, pairing, records, sources, validate
from input_pipeline.synthetic import dataset
from tests.conftest import make_record

SIZE, FRAMES = 96, 4  # 96 px: the DSSIM window (11 px) and blur need a face bigger than 40 px.


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  config = dataset.preset("tiny", splits=("train",), identities=(2,), num_shards=(2,),
                          videos_per_identity=1, num_frames=FRAMES, resolution=SIZE)
  out = str(tmp_path_factory.mktemp("paired"))
  dataset.build(config, out, num_workers=1)
  return out


@pytest.fixture(scope="module")
def source(synthetic_dir):
  return sources.ClipSource(synthetic_dir, "train")


def _write(out, recs):
  records.write_dataset(str(out), "unit", {"train": recs})
  return sources.ClipSource(str(out), "train")


# ----------------------------------------------------------------------------- the field
def test_original_round_trips_through_records_and_index(source):
  index = source.index
  fakes = 0
  for i in range(len(source)):
    raw = source[i]
    assert index["original"][i] == raw.get("original", "")
    if raw["label"]:
      fakes += 1
      assert raw["original"] == raw["video_id"].rsplit("/", 1)[0]  # The real it was made from.
      assert raw["original"] in index["video_id"]
    else:
      assert "original" not in raw
  assert fakes == 8


def test_encode_keeps_original_on_fakes_only():
  fake = make_record(1, num_frames=2, label=1, manipulation="swap")
  assert records.parse(records.encode(dict(fake, original="vid000")))["original"] == "vid000"
  assert "original" not in records.parse(records.encode(dict(fake, original="")))
  with pytest.raises(records.RecordError, match="rec3: original 'vid000' on a real record"):
    records.encode(dict(make_record(0, num_frames=2), original="vid000"), where="rec3")


# ----------------------------------------------------------------------------- masks
def test_dssim_to_the_paired_real_recovers_the_forgery_masks(source):
  """The record's own mask is only the answer key: the mask comes from DSSIM to real_clip."""
  paired = pairing.PairedReals(source)
  ious, direct = {}, {}
  for i in range(len(source)):
    fake = source[i]
    if not fake["label"]:
      continue
    real = paired.real_clip(i, 0, FRAMES, fake=fake)
    frames = records.decode_frames(fake)
    truth = records.decode_frames(fake, key="mask") >= 128
    unpaired = records.decode_frames(source[source.index["video_id"].index(fake["original"])])
    for t in range(FRAMES):
      for out, other in ((ious, real[t]), (direct, unpaired[t])):
        mask = i2g.dssim_mask(frames[t], other) > 0
        out.setdefault(fake["manipulation"], []).append(
            (mask & truth[t]).sum() / (mask | truth[t]).sum())
  iou = {k: round(float(np.mean(v)), 3) for k, v in ious.items()}
  print("IoU of the DSSIM mask from real_clip with the true mask:", iou)
  # Measured (JPEG q95 records): graphics 0.84, autoencoder 0.69, reenactment 0.65, neural
  # texture 0.47 (the subtle family: a small, low-contrast change).
  assert iou["graphics_swap"] >= 0.5 and iou["autoencoder_swap"] >= 0.5, iou
  assert iou["reenactment"] >= 0.5 and iou["neural_texture"] >= 0.3, iou
  for k, v in direct.items():  # Pairing and alignment lose nothing against the known real.
    assert iou[k] >= np.mean(v) - 0.02, (k, iou[k], np.mean(v))


# ----------------------------------------------------------------------------- alignment
def _similarity(angle_deg, scale, shift, size):
  m = cv2.getRotationMatrix2D((size / 2, size / 2), angle_deg, scale)
  m[:, 2] += shift
  return m


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return 10 * np.log10(255.0 ** 2 / mse)


def test_real_clip_undoes_a_known_similarity(tmp_path, source):
  """The real crop rotated 5°, scaled 1.08× and shifted (4, −3) px, landmarks with it: the real
  clip comes back registered to the fake's crop."""
  i = source.index["label"].index(0)
  raw = source[i]
  frames, lms = records.decode_frames(raw), raw["landmarks"]
  m = _similarity(5.0, 1.08, (4.0, -3.0), SIZE)
  moved = np.stack([cv2.warpAffine(f, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101) for f in frames])
  base = dict(audio=raw["audio"], fps=raw["fps"], sample_rate=raw["sample_rate"], track_id=0,
              source="unit")
  real = dict(base, frames=moved, landmarks=lms @ m[:, :2].T + m[:, 2], video_id="real",
              label=0, manipulation="real")
  fake = dict(base, frames=frames, landmarks=lms, video_id="fake", label=1, manipulation="swap",
              original="real")
  src = _write(tmp_path, [real, fake])
  got = pairing.PairedReals(src).real_clip(1, 1, 3)
  assert got.shape == (3, SIZE, SIZE, 3) and got.dtype == np.uint8
  expected = records.decode_frames(src[1], [1, 2, 3])
  inner = (slice(None), slice(12, -12), slice(12, -12))  # The border is replicated.
  before = _psnr(records.decode_frames(src[0], [1, 2, 3])[inner], expected[inner])
  after = _psnr(got[inner], expected[inner])
  print(f"PSNR to the fake crop: {before:.1f} dB unaligned, {after:.1f} dB aligned")
  assert after > 30 and after > before + 10, (before, after)


def test_sub_pixel_fits_are_not_resampled():
  frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8)
  lms = np.random.default_rng(1).uniform(4, 28, (2, 68, 2))
  out = pairing.align_frames(frames, lms, lms + 0.3, (32, 32))
  np.testing.assert_array_equal(out, frames)
  assert not np.array_equal(pairing.align_frames(frames, lms, lms + 3.0, (32, 32)), frames)
  # Without landmarks a real of another size is resized to the fake's.
  assert pairing.align_frames(frames, None, lms, (24, 20)).shape == (2, 24, 20, 3)


# ----------------------------------------------------------------------------- lookup
def _lookup_dataset(tmp_path):
  """Reals r0 (track 0, 4 frames) and r1 (tracks 0 and 1); fakes of each lookup case."""
  def rec(i, vid, label=0, track=0, frames=4, size=48, original=None):
    r = make_record(i, frames, size, label=label, manipulation="swap" if label else "real")
    r.update(video_id=vid, track_id=track)
    if original is not None:
      r["original"] = original
    return r
  recs = [rec(0, "r0"), rec(1, "r1"), rec(2, "r1", track=1),
          rec(3, "f_r1_track1", 1, track=1, original="r1"),
          rec(4, "f_r0_track1", 1, track=1, original="r0"),  # r0 has only track 0.
          rec(5, "f_missing", 1, original="elsewhere"),  # Real in another split / not written.
          rec(6, "f_none", 1),  # No known real.
          rec(7, "f_long", 1, frames=6, original="r0"),
          rec(8, "f_small", 1, size=32, original="r0")]
  return _write(tmp_path, recs)


def test_lookup_tracks_fallbacks_and_no_pair(tmp_path):
  src = _lookup_dataset(tmp_path)
  paired = pairing.PairedReals(src)
  assert [paired.real_index(i) for i in range(len(src))] == [None, None, None, 2, 0, None, None,
                                                             0, 0]
  for i in (0, 1, 2, 5, 6):  # Reals and unpaired fakes.
    assert paired.real_clip(i, 0, 2) is None
  clip = paired.real_clip(3, 1, 3)
  assert clip.shape == (3, 48, 48, 3) and abs(int(clip[0, 0, 0, 1]) - 2) <= 3  # From record 2.
  assert paired.real_clip(7, 0, 4).shape == (4, 48, 48, 3)
  assert paired.real_clip(7, 2, 3) is None  # The real ends at frame 4.
  assert paired.real_clip(8, 0, 2).shape == (2, 32, 32, 3)  # At the fake's size.
  with pytest.raises(ValueError, match=r"unit-train\.array_record.* record 7: frames \[4, 8\) "
                                       r"requested; the record has 6 frames"):
    paired.real_clip(7, 4, 4)


def test_pickles_small_without_frames(tmp_path):
  src = _lookup_dataset(tmp_path)
  paired = pairing.PairedReals(src)
  blob = pickle.dumps(paired)
  assert len(blob) < 16_000, len(blob)  # The index and a dict: no decoded frames.
  again = pickle.loads(blob)
  np.testing.assert_array_equal(again.real_clip(3, 0, 4), paired.real_clip(3, 0, 4))


def test_an_index_from_before_the_field_loads(tmp_path):
  src = _lookup_dataset(tmp_path)
  path = os.path.join(str(tmp_path), "unit-train.index.json")
  with open(path) as f:
    index = json.load(f)
  del index["original"]
  with open(path, "w") as f:
    json.dump(index, f)
  old = sources.ClipSource(str(tmp_path), "train")
  assert old.index["original"] == [""] * len(old)
  paired = pairing.PairedReals(old)
  assert all(paired.real_clip(i, 0, 2) is None for i in range(len(old)))
  assert validate.validate(str(tmp_path), progress=False) == []

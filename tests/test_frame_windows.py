"""Frame windows: where training clips may start, the RealForensics evaluation clip layout with
its zero-padded last clip, and the evaluator's video subset (e.g. a DFDC subset list)."""
import numpy as np
import pytest

from fakedet.evaluation import protocols
from fakedet.prediction import predictor
from input_pipeline import config as input_config
from input_pipeline import ops, pipeline, records, sampling, sources
from tests.conftest import SR, make_record

OPS = "center_crop(size=40, resize=32)|log_mel"
CLIP = 10


def _assert_frames(video, first):
  """make_record writes 4·t + 2 into channel 0 of frame t (JPEG keeps it within ±4): the clip
  holds frames first, first + 1, ... (uint8: the value wraps past frame 63)."""
  red = video[:, 16, 16, 0].astype(int)
  np.testing.assert_allclose(red, (4 * (first + np.arange(len(video))) + 2) % 256, atol=4)


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory):
  """Records of 83, 60 and 40 frames (train and val), DFDC-like ids, one fake."""
  d = tmp_path_factory.mktemp("windows")
  recs = []
  for i, (n, name, label) in enumerate(((83, "aaaa", 0), (60, "bbbb", 1), (40, "cccc", 0))):
    rec = make_record(i, n, label=label, manipulation="DFDC" if label else "real")
    rec["video_id"] = f"dfdc/{name}"
    recs.append(rec)
  records.write_dataset(str(d), "unit", {"train": recs, "val": recs}, formats=("array_record",))
  return str(d)


def _cfg(data_dir, **eval_overrides):
  cfg = input_config.input_config()
  cfg.clip_frames = CLIP
  cfg.train_ops = cfg.eval.ops = OPS
  cfg.eval.data_dir = data_dir
  cfg.eval.batch_size = 4
  cfg.eval.update(eval_overrides)
  cfg.sources.main = input_config.source_config(data_dir, "train", 3)
  return cfg


def _eval_rows(cfg):
  batches = list(pipeline.eval_dataset(cfg, process_index=0, process_count=1))
  valid = np.concatenate([b["valid"] for b in batches])
  return {k: np.concatenate([b[k] for b in batches])[valid] for k in batches[0]}


# ----------------------------------------------------------------------------- training window
def test_training_never_samples_outside_the_window(long_dir):
  raw = sources.ClipSource(long_dir, "train")[0]  # 83 frames.
  rng = np.random.default_rng(0)
  starts = [int(sampling.random_clip(raw, CLIP, rng, sample_rate=SR, window=27)["clip_start"])
            for _ in range(400)]
  assert max(starts) == 27 - CLIP and min(starts) == 0  # Every allowed start, none beyond.
  assert len(set(starts)) == 27 - CLIP + 1
  whole = [int(sampling.random_clip(raw, CLIP, rng, sample_rate=SR)["clip_start"])
           for _ in range(400)]
  assert max(whole) > 27 - CLIP  # Without a window the whole video is used (today's default).


def test_training_window_from_the_config_reaches_the_frames(long_dir):
  cfg = _cfg(long_dir)
  cfg.sources.main.frame_window = 15
  it = iter(pipeline.train_dataset(cfg, seed=0, process_index=0, process_count=1))
  for _ in range(8):
    batch = next(it)
    assert (batch["clip_start"] <= 15 - CLIP).all()
    for video, start in zip(batch["video"], batch["clip_start"]):
      _assert_frames(video, start)  # The decoded frames are the window's, none past frame 14.
  cfg.sources.main.frame_window = CLIP - 1
  with pytest.raises(ValueError, match=r"input.sources.main.frame_window=9: expected 0 .* "
                                       r"at least input.clip_frames=10"):
    pipeline.train_dataset(cfg, seed=0, process_index=0, process_count=1)


# ----------------------------------------------------------------------------- eval layout
def test_consecutive_starts_are_the_authors_clips():
  # FF++ val/test: the first 110 frames, 25-frame clips every 24 frames (pytorchvideo's
  # 0.96-s clips with an inclusive end), the fifth moved back to end on frame 110.
  assert sampling.consecutive_clip_starts(300, 25, window=110) == [0, 24, 48, 72, 86]
  # A video of exactly 110 frames: same starts; the last clip then lacks frame 110.
  assert sampling.consecutive_clip_starts(110, 25, window=110) == [0, 24, 48, 72, 86]
  # Celeb-DF / DFDC: the whole video; 83 frames → the last clip 59..83, frame 83 padded.
  assert sampling.consecutive_clip_starts(83, 25) == [0, 24, 48, 59]
  assert sampling.consecutive_clip_starts(96, 25) == [0, 24, 48, 72]  # Ends exactly: no extra.
  assert sampling.consecutive_clip_starts(10, 25) == [0]  # Shorter than a clip: one, padded.
  # A 50-frame video in a 110-frame window: the clip at frame 72 gets no frame; the video ends.
  assert sampling.consecutive_clip_starts(50, 25, window=110) == [0, 24, 48]
  assert sampling.consecutive_clip_starts(0, 25) == []


def test_uniform_layout_honours_the_window():
  assert pipeline.clip_starts(83, 25) == [0, 25, 50, 58]  # Today's default, unchanged.
  assert pipeline.clip_starts(300, 25, frame_window=110) == [0, 25, 50, 75, 85]
  assert pipeline.clip_starts(300, 25, 2, "consecutive", 110) == [0, 86]
  with pytest.raises(ValueError, match="clip_layout='random'; allowed: uniform, consecutive"):
    pipeline.clip_starts(83, 25, layout="random")


def test_padded_last_clip_has_zero_frames_and_flags_them(long_dir):
  raw = sources.ClipSource(long_dir, "val")[0]  # 83 frames.
  ex = sampling.padded_clip(raw, 59, 25, sample_rate=SR, with_mask=True)
  assert ex["video"].shape[0] == 25 and ex["mask"].shape[0] == 25
  np.testing.assert_array_equal(ex["frame_valid"], np.arange(25) < 24)
  _assert_frames(ex["video"][:24], 59)
  assert not ex["video"][24].any() and not ex["mask"][24].any()
  spf = SR // 25  # Audio samples per frame.
  assert ex["waveform"].shape == (25 * spf,) and not ex["waveform"][24 * spf:].any()
  np.testing.assert_allclose(ex["waveform"][:24 * spf], raw["audio"][59 * spf:83 * spf] / 32768.0)
  full = sampling.padded_clip(raw, 0, 25, sample_rate=SR)
  assert full["frame_valid"].all()
  _assert_frames(full["video"], 0)


def test_eval_dataset_consecutive_layout_pads_and_flags(long_dir):
  rows = _eval_rows(_cfg(long_dir, clip_layout="consecutive"))
  got = sorted(zip(rows["video_id"].tolist(), rows["clip_start"].tolist()))
  # 83 frames: 0, 9, ..., 72 then 74 (ends on frame 83: padded); 60: 0..45, 51 (padded); 40: 0..27,
  # 31 (padded). Clip length 10, stride 9.
  expected = [("dfdc/aaaa", s) for s in (0, 9, 18, 27, 36, 45, 54, 63, 72, 74)]
  expected += [("dfdc/bbbb", s) for s in (0, 9, 18, 27, 36, 45, 51)]
  expected += [("dfdc/cccc", s) for s in (0, 9, 18, 27, 31)]
  assert got == sorted(expected)
  last = {v: i for i, v in enumerate(rows["video_id"])}  # Each video's last clip (clip order).
  for i in range(len(rows["valid"])):
    n = {"dfdc/aaaa": 83, "dfdc/bbbb": 60, "dfdc/cccc": 40}[rows["video_id"][i]]
    real = np.arange(CLIP) + rows["clip_start"][i] < n
    np.testing.assert_array_equal(rows["frame_valid"][i], real)
    assert not rows["video"][i][~real].any()  # Padded frames are zero after the eval ops.
    assert real.all() != (i == last[rows["video_id"][i]])  # Only each last clip is padded.
  windowed = _eval_rows(_cfg(long_dir, clip_layout="consecutive", frame_window=20))
  assert sorted(set(windowed["clip_start"].tolist())) == [0, 9, 11]
  assert windowed["frame_valid"].all()  # Every record is longer than frame 20.


def test_predict_cuts_a_track_as_the_evaluator_cuts_its_record(long_dir):
  cfg = _cfg(long_dir, clip_layout="consecutive")
  raw = sources.ClipSource(long_dir, "val")[0]  # 83 frames.
  starts = predictor.track_clip_starts(cfg, 83, 0)
  assert starts == [0, 9, 18, 27, 36, 45, 54, 63, 72, 74]  # The evaluator's, above.
  assert predictor.track_clip_starts(cfg, 83, 2) == [0, 74]
  chain = ops.build(cfg.eval.ops)
  last = predictor.track_clip(cfg, chain, raw, 74)
  np.testing.assert_array_equal(last["frame_valid"], np.arange(CLIP) < 9)  # Frame 83 padded.
  rows = _eval_rows(cfg)
  k = [i for i, (v, s) in enumerate(zip(rows["video_id"], rows["clip_start"]))
       if v == raw["video_id"] and s == 74][0]
  np.testing.assert_array_equal(last["video"], rows["video"][k])  # Same pixels as evaluate's.
  windowed = _cfg(long_dir, clip_layout="consecutive", frame_window=20)
  assert predictor.track_clip_starts(windowed, 83, 0) == [0, 9, 11]
  assert predictor.track_clip_starts(windowed, 83, 0, frame_window=0) == starts  # --frame_window=0
  uniform = _cfg(long_dir)  # The default layout: spread, non-overlapping, as before.
  assert predictor.track_clip_starts(uniform, 83, 0) == sources.eval_clip_starts(83, CLIP, None)
  assert "frame_valid" not in predictor.track_clip(uniform, chain, raw, 0)


def test_eval_window_errors_name_the_key(long_dir):
  with pytest.raises(ValueError, match=r"input.eval.frame_window=5: expected 0"):
    _eval_rows(_cfg(long_dir, frame_window=5))
  with pytest.raises(ValueError, match=r"input.eval.clip_layout='backpad'; allowed"):
    _eval_rows(_cfg(long_dir, clip_layout="backpad"))


# ----------------------------------------------------------------------------- video subset
def test_subset_keeps_exactly_the_listed_videos(long_dir, tmp_path):
  listed = tmp_path / "dfdc_subset.txt"
  # Read as the DFDC corpus reader reads its `subset` file: the last token of each line, its
  # folder and extension dropped (a list file works for both).
  listed.write_text("test_videos/aaaa.mp4\n0 cccc.mp4\n\n")
  rows = _eval_rows(_cfg(long_dir, subset=str(listed)))
  assert set(rows["video_id"]) == {"dfdc/aaaa", "dfdc/cccc"}
  listed.write_text("aaaa.avi 1\ncccc.avi 0\n")  # RealForensics' list: a label column.
  rows = _eval_rows(_cfg(long_dir, subset=str(listed)))
  assert set(rows["video_id"]) == {"dfdc/aaaa", "dfdc/cccc"}
  everything = _eval_rows(_cfg(long_dir))
  assert set(everything["video_id"]) == {"dfdc/aaaa", "dfdc/bbbb", "dfdc/cccc"}
  listed.write_text("aaaa\nzzzz\n")
  with pytest.raises(ValueError, match=r"input.eval.subset: 1 of its 2 videos are not in this "
                                       r"split \(e.g. zzzz\)"):
    _eval_rows(_cfg(long_dir, subset=str(listed)))
  with pytest.raises(FileNotFoundError, match="input.eval.subset='/nonexistent.txt': no such"):
    _eval_rows(_cfg(long_dir, subset="/nonexistent.txt"))


def test_eval_sets_take_per_set_window_layout_and_subset():
  sets = protocols.parse_eval_sets([
      "ffpp=gs://b/ffpp:test@clip_layout=consecutive@frame_window=110",
      "dfdc=gs://b/dfdc@frame_window=0@subset=/lists/dfdc_all_vids.txt", "cdf=gs://b/cdf"])
  assert sets == {
      "ffpp": {"data_dir": "gs://b/ffpp", "split": "test", "clip_layout": "consecutive",
               "frame_window": 110},
      "dfdc": {"data_dir": "gs://b/dfdc", "split": "test", "frame_window": 0,
               "subset": "/lists/dfdc_all_vids.txt"},
      "cdf": {"data_dir": "gs://b/cdf", "split": "test"}}
  base = input_config.input_config()
  base.eval.update(frame_window=110, subset="/train/list.txt", clip_layout="consecutive")
  icfg = protocols.set_input(base, "gs://b/dfdc", "test", {"frame_window": 0})
  # The set's own option wins; the config's subset (its own data's videos) is dropped; the
  # layout stays the config's.
  assert (icfg.eval.frame_window, icfg.eval.subset, icfg.eval.clip_layout) == (
      0, "", "consecutive")
  assert protocols.input_settings(icfg)["frame_window"] == 0
  for bad, message in (("a=d@frame_window=x", "not an integer"), ("a=d@window=3", "@KEY=VALUE"),
                       ("a=d@frame_window=-1", ">= 0"),
                       ("a=d@subset=x@subset=y", "given twice"),
                       ("a=d@clip_layout=random", "clip_layout='random'; allowed")):
    with pytest.raises(ValueError, match=message):
      protocols.parse_eval_sets([bad])

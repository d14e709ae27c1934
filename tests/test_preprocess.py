"""Preprocessing with real codecs: synthetic talking faces → mp4/webm/avi/mov → records → readers.

Faces come from landmark files here (the generator's own 68 landmarks), so these tests need no
detector; tests/test_preprocess_faces.py covers MTCNN on a real photograph.
"""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from input_pipeline import records, sources
from input_pipeline.preprocess import align, decode, encode, faces, runner, tracking, video
from input_pipeline.synthetic import dataset as synthetic

FPS, SR = 25.0, 16000


@pytest.fixture(scope="module")
def reals():
  """Four real synthetic videos (2 s, 96 px) with their audio and 68-point landmarks."""
  cfg = synthetic.preset("tiny", num_frames=50, resolution=96, families=())
  return list(synthetic.generate_split(cfg, "train"))


def _write(tmp, rec, name, audio=True, landmarks=True):
  path = os.path.join(tmp, name)
  encode.write_video(path, rec["frames"], rec["audio"] if audio else None, FPS, SR)
  lm = ""
  if landmarks:
    lm = os.path.splitext(path)[0] + ".npy"
    np.save(lm, rec["landmarks"])
  return path, lm


# ----------------------------------------------------------------------------- decode
def test_resample_indices_holds_the_frame_on_screen():
  times = np.arange(30) / 30.0  # 1 s at 30 fps.
  idx = decode.resample_indices(times, 25.0, 1.0)
  assert len(idx) == 25
  np.testing.assert_array_equal(idx, np.floor(np.arange(25) / 25 * 30 + 1e-9).astype(int))
  slow = decode.resample_indices(np.arange(10) / 12.5, 25.0, 0.8)  # Upsampling repeats frames.
  np.testing.assert_array_equal(slow, np.repeat(np.arange(10), 2))


def test_place_audio_aligns_late_and_early_starts():
  chunk = [np.arange(1, 11, dtype=np.int16)]
  late, pad = decode.place_audio(chunk, 0.25, 8, 12)  # Starts 2 samples after frame 0.
  np.testing.assert_array_equal(late, [0, 0] + list(range(1, 11)))
  assert pad == 0
  early, pad = decode.place_audio(chunk, -0.25, 8, 10)
  np.testing.assert_array_equal(early, list(range(3, 11)) + [0, 0])
  assert pad == 2


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".avi", ".mov"])
def test_decode_round_trip_keeps_frames_and_audio_in_sync(tmp_path, reals, ext):
  rec = reals[0]
  path, _ = _write(str(tmp_path), rec, "v" + ext, landmarks=False)
  media = decode.read_video(path)
  assert media.frames.shape == rec["frames"].shape and media.fps == FPS
  assert media.audio.dtype == np.int16 and len(media.audio) == len(rec["audio"])
  assert np.abs(media.frames.astype(int) - rec["frames"]).mean() < 10  # Lossy codecs.
  # In sync to the sample: the correlation peaks at lag 0.
  a, b = media.audio.astype(float), rec["audio"].astype(float)
  lags = range(-40, 41)
  corr = [np.dot(a[40 + k:len(a) - 40 + k], b[40:len(b) - 40]) for k in lags]
  assert lags[int(np.argmax(corr))] == 0
  assert np.corrcoef(a, b)[0, 1] > 0.95


def test_decode_resamples_30fps_video_and_48khz_audio(tmp_path):
  t = 45  # 1.5 s at 30 fps; frame i has brightness 5 i so the held frames can be identified.
  frames = np.broadcast_to((np.arange(t) * 5).astype(np.uint8)[:, None, None, None],
                           (t, 64, 64, 3)).copy()
  n = np.arange(int(1.5 * 48000))
  audio = (8000 * np.sin(2 * np.pi * 440 * n / 48000)).astype(np.int16)
  path = str(tmp_path / "v30.mp4")
  encode.write_video(path, frames, audio, fps=30.0, sample_rate=48000)
  media = decode.read_video(path)
  assert media.frames.shape[0] == 37  # floor(1.5 * 25)
  shown = np.round(media.frames[:, 32, 32, 0] / 5).astype(int)
  np.testing.assert_array_equal(shown, np.floor(np.arange(37) * 30 / 25 + 1e-9).astype(int))
  assert len(media.audio) == round(37 / 25 * 16000)
  spectrum = np.abs(np.fft.rfft(media.audio[:16000].astype(float)))
  assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second.


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_decode_turns_phone_video_upright(tmp_path, rotation):
  frames = np.zeros((25, 48, 64, 3), np.uint8)
  frames[:, :8, :8] = 255  # A marker in the coded frame's top-left corner.
  path = str(tmp_path / "phone.mp4")
  encode.write_video(path, frames, np.zeros(16000, np.int16), rotation=rotation)
  media = decode.read_video(path)
  expected = np.rot90(frames[0], rotation // 90)  # Counter-clockwise, as the display matrix.
  assert media.frames.shape[1:] == expected.shape
  assert np.abs(media.frames[0].astype(int) - expected).mean() < 8


def test_decode_errors_are_typed(tmp_path, reals):
  rec = reals[0]
  silent, _ = _write(str(tmp_path), rec, "silent.mp4", audio=False, landmarks=False)
  with pytest.raises(decode.MediaError) as e:
    decode.read_video(silent)
  assert e.value.kind == decode.NO_AUDIO
  assert len(decode.read_video(silent, require_audio=False).audio) == len(rec["audio"])
  garbage = tmp_path / "garbage.mp4"
  garbage.write_bytes(b"\x00not a video" * 100)
  with pytest.raises(decode.MediaError) as e:
    decode.read_video(str(garbage))
  assert e.value.kind == decode.DECODE_ERROR
  short, _ = _write(str(tmp_path), dict(rec, frames=rec["frames"][:10]), "short.mp4",
                    landmarks=False)
  with pytest.raises(decode.MediaError) as e:
    decode.read_video(short, min_seconds=1.0)
  assert e.value.kind == decode.TOO_SHORT
  with pytest.raises(decode.MediaError) as e:
    decode.read_video(str(tmp_path / "missing.mp4"))
  assert e.value.kind == decode.DECODE_ERROR
  # A Matroska file whose video codec id FFmpeg does not know.
  mkv, _ = _write(str(tmp_path), rec, "v.mkv", landmarks=False)
  data = open(mkv, "rb").read()
  assert data.count(b"V_MPEG4/ISO/AVC") == 1
  (tmp_path / "unknown.mkv").write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_UNKNOWN/X/ABC"))
  with pytest.raises(decode.MediaError) as e:
    decode.read_video(str(tmp_path / "unknown.mkv"))
  assert e.value.kind == decode.UNSUPPORTED_CODEC


def test_decode_downscales_to_max_side_and_stops_at_max_seconds(tmp_path, reals):
  path, _ = _write(str(tmp_path), reals[0], "v.mp4", landmarks=False)
  media = decode.read_video(path, max_side=48)
  assert media.frames.shape[1:3] == (48, 48) and media.scale == 0.5
  media = decode.read_video(path, max_seconds=1.2)
  assert len(media.frames) == 30 and len(media.audio) == 19200
  np.testing.assert_array_equal(media.audio, decode.read_video(path).audio[:19200])


# ----------------------------------------------------------------------------- tracks, alignment
def _det(boxes):
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  pts = np.stack([boxes[:, :2] + (boxes[:, 2:] - boxes[:, :2]) * f
                  for f in ((0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8))], 1)
  return faces.Detections(boxes, np.ones(len(boxes), np.float32), pts)


def test_tracks_link_by_iou_interpolate_gaps_and_split_after_long_gaps():
  a = lambda t: [10 + t, 10, 60 + t, 60]  # Face A drifts right.
  b = [200, 20, 250, 70]  # Face B stays.
  dets = []
  for t in range(40):
    boxes = [b]
    if t not in (5, 6, 7):  # A is missed for three frames.
      boxes.append(a(t))
    dets.append(_det(boxes))
  tracks = tracking.build_tracks(dets, min_frames=10)
  assert len(tracks) == 2
  ta = tracks[0]  # Sorted by start then x: A (x=10) first.
  assert (ta.start, len(ta)) == (0, 40) and ta.detected.sum() == 37
  np.testing.assert_allclose(ta.boxes[6], a(6), atol=1e-4)  # Interpolated exactly (linear).
  # A gap longer than max_gap ends the track; both halves survive if long enough.
  dets = [_det([a(0)]) if t < 15 or t >= 45 else faces.Detections.empty() for t in range(60)]
  tracks = tracking.build_tracks(dets, min_frames=10, max_gap=25)
  assert [(tr.start, len(tr)) for tr in tracks] == [(0, 15), (45, 15)]
  # A small background face (a crowd, a poster) is dropped relative to the main one.
  small = [300, 10, 310, 20]
  tracks = tracking.build_tracks([_det([b, small]) for _ in range(30)], min_frames=10,
                                 min_relative_size=0.4)
  assert len(tracks) == 1 and tracks[0].boxes[0, 0] == 200
  # Short flickers (false positives) are dropped.
  dets = [_det([b]) if t in (3, 20) else faces.Detections.empty() for t in range(30)]
  assert tracking.build_tracks(dets, min_frames=10) == []


def test_similarity_recovers_a_known_transform():
  rng = np.random.default_rng(0)
  src = rng.uniform(0, 100, (5, 2))
  ang, s, t = 0.3, 1.7, np.array([12.0, -4.0])
  rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
  dst = s * src @ rot.T + t
  m = align.similarity(src, dst)
  np.testing.assert_allclose(align.apply(m, src), dst, atol=1e-9)


def test_smooth_is_the_window_mean_for_still_faces_and_does_not_lag_moving_ones():
  rng = np.random.default_rng(0)
  still = 5.0 + rng.normal(0, 1, (200, 2))
  y = align.smooth(still, 12)
  assert y[10:-10].std(0).max() < 0.4  # Noise std 1 → about 1/sqrt(12) inside the track.
  assert np.abs(y.mean(0) - 5.0).max() < 0.1
  moving = np.stack([np.arange(30) * 2.0, np.full(30, 3.0)], -1)  # 2 px/frame.
  np.testing.assert_allclose(align.smooth(moving, 12), moving, atol=1e-4)  # Edges included.
  np.testing.assert_allclose(align.smooth(np.ones((5, 2)), 12), 1.0, atol=1e-6)


# ----------------------------------------------------------------------------- end to end
def _items(tmp, reals, **kw):
  items = []
  for i, rec in enumerate(reals[:2]):
    path, lm = _write(tmp, rec, f"real{i}.mp4")
    items.append(video.VideoItem(path=path, video_id=f"real{i}", landmarks=lm,
                                 identity=rec["identity"], source="synth", **kw))
  silent, lm = _write(tmp, reals[2], "silent.mp4", audio=False)
  items.append(video.VideoItem(path=silent, video_id="silent", landmarks=lm, source="synth"))
  garbage = os.path.join(tmp, "garbage.mp4")
  with open(garbage, "wb") as f:
    f.write(b"\x00\x01 not a video " * 300)  # Fixed bytes: random ones can probe as MP3.
  items.append(video.VideoItem(path=garbage, video_id="garbage", source="synth"))
  return items


@pytest.mark.integration
def test_round_trip_into_records_read_back_by_the_pipeline_readers(tmp_path, reals):
  tmp = str(tmp_path)
  items = _items(tmp, reals)
  out = os.path.join(tmp, "out")
  config = video.PreprocessConfig(crop_size=64, mouth=True)
  report = runner.run(items, out, "synth", config, num_shards=2, detector="none",
                      progress=False)
  assert report["num_written"] == 2 and report["num_skipped"] == 2
  assert report["skipped_by_kind"] == {"no_audio": 1, "decode_error": 1}
  assert {s["video_id"] for s in report["skipped"]} == {"silent", "garbage"}
  with open(os.path.join(out, runner.REPORT)) as f:
    assert json.load(f)["num_skipped"] == 2

  src = sources.ClipSource(out, "train")
  assert len(src) == 2
  for i in range(len(src)):
    raw = src[i]
    records.check_raw(raw, sample_rate=SR)
    frames = records.decode_frames(raw)
    assert frames.shape == (50, 64, 64, 3)
    assert raw["video_id"] == f"real{i}" and raw["track_id"] == 0
    assert raw["label"] == 0 and raw["manipulation"] == "real" and raw["source"] == "synth"
    assert raw["identity"] == reals[i]["identity"]
    assert len(raw["audio"]) == 32000
    # Audio is the source audio, in sync (AAC is lossy: correlation, not equality).
    assert np.corrcoef(raw["audio"].astype(float), reals[i]["audio"].astype(float))[0, 1] > 0.95
    # Stored landmarks are in crop coordinates: the eyes sit on the mean face, frame after frame.
    eyes = faces.five_from_68(raw["landmarks"])[:, :2]
    np.testing.assert_allclose(eyes.mean(0), align.MEAN_FACE[:2] * 64, atol=1.5)
    assert eyes.std(0).max() < 1.0
  mouth = sources.ClipSource(os.path.join(out, runner.MOUTH_DIR), "train")
  assert len(mouth) == 2
  assert records.decode_frames(mouth[0], [0]).shape == (1, 96, 96, 3)
  # The validator accepts the dataset.
  res = subprocess.run([sys.executable, "-m", "input_pipeline.validate", out,
                        f"--sample_rate={SR}"], capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.integration
def test_rerun_resumes_and_keeps_committed_shards(tmp_path, reals):
  tmp = str(tmp_path)
  items = _items(tmp, reals)[:2] + [
      video.VideoItem(path=_write(tmp, r, f"more{i}.mp4")[0], video_id=f"more{i}",
                      landmarks=_write(tmp, r, f"more{i}.mp4")[1], source="synth")
      for i, r in enumerate(reals[2:])]
  out = os.path.join(tmp, "out")
  config = video.PreprocessConfig(crop_size=48)
  first = runner.run(items, out, "synth", config, num_shards=2, detector="none", progress=False)
  assert first["last_run"]["videos_processed"] == 4
  shard0 = records.shard_name("synth", "train", "array_record", 0, 2)
  before = os.stat(os.path.join(out, shard0)).st_mtime_ns
  # Simulate a run killed after shard 0: shard 1's marker and the manifest never got written.
  os.remove(os.path.join(out, runner.STATE_DIR, "train-00001.json"))
  os.remove(os.path.join(out, records.MANIFEST))
  second = runner.run(items, out, "synth", config, num_shards=2, detector="none",
                      progress=False)
  assert second["last_run"]["videos_processed"] == 2  # Only shard 1's videos.
  assert os.stat(os.path.join(out, shard0)).st_mtime_ns == before
  assert second["num_written"] == 4 and len(sources.ClipSource(out, "train")) == 4
  with pytest.raises(ValueError, match="other videos"):
    runner.run(items[:3], out, "synth", config, num_shards=2, detector="none", progress=False)


@pytest.mark.integration  # > 5 s on 2 cores: kept out of the fast subset.
def test_multi_face_landmark_file_gives_one_record_per_track(tmp_path, reals):
  a, b = reals[0], reals[1]
  frames = np.concatenate([a["frames"], b["frames"]], axis=2)  # Two people side by side.
  lm = np.stack([a["landmarks"], b["landmarks"] + [96, 0]], axis=1)  # [T, 2, 68, 2]
  lm[30:, 1] = np.nan  # Person b leaves after 30 frames (1.2 s).
  path = str(tmp_path / "two.webm")
  encode.write_video(path, frames, a["audio"])
  lm_path = str(tmp_path / "two.json")
  with open(lm_path, "w") as f:
    json.dump({"landmarks": np.where(np.isnan(lm), None, lm).tolist()}, f)
  item = video.VideoItem(path=path, video_id="two", landmarks=lm_path, label=1,
                         manipulation="graphics_swap")
  res = video.process_video(item, video.PreprocessConfig(crop_size=48))
  assert res.skip is None
  assert [r["track_id"] for r in res.face_records] == [0, 1]
  assert [len(r["frames"]) for r in res.face_records] == [50, 30]
  assert [len(r["audio"]) for r in res.face_records] == [32000, 30 * 640]
  assert all(r["label"] == 1 and r["manipulation"] == "graphics_swap" for r in res.face_records)


@pytest.mark.integration
def test_cli_writes_dataset_and_reports_skips(tmp_path, reals):
  tmp = str(tmp_path)
  raw = os.path.join(tmp, "raw", "sub")
  os.makedirs(raw)
  lms = os.path.join(tmp, "lms", "sub")
  os.makedirs(lms)
  _write(raw, reals[0], "a.mov", landmarks=False)
  np.save(os.path.join(lms, "a.npy"), reals[0]["landmarks"])
  _write(raw, reals[1], "b.mp4", audio=False, landmarks=False)
  out = os.path.join(tmp, "out")
  res = subprocess.run(
      [sys.executable, "-m", "input_pipeline.preprocess", f"--videos={tmp}/raw",
       f"--out_dir={out}", "--name=cli", "--split=val", "--detector=none",
       f"--landmarks_dir={tmp}/lms", "--num_workers=2", "--crop_size=32",
       "--sample_rate=44100"],  # FakeOut's records.
      capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "1 skipped" in res.stdout and "no_audio" in res.stdout
  src = sources.ClipSource(out, "val")
  assert len(src) == 1 and src[0]["video_id"] == "sub/a"
  records.check_raw(src[0], sample_rate=44100)
  assert len(src[0]["audio"]) == records.audio_samples(len(src[0]["frames"]), 25, 44100)


def test_unexpected_errors_are_skipped_not_raised(tmp_path, reals, monkeypatch):
  path, lm = _write(str(tmp_path), reals[0], "a.mp4")
  item = video.VideoItem(path=path, video_id="a", landmarks=lm)

  def boom(*args, **kwargs):
    raise RuntimeError("boom")
  monkeypatch.setattr(video.align, "warp", boom)
  runner.init_worker(video.PreprocessConfig(), "none")
  r = runner.work(item)
  assert r["skip"][0] == decode.INTERNAL_ERROR and "boom" in r["skip"][1]


def test_list_file_rows_set_metadata(tmp_path):
  rows = [{"path": "/x/a.mp4", "label": 1, "manipulation": "reenactment", "split": "test",
           "original": "b"},
          {"path": "/x/b.mp4", "video_id": "custom"}]
  p = tmp_path / "list.jsonl"
  p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  items = runner.read_list(str(p), source="ffpp")
  assert items[0] == video.VideoItem(path="/x/a.mp4", video_id="a", split="test", label=1,
                                     manipulation="reenactment", source="ffpp", original="b")
  assert items[1].video_id == "custom" and items[1].split == "train"
  p.write_text(json.dumps({"path": "/x/a.mp4", "lable": 1}))
  with pytest.raises(ValueError, match="lable"):
    runner.read_list(str(p))
  assert dataclasses.asdict(items[1])["landmarks"] == ""


def test_a_fakes_original_goes_into_its_records_and_index_rows(tmp_path, reals):
  """The list row's `original` (the real a fake was made from) flows like `identity`: item →
  every track's record → index row, in the code the local and Beam runners share."""
  path, lm = _write(str(tmp_path), reals[0], "a.mp4")
  item = video.VideoItem(path=path, video_id="fake_a", label=1, manipulation="swap",
                         original="real_a", landmarks=lm)
  runner.init_worker(video.PreprocessConfig(crop_size=32, max_seconds=1.0), "none")
  result = runner.work(item)
  assert result["skip"] is None and result["faces"]
  for data, row in result["faces"]:
    assert records.parse(data)["original"] == row["original"] == "real_a"
  real = dataclasses.replace(item, video_id="real_a", label=0, manipulation="real", original="")
  data, row = runner.work(real)["faces"][0]
  assert "original" not in records.parse(data) and row["original"] == ""
  with pytest.raises(ValueError, match=r"real videos \(label 0\) with an 'original': \['x'\]"):
    runner.check_items([dataclasses.replace(real, video_id="x", original="y")], "none", 1)
  # The plan fingerprint sees a real's item as it was before the field existed, so a run
  # interrupted then still resumes.
  before = {k: v for k, v in dataclasses.asdict(real).items() if k != "original"}
  assert runner._plan_item(real) == before  # pylint: disable=protected-access
  assert runner._plan_item(item)["original"] == "real_a"  # pylint: disable=protected-access


class _KillsWorker(str):
  """A landmark path whose first use kills the worker process (as a native crash or OOM would)."""

  def endswith(self, *args):  # faces.load_landmarks calls it first.
    os._exit(1)


@pytest.mark.integration
def test_a_dying_worker_skips_its_video_and_the_batch_goes_on(tmp_path, reals):
  tmp = str(tmp_path)
  items = []
  for i, rec in enumerate(reals[:3]):
    path, lm = _write(tmp, rec, f"v{i}.mp4")
    items.append(video.VideoItem(path=path, video_id=f"v{i}",
                                 landmarks=_KillsWorker(lm) if i == 1 else lm))
  report = runner.run(items, os.path.join(tmp, "out"), "synth",
                      video.PreprocessConfig(crop_size=32), num_workers=2, detector="none",
                      progress=False)
  assert report["num_written"] == 2
  assert [(s["video_id"], s["kind"]) for s in report["skipped"]] == [("v1", "error")]
  assert "worker process died" in report["skipped"][0]["message"]


def test_five_point_landmark_files_and_bad_shapes(tmp_path, reals):
  five = faces.five_from_68(reals[0]["landmarks"])  # [T, 5, 2]
  five[10] = np.nan  # No face on frame 10.
  np.save(tmp_path / "five.npy", five)
  dets = faces.detections_from_landmarks(faces.load_landmarks(str(tmp_path / "five.npy")),
                                         num_frames=60, scale=0.5)
  assert [len(d) for d in dets[8:12]] == [1, 1, 0, 1] and len(dets[55]) == 0  # Past the file.
  np.testing.assert_allclose(dets[0].points[0], five[0] * 0.5)
  assert dets[0].landmarks68 is None
  np.save(tmp_path / "bad.npy", np.zeros((5, 7, 2)))
  with pytest.raises(ValueError, match="K in"):
    faces.load_landmarks(str(tmp_path / "bad.npy"))

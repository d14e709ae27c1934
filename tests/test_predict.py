"""Predict CLI: raw files → per-clip/track/video fake probabilities, equal to a direct forward pass
on the same clips read from records, video level = max over tracks of the clip mean, occlusion
heatmaps, and per-file errors (corrupt file, missing file, no face, no audio for an audio model)
that never stop the batch.

Fast paths only (``--aligned`` and landmark files: no MTCNN); the tiny detector is trained once
per session and shared with tests/test_evaluate.py (same directory and lock).
"""
import fcntl
import json
import os
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest

from fakedet import sharding
from fakedet import train_state as train_state_lib
from fakedet.evaluation import detector as detector_lib
from fakedet.prediction import occlusion, predictor as predictor_lib, tracks as tracks_lib
from fakedet.trainers import train
from input_pipeline import ops, pipeline, records, sources
from input_pipeline.preprocess import decode, encode, video
from input_pipeline.synthetic import dataset as synthetic
from tests import tiny_detector_config

pytestmark = pytest.mark.integration  # Trains, runs CLIs, Beam, MTCNN or several processes.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = "tests/tiny_detector_config.py"
FPS, SR, NUM_FRAMES, RES = 25.0, 16000, 30, 96
CROP = 40  # synthetic:tiny's resolution: the size of the records the tiny detector saw.


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """The 2-step tiny detector of tests/test_evaluate.py, trained once per session (flock)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  d = base / "evaluate_tiny_detector"
  with open(base / "evaluate_tiny_detector.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (d / "trained").exists():
      train.run(tiny_detector_config.get_config(), str(d))
      (d / "trained").touch()
  return str(d)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """mp4s written from the synthetic generator (real codecs) with 68-point landmark files:
  ``a`` one face, ``two`` two faces side by side (two tracks), ``silent`` no audio track,
  ``noface`` a landmark file without any face, ``corrupt`` random bytes."""
  d = tmp_path_factory.mktemp("predict_media")
  lm_dir = d / "landmarks"
  lm_dir.mkdir()
  cfg = synthetic.preset("tiny", num_frames=NUM_FRAMES, resolution=RES, families=())
  recs = list(synthetic.generate_split(cfg, "val"))[:2]
  out = {}

  def put(name, frames, audio, landmarks):
    path = str(d / f"{name}.mp4")
    encode.write_video(path, frames, audio, FPS, SR)
    np.save(lm_dir / f"{name}.npy", landmarks)
    out[name] = path

  a, b = recs
  put("a", a["frames"], a["audio"], a["landmarks"])
  shifted = b["landmarks"] + np.array([RES, 0], np.float32)
  put("two", np.concatenate([a["frames"], b["frames"]], axis=2), b["audio"],
      np.stack([a["landmarks"], shifted], axis=1))
  put("silent", b["frames"], None, b["landmarks"])
  put("noface", a["frames"], a["audio"], np.full_like(a["landmarks"], np.nan))
  out["corrupt"] = str(d / "corrupt.mp4")
  with open(out["corrupt"], "wb") as f:
    f.write(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
  out["landmarks_dir"] = str(lm_dir)
  out["frames"] = {"a": a["frames"], "silent": b["frames"]}
  return out


@pytest.fixture(scope="module")
def predictor(workdir):
  return predictor_lib.Predictor.from_checkpoint(tiny_detector_config.get_config(), workdir)


def _direct_logits(predictor, recs, tmp_path, clips_per_video=0):
  """(video_id, track_id, clip start in the track) → logit, through records on disk, the
  evaluator's input pipeline and a plain jitted ``objective.predict``."""
  d = str(tmp_path / "direct")
  records.write_dataset(d, "direct", {"val": recs})
  config = tiny_detector_config.get_config()
  config.input.eval.data_dir, config.input.eval.clips_per_video = d, clips_per_video
  predict = jax.jit(predictor.objective.predict)
  out = {}
  for batch in pipeline.eval_dataset(config.input):
    logits = np.asarray(predict(predictor.detector.state, {"video": batch["video"]}))
    for r in np.flatnonzero(batch["valid"]):
      out[(str(batch["video_id"][r]), int(batch["track_id"][r]),
           int(batch["clip_start"][r]))] = float(logits[r])
  assert predictor_lib.records_crop_size(config.input) == CROP  # Read from the first record.
  return out


def _check_entry(v):
  """Probabilities are σ(logit); track = σ(mean of its clips' logits); video = max over its
  tracks (the evaluator's aggregation, report.video_scores)."""
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  for tr in v["tracks"]:
    logits = [c["logit"] for c in tr["clips"]]
    for c in tr["clips"]:
      assert c["fake_probability"] == pytest.approx(sigmoid(c["logit"]), rel=1e-12)
    assert tr["fake_probability"] == pytest.approx(sigmoid(np.mean(logits)), rel=1e-6)
  assert v["fake_probability"] == pytest.approx(
      max(sigmoid(np.mean([c["logit"] for c in tr["clips"]])) for tr in v["tracks"]), rel=1e-6)
  assert v["verdict"] == ("fake" if v["fake_probability"] >= 0.5 else "real")
  assert v["num_clips"] == sum(len(tr["clips"]) for tr in v["tracks"])


def test_landmark_files_match_records_and_video_level_is_max_over_tracks(predictor, files,
                                                                           tmp_path):
  options = predictor_lib.Options(clips_per_track=0, landmarks_dir=files["landmarks_dir"])
  paths = [files[k] for k in ("a", "two", "noface", "corrupt")]
  result = predictor_lib.predict_files(predictor, paths, options)
  assert (result["num_files"], result["num_ok"], result["num_failed"]) == (4, 2, 2)
  assert result["failed_by_kind"] == {"no_face": 1, "decode_error": 1}
  a, two, noface, corrupt = result["videos"]
  assert [v["video_id"] for v in result["videos"]] == ["a", "two", "noface", "corrupt"]
  assert noface["status"] == "no_face" and "no face track" in noface["error"]
  assert corrupt["status"] == "decode_error" and "corrupt.mp4" in corrupt["error"]
  assert a["faces_from"] == "landmarks" and a["frame_size"] == [RES, RES]
  assert two["num_tracks"] == 2 and two["frame_size"] == [2 * RES, RES]
  centre = [(tr["box"][0] + tr["box"][2]) / 2 for tr in two["tracks"]]
  assert centre[0] < RES < centre[1]  # Tracks ordered left to right; boxes in source pixels.
  # Every clip of the 30-frame tracks: starts 0, 4, ..., 24 and 26 (flush with the end).
  expected_starts = sources.eval_clip_starts(NUM_FRAMES, 4)
  for v in (a, two):
    _check_entry(v)
    for tr in v["tracks"]:
      assert tr["num_frames"] == NUM_FRAMES and tr["start_frame"] == 0
      assert [c["start_frame"] - tr["start_frame"] for c in tr["clips"]] == expected_starts
  # The same files through the preprocessing's own process_video → records → evaluator pipeline.
  cfg = tracks_lib.preprocess_config(CROP, 4, needs_audio=False)
  recs = []
  for name in ("a", "two"):
    item = video.VideoItem(path=files[name], video_id=name, split="val",
                           landmarks=os.path.join(files["landmarks_dir"], f"{name}.npy"))
    recs += video.process_video(item, cfg).face_records
  direct = _direct_logits(predictor, recs, tmp_path)
  ours = {(v["video_id"], tr["track_id"], c["start_frame"] - tr["start_frame"]): c["logit"]
          for v in (a, two) for tr in v["tracks"] for c in tr["clips"]}
  assert sorted(ours) == sorted(direct) and len(ours) == 3 * len(expected_starts)
  for key, logit in ours.items():
    assert logit == pytest.approx(direct[key], abs=1e-5), key
  # The two tracks differ, so the max over tracks is a real choice.
  assert two["tracks"][0]["fake_probability"] != two["tracks"][1]["fake_probability"]


def test_aligned_input_matches_direct_prediction(predictor, files, tmp_path):
  options = predictor_lib.Options(clips_per_track=2, aligned=True)
  v = predictor.predict_file(files["a"], "a", options)
  assert v["status"] == "ok" and v["faces_from"] == "aligned" and v["num_tracks"] == 1
  _check_entry(v)
  # Reference: decode, resize the 96 px frames to the records' 40 px, write a record.
  media = decode.read_video(files["a"])
  frames = np.stack([cv2.resize(f, (CROP, CROP), interpolation=cv2.INTER_AREA)
                     for f in media.frames])
  rec = dict(frames=frames, audio=media.audio, fps=FPS, sample_rate=SR, video_id="a",
             track_id=0, source="test", label=0, manipulation="real")
  direct = _direct_logits(predictor, [rec], tmp_path, clips_per_video=2)
  clips = v["tracks"][0]["clips"]
  assert [c["start_frame"] for c in clips] == [0, NUM_FRAMES - 4]
  for c in clips:
    assert c["logit"] == pytest.approx(direct[("a", 0, c["start_frame"])], abs=1e-5)


def _audio_predictor():
  """A tiny video+audio detector (FakeOut's shape) at random init: needs ``audio`` log-mels."""
  config = tiny_detector_config.get_config()
  config.model.audio_backbone = dict(name="resnet50_audio", stage_blocks=(1, 1, 1, 1),
                                     width_multiplier=1 / 16)
  config.input.eval.ops = tiny_detector_config.EVAL_OPS + "|log_mel"
  from fakedet import objectives
  objective = objectives.get("video_detector")(config)
  mesh = sharding.make_mesh(config.mesh)
  example = predictor_lib.example_batch(config.input, CROP, ops.build(config.input.eval.ops))
  _, shardings = train_state_lib.abstract_inference_state(
      objective, train_state_lib.abstract_batch(example, objective.eval_keys, 1), mesh)
  variables = jax.jit(objective.init)(jax.random.key(0),
                                      {k: example[k] for k in objective.eval_keys})
  state = train_state_lib.TrainState(
      step=np.int32(0), params=variables["params"],
      batch_stats=variables.get("batch_stats", {}), opt_state={}, ema_params={},
      ema_batch_stats={})
  detector = detector_lib.Detector(config, objective, jax.device_put(state, shardings),
                                  shardings, mesh, directory="", step=0)
  return predictor_lib.Predictor(detector, CROP)


def test_audio_model_reports_a_video_without_audio_and_goes_on(files):
  predictor = _audio_predictor()
  assert predictor.needs_audio
  options = predictor_lib.Options(clips_per_track=1, aligned=True)
  result = predictor_lib.predict_files(predictor, [files["silent"], files["a"]], options)
  silent, a = result["videos"]
  assert silent["status"] == "no_audio" and "no audio track" in silent["error"]
  assert a["status"] == "ok" and a["num_clips"] == 1
  assert result["failed_by_kind"] == {"no_audio": 1} and result["num_ok"] == 1
  assert "1 of 2 files scored, 1 failed (no_audio: 1)" in predictor_lib.summary(result)


def test_occlusion_map_by_hand():
  assert occlusion.positions(32, 11, 6) == [0, 6, 12, 18, 21]
  assert occlusion.positions(8, 8, 3) == [0]
  with pytest.raises(ValueError, match="patch"):
    occlusion.positions(8, 9, 1)
  example = {"video": np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3), "x": 1}
  covered, corners = occlusion.occluded(example, "video", 2, 2)
  assert corners == [(0, 0), (0, 2), (2, 0), (2, 2)] and covered[0]["x"] == 1
  fill = np.round(example["video"].reshape(-1, 3).mean(0)).astype(np.uint8)
  assert (covered[1]["video"][:, :2, 2:] == fill).all()
  assert (covered[1]["video"][:, 2:] == example["video"][:, 2:]).all()
  # Hiding the top-left quarter drops p from 0.9 to 0.3; elsewhere nothing changes.
  drop = occlusion.drop_map(0.9, [0.3, 0.9, 0.9, 0.9], corners, 2, (4, 4))
  np.testing.assert_allclose(drop[:2, :2], 0.6, atol=1e-6)
  np.testing.assert_allclose(drop[2:], 0.0, atol=1e-6)
  image = occlusion.overlay(example["video"][0], drop, min_side=16)
  assert image.shape == (16, 32, 3) and image.dtype == np.uint8
  assert (image[:, :16] != image[:, 16:]).any()  # The overlay half shows the map.


def _cli(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "fakedet.predict", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, check=False, timeout=300)


def test_cli_aligned_with_heatmaps_and_errors(predictor, workdir, files, tmp_path):
  out, heat = str(tmp_path / "preds.json"), str(tmp_path / "heat")
  missing = str(tmp_path / "missing.mp4")
  proc = _cli(f"--config={CONFIG_FILE}", f"--checkpoint={workdir}", "--aligned",
              f"--output={out}", f"--heatmap_dir={heat}", files["a"], files["corrupt"],
              files["silent"], missing)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "2 of 4 files scored, 2 failed (decode_error: 2)" in proc.stdout
  result = json.load(open(out))
  assert {k: result[k] for k in ("step", "objective", "clip_frames", "clips_per_track",
                                 "crop_size", "aligned", "needs_audio", "num_ok")} == {
      "step": 2, "objective": "video_detector", "clip_frames": 4, "clips_per_track": 2,
      "crop_size": CROP, "aligned": True, "needs_audio": False, "num_ok": 2}
  a, corrupt, silent, gone = result["videos"]
  assert [v["status"] for v in result["videos"]] == ["ok", "decode_error", "ok", "decode_error"]
  assert "missing.mp4" in gone["error"] and corrupt["error"]
  # A video-only model scores a file without audio.
  assert silent["num_clips"] == 2
  # Same numbers as in-process.
  again = predictor.predict_file(files["a"], "a", predictor_lib.Options(clips_per_track=2,
                                                                       aligned=True))
  assert [c["logit"] for c in a["tracks"][0]["clips"]] == pytest.approx(
      [c["logit"] for c in again["tracks"][0]["clips"]], abs=1e-6)
  _check_entry(a)
  # Heatmap: the most fake-looking clip's first model-input frame (32 px, shown ×7) + overlay.
  hm = a["tracks"][0]["heatmap"]
  best = max(a["tracks"][0]["clips"], key=lambda c: c["fake_probability"])
  assert hm["start_frame"] == best["start_frame"] and hm["patch"] == round(32 * 40 / 112)
  png = cv2.imread(hm["png"])
  assert png.shape == (224, 448, 3)
  assert os.path.basename(hm["png"]) == "a_track0.png"
  # Every file failing is the one non-zero exit.
  bad = _cli(f"--config={CONFIG_FILE}", f"--checkpoint={workdir}", "--aligned", missing)
  assert bad.returncode == 1
  only = json.loads(bad.stdout)  # No --output: the JSON is stdout, the table stderr.
  assert only["num_ok"] == 0 and only["videos"][0]["status"] == "decode_error"
  assert "0 of 1 files scored, 1 failed (decode_error: 1)" in bad.stderr


def test_records_crop_size_sources(tmp_path):
  icfg = tiny_detector_config.get_config().input
  assert predictor_lib.records_crop_size(icfg) == CROP  # synthetic:tiny: its first record.
  (tmp_path / "preprocess.json").write_text(json.dumps({"config": {"crop_size": 150}}))
  icfg.eval.data_dir = str(tmp_path)
  assert predictor_lib.records_crop_size(icfg) == 150
  icfg.eval.data_dir = str(tmp_path / "nowhere")
  with pytest.raises(ValueError, match="nowhere.*pass --crop_size"):
    predictor_lib.records_crop_size(icfg)
  icfg.eval.data_dir = ""
  with pytest.raises(ValueError, match="empty.*pass --crop_size"):
    predictor_lib.records_crop_size(icfg)

"""Evaluation driver: scores match a direct forward pass, reports match an independent computation
from the per-clip table, video level = max over tracks of the clip mean, robustness sweep, device
count and host count invariance, the CLI on a trained checkpoint, and its error messages."""
import csv
import fcntl
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from fakedet import checkpointing, sharding
from fakedet.evaluation import detector, metrics, protocols, report, scoring
from fakedet.trainers import train
from tests import tiny_detector_config
from tests.conftest import make_record

pytestmark = pytest.mark.integration  # Trains, runs CLIs, Beam, MTCNN or several processes.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = "tests/tiny_detector_config.py"


def _config(**eval_overrides):
  config = tiny_detector_config.get_config()
  for k, v in eval_overrides.items():
    setattr(config.input.eval, k, v)
  return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A checkpoint written by a 2-step tiny training run (the trainer's own layout), trained once
  per session even when xdist spreads this module over workers: the run costs more than all the
  tests that read it."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # This session's directory, shared by its workers.
  d = base / "evaluate_tiny_detector"
  with open(base / "evaluate_tiny_detector.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (d / "trained").exists():
      train.run(_config(), str(d))
      (d / "trained").touch()
  return str(d)


@pytest.fixture(scope="module")
def multitrack_dir(tmp_path_factory):
  """Videos with several face tracks (one record each) and an odd clip count: video ``multi_r``
  (real, tracks 0 and 1), ``multi_f`` (fake, tracks 0 and 1), one-track ``solo_r``/``solo_f``."""
  from input_pipeline import records
  layout = [("multi_r", 0, 0, "real"), ("multi_r", 1, 0, "real"), ("multi_f", 0, 1, "swap"),
            ("multi_f", 1, 1, "swap"), ("solo_r", 0, 0, "real"), ("solo_f", 0, 1, "reenact")]
  recs = []
  for i, (video, track, label, manipulation) in enumerate(layout):
    rec = make_record(i, num_frames=12, label=label, manipulation=manipulation)
    rec.update(video_id=video, track_id=track)
    recs.append(rec)
  d = str(tmp_path_factory.mktemp("multitrack"))
  records.write_dataset(d, "multitrack", {"val": recs})
  return d


def _read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _hand_video_scores(rows):
  """Independent of metrics.video_level: sigmoid(max over tracks of the mean clip logit)."""
  tracks = {}
  for r in rows:
    tracks.setdefault((r["video_id"], r["track_id"]), []).append(float(r["logit"]))
  videos = {}
  for (video, _), logits in tracks.items():
    videos[video] = max(videos.get(video, -np.inf), sum(logits) / len(logits))
  return {v: 1 / (1 + np.exp(-x)) for v, x in videos.items()}


def test_standard_report_matches_direct_computation(workdir, tmp_path):
  config = _config()
  out = str(tmp_path / "eval")
  result = protocols.evaluate_checkpoint(config, workdir, out)
  assert result["step"] == 2 and result["num_clips"] == 20 and result["num_videos"] == 10
  assert result["missing_clips"] == 0
  assert json.load(open(os.path.join(out, "report.json"))) == json.loads(json.dumps(result))
  assert os.path.getsize(os.path.join(out, "roc.png")) > 1000
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))

  rows = _read_csv(os.path.join(out, "clip_scores.csv"))
  # Each logit is the model's output for exactly that clip: redo the forward pass by hand.
  scorer = scoring.Scorer(config, workdir)
  from input_pipeline import pipeline
  direct = {}
  predict = jax.jit(scorer.detector.objective.predict)
  for batch in pipeline.eval_dataset(config.input):
    logits = np.asarray(predict(scorer.detector.state, {"video": batch["video"]}))
    for r in np.flatnonzero(batch["valid"]):
      direct[(str(batch["video_id"][r]), int(batch["clip_start"][r]))] = float(logits[r])
  assert len(direct) == len(rows) == 20
  for r in rows:
    assert float(r["logit"]) == pytest.approx(direct[(r["video_id"], int(r["clip_start"]))],
                                              abs=1e-5)
    assert float(r["prob"]) == pytest.approx(1 / (1 + np.exp(-float(r["logit"]))), rel=1e-9)
    assert int(r["label"]) == (r["manipulation"] != "real")

  labels = np.array([int(r["label"]) for r in rows])
  probs = np.array([float(r["prob"]) for r in rows])
  manips = [r["manipulation"] for r in rows]
  expected_clip = metrics.detection_report(labels, probs, manips)
  videos = _hand_video_scores(rows)
  vlabels = {r["video_id"]: int(r["label"]) for r in rows}
  vmanips = {r["video_id"]: r["manipulation"] for r in rows}
  ids = sorted(videos)
  expected_video = metrics.detection_report([vlabels[v] for v in ids], [videos[v] for v in ids],
                                            [vmanips[v] for v in ids])
  for level, expected in (("clip", expected_clip), ("video", expected_video)):
    assert set(result[level]) == {"overall", "autoencoder_swap", "graphics_swap",
                                  "neural_texture", "reenactment"}
    for group, values in expected.items():
      for k, v in values.items():
        assert result[level][group][k] == pytest.approx(v, abs=1e-12), (level, group, k)
  # The overall AUC against a brute-force pair count, ties as ½.
  fake, real = probs[labels == 1], probs[labels == 0]
  pairs = np.mean((fake[:, None] > real[None]) + 0.5 * (fake[:, None] == real[None]))
  assert result["clip"]["overall"]["auc"] == pytest.approx(pairs)
  assert result["counts"]["video"] == {"real": 2, "autoencoder_swap": 2, "graphics_swap": 2,
                                       "neural_texture": 2, "reenactment": 2}
  assert "eval/overall/video_auc" in report.flat_scalars(result)
  # Re-reading the CSV gives the same report: the table is a complete record of the evaluation.
  again = report.build_report(report.read_clip_csv(os.path.join(out, "clip_scores.csv")))
  assert again["video"] == result["video"] and again["clip"] == result["clip"]


def test_video_level_is_max_over_tracks_of_clip_mean_logits(workdir, multitrack_dir):
  config = _config(data_dir=multitrack_dir, clips_per_video=2, batch_size=8,
                   manipulations=("real", "swap", "reenact"))
  scores = scoring.Scorer(config, workdir)()
  assert len(scores) == 12 and set(scores.video_ids) == {"multi_r", "multi_f", "solo_r", "solo_f"}
  result = report.build_report(scores)
  by_track = {}
  for v, t, x in zip(scores.video_ids, scores.track_ids, scores.logits):
    by_track.setdefault((v, int(t)), []).append(float(x))
  assert all(len(x) == 2 for x in by_track.values())
  expected = {v: 1 / (1 + np.exp(-max(np.mean(by_track[(v, t)]) for t in (0, 1)
                                      if (v, t) in by_track)))
              for v in ("multi_r", "multi_f", "solo_r", "solo_f")}
  video = report.video_scores(scores)
  np.testing.assert_allclose(video["scores"], [expected[v] for v in video["video_ids"]])
  assert result["num_videos"] == 4 and result["counts"]["video"] == {
      "real": 2, "reenact": 1, "swap": 1}
  assert set(result["video"]) == {"overall", "reenact", "swap"}  # One row per held-in family.


def test_consecutive_layout_and_subset_score_exactly_those_clips(workdir, multitrack_dir,
                                                                   tmp_path):
  """The RealForensics clip layout (last clip zero-padded, ``frame_valid`` in the batch) runs
  through the restored detector, and a subset list keeps only its videos."""
  from input_pipeline import sampling
  listed = tmp_path / "subset.txt"
  listed.write_text("multi_f.mp4\nsolo_r\n")
  config = _config(data_dir=multitrack_dir, batch_size=8, clip_layout="consecutive",
                   clips_per_video=0, subset=str(listed),
                   manipulations=("real", "swap", "reenact"))
  scores = scoring.Scorer(config, workdir)()
  frames = config.input.clip_frames
  starts = sampling.consecutive_clip_starts(12, frames)
  assert starts[-1] + frames > 12  # The last clip of each 12-frame record runs past its end.
  got = sorted(zip(scores.video_ids, scores.track_ids.tolist(), scores.clip_starts.tolist()))
  assert got == sorted((v, t, s) for v, t in (("multi_f", 0), ("multi_f", 1), ("solo_r", 0))
                       for s in starts)
  assert np.isfinite(scores.logits).all() and not scores.missing
  result = protocols.evaluate_checkpoint(config, workdir, None, maps_per_class=0)
  assert result["eval"]["clip_layout"] == "consecutive" and result["num_videos"] == 2


def test_restricting_manipulations_reports_only_those(workdir):
  result = protocols.evaluate_checkpoint(
      _config(manipulations=("real", "graphics_swap")), workdir, None)
  assert set(result["video"]) == {"overall", "graphics_swap"}
  assert result["counts"]["clip"] == {"real": 4, "graphics_swap": 4}
  assert result["video"]["overall"] == result["video"]["graphics_swap"]


def test_robustness_sweep(workdir, tmp_path):
  out = str(tmp_path / "rob")
  config = _config()
  result = protocols.evaluate_checkpoint(config, workdir, out, "robustness",
                                         corruptions=("blur", "contrast"), severities=(1, 5))
  table = result["robustness"]
  assert set(table["corruptions"]) == {"blur", "contrast"}
  assert set(table["corruptions"]["blur"]) == {"1", "5", "mean"}
  assert set(table["severity_mean"]) == {"1", "5"}
  assert table["clean"]["video_auc"] == result["video"]["overall"]["auc"]
  on_disk = json.load(open(os.path.join(out, "robustness.json")))
  assert on_disk == json.loads(json.dumps(table))
  assert os.path.getsize(os.path.join(out, "robustness.png")) > 1000
  assert "robustness" not in json.load(open(os.path.join(out, "report.json")))
  # One cell against a standard evaluation with the corruption written into the op string.
  corrupted = _config(ops="corrupt(kind='contrast', severity=5)|" + config.input.eval.ops)
  direct = protocols.evaluate_checkpoint(corrupted, workdir, None)
  assert table["corruptions"]["contrast"]["5"]["video_auc"] == direct["video"]["overall"]["auc"]
  assert table["corruptions"]["contrast"]["5"]["clip_auc"] == direct["clip"]["overall"]["auc"]
  for s in ("1", "5"):
    assert table["severity_mean"][s]["video_auc"] == pytest.approx(np.mean(
        [table["corruptions"][k][s]["video_auc"] for k in ("blur", "contrast")]))
  assert table["corruptions"]["blur"]["mean"]["clip_auc"] == pytest.approx(np.mean(
      [table["corruptions"]["blur"][s]["clip_auc"] for s in ("1", "5")]))
  lines = report.robustness_lines(table)
  assert lines[-1].startswith("average") and len(lines) == 5
  scorer = scoring.Scorer(config, workdir)
  with pytest.raises(ValueError, match="allowed corruptions: saturation, contrast, block"):
    protocols.robustness(scorer, protocols.Outputs(None, 0), result, ("fog",))


def test_one_device_gives_the_same_scores_as_eight(workdir):
  config = _config()
  assert jax.device_count() == 8
  eight = scoring.Scorer(config, workdir)()
  one = scoring.Scorer(config, workdir,
                       mesh=sharding.make_mesh(config.mesh, devices=jax.devices()[:1]))()
  np.testing.assert_array_equal(eight.index, one.index)
  np.testing.assert_allclose(eight.logits, one.logits, atol=1e-5)


def test_padded_gives_exactly_total_batches_blank_after_the_hosts_own():
  """The trainer's periodic eval (any objective) pads hosts this way too: blank = no valid row."""
  own = [{"x": np.full(2, i), "valid": np.ones(2, bool)} for i in range(2)]
  got = list(scoring.padded(iter(own), 4))
  assert len(got) == 4 and [g["valid"].sum() for g in got] == [2, 2, 0, 0]
  np.testing.assert_array_equal(got[3]["x"], own[1]["x"])  # Shapes/dtypes of a real batch.
  assert own[1]["valid"].all()  # The host's own batch is not modified.
  assert len(list(scoring.padded(iter(own), 1))) == 1  # An eval_batches cap truncates.
  with pytest.raises(ValueError, match="no evaluation clip"):
    list(scoring.padded(iter([]), 3))


@pytest.mark.parametrize("process_count", [2, 3])
def test_hosts_run_equal_batch_counts_and_cover_every_clip_once(process_count):
  """The host-side half of multi-host scoring, simulated: hosts with fewer clips are padded with
  blank batches (so the jitted loop runs in lockstep) and the union of tagged clips is exact."""
  config = _config(batch_size=6, clips_per_video=0)  # 60 clips: 30/20 per host, uneven batches.
  source, items = scoring.eval_items(config.input)
  meta = scoring.item_metadata(source.index, items)
  lookup = scoring.position_lookup(meta)
  seen, counts = [], []
  for pi in range(process_count):
    batches = list(scoring.host_batches(config.input, lookup, len(items), process_index=pi,
                                        process_count=process_count))
    counts.append(len(batches))
    for b in batches:
      assert len(b["valid"]) == 6 // process_count
      assert np.all((b[detector.INDEX_KEY] >= 0) == b["valid"])
      seen += b[detector.INDEX_KEY][b["valid"]].tolist()
      for r in np.flatnonzero(b["valid"]):  # The tag names the clip the row holds.
        pos = b[detector.INDEX_KEY][r]
        assert (meta["video_ids"][pos], meta["clip_starts"][pos]) == (
            str(b["video_id"][r]), int(b["clip_start"][r]))
  assert len(set(counts)) == 1 and counts[0] == scoring.batches_per_host(60, 6 // process_count,
                                                                         process_count)
  assert sorted(seen) == list(range(len(items)))
  outputs = [{"logit": np.zeros(4, np.float32), "index": np.array([3, -1, 1, 0])},
             {"logit": np.ones(2, np.float32), "index": np.array([2, -1])}]
  scores = scoring.collect(outputs, scoring.item_metadata(source.index, items[:5]))
  assert scores.index.tolist() == [0, 1, 2, 3] and scores.missing == 1
  assert scores.logits.tolist() == [0, 0, 1, 0]


def test_checkpoint_and_config_errors(workdir, tmp_path):
  config = _config()
  missing = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
    checkpointing.locate(missing)
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="no checkpoint under .*empty"):
    checkpointing.resolve_step(checkpointing.locate(str(tmp_path / "empty"))[0], None)
  directory, _ = checkpointing.locate(workdir)
  assert checkpointing.locate(os.path.join(directory, "2")) == (directory, 2)
  with pytest.raises(FileNotFoundError, match=r"step 7 is not in .* it has steps \[2\]"):
    checkpointing.resolve_step(directory, 7)
  with pytest.raises(ValueError, match="protocol='cross'; allowed: standard, robustness"):
    protocols.evaluate_checkpoint(config, workdir, None, "cross")
  from tests import tiny_configs
  stage1 = tiny_configs.get_config("stage1")
  with pytest.raises(ValueError, match="'byol_av' is not a detector.*video_detector"):
    scoring.Scorer(stage1, workdir)
  wider = _config()
  wider.model.backbone.width_multiplier = 1 / 8
  with pytest.raises(ValueError, match=r"does not fit config.model: \d+ arrays differ, e.g. "
                                       r"\['batch_stats/backbone/.* \(saved \(4,\), config \(8,\)\)"):
    scoring.Scorer(wider, workdir)


def _cli(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS=tiny_detector_config_flags())
  return subprocess.run([sys.executable, "-m", "fakedet.evaluate", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, check=False, timeout=300)


def tiny_detector_config_flags():
  from tests.tiny_configs import FAST_COMPILE
  return f"--xla_force_host_platform_device_count=2 {FAST_COMPILE}"


def test_cli_on_a_trained_checkpoint(workdir, tmp_path):
  ok = _cli(f"--config={CONFIG_FILE}", f"--checkpoint={workdir}", "--config.input.eval.batch_size=4")
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert "video_detector step 2 on synthetic:tiny val: 10 videos, 20 clips" in ok.stdout
  assert "overall" in ok.stdout and "graphics_swap" in ok.stdout
  out = os.path.join(workdir, "eval", "standard_step2")
  saved = json.load(open(os.path.join(out, "report.json")))
  assert saved["eval"]["split"] == "val" and saved["num_videos"] == 10
  bad = _cli(f"--config={CONFIG_FILE}", f"--checkpoint={tmp_path}/missing")
  assert bad.returncode != 0 and f"{tmp_path}/missing does not exist" in bad.stderr
  assert not os.path.exists(tmp_path / "missing")


def test_two_processes_match_one_process(workdir, multitrack_dir, tmp_path):
  """Real multi-host scoring: 2 processes × 2 CPU devices, uneven clip shares (3 and 2)."""
  import portpicker
  port = portpicker.pick_unused_port()
  script = os.path.join(ROOT, "tests", "multihost_evaluate.py")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  # Logs to files: waiting on one process while the other's unread pipe fills would block it.
  logs = [open(tmp_path / f"host{i}.log", "w") for i in range(2)]
  procs = [subprocess.Popen([sys.executable, script, f"--process_id={i}", "--num_processes=2",
                             f"--port={port}", f"--workdir={workdir}",
                             f"--data_dir={multitrack_dir}", f"--out={tmp_path}"], cwd=ROOT,
                            env=env, stderr=logs[i], text=True) for i in range(2)]
  for i, p in enumerate(procs):
    p.wait(timeout=300)
    logs[i].close()
    assert p.returncode == 0, (tmp_path / f"host{i}.log").read_text()[-3000:]
  config = tiny_detector_config.multihost_config(multitrack_dir)
  one = scoring.Scorer(config, workdir,
                       mesh=sharding.make_mesh(config.mesh, devices=jax.devices()[:4]))()
  expected = report.build_report(one)
  for i in range(2):  # Every host holds every clip's score, not only its own.
    got = json.load(open(tmp_path / f"process_{i}.json"))
    assert got["processes"] == 2 and got["devices"] == 4 and got["num_clips"] == 5
    assert got["video_auc"] == pytest.approx(expected["video"]["overall"]["auc"])
  two = report.read_clip_csv(str(tmp_path / "report" / "clip_scores.csv"))
  np.testing.assert_array_equal(two.index, one.index)
  np.testing.assert_allclose(two.logits, one.logits, atol=1e-5)
  assert sorted(os.listdir(tmp_path / "report")).count("report.json") == 1


def test_eval_sets_parse_names_dirs_and_splits():
  sets = protocols.parse_eval_sets(["ffpp=gs://b/ffpp_c23:test", "celebdf=gs://b/celebdf",
                                    "demo=synthetic:demo", "tiny_val=synthetic:tiny:val"])
  assert sets == {"ffpp": {"data_dir": "gs://b/ffpp_c23", "split": "test"},
                  "celebdf": {"data_dir": "gs://b/celebdf", "split": "test"},
                  "demo": {"data_dir": "synthetic:demo", "split": "test"},
                  "tiny_val": {"data_dir": "synthetic:tiny", "split": "val"}}
  for bad, message in ((["x"], "NAME=DATA_DIR"), (["a/b=dir"], "NAME=DATA_DIR"),
                       (["a=d1", "a=d2"], "twice"), ([], "empty")):
    with pytest.raises(ValueError, match=message):
      protocols.parse_eval_sets(bad)


def test_several_test_sets_in_one_call_make_one_cross_dataset_table(workdir, tmp_path):
  sets = protocols.parse_eval_sets(["val=synthetic:tiny:val", "test=synthetic:tiny:test"])
  out = str(tmp_path / "cross")
  result = protocols.evaluate_sets(_config(), workdir, out, sets)
  table = result["table"]
  assert list(table["sets"]) == ["val", "test"]
  for name, split in (("val", "val"), ("test", "test")):
    alone = protocols.evaluate_checkpoint(_config(split=split, clips_per_video=2), workdir,
                                          maps_per_class=0)
    assert table["sets"][name]["video_auc"] == pytest.approx(alone["video"]["overall"]["auc"])
    assert os.path.exists(os.path.join(out, name, "report.json"))
  assert table["mean"]["video_auc"] == pytest.approx(
      (table["sets"]["val"]["video_auc"] + table["sets"]["test"]["video_auc"]) / 2)
  md = open(os.path.join(out, "cross_dataset.md")).read()
  assert md.startswith("| set | videos | clips | video_auc") and "| mean |" in md
  assert json.load(open(os.path.join(out, "cross_dataset.json")))["table"] == table

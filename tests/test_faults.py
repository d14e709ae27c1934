"""The fault matrix: every way a careful user broke a run on main at 3a1b457, kept green.

Each case says what a user does and what they must see: one clear error naming the key, file or
process, before anything compiles where possible; never a hang, never a silent success, and a
resume that continues exactly. Cases elsewhere, not repeated here: SIGTERM saves and exits 0
(test_trainer), a kill between an evaluation and its checkpoint (test_model_selection), a
killed peer process (test_distributed), everything on gs:// with kill -9 (test_gcs).
"""
import concurrent.futures
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fakedet import config_check, sharding
from fakedet.trainers import train
from input_pipeline import pipeline, records, sources, validate
from tests import tiny_configs, tiny_detector_config
from tests.conftest import make_record, write_tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------- config values
# One out-of-range value for every entry of the range table, checked before anything is built.
BAD_VALUES = {
    "seed": -1, "total_steps": -5, "num_epochs": -1.0, "warmup_epochs": -2.0, "log_every": 0,
    "eval_every": -1, "eval_batches": -1, "checkpoint.every_steps": 0, "checkpoint.keep": 0,
    "checkpoint.preemption_check_every": 0, "profile.first_step": -1, "profile.num_steps": 0,
    "selection.patience": -1, "guard.divergence_factor": 0.5, "guard.window": 0,
    "ema.momentum": 1.0, "ema.reference_batch": 0, "optim.lr": -1e-3, "optim.weight_decay": -1.0,
    "optim.b1": 1.0, "optim.b2": -0.1, "optim.eps": 0.0, "optim.warmup_steps": -3,
    "optim.grad_clip_norm": -1.0, "input.clip_frames": 0, "input.sample_rate": 0,
    "input.num_workers": -1, "input.eval.batch_size": -8, "input.eval.clips_per_video": -1,
    "mesh.shard_min_size": -1,
}


def test_every_range_in_the_table_has_a_case():
  assert sorted(BAD_VALUES) == sorted(key for key, _, _ in config_check.TRAINER_RANGES)


def _set(config, dotted, value):
  *parents, leaf = dotted.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_an_out_of_range_value_fails_the_check_naming_the_key(key):
  config = tiny_configs.get_config("stage1")
  _set(config, key, BAD_VALUES[key])
  with pytest.raises(ValueError, match=f"config.{key}="):
    train.check(config)


@pytest.mark.parametrize("key, value, message", [
    ("input.sources.reals.batch_size", 0, "input.sources.reals.batch_size must be positive"),
    ("mesh.data", 0, "config.mesh.data=0: expected a positive size or -1"),
    ("selection.mode", "maximum", "selection.mode='maximum'; allowed: max, min"),
    ("optim.name", "adagrad", "optim.name='adagrad' is not supported"),
    ("input.train_ops", "flip|nope", "unknown data op 'nope'"),
])
def test_other_bad_values_fail_the_check(key, value, message):
  config = tiny_configs.get_config("stage1")
  _set(config, key, value)
  with pytest.raises((ValueError, KeyError), match=message):
    train.check(config)


@pytest.mark.parametrize("section", ["input", "input.eval", "checkpoint", "optim", "guard",
                                     "mesh", "selection", "profile"])
def test_an_unknown_key_in_any_section_names_the_allowed_ones(section):
  config = tiny_configs.get_config("stage1")
  node = config
  for part in section.split("."):
    node = node[part]
  with node.unlocked():
    node["typo_key"] = 1
  with pytest.raises(KeyError, match=f"typo_key.*allowed"):
    train.check(config)


def test_a_batch_that_does_not_split_over_the_devices_names_the_key():
  config = tiny_configs.get_config("stage1")
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:3])
  with pytest.raises(ValueError, match=r"the training batch \(sum of input.sources.\*.batch_size"
                                       r"\) = 8 does not split over the 3 devices"):
    train.check_batch_split(config, mesh)
  config.input.sources.reals.batch_size = 9
  with pytest.raises(ValueError, match="input.eval.batch_size = 8 does not split over the 3"):
    train.check_batch_split(config, mesh)


# ----------------------------------------------------------------------------- shards
def _dataset(tmp_path, formats=records.FORMATS):
  write_tiny(tmp_path, num_real=6, num_fake=2, num_shards=2)
  manifest = records.read_manifest(str(tmp_path))
  return {fmt: records.split_files(str(tmp_path), manifest, "train", fmt)[0]
          for fmt in manifest["formats"]}


def _truncate(path, size):
  with open(path, "r+b") as f:
    f.truncate(size)


@pytest.mark.parametrize("damage", ["half", "100 bytes", "missing"])
def test_a_damaged_array_record_shard_is_named_by_the_pipeline_and_the_validator(tmp_path,
                                                                                damage):
  shard = _dataset(tmp_path)["array_record"]
  if damage == "missing":
    os.remove(shard)
  else:
    _truncate(shard, os.path.getsize(shard) // 2 if damage == "half" else 100)
  with pytest.raises(records.RecordError, match=f"input.sources.main: {shard}"):
    pipeline.open_source(dict(data_dir=str(tmp_path), split="train"), "input.sources.main")
  problems = validate.validate(str(tmp_path), splits=["train"], progress=False)
  assert any(p.startswith(shard) for p in problems), problems


@pytest.mark.parametrize("damage", ["half", "missing"])
def test_a_damaged_tfrecord_shard_is_reported_and_training_still_reads_array_record(tmp_path,
                                                                                  damage):
  shards = _dataset(tmp_path)
  if damage == "missing":
    os.remove(shards["tfrecord"])
  else:
    _truncate(shards["tfrecord"], os.path.getsize(shards["tfrecord"]) // 2)
  problems = validate.validate(str(tmp_path), splits=["train"], checksums=False, progress=False)
  assert any(p.startswith(shards["tfrecord"]) for p in problems), problems
  assert len(sources.ClipSource(str(tmp_path), "train")) == 8  # Training never reads TFRecord.


def _all_bad(tmp_path):
  recs = [make_record(i, 30) for i in range(4)]
  manifest = records.write_dataset(str(tmp_path), "bad", {"train": recs})
  path = records.split_files(str(tmp_path), manifest, "train", "array_record")[0]
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
  for _ in recs:
    writer.write(b"\x00garbage")
  writer.close()
  return str(tmp_path)


def test_skipping_when_every_record_is_bad_fails_instead_of_hanging(tmp_path):
  cfg = {**pipeline_config(_all_bad(tmp_path)), "skip_bad_records": True}
  ds = pipeline.train_dataset(cfg, 0, process_index=0, process_count=1)
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    future = pool.submit(lambda: next(iter(ds)))
    with pytest.raises(records.RecordError, match="input.sources.main: all 4 selected records "
                                                  "on this process are bad"):
      future.result(timeout=120)  # Before the fix: grain skipped 100% forever.


def pipeline_config(data_dir):
  from input_pipeline import config as input_config  # pylint: disable=import-outside-toplevel
  cfg = input_config.input_config().to_dict()
  cfg["sources"]["main"].update(data_dir=data_dir, batch_size=2)
  cfg.update(clip_frames=10, train_ops="center_crop(size=40, resize=32)")
  return cfg


# ----------------------------------------------------------------------------- runs
@pytest.mark.integration
def test_a_diverging_detector_warns_and_with_guard_stop_ends_the_run(tmp_path):
  """lr 1e6 on a detector: loss ~1e13 and parameter norm ~1e8, all finite: once the run exited
  0 without a word. The guard compares each logged value with its running median."""
  config = tiny_detector_config.get_config()
  config.optim.lr, config.total_steps, config.log_every = 1e6, 8, 1
  config.guard.update(divergence_factor=10.0, window=20, stop=False)
  result = train.run(config, str(tmp_path / "warn"))
  assert result["divergence_warnings"] > 0
  config.guard.stop = True
  with pytest.raises(train.DivergenceError, match=r"train/(loss|l2_params)=.* is more than 10x "
                                                  r"its median"):
    train.run(config, str(tmp_path / "stop"))


def test_divergence_guard_needs_history_and_ignores_ordinary_noise():
  guard = train.DivergenceGuard(factor=10.0, window=5)
  assert guard.check(1, {"train/loss": 100.0}) is None  # No history yet: nothing to compare.
  guard.seed("train/l2_params", 10.0)  # The initial parameters' norm.
  for step, loss in enumerate([20.0, 19.0, 21.0, 18.0, 22.0, 17.0], 2):
    assert guard.check(step, {"train/loss": loss, "train/l2_params": 11.0}) is None
  assert "train/l2_params=5000" in guard.check(9, {"train/loss": 15, "train/l2_params": 5e3})
  assert len(guard.warnings) == 1
  late = train.DivergenceGuard(factor=10.0, window=5)
  late.seed("train/l2_params", 10.0)  # Blown up before the first log step: still caught.
  assert "train/l2_params=1e+06" in late.check(50, {"train/loss": 1e9, "train/l2_params": 1e6})
  assert train.DivergenceGuard(factor=0.0, window=5).check(1, {"train/loss": 1e9}) is None


@pytest.mark.integration
def test_the_summary_counts_skipped_records(tmp_path):
  data = tmp_path / "data"
  write_tiny(data, num_real=5, num_fake=3, num_shards=1)
  manifest = records.read_manifest(str(data))
  shard = records.split_files(str(data), manifest, "train", "array_record")[0]
  recs = [make_record(i, 30) for i in range(5)] + [  # As write_tiny: the index still holds.
      make_record(5 + j, 30, label=1, manipulation="swap" if j % 2 else "reenact")
      for j in range(3)]
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  writer = array_record_module.ArrayRecordWriter(shard, "group_size:1")
  for i, rec in enumerate(recs):
    writer.write(b"\x00bad" if i in (2, 5) else records.encode(rec))
  writer.close()
  # The tiny detector (a few-second compile; what is counted is the trainer's, not the model's).
  config = tiny_detector_config.get_config()
  config.input.sources.main.data_dir = config.input.eval.data_dir = str(data)
  config.input.sources.main.balance = "none"
  config.input.eval.split = "train"
  config.input.skip_bad_records = True
  config.total_steps = 4
  result = train.run(config, str(tmp_path / "run"))
  assert result["skipped_records"] == 2 and result["step"] == 4


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
              JAX_COMPILATION_CACHE_DIR=os.path.join("/tmp", "fakedet_jax_cache"),
              XLA_FLAGS=tiny_configs.FAST_COMPILE)


def _cmd(workdir):
  return [sys.executable, "-m", "fakedet.main", "--config=tests/tiny_configs.py:stage1",
          f"--workdir={workdir}", "--config.total_steps=12", "--config.checkpoint.every_steps=2",
          "--config.checkpoint.async_save=True"]


def _params(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                  item_names=("state", "data", "selection"))
  step = manager.latest_step()
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, state["state"]["params"]


@pytest.mark.integration
def test_kill_9_at_random_moments_including_async_saves_resumes_bit_exact(tmp_path):
  straight = str(tmp_path / "straight")
  subprocess.run(_cmd(straight), cwd=ROOT, env=_env(), check=True, capture_output=True,
                 timeout=900)
  workdir = str(tmp_path / "killed")
  rng = random.Random(0)
  kills = 0
  for _ in range(2):  # Kill at a random moment once training is under way, twice.
    proc = subprocess.Popen(_cmd(workdir), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not os.path.isdir(os.path.join(workdir, "checkpoints")) and proc.poll() is None:
      assert time.time() - t0 < 600
      time.sleep(0.2)
    time.sleep(rng.uniform(0.0, 3.0))  # Steps and async saves run every few hundred ms.
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      kills += 1
    proc.wait()
  assert kills >= 1
  subprocess.run(_cmd(workdir), cwd=ROOT, env=_env(), check=True, capture_output=True,
                 timeout=900)
  (step_a, a), (step_b, b) = _params(straight), _params(workdir)
  assert step_a == step_b == 12
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

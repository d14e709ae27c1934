"""Run outputs: metrics.jsonl, the resolved config, TensorBoard hparams, the W&B writer (offline),
the profiler, one-line CLI config errors."""
import glob
import json
import os
import subprocess
import sys

import ml_collections
import pytest

from fakedet import cli, writers
from fakedet import workdir as workdir_lib
from fakedet.trainers import train
from tests import tiny_configs, tiny_detector_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_metrics_jsonl_appends_and_a_repeated_step_keeps_the_later_values(tmp_path):
  w = writers.JsonLinesWriter(str(tmp_path))
  w.write_scalars(2, {"train/loss": 1.5})
  w.write_scalars(2, {"eval/auc": 0.5})
  w.flush()
  w.write_scalars(4, {"train/loss": 1.0})
  w.close()
  w = writers.JsonLinesWriter(str(tmp_path))  # A resumed run logs step 4 again.
  w.write_scalars(4, {"train/loss": 0.9})
  w.close()
  assert writers.read_metrics(str(tmp_path)) == [
      {"step": 2, "train/loss": 1.5, "eval/auc": 0.5}, {"step": 4, "train/loss": 0.9}]
  assert len((tmp_path / writers.METRICS_FILE).read_text().splitlines()) == 4


def test_config_round_trips_through_the_workdir_and_is_found_from_any_checkpoint_path(tmp_path):
  config = tiny_configs.get_config("stage1")
  workdir_lib.save_config(str(tmp_path), config)
  for path in (tmp_path, tmp_path / "best", tmp_path / "checkpoints" / "8",
               tmp_path / "best" / "checkpoints" / "6"):
    loaded = workdir_lib.load_config(str(path))
    assert loaded.to_dict() == config.to_dict()  # Tuples come back as tuples.
  assert isinstance(loaded.model.video_backbone.stage_blocks, tuple)
  train.check(loaded)
  # A resumed run with another config keeps the first and writes its own beside it.
  config.total_steps = 99
  workdir_lib.save_config(str(tmp_path), config, step=4)
  assert workdir_lib.load_config(str(tmp_path)).total_steps != 99
  assert (tmp_path / "config.resumed_at_4.json").exists()
  with pytest.raises(FileNotFoundError, match="no config.json.*pass --config"):
    workdir_lib.load_config(str(tmp_path / "elsewhere"))


def test_a_workdir_config_from_before_a_key_existed_loads_with_its_default(tmp_path):
  config = tiny_configs.get_config("stage1")
  saved = config.to_dict()
  del saved["guard"], saved["checkpoint"]["preemption_check_every"]
  (tmp_path / workdir_lib.CONFIG_FILE).write_text(json.dumps(saved))
  loaded = cli.config_for(None, str(tmp_path / "checkpoints" / "4"))
  assert loaded.guard.to_dict() == train.reference_config().guard.to_dict()
  assert loaded.checkpoint.preemption_check_every == 10  # A missing key inside a section too.
  assert loaded.checkpoint.every_steps == config.checkpoint.every_steps
  assert loaded.input.sources.to_dict() == config.input.sources.to_dict()  # Not "main" too.
  assert loaded.model.to_dict() == config.model.to_dict()
  train.check(loaded)
  assert cli.config_for(config, "ignored") is config  # --config wins.


def test_hparams_are_the_whole_config_flattened():
  flat = train.hparams(tiny_configs.get_config("stage1"))
  assert flat["optim.lr"] == 2e-3 and flat["input.eval.batch_size"] == 8
  assert flat["model.video_backbone.stage_blocks"] == "(1, 1, 1, 1)"
  assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())


def test_selection_metric_is_checked_before_anything_is_built():
  config = tiny_configs.get_config("stage1")
  config.selection = train.selection_config("eval/retrieval_top1", "max")
  train.check(config)
  config.selection.metric = "eval/retreival_top1"
  with pytest.raises(ValueError, match="selection.metric='eval/retreival_top1' is not reported"):
    train.check(config)


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_wandb_writer_offline(tmp_path, monkeypatch):
  pytest.importorskip("wandb")
  monkeypatch.setenv("WANDB_SILENT", "true")
  writer = writers.create(str(tmp_path), asynchronous=False, wandb=ml_collections.ConfigDict(
      dict(enabled=True, project="fakedet-test", entity="", name="offline", mode="offline")))
  writer.write_hparams({"optim.lr": 0.1})
  writer.write_scalars(1, {"train/loss": 2.0})
  writer.write_scalars(2, {"train/loss": 1.0})
  writer.close()
  runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
  assert len(runs) == 1 and os.path.getsize(runs[0]) > 0
  assert writers.read_metrics(str(tmp_path))[-1] == {"step": 2, "train/loss": 1.0}


@pytest.mark.integration
def test_profiler_writes_a_trace_for_tensorboard(tmp_path):
  # The smallest detector: what is tested is the trainer's profiling hook, not a model, and a
  # trace of tiny stage 1's two-network step took ~150 s of CI to write.
  config = tiny_detector_config.get_config()
  config.total_steps = 4
  config.profile.update(enabled=True, first_step=2, num_steps=1)
  train.run(config, str(tmp_path))
  assert glob.glob(str(tmp_path / "plugins" / "profile" / "*" / "*.xplane.pb"))
  assert json.loads((tmp_path / "result.json").read_text())["step"] == 4


def test_mistyped_override_names_the_closest_keys_in_one_line():
  argv = ["prog", "--config=configs/stage1.py:demo", "--config.optim.lrr=1"]
  message = cli.describe_config_error(argv, AttributeError("'lrr'"))
  assert message.startswith("--config.optim.lrr=1: configs/stage1.py:demo has no key")
  assert "optim.lr" in message and "\n" not in message


@pytest.mark.integration
def test_cli_config_errors_are_one_line_and_exit_2(tmp_path):
  for args, expect in ((["--config.input.foo=1"], "has no key 'input.foo'; closest: input"),
                       (["--config.optim.lr=abc"], "could not convert string to float"),
                       (["--config=configs/stage1.py:demox"], "unknown variant 'demox'"),
                       (["--config.trainer=nope"], "registered trainers: data_preview, train")):
    argv = [sys.executable, "-m", "fakedet.main", "--config=configs/stage1.py:demo",
            f"--workdir={tmp_path}", *args]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert lines[-1].startswith("error: ") and expect in lines[-1], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
  assert not os.listdir(tmp_path)  # Nothing was built or written.

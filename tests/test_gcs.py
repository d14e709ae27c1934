"""Everything on gs://, against a real local GCS server (tests/gcs_emulator.py), no mock of any
file system: write a dataset, train stage 1, kill -9 and resume bit-exact, warm-start stage 2
from the gs:// stage-1 workdir, evaluate and predict from the gs:// workdir (its saved config,
no --config), outputs on gs:// too."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from fakedet import workdir as workdir_lib
from fakedet import writers
from fakedet.trainers import train
from input_pipeline import records
from input_pipeline.preprocess import encode
from tests import gcs_emulator, tiny_configs
from tests.conftest import write_tiny

pytestmark = pytest.mark.integration  # Several training runs and CLIs against a server.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def gcs():
  with gcs_emulator.emulator() as root:
    yield root


def _env():
  # Inherits the emulator variables; one CPU device and a shared compilation cache, as the
  # trainer's own end-to-end tests.
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
              JAX_COMPILATION_CACHE_DIR=os.path.join("/tmp", "fakedet_jax_cache"),
              XLA_FLAGS=tiny_configs.FAST_COMPILE)


def _stage1_cmd(workdir, data, steps=8):
  return [sys.executable, "-m", "fakedet.main", "--config=tests/tiny_configs.py:stage1",
          f"--workdir={workdir}", f"--config.total_steps={steps}",
          f"--config.input.sources.reals.data_dir={data}",
          f"--config.input.eval.data_dir={data}"]


def _params(workdir):
  manager = ocp.CheckpointManager(f"{workdir}/checkpoints", item_names=("state", "data"))
  step = manager.latest_step()
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return step, state["state"]["params"]


def _stage2_config(stage1_workdir, data):
  """configs/stage2.py:demo with the tiny stage-1 model's widths (so the warm start fits)."""
  config = tiny_configs.config_module("stage2").get_config("demo")
  m = config.model
  m.backbone.width_multiplier = 1 / 16
  m.aux_projector.features = 16
  m.aux_predictor.update(num_heads=2, head_dim=8, mlp_dim=32)
  ops = tiny_configs.config_module("stage2")
  config.input.clip_frames = tiny_configs.T
  config.input.train_ops = ops.train_ops(36, tiny_configs.SIZE, m.pixel_mean, masking=False)
  config.input.eval.ops = ops.EVAL_OPS.format(crop=36, size=tiny_configs.SIZE,
                                              fill=(0, 0, 0))
  for source in config.input.sources.values():
    source.data_dir, source.batch_size = data, 4
  config.input.eval.data_dir, config.input.eval.batch_size = data, 8
  config.init.workdir = stage1_workdir
  config.total_steps, config.eval_every, config.log_every = 2, 0, 1
  config.optim.warmup_steps = 0
  config.checkpoint.every_steps, config.checkpoint.async_save = 2, False
  return config


def test_everything_on_gs(gcs, tmp_path):
  data, s1, s1_killed, s2 = (f"{gcs}/data", f"{gcs}/stage1", f"{gcs}/stage1_killed",
                             f"{gcs}/stage2")
  write_tiny(data, num_real=8, num_fake=4, num_shards=2)
  assert records.read_manifest(data)["splits"]["train"]["num_records"] == 12

  # Stage 1 straight through, and the same run killed -9 after its step-4 checkpoint, resumed.
  subprocess.run(_stage1_cmd(s1, data), cwd=ROOT, env=_env(), check=True, capture_output=True,
                 timeout=900)
  # The log goes to a file: a pipe nobody reads while we wait fills up (64 KB) and blocks the
  # run on its next log line, before it ever reaches step 4.
  log_path = tmp_path / "killed.log"
  with open(log_path, "w") as log:
    proc = subprocess.Popen(_stage1_cmd(s1_killed, data), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=log, text=True)
  marker = epath.Path(f"{s1_killed}/checkpoints/4/commit_success.txt")  # GCS: no renames.
  t0 = time.time()
  while not marker.exists():
    assert proc.poll() is None, log_path.read_text()[-3000:]
    assert time.time() - t0 < 600, "no step-4 checkpoint after 600 s"
    time.sleep(0.5)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = subprocess.run(_stage1_cmd(s1_killed, data), cwd=ROOT, env=_env(),
                           capture_output=True, text=True, timeout=900)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from the checkpoint at step 4" in resumed.stderr
  (step_a, a), (step_b, b) = _params(s1), _params(s1_killed)
  assert step_a == step_b == 8
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # The workdir describes itself: config, metrics, result, TensorBoard events.
  assert workdir_lib.load_config(s1).input.sources.reals.data_dir == data
  assert {r["step"] for r in writers.read_metrics(s1)} >= {2, 4, 6, 8}
  assert json.loads(epath.Path(f"{s1}/result.json").read_text())["step"] == 8
  assert any(p.name.startswith("events.out.tfevents") for p in epath.Path(s1).iterdir())

  # Stage 2 warm-started from the gs:// stage-1 run; model selection keeps best/ on gs://.
  result = train.run(_stage2_config(s1, data), s2)
  assert result["step"] == 2 and result["best"]["step"] == 2
  _, stage1_params = _params(s1)
  _, stage2_params = _params(f"{s2}/best")
  assert jax.tree.structure(stage2_params["teacher_backbone"]) == jax.tree.structure(
      stage1_params["video_backbone"])

  # Evaluate and predict from the gs:// workdir alone: its config.json, outputs on gs://.
  evaluated = subprocess.run(
      [sys.executable, "-m", "fakedet.evaluate", f"--checkpoint={s2}/best",
       f"--output_dir={gcs}/eval"], cwd=ROOT, env=_env(), capture_output=True, text=True,
      timeout=900)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  report = json.loads(epath.Path(f"{gcs}/eval/report.json").read_text())
  assert report["step"] == 2 and report["video"]["overall"]["auc"] == pytest.approx(
      result["best"]["value"], abs=1e-6)
  assert epath.Path(f"{gcs}/eval/roc.png").exists()

  video = str(tmp_path / "face.mp4")
  rng = np.random.default_rng(0)
  encode.write_video(video, rng.integers(0, 256, (30, 48, 48, 3), dtype=np.uint8),
                     (rng.normal(size=19200) * 3000).astype(np.int16))
  predicted = subprocess.run(
      [sys.executable, "-m", "fakedet.predict", f"--checkpoint={s2}/best", "--aligned",
       "--crop_size=48", f"--output={gcs}/preds.json", f"--heatmap_dir={gcs}/heat", video],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  preds = json.loads(epath.Path(f"{gcs}/preds.json").read_text())
  assert preds["videos"][0]["status"] == "ok"
  assert epath.Path(preds["videos"][0]["tracks"][0]["heatmap"]["png"]).exists()

"""Process-count independence of training: hosts' input shares are disjoint rows of the same
global batches, and a checkpoint written by 4 processes resumes on 2 and on 1 with the same
parameters and the same input position as an uninterrupted run."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from input_pipeline import pipeline
from tests import tiny_configs, tiny_detector_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _batches(process_index, process_count, n, start_batch=0):
  icfg = tiny_detector_config.get_config().input
  it = iter(pipeline.train_dataset(icfg, 0, process_index=process_index,
                                   process_count=process_count, start_batch=start_batch))
  return [next(it) for _ in range(n)]


def test_hosts_read_disjoint_rows_of_the_same_global_batches():
  """4 hosts' k-th batches, concatenated in process order, are the 1-process k-th batch (every
  clip read once, same augmentation); batch k can be started at directly."""
  one = _batches(0, 1, 3)
  hosts = [_batches(i, 4, 3) for i in range(4)]
  for k in range(3):
    glued = {key: np.concatenate([hosts[i][k][key] for i in range(4)]) for key in one[k]}
    for key in ("video", "label", "clip_start", "video_id"):
      np.testing.assert_array_equal(glued[key], one[k][key], err_msg=f"batch {k} {key}")
    assert len(set(zip(glued["video_id"], glued["clip_start"]))) == len(glued["video_id"])
  later = _batches(1, 2, 1, start_batch=2)[0]
  np.testing.assert_array_equal(later["video"], one[2]["video"][4:])


def _env(process_id=None, count=1, port=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {tiny_configs.FAST_COMPILE}",
             JAX_COMPILATION_CACHE_DIR=os.path.join("/tmp", "fakedet_jax_cache"))
  if count > 1:
    env.update(FAKEDET_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", FAKEDET_NUM_PROCESSES=str(count),
               FAKEDET_PROCESS_ID=str(process_id))
  return env


def _train(workdir, count, steps, logs, attempts=2):
  """``fakedet.main`` on ``count`` local processes (one CPU device each) to ``steps``; a gloo
  rendezvous that expires on a starved 2-core machine is retried once (the run resumes)."""
  import portpicker
  for attempt in range(attempts):
    port = portpicker.pick_unused_port()
    cmd = [sys.executable, "-m", "fakedet.main", "--config=tests/tiny_detector_config.py",
           f"--workdir={workdir}", f"--config.total_steps={steps}",
           "--config.checkpoint.every_steps=2", "--config.eval_batches=1",
           # SGD: the update is linear in the gradient. Adam's first steps are lr·sign(g), which
           # turns float noise in near-zero gradients (summed in another order over 4
           # processes) into ±lr and would hide what is compared.
           "--config.optim.name=sgd", "--config.optim.lr=0.1",
           "--config.optim.schedule=constant"]  # The cut run's schedule = the whole run's.
    paths = [logs / f"{os.path.basename(workdir)}_{count}p_{i}_try{attempt}.log"
             for i in range(count)]
    files = [open(p, "w") for p in paths]
    procs = [subprocess.Popen(cmd + (["--distributed"] if count > 1 else []), cwd=ROOT,
                              env=_env(i, count, port), stdout=f, stderr=f)
             for i, f in enumerate(files)]
    try:
      for p in procs:
        p.wait(timeout=600)
    finally:
      for p, f in zip(procs, files):
        p.kill()
        p.wait()
        f.close()
    if all(p.returncode == 0 for p in procs):
      return
    text = "\n".join(p.read_text()[-2500:] for p in paths)
    if attempt + 1 == attempts or "gloo" not in text.lower():
      raise AssertionError(text)


def _state(workdir):
  from fakedet import checkpointing
  state = checkpointing.load_tree(str(workdir), what="test")  # Host arrays, any topology.
  return int(state["step"]), state


@pytest.mark.integration  # 8 trainer processes on 2 cores: ~2–3 min.
def test_four_process_checkpoint_resumes_on_two_and_on_one(tmp_path):
  four = tmp_path / "four"
  _train(four, 4, steps=2, logs=tmp_path)
  step, _ = _state(four)
  assert step == 2 and (four / "checkpoints" / "2" / "data" / "process_3-of-4.json").exists()
  on_two, on_one = tmp_path / "on_two", tmp_path / "on_one"
  shutil.copytree(four, on_two)
  shutil.copytree(four, on_one)
  _train(on_two, 2, steps=4, logs=tmp_path)
  _train(on_one, 1, steps=4, logs=tmp_path)
  reference = tmp_path / "reference"
  _train(reference, 1, steps=4, logs=tmp_path)
  log = (tmp_path / "on_two_2p_0_try0.log").read_text()
  assert "starting the input at global batch 2" in log, log[-2000:]
  ref_step, ref = _state(reference)
  ref_losses = _losses(reference)
  assert abs(ref_losses[3] - ref_losses[2]) > 1e-2  # Batches differ: the position shows.
  for workdir in (on_two, on_one):
    got_step, got = _state(workdir)
    assert got_step == ref_step == 4
    # Steps 3 and 4 read global batches 2 and 3: the uninterrupted run's losses.
    losses = _losses(workdir)
    for step in (3, 4):
      np.testing.assert_allclose(losses[step], ref_losses[step], rtol=1e-5,
                                 err_msg=f"{workdir.name} step {step}")
    # Parameters: equal up to float noise (gradients summed over 4 hosts, then 2, in another
    # order), which two SGD steps at lr 0.1 amplify to ~2e-4 here; a wrong restore or batch
    # moves them by ~1e-2.
    for name in ("params", "batch_stats"):
      for a, b in zip(jax.tree.leaves(got[name]), jax.tree.leaves(ref[name])):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-3, err_msg=f"{workdir.name} {name}")


def _losses(workdir):
  with open(workdir / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}

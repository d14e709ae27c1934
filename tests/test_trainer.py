"""Shared trainer + RealForensics stage-1 objective: loss, stop-gradient, EMA, sharding
invariance, NaN stop, SIGTERM, kill -9 resume and the 2-process multi-host step."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakedet import objectives, optim, sharding
from fakedet import train_state as train_state_lib
from fakedet.objectives import byol_av, losses, video_detector
from fakedet.trainers import train
from tests import tiny_configs, tiny_detector_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(devices, optimizer=None):
  config = tiny_configs.stage1_tiny()
  if optimizer:
    config.optim.name = optimizer
  mesh = sharding.make_mesh(config.mesh, devices=devices)
  objective = objectives.get("byol_av")(config)
  batch = sharding.device_batch(tiny_configs.fake_stage1_batch(), objective.input_keys, mesh)
  tx = optim.make_optimizer(config.optim, config.total_steps)
  state, shardings = train_state_lib.create(objective, tx, batch, jax.random.key(0), mesh)
  step = train.jit_train_step(objective, tx, train.ema_momentum_fn(config, 8, 10), shardings,
                              mesh, donate=False)
  return config, objective, batch, state, step


@pytest.fixture(scope="module")
def eight():
  return _setup(jax.devices())


def test_byol_term_matches_hand_computation():
  target = np.array([[[3.0, 4.0], [1.0, 0.0]]])  # [B=1, T=2, D=2]
  pred = np.array([[[0.0, 2.0], [1.0, 1.0]]])
  # Frame 0: (0.6, 0.8) vs (0, 1): ½‖·‖² = ½(0.36 + 0.04) = 0.2.
  # Frame 1: (1, 0) vs (1/√2, 1/√2): ½((1 − 1/√2)² + ½) = 1 − 1/√2.
  expected = (0.2 + (1 - 1 / np.sqrt(2))) / 2
  np.testing.assert_allclose(losses.byol_term(jnp.asarray(target), jnp.asarray(pred)), expected,
                             rtol=1e-6)


def test_representation_stats_perfect_and_collapsed():
  rng = np.random.default_rng(0)
  emb = jnp.asarray(rng.normal(size=(6, 9, 16)).astype(np.float32))
  valid = jnp.array([True] * 5 + [False])
  perfect = byol_av.representation_stats(emb, emb, valid)
  assert float(perfect["count"]) == 5
  assert float(perfect["retrieval_top1"]) == 5 and float(perfect["sync_acc"]) == 5
  assert float(perfect["retrieval_pooled_top1"]) == 5
  np.testing.assert_allclose(float(perfect["sync_chance"]) / 5, (3 * 9 - 2) / 81, rtol=1e-6)
  collapsed = byol_av.representation_stats(jnp.ones((6, 9, 16)), emb, valid)
  assert float(collapsed["collapse_std"]) < 1e-3 < float(perfect["collapse_std"]) / 5


def _live_residuals(params):
  """Params with every last-block BN γ set to 1: at init γ = 0 (Table 16) blocks the gradient
  of each CSN residual branch exactly, which would hide a missing gradient there."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.ones_like(x) if jax.tree_util.keystr(path).endswith(
          "['bn_c']['scale']") else x, params)


def test_clip_retrieval_uses_time_aligned_frames():
  """Clips whose frames visit the same states in different orders: identical time means, so
  pooled retrieval can only guess, while the frame-aligned clip score finds every match."""
  eye = np.eye(6, dtype=np.float32)
  emb = jnp.asarray(np.stack([eye[(np.arange(6) + i) % 6] for i in range(6)]))  # [6, T=6, 6]
  stats = byol_av.representation_stats(emb, emb, jnp.ones(6, bool))
  assert float(stats["retrieval_top1"]) == 6
  assert float(stats["retrieval_pooled_top1"]) == 1  # all tied: argmax picks clip 0
  shifted = byol_av.representation_stats(emb, jnp.roll(emb, 3, axis=1), jnp.ones(6, bool))
  assert float(shifted["sync_acc"]) == 0  # every frame's best match is 3 frames away


@pytest.mark.integration
def test_stop_gradient_blocks_teacher_gradients(eight):
  _, objective, batch, state, _ = eight
  state = state.replace(params=_live_residuals(state.params))

  @jax.jit
  def grads(params, ema_params):
    loss = lambda p, e: objective.loss(p, state.replace(ema_params=e), batch,
                                       jax.random.key(0))[0]
    return jax.grad(loss, argnums=(0, 1))(params, ema_params)

  student, teacher = grads(state.params, state.ema_params)
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(teacher))
  dead = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_flatten_with_path(student)[0]
          if not float(jnp.max(jnp.abs(g))) > 0]
  assert not dead, f"student parameters without gradient: {dead}"


@pytest.mark.integration
def test_step_updates_ema_exactly_and_loss_decreases(eight):
  config, _, batch, state, step = eight
  old_ema = jax.device_get(state.ema_params)
  new_state, metrics = step(state, batch, jax.random.key(1))
  mu = float(metrics["ema_momentum"])
  assert mu == pytest.approx(config.ema.momentum, rel=1e-7)  # constant, no batch scaling (f32)
  expected = jax.tree.map(lambda e, p: mu * e + (1 - mu) * p, old_ema,
                          jax.device_get(new_state.params))
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(jax.device_get(new_state.ema_params))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  losses = [float(metrics["loss"])]
  for _ in range(4):
    new_state, metrics = step(new_state, batch, jax.random.key(1))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0]
  assert int(new_state.step) == 5


@pytest.mark.integration
def test_eight_devices_give_the_same_step_as_one():
  """SGD, whose update is linear in the gradient: Adam's first step is lr·sign(g), which turns
  float noise in exactly-zero gradients (biases before a BN) into ±lr and hides the comparison."""
  _, _, batch8, state8, step8 = _setup(jax.devices(), optimizer="sgd")
  _, _, batch1, state1, step1 = _setup(jax.devices()[:1], optimizer="sgd")
  s8, m8 = step8(state8, batch8, jax.random.key(3))
  s1, m1 = step1(state1, batch1, jax.random.key(3))
  for key in ("loss", "l2_grads", "l2_updates"):
    np.testing.assert_allclose(float(m8[key]), float(m1[key]), rtol=1e-5, err_msg=key)
  for a, b in zip(jax.tree.leaves(jax.device_get(s8.params)),
                  jax.tree.leaves(jax.device_get(s1.params))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert all(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(s8.params))
  assert float(m8["l2_updates"]) > 0


# ----------------------------------------------------------------------------- end to end
def _env():
  # One CPU device, like a laptop run; runs of the same program share compiled executables.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=os.path.join(tempfile.gettempdir(), "fakedet_jax_cache"),
             XLA_FLAGS=tiny_configs.FAST_COMPILE)
  return env


def _main_cmd(workdir, steps=10, extra=()):
  return [sys.executable, "-m", "fakedet.main", "--config=tests/tiny_configs.py:stage1",
          f"--workdir={workdir}", f"--config.total_steps={steps}", *extra]


def _final_params(workdir):
  import orbax.checkpoint as ocp
  mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = mngr.latest_step()
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, restored["state"]["params"]


# kill -9 and a bit-exact resume: tests/test_faults.py (random moments, async saves included)
# and tests/test_gcs.py (on gs://).


@pytest.mark.integration
def test_sigterm_saves_and_exits_with_the_requested_status(tmp_path):
  workdir = str(tmp_path)
  proc = subprocess.Popen(_main_cmd(workdir, steps=100000,
                                    extra=["--config.checkpoint.every_steps=100000",
                                           "--preempted_exit_code=143"]),
                          cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  lines = []
  reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
  reader.start()
  t0 = time.time()
  while not any("steps_per_sec" in line for line in lines):  # training is under way
    assert proc.poll() is None, "".join(lines)[-3000:]
    assert time.time() - t0 < 400, "no progress report within 400 s"
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=300)
  reader.join(timeout=10)
  log = "".join(lines)
  assert proc.returncode == 143, log[-3000:]  # What a retrying launcher asked for.
  assert "preemption/SIGTERM" in log
  with open(os.path.join(workdir, "result.json")) as f:
    assert json.load(f)["stopped"] == "preempted"
  step, params = _final_params(workdir)
  assert 0 < step < 100000  # saved where it stopped, not at a scheduled step
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


@objectives.OBJECTIVES.register("video_detector_nan_after_5")
class _NanAfterFive(video_detector.VideoDetection):
  """A detector whose loss turns NaN from step 5 on (a simulated divergence). The trainer's
  guard is objective-agnostic; the tiny detector compiles in seconds where the stage-1 step
  takes ~50 s on 8 simulated devices."""

  def loss(self, params, state, batch, rng):
    loss, aux = super().loss(params, state, batch, rng)
    return jnp.where(state.step >= 5, jnp.nan, loss), aux


@pytest.mark.integration
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  config = tiny_detector_config.get_config()
  config.objective.name = "video_detector_nan_after_5"
  config.total_steps = 10
  config.checkpoint.every_steps = 2
  with pytest.raises(train.NonFiniteLossError, match="loss became non-finite at step 6.*last "
                     r"good checkpoint \(step 4\) is intact"):
    train.run(config, str(tmp_path))
  step, params = _final_params(str(tmp_path))
  assert step == 4
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def _run_pair(script, port, tmp_path, data, env, attempts=2):
  """The two-process run; on a loaded machine gloo's 30 s deadline for a peer to join a
  collective can still expire (the peer is starved, not wrong): kill both and retry once."""
  import portpicker
  for attempt in range(attempts):
    # Logs to files: waiting on one process while the other's unread pipe fills would block it.
    paths = [tmp_path / f"host{i}_try{attempt}.log" for i in range(2)]
    logs = [open(path, "w") for path in paths]
    procs = [subprocess.Popen([sys.executable, script, f"--process_id={i}", "--num_processes=2",
                               f"--port={port}", f"--out={tmp_path}/two.json", data], cwd=ROOT,
                              env=env, stderr=logs[i], text=True) for i in range(2)]
    errors = []
    try:
      for p in procs:
        p.wait(timeout=300)
    except subprocess.TimeoutExpired:
      errors.append("timed out after 300 s")
    finally:
      for p, log in zip(procs, logs):
        p.kill()
        p.wait()
        log.close()
    errors += [path.read_text() for path in paths]
    if all(p.returncode == 0 for p in procs):
      return
    if attempt + 1 == attempts or not any("gloo" in e.lower() or "timed out" in e
                                          for e in errors):
      raise AssertionError("\n".join(e[-3000:] for e in errors))
    port = portpicker.pick_unused_port()


@pytest.mark.integration
def test_two_processes_match_one_process(tmp_path):
  """One train step, then the periodic evaluation with uneven host shares (3 and 2 clips)."""
  import portpicker
  from input_pipeline import records
  from input_pipeline.synthetic import dataset as synthetic
  cfg = synthetic.preset("tiny")
  reals = [r for split in ("train", "val") for r in synthetic.generate_split(cfg, split)
           if r["label"] == 0][:5]
  assert len(reals) == 5
  records.write_dataset(str(tmp_path / "odd"), "odd", {"val": reals})
  port = portpicker.pick_unused_port()
  script = os.path.join(ROOT, "tests", "multihost_step.py")
  env = _env()
  data = f"--eval_data_dir={tmp_path}/odd"
  _run_pair(script, port, tmp_path, data, env)
  # The reference runs afterwards, not alongside: on a loaded 2-core machine a third process
  # starved the pair past gloo's 30 s rendezvous deadline.
  single = subprocess.run([sys.executable, script, "--process_id=0", "--num_processes=1",
                           f"--port={port + 1}", "--devices_per_process=4",
                           f"--out={tmp_path}/one.json", data], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  two = json.load(open(tmp_path / "two.json"))
  one = json.load(open(tmp_path / "one.json"))
  assert two["processes"] == 2 and two["devices"] == 4 and one["processes"] == 1
  np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
  np.testing.assert_allclose(two["param_norm"], one["param_norm"], rtol=1e-5)
  # Both hosts finished the evaluation (the one with fewer clips ran a blank batch), and the
  # global batches held the same clips as one process' ({0..3}, then {4}): same figures.
  assert two["eval"].keys() == one["eval"].keys() and "eval/retrieval_top1" in one["eval"]
  for k, v in one["eval"].items():
    np.testing.assert_allclose(two["eval"][k], v, rtol=1e-4, atol=1e-6, err_msg=k)

"""The AV contrastive transformer's recipe in the shared code: the per-epoch exponential LR
decay with a floor (optim "exponential", epochs converted by the trainer) and the stop rule
"the training loss has not fallen for 3 epochs" (train.LossPlateau), on fake loss sequences."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fakedet import optim
from fakedet.trainers import train
from input_pipeline import config as input_config


def _exponential(**overrides):
  cfg = optim.default_config()
  cfg.update(dict(name="adamw", lr=0.01, schedule="exponential", decay_rate=0.9, decay_steps=10,
                  min_lr=1e-4, groups={}), **overrides)
  return cfg


def test_exponential_schedule_steps_down_once_per_epoch_to_its_floor():
  lr = optim.learning_rates(_exponential(), total_steps=1000)["default"]
  got = [float(lr(s)) for s in (0, 9, 10, 19, 20, 430, 440, 999)]
  # §4.1: 0.01 × 0.9^epoch, never below 1e-4 (0.01 · 0.9^43 = 1.08e-4, 0.9^44 → floor).
  want = [0.01, 0.01, 0.009, 0.009, 0.0081, 0.01 * 0.9 ** 43, 1e-4, 1e-4]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  warm = optim.learning_rates(_exponential(warmup_steps=4), 100)["default"]
  np.testing.assert_allclose([float(warm(s)) for s in (0, 2, 4, 13, 14)],
                             [0.0, 0.005, 0.01, 0.01, 0.009], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("overrides, match", [(dict(decay_steps=0), "decay_steps"),
                                              (dict(decay_rate=1.5), "decay_rate"),
                                              (dict(min_lr=0.1), "min_lr")])
def test_exponential_schedule_settings_fail_naming_the_key(overrides, match):
  with pytest.raises(ValueError, match=match):
    optim.learning_rates(_exponential(**overrides), 100)


def test_frozen_groups_need_no_floor_and_old_configs_keep_working():
  cfg = _exponential()
  cfg.groups = dict(cnn=dict(pattern=r"cnn/.*", lr=0.0, freeze=True))
  assert float(optim.learning_rates(cfg, 10)["cnn"](3)) == 0.0
  old = optim.default_config()  # A config written before the exponential keys existed.
  for key in ("decay_rate", "decay_steps", "min_lr", "decay_epochs"):
    del old[key]
  np.testing.assert_allclose(float(optim.learning_rates(old, 10)["default"](0)), 7e-4)


def test_trainer_converts_decay_epochs_to_steps(tiny_dir):
  """An epoch = one pass over the first source (16 records at 4 per batch: 4 steps)."""
  config = train.reference_config()
  config.input.sources = ml_collections.ConfigDict({
      "main": input_config.source_config(tiny_dir, "train", 4)})
  config.total_steps = 40
  config.optim = _exponential(decay_steps=0, decay_epochs=2.0)
  steps, optim_cfg = train.schedule_steps(config)
  assert (steps, optim_cfg.decay_steps) == (40, 8)
  assert config.optim.decay_steps == 0  # The config itself is left as written.


def _feed(plateau, losses_per_epoch, first_step=1):
  """Per-step losses epoch by epoch; returns each closed epoch's mean and the stop flags."""
  means, stops, step = [], [], first_step
  for epoch in losses_per_epoch:
    for loss in epoch:
      mean = plateau.add(step, jnp.float32(loss))
      step += 1
    means.append(mean)
    stops.append(plateau.should_stop)
  return means, stops


def test_plateau_stops_after_three_epochs_without_a_lower_mean():
  plateau = train.LossPlateau(patience=3, epoch_steps=2)
  epochs = [(5, 5), (4, 4), (3, 2), (3, 2.2), (2, 3.5), (2.4, 2.8), (9, 9)]
  means, stops = _feed(plateau, epochs[:6])
  np.testing.assert_allclose(means, [5, 4, 2.5, 2.6, 2.75, 2.6], rtol=1e-6)
  assert stops == [False] * 5 + [True]
  assert (plateau.record["best"], plateau.record["best_epoch"]) == (2.5, 3)
  assert plateau.record["stale"] == 3 and plateau.record["epoch"] == 6


def test_plateau_counts_only_strict_improvements_and_resets():
  plateau = train.LossPlateau(patience=2, epoch_steps=1)
  _, stops = _feed(plateau, [(3,), (3,), (2,), (2.5,), (2.0,)])
  assert stops == [False, False, False, False, True]  # Equal is not lower.
  never = train.LossPlateau(patience=0, epoch_steps=1)
  assert _feed(never, [(1,), (2,), (3,), (4,)])[1] == [False] * 4


def test_plateau_resumes_mid_epoch_exactly():
  """A run stopped after step 3 of 2-step epochs and resumed from its saved record closes the
  same epochs with the same means as an uninterrupted one."""
  losses = [4.0, 3.0, 3.5, 2.5, 3.0, 3.1, 2.9, 3.3]
  whole = train.LossPlateau(3, 2)
  full = [whole.add(s + 1, jnp.float32(x)) for s, x in enumerate(losses)]
  first = train.LossPlateau(3, 2)
  part = [first.add(s + 1, jnp.float32(x)) for s, x in enumerate(losses[:3])]
  resumed = train.LossPlateau(3, 2, record=first.state())
  part += [resumed.add(s + 4, jnp.float32(x)) for s, x in enumerate(losses[3:])]
  assert part == full and resumed.record == whole.record


def test_selection_rejects_a_negative_plateau():
  with pytest.raises(ValueError, match="plateau_epochs"):
    train.check_selection(train.selection_config(plateau_epochs=-1), ())


@pytest.mark.integration
def test_trainer_stops_on_the_plateau_and_a_resumed_run_counts_the_same(tmp_path):
  """The rule inside the real trainer: with a learning rate of 0 the loss cannot keep falling,
  so the run ends at an epoch boundary before total_steps, says why, and is scored; a run cut
  mid-epoch and resumed from its checkpoint stops at the same step with the same record (the
  partial epoch sum travels in the checkpoint)."""
  from tests import tiny_detector_config
  config = tiny_detector_config.get_config()
  epoch = max(1, int(round(train.steps_per_epoch(config))))  # As the trainer rounds it.
  config.optim.lr = 0.0
  config.selection = train.selection_config(plateau_epochs=2)
  config.total_steps = 100
  config.checkpoint.every_steps = epoch
  whole = train.run(config, str(tmp_path / "whole"))
  record = whole["plateau"]
  assert whole["stopped"] == "plateau" and whole["step"] < config.total_steps
  assert whole["step"] == epoch * record["epoch"] and record["partial_steps"] == 0
  assert record["stale"] == 2 and record["epoch"] == record["best_epoch"] + 2
  assert "eval" in whole  # A run the rule ended is finished: it gets its final evaluation.

  cut = ml_collections.ConfigDict(config.to_dict())
  cut.total_steps = epoch + 1  # Mid-epoch 2: the saved record holds one step of its sum.
  first = train.run(cut, str(tmp_path / "resumed"))
  assert first["plateau"]["partial_steps"] == 1 and "stopped" not in first
  resumed = train.run(config, str(tmp_path / "resumed"))
  assert resumed["step"] == whole["step"] and resumed["stopped"] == "plateau"
  for key in ("epoch", "best_epoch", "stale"):
    assert resumed["plateau"][key] == record[key]
  np.testing.assert_allclose(resumed["plateau"]["best"], record["best"], rtol=1e-5)

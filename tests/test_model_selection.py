"""Model selection in the trainer: detector evaluation during training, the best checkpoint
(<workdir>/best) by a validation metric, early stopping, and the leave-one-out protocol."""
import json

import numpy as np
import pytest

from fakedet import config_variants
from fakedet.checkpointing import BestCheckpoint
from fakedet.evaluation import periodic, protocols
from fakedet.trainers import train
from tests import tiny_detector_config

METRIC = "eval/overall/video_auc"


def _tree(v):
  return {"w": np.full((3,), v, np.float32)}


def test_best_checkpoint_keeps_the_best_state_and_counts_stale_evaluations(tmp_path):
  best = BestCheckpoint(str(tmp_path), METRIC, "max", patience=2)
  improved = [best.update(step, _tree(v), {METRIC: v})
              for step, v in ((1, 0.5), (2, 0.7), (3, 0.6))]
  assert improved == [True, True, False] and not best.should_stop
  best.write_record()
  best.close()
  assert json.load(open(tmp_path / "best" / "best.json")) == best.record
  # A resumed run gets the record its checkpoint was saved with (Checkpointer.save/restore).
  again = BestCheckpoint(str(tmp_path), METRIC, "max", patience=2, record=best.record)
  assert again.record["step"] == 2 and again.record["stale"] == 1
  assert not again.update(4, _tree(0.65), {METRIC: 0.65}) and again.should_stop
  import orbax.checkpoint as ocp
  restored = again.manager.restore(again.manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))
  np.testing.assert_array_equal(restored["state"]["w"], _tree(0.7)["w"])
  with pytest.raises(KeyError, match="selection.metric='eval/nope'.*eval/overall/video_auc"):
    BestCheckpoint(str(tmp_path / "x"), "eval/nope").update(1, _tree(0), {METRIC: 1.0})
  lower = BestCheckpoint(str(tmp_path / "min"), "eval/loss", "min")
  assert [lower.update(s, _tree(v), {"eval/loss": v}) for s, v in ((1, 2.0), (2, 1.0))] == [
      True, True]


def _config(steps=4, eval_every=2, patience=0):
  config = tiny_detector_config.get_config()
  config.total_steps = steps
  config.eval_every = eval_every
  config.checkpoint.every_steps = steps
  config.selection = train.selection_config(METRIC, "max", patience)
  return config


@pytest.mark.integration
def test_detector_runs_evaluate_clips_and_the_best_checkpoint_scores_as_logged(tmp_path):
  result = train.run(_config(), str(tmp_path))
  assert {METRIC, "eval/overall/clip_auc", "eval/overall/video_eer"} <= set(result["eval"])
  record = json.load(open(tmp_path / "best" / "best.json"))
  assert record["step"] in (2, 4) and record == result["best"]
  # The evaluator on <workdir>/best reproduces the value the trainer selected it by.
  report = protocols.evaluate_checkpoint(_config(), str(tmp_path / "best"), tensorboard=False)
  assert report["step"] == record["step"]
  assert report["video"]["overall"]["auc"] == pytest.approx(record["value"], abs=1e-6)


class _Killed(Exception):
  pass


@pytest.mark.integration
def test_a_run_killed_between_an_evaluation_and_its_checkpoint_counts_it_once(tmp_path,
                                                                           monkeypatch):
  """Evaluations every step, checkpoints every 2: a kill right after the step-3 evaluation
  (before checkpoint 4) resumes from checkpoint 2 and evaluates step 3 again; the record must
  come out as in a run that was never killed (it once counted step 3 twice: stale 4, not 3)."""
  values = {1: 0.9, 2: 0.5, 3: 0.4, 4: 0.3, 5: 0.2, 6: 0.1}
  monkeypatch.setattr(periodic.PeriodicEval, "__call__",
                      lambda self, state: {METRIC: values[int(state.step)]})
  config = _config(steps=6, eval_every=1, patience=0)
  config.checkpoint.every_steps = 2
  straight = train.run(config, str(tmp_path / "straight"))
  update = BestCheckpoint.update
  def kill_after_step_3(self, step, state, metrics):
    improved = update(self, step, state, metrics)
    if step == 3 and not getattr(kill_after_step_3, "done", False):
      kill_after_step_3.done = True
      raise _Killed()
    return improved
  monkeypatch.setattr(BestCheckpoint, "update", kill_after_step_3)
  with pytest.raises(_Killed):
    train.run(config, str(tmp_path / "killed"))
  resumed = train.run(config, str(tmp_path / "killed"))
  assert straight["best"] == resumed["best"]
  assert resumed["best"]["step"] == 1 and resumed["best"]["stale"] == 5
  assert json.load(open(tmp_path / "killed" / "best" / "best.json")) == straight["best"]


@pytest.mark.integration
def test_early_stopping_saves_and_a_rerun_does_not_train_on(tmp_path, monkeypatch):
  values = iter([0.9, 0.5, 0.4, 0.3, 0.2])
  monkeypatch.setattr(periodic.PeriodicEval, "__call__", lambda self, state: {METRIC: next(values)})
  result = train.run(_config(steps=6, eval_every=1, patience=2), str(tmp_path))
  assert result["step"] == 3 and result["best"]["step"] == 1 and result["best"]["stale"] == 2
  assert result["last_checkpoint"] == 3 and "eval" not in result
  rerun = train.run(_config(steps=6, eval_every=1, patience=2), str(tmp_path))
  assert rerun["step"] == 3  # Resumed at the stop, and stopped again without training.


def test_hold_out_trains_and_selects_on_seen_families_and_tests_on_the_held_out_one():
  from tests import tiny_configs
  from input_pipeline import sources
  config = tiny_configs.config_module("stage2").get_config("demo,holdout=reenactment")
  assert config.input.sources.forgery.exclude_manipulations == ("reenactment",)
  # Validation never sees the held-out family either.
  assert config.input.eval.exclude_manipulations == ("reenactment",)
  # The families come from the dataset's index: every other one stays, the held-out one goes.
  index = {"label": [0, 1, 1, 1], "manipulation": ["real", "graphics_swap", "reenactment",
                                                   "neural_texture"]}
  kept = sources.Selection.from_config(config.input.sources.forgery).indices(index)
  assert kept.tolist() == [0, 1, 3]
  assert config_variants.test_split_overrides("reenactment") == (
      "--config.input.eval.split=test",
      "--config.input.eval.manipulations=('real', 'reenactment')",
      "--config.input.eval.exclude_manipulations=()")
  typo = tiny_configs.config_module("stage2").get_config("demo,holdout=deepfakes")
  with pytest.raises(ValueError, match=r"exclude_manipulations \['deepfakes'\] not in this "
                                       r"split; it has \['graphics_swap', 'neural_texture'"):
    sources.Selection.from_config(typo.input.sources.forgery).indices(index)
  with pytest.raises(ValueError, match="unknown variant 'demos'.*baseline, demo, grey, "
                                       "robustness, holdout="):
    tiny_configs.config_module("stage2").get_config("demos")

"""Warm starts copy exactly the named sub-trees of another run's checkpoint, or fail by path."""
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fakedet import checkpointing, warm_start


@flax.struct.dataclass
class _State:
  step: jax.Array
  params: dict
  ema_params: dict


def _save(workdir, state, step):
  manager = ocp.CheckpointManager(f"{workdir}/checkpoints", item_names=("state", "data"),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  manager.wait_until_finished()
  manager.close()


def _source():
  rng = np.random.default_rng(0)
  net = lambda: {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
                 "bn": {"scale": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}}
  return _State(jnp.int32(7), {"video_net": net(), "audio_net": net()}, {"video_net": net()})


def _fresh():
  z = lambda: {"conv": {"kernel": jnp.zeros((3, 4))}, "bn": {"scale": jnp.zeros((4,))}}
  return {"params": {"backbone": z(), "teacher": {"backbone": z()},
                     "head": {"w": jnp.zeros((4,))}}}


def test_rules_copy_named_subtrees_and_leave_the_rest(tmp_path):
  source = _source()
  _save(str(tmp_path), source, 7)
  init = ml_collections.ConfigDict(dict(workdir=str(tmp_path), step=-1, rules=(
      ("params/video_net", "params/backbone"),
      ("ema_params/video_net", "params/teacher/backbone"))))
  out = warm_start.warm_start(_fresh(), init)
  np.testing.assert_array_equal(out["params"]["backbone"]["conv"]["kernel"],
                                source.params["video_net"]["conv"]["kernel"])
  np.testing.assert_array_equal(out["params"]["teacher"]["backbone"]["bn"]["scale"],
                                source.ema_params["video_net"]["bn"]["scale"])
  np.testing.assert_array_equal(out["params"]["head"]["w"], np.zeros(4))  # Not in any rule.
  assert warm_start.warm_start(_fresh(), warm_start.init_config()) is not None  # No-op default.


def test_mismatches_fail_naming_the_path(tmp_path):
  _save(str(tmp_path), _source(), 7)
  tree = checkpointing.load_tree(str(tmp_path))
  with pytest.raises(KeyError, match="no parameters under 'params/nothing'"):
    warm_start.graft(_fresh(), tree, [("params/video_net", "params/nothing")])
  with pytest.raises(KeyError, match="lacks 1 of them, e.g. params/audio_net/w"):
    warm_start.graft(_fresh(), tree, [("params/audio_net", "params/head")])
  wrong = _fresh()
  wrong["params"]["backbone"]["conv"]["kernel"] = jnp.zeros((3, 8))
  with pytest.raises(ValueError, match=r"conv/kernel has shape \(3, 4\) in the checkpoint"):
    warm_start.graft(wrong, tree, [("params/video_net", "params/backbone")])
  with pytest.raises(FileNotFoundError, match="init.workdir=.*step 3 is not in .*steps \\[7\\]"):
    checkpointing.load_tree(str(tmp_path), step=3)
  with pytest.raises(FileNotFoundError, match="empty does not exist"):
    checkpointing.load_tree(str(tmp_path / "empty"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no checkpoint under"):
    checkpointing.load_tree(str(tmp_path / "empty"))

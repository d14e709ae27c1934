"""Parameters split over the ``fsdp`` / ``model`` mesh axes: the size rule's specs, that the big
backbones' large leaves really are split (8 simulated devices), and that a step on a split state
computes what the single-device step computes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakedet import models, objectives, optim, sharding
from fakedet import train_state as train_state_lib
from fakedet.models import csn, vit, wav2vec2
from fakedet.trainers import train
from tests import tiny_configs

P = jax.sharding.PartitionSpec
MIN = 2**16  # mesh_config()'s default threshold.


def _mesh(fsdp, model=1, data=1):
  return sharding.make_mesh(dict(data=data, fsdp=fsdp, model=model))


def test_size_rule_splits_the_largest_dividing_dimension():
  mesh = _mesh(fsdp=4, model=2)
  spec = lambda shape, m=MIN: sharding.size_rule_spec(shape, mesh, m)
  assert spec((3, 3, 256, 512)) == P(None, None, "fsdp", "model")  # Conv kernel: out on model.
  assert spec((768, 3072)) == P("fsdp", "model")
  assert spec((3, 3, 3, 64), m=0) == P(None, None, None, "model")  # 3 and 3 and 3: no fsdp.
  assert spec((1000, 513), m=0) == P("fsdp", None)  # 513 is odd: model leaves it whole.
  assert spec((512,)) == P(None)  # Below the threshold: replicated.
  assert spec(()) == P()
  three = _mesh(fsdp=2, model=2, data=2)  # One axis a leaf when data > 1 (openxla/xla#40034).
  assert sharding.size_rule_spec((768, 3072), three, MIN) == P(None, "model")
  assert sharding.size_rule_spec((3072, 765), three, MIN) == P("fsdp", None)
  only_fsdp = _mesh(fsdp=8)
  assert sharding.size_rule_spec((1024, 1024), only_fsdp, MIN) == P(None, "fsdp")  # Tie: last.


def test_explicit_rules_win_over_the_size_rule():
  mesh = _mesh(fsdp=8)
  tree = {"params": {"big": jnp.zeros((1024, 512)), "kept": jnp.zeros((1024, 512))}}
  shardings = sharding.param_shardings(tree, mesh, rules=((r"params/kept", ()),))
  assert shardings["params"]["kept"].spec == P()
  assert shardings["params"]["big"].spec == P("fsdp", None)
  assert sharding.sharded_fraction(tree, shardings) == pytest.approx((1 + 1 / 8) / 2)


def _abstract_params(module, *inputs):
  return jax.eval_shape(lambda *x: module.init(jax.random.key(0), *x, train=False),
                        *[jax.ShapeDtypeStruct(s, jnp.float32) for s in inputs])["params"]


BIG_BACKBONES = {
    "csn101": lambda: _abstract_params(csn.CSN(), (1, 8, 112, 112, 3)),
    "tsm_resnet50x2": lambda: _abstract_params(
        models.get("tsm_resnet")(width_multiplier=2.0), (1, 8, 224, 224, 3)),
    "vit_b16": lambda: _abstract_params(vit.ViTEncoder(**vit.VIT_B16), (1, 224, 224, 3)),
    "wav2vec2_base": lambda: _abstract_params(wav2vec2.Wav2Vec2(**wav2vec2.config("base")),
                                              (1, 16000)),
}


@pytest.mark.parametrize("name", sorted(BIG_BACKBONES))
def test_every_large_leaf_of_the_big_backbones_is_split(name):
  """With fsdp = 8 each device holds close to 1/8 of the parameters (and so of Adam's moments,
  whose leaves have the same shapes): every leaf over the threshold is split, and what stays
  replicated is a small share of the bytes."""
  params = BIG_BACKBONES[name]()
  mesh = _mesh(fsdp=8)
  shardings = sharding.state_shardings(params, mesh)
  large = [(jax.tree_util.keystr(path), x.shape, s.spec) for (path, x), s in zip(
      jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(shardings))
           if x.size >= MIN]
  assert large and all("fsdp" in spec for _, _, spec in large), [
      leaf for leaf in large if "fsdp" not in leaf[2]]
  held = sharding.sharded_fraction(params, shardings)
  assert 1 / 8 <= held < 0.15, held  # CSN-101 0.145 (its 3×3×3 depthwise kernels are small).


def _step_setup(devices, mesh_overrides):
  config = tiny_configs.stage1_tiny()
  config.optim.name = "sgd"  # Linear in the gradient: a faithful comparison (see test_trainer).
  config.mesh.update(mesh_overrides)
  mesh = sharding.make_mesh(config.mesh, devices=devices)
  objective = objectives.get("byol_av")(config)
  batch = sharding.device_batch(tiny_configs.fake_stage1_batch(), objective.input_keys, mesh)
  tx = optim.make_optimizer(config.optim, config.total_steps)
  state, shardings = train_state_lib.create(objective, tx, batch, jax.random.key(0), mesh,
                                            config.mesh)
  step = train.jit_train_step(objective, tx, train.ema_momentum_fn(config, 8, 10), shardings,
                              mesh, donate=False)
  return state, step(state, batch, jax.random.key(3))


@pytest.fixture(scope="module")
def one_device_step():
  return _step_setup(jax.devices()[:1], dict(data=1, shard_min_size=0))[1]


@pytest.mark.integration  # A stage-1 step compile each (~20 s on 2 cores).
@pytest.mark.parametrize("mesh", [dict(data=1, fsdp=8), dict(data=1, fsdp=4, model=2),
                                  dict(data=2, fsdp=2, model=2)])
def test_a_step_on_a_split_state_matches_the_single_device_step(mesh, one_device_step):
  state8, (s8, m8) = _step_setup(jax.devices(), dict(mesh, shard_min_size=0))
  s1, m1 = one_device_step
  split = [x for x in jax.tree.leaves(s8.params) if not x.sharding.is_fully_replicated]
  assert len(split) > len(jax.tree.leaves(s8.params)) // 2  # The comparison is not vacuous.
  assert any(not x.sharding.is_fully_replicated for x in jax.tree.leaves(s8.ema_params))
  for key in ("loss", "l2_grads", "l2_updates"):
    np.testing.assert_allclose(float(m8[key]), float(m1[key]), rtol=1e-5, err_msg=key)
  for a, b in zip(jax.tree.leaves(jax.device_get(s8.params)),
                  jax.tree.leaves(jax.device_get(s1.params))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The updated state keeps the layout it was created with (no silent re-replication).
  for before, after in zip(jax.tree.leaves(state8.params), jax.tree.leaves(s8.params)):
    assert before.sharding == after.sharding

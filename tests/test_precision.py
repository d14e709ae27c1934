"""The mixed-precision policy (``config.precision``): bf16 compute, float32 parameters, optimizer
state and losses, and a bf16 loss that agrees with the float32 one."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fakedet import objectives, optim, sharding
from fakedet import train_state as train_state_lib
from tests import tiny_configs

# bf16 keeps 8 bits of mantissa (relative step 2⁻⁸ ≈ 0.4 %); through a tiny CSN + audio ResNet +
# transformer predictor the stage-1 loss moved 0.1–0.3 % and the gradient norm ~1 % here.
LOSS_RTOL, GRAD_RTOL = 1e-2, 5e-2


def test_with_precision_rewrites_every_model_dtype_in_a_copy():
  config = tiny_configs.stage1_tiny()
  config.precision = "bfloat16"
  resolved = objectives.with_precision(config)
  dtypes = [resolved.model.video_backbone.dtype, resolved.model.audio_backbone.dtype]
  assert dtypes == ["bfloat16", "bfloat16"]
  assert config.model.video_backbone.dtype == "float32"  # The recorded config is untouched.
  config.precision = "float32"
  assert objectives.with_precision(config) is config


def test_an_unknown_precision_names_the_key_and_the_choices():
  config = tiny_configs.stage1_tiny()
  config.precision = "fp16"
  with pytest.raises(ValueError, match=r"config.precision='fp16': expected one of"):
    objectives.build(config)


def test_apply_hands_float32_outputs_to_the_losses():
  import flax.linen as nn
  module = nn.Dense(3, dtype=jnp.bfloat16)
  variables = module.init(jax.random.key(0), jnp.ones((2, 4)))
  raw = module.apply(variables, jnp.ones((2, 4)))
  out = objectives.Objective.apply(module, variables, jnp.ones((2, 4)))
  assert raw.dtype == jnp.bfloat16 and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, raw.astype(jnp.float32))


def _loss_and_grads(precision):
  """Stage-1 loss and gradients at the same float32 initial state under ``precision``."""
  config = tiny_configs.stage1_tiny()
  config.precision = precision
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  objective = objectives.build(config)
  batch = sharding.device_batch(tiny_configs.fake_stage1_batch(), objective.input_keys, mesh)
  tx = optim.make_optimizer(config.optim, config.total_steps)
  state, _ = train_state_lib.create(objective, tx, batch, jax.random.key(0), mesh)
  grad_fn = jax.jit(jax.value_and_grad(objective.loss, has_aux=True))
  (loss, (metrics, _)), grads = grad_fn(state.params, state, batch, jax.random.key(1))
  return state, loss, metrics, grads


@pytest.mark.integration  # Two stage-1 loss+gradient compiles (~30 s on 2 cores).
def test_bf16_stage1_loss_agrees_with_float32_and_the_state_stays_float32():
  s32, l32, m32, g32 = _loss_and_grads("float32")
  s16, l16, m16, g16 = _loss_and_grads("bfloat16")
  for tree in (s16.params, s16.opt_state, s16.ema_params, s16.batch_stats, g16):
    floats = [x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(d == jnp.float32 for d in floats)
  assert l16.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in m16.values()
                                          if jnp.issubdtype(v.dtype, jnp.floating))
  for a, b in zip(jax.tree.leaves(s32.params), jax.tree.leaves(s16.params)):
    np.testing.assert_array_equal(a, b)  # Same initial state: the comparison is of compute only.
  np.testing.assert_allclose(float(l16), float(l32), rtol=LOSS_RTOL)
  norm = lambda g: float(optax.global_norm(g))
  np.testing.assert_allclose(norm(g16), norm(g32), rtol=GRAD_RTOL)
  assert float(l16) != float(l32)  # bf16 compute really happened.

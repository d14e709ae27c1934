"""MMV backbones: TSM shift layout (the released model's), output shapes and paper-size parameter
counts (equal to the released Haiku models': tests/test_import_mmv.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakedet import models
from fakedet.models import tsm_resnet
from fakedet.train_state import count_params


def test_temporal_shift_uses_the_released_mmv_channel_layout():
  """Released MMV (tsm_utils.temporal_shift_gpu): out[:n] = next frame's last n channels,
  out[n:C−n] unchanged, out[C−n:] = previous frame's first n channels; zeros at clip ends."""
  b, t, h, w, c = 2, 5, 2, 3, 16
  rng = np.random.default_rng(0)
  x = rng.normal(size=(b, t, h, w, c)).astype(np.float32) + 1.0  # no zeros anywhere
  y = np.asarray(tsm_resnet.temporal_shift(jnp.asarray(x.reshape(b * t, h, w, c)), t))
  y = y.reshape(b, t, h, w, c)
  n = c // 8  # 2
  # Output channels [0, n): frame t holds frame t+1's channels [C−n, C); the last frame is zero.
  np.testing.assert_array_equal(y[:, :-1, ..., :n], x[:, 1:, ..., c - n:])
  np.testing.assert_array_equal(y[:, -1, ..., :n], 0)
  # Output channels [C−n, C): frame t holds frame t−1's channels [0, n); the first frame is zero.
  np.testing.assert_array_equal(y[:, 1:, ..., c - n:], x[:, :-1, ..., :n])
  np.testing.assert_array_equal(y[:, 0, ..., c - n:], 0)
  # The middle is untouched, and clips never leak into each other.
  np.testing.assert_array_equal(y[..., n:c - n], x[..., n:c - n])
  assert not np.array_equal(y[1, 0, ..., :n], x[0, -1, ..., c - n:])
  # Fewer than 8 channels: nothing to shift (tiny models only).
  small = jnp.asarray(x[..., :7].reshape(b * t, h, w, 7))
  np.testing.assert_array_equal(tsm_resnet.temporal_shift(small, t), small)


def test_temporal_shift_rejects_a_batch_that_is_not_whole_clips():
  with pytest.raises(ValueError, match="not a multiple of num_frames=4"):
    tsm_resnet.temporal_shift(jnp.zeros((6, 2, 2, 8)), 4)
  with pytest.raises(ValueError, match=r"must be in \[0, 1/2\]"):
    tsm_resnet.temporal_shift(jnp.zeros((4, 2, 2, 8)), 4, fraction=0.75)


def _hand_count_resnet50_v2(in_channels: int, mult: int) -> int:
  """Parameters of pre-activation ResNet-50 from the layer list (no classifier)."""
  stem = 7 * 7 * in_channels * 64 * mult
  total, cin = stem, 64 * mult
  for blocks, cout in zip((3, 4, 6, 3), (256, 512, 1024, 2048)):
    cout *= mult
    cb = cout // 4
    for i in range(blocks):
      total += 2 * cin  # pre-activation BN
      total += cin * cb + 2 * cb  # 1×1 + BN
      total += 9 * cb * cb + 2 * cb  # 3×3 + BN
      total += cb * cout  # 1×1 (no BN: the next block pre-activates)
      if i == 0:
        total += cin * cout  # projection shortcut, no BN
      cin = cout
  return total + 2 * cin  # final BN


@pytest.mark.parametrize("name,kwargs,shape,expected", [
    ("tsm_resnet", {}, (1, 2, 64, 64, 3), 23_500_352),
    ("tsm_resnet", {"width_multiplier": 2.0}, (1, 2, 64, 64, 3), 93_891_712),
    ("resnet50_audio", {}, (1, 64, 80), 23_494_080),
])
def test_paper_size_parameter_counts(name, kwargs, shape, expected):
  mult = int(kwargs.get("width_multiplier", 1))
  assert _hand_count_resnet50_v2(shape[-1] if name == "tsm_resnet" else 1, mult) == expected
  # torchvision ResNet-50 v1 without fc has 23,508,032; v2 drops the stem BN (128), the
  # shortcut BNs (7,680) and trades each block's last BN for a pre-activation BN (−3,968), and
  # adds a final BN (4,096): −7,680 in all.
  if name == "tsm_resnet" and mult == 1:
    assert expected == 23_508_032 - 128 - 7_680 - 3_968 + 4_096
  model = models.get(name)(**kwargs)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  assert count_params(variables["params"]) == expected
  assert tsm_resnet.PAPER_PARAMS[{"resnet50_audio": "resnet50_audio"}.get(
      name, "tsm_resnet50x2" if mult == 2 else "tsm_resnet50")] == expected
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(shape), train=False), variables)
  assert out["pooled"].shape == (1, 2048 * mult)


@pytest.mark.integration  # Compiles a whole model: tens of seconds.
def test_tiny_tsm_resnet_outputs_and_temporal_mixing():
  model = models.get("tsm_resnet")(stage_blocks=(1, 1, 1, 1), width_multiplier=1 / 16)
  video = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 32, 32, 3)), jnp.float32)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(video)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  out = apply(variables, video)
  assert out["feature_map"].shape == (2, 4, 1, 1, 128)
  assert out["frames"].shape == (2, 4, 128)
  assert out["pooled"].shape == (2, 128)
  np.testing.assert_allclose(out["pooled"], out["frames"].mean(1), rtol=1e-5, atol=1e-6)
  # Changing only frame 0 changes frame 1's features (the shift mixes time) but not the other
  # clip's (no leak across the batch).
  changed = video.at[0, 0].add(1.0)
  out2 = apply(variables, changed)
  assert float(jnp.max(jnp.abs(out2["frames"][0, 1] - out["frames"][0, 1]))) > 1e-6
  np.testing.assert_array_equal(out2["frames"][1], out["frames"][1])


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_tiny_audio_resnet_shapes():
  model = models.get("resnet50_audio")(stage_blocks=(1, 1, 1, 1), width_multiplier=1 / 16)
  audio = jnp.ones((3, 64, 80))
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(audio)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, audio)
  assert out["feature_map"].shape == (3, 2, 3, 128)
  assert out["pooled"].shape == (3, 128)
  with pytest.raises(ValueError, match=r"\[B, Ta, F\]"):
    model.apply(variables, jnp.ones((3, 64, 80, 1)), train=False)

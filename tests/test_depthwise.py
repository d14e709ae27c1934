"""The "shifted" depthwise conv is the same function as XLA's grouped conv, gradients included."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakedet.models import depthwise

# (shape [B, T, H, W, C], strides): odd and even sizes, spatial and general strides.
CASES = [
    ((2, 5, 7, 7, 8), (1, 1, 1)),
    ((2, 4, 8, 6, 8), (1, 1, 1)),
    ((2, 5, 7, 9, 8), (1, 2, 2)),
    ((2, 4, 8, 6, 8), (1, 2, 2)),
    ((2, 5, 7, 8, 4), (2, 1, 3)),
]


def _rel_err(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def _inputs(shape, seed=0):
  kx, kk = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(kx, shape),
          jax.random.normal(kk, (3, 3, 3, 1, shape[-1])))


@functools.partial(jax.jit, static_argnames=("impl", "strides"))
def _value_and_grads(x, kernel, cotangent, *, impl, strides):
  """(y, dx, dk) of depthwise_conv3d for the given output cotangent, under jit."""
  y, vjp = jax.vjp(lambda x, k: depthwise.depthwise_conv3d(x, k, strides, impl), x, kernel)
  return (y,) + vjp(cotangent.astype(y.dtype))


def _cotangent(shape, strides, seed=42):
  out_shape = depthwise.output_shape(shape, strides)
  return jnp.asarray(np.random.default_rng(seed).normal(size=out_shape), jnp.float32)


def _numpy_conv(x, kernel, strides):
  """Direct loop over taps with torch-style padding 1: the definition both impls must meet."""
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))
  out_shape = depthwise.output_shape(x.shape, strides)
  out = np.zeros(out_shape, np.float64)
  st, sh, sw = strides
  _, t, h, w, _ = out_shape
  for a in range(3):
    for b in range(3):
      for c in range(3):
        tap = xp[:, a:a + st * t:st, b:b + sh * h:sh, c:c + sw * w:sw]
        out += tap * kernel[a, b, c, 0]
  return out


@pytest.mark.parametrize("shape,strides", CASES)
def test_shifted_matches_native_values_and_grads(shape, strides):
  x, kernel = _inputs(shape)
  g = _cotangent(shape, strides)
  native = _value_and_grads(x, kernel, g, impl="native", strides=strides)
  shifted = _value_and_grads(x, kernel, g, impl="shifted", strides=strides)
  assert native[0].shape == depthwise.output_shape(shape, strides)
  for name, a, b in zip(("y", "dx", "dkernel"), shifted, native):
    assert a.shape == b.shape and a.dtype == b.dtype, name
    assert _rel_err(a, b) < 1e-5, (name, _rel_err(a, b))


@pytest.mark.parametrize("shape,strides", [CASES[2], CASES[4]])
def test_both_impls_match_direct_definition(shape, strides):
  x, kernel = _inputs(shape, seed=1)
  want = _numpy_conv(np.asarray(x, np.float64), np.asarray(kernel, np.float64), strides)
  g = _cotangent(shape, strides)
  for impl in ("native", "shifted"):
    got = _value_and_grads(x, kernel, g, impl=impl, strides=strides)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=impl)


def test_output_sizes_are_ceil_of_input_over_stride():
  assert depthwise.output_shape((2, 25, 7, 7, 4), (1, 2, 2)) == (2, 25, 4, 4, 4)
  assert depthwise.output_shape((2, 25, 28, 28, 4), (1, 2, 2)) == (2, 25, 14, 14, 4)


def test_bfloat16_shifted_keeps_dtype_and_is_close():
  shape, strides = CASES[3]
  x, kernel = _inputs(shape)
  g = _cotangent(shape, strides)
  y32, dx32, dk32 = _value_and_grads(x, kernel, g, impl="native", strides=strides)
  ys, dxs, dks = _value_and_grads(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), g,
                                  impl="shifted", strides=strides)
  for low, ref in ((ys, y32), (dxs, dx32), (dks, dk32)):
    assert low.dtype == jnp.bfloat16
    assert _rel_err(low.astype(jnp.float32), ref) < 2e-2


def test_impl_resolution_and_validation():
  assert depthwise.resolve_impl("auto") == (
      "shifted" if jax.default_backend() == "cpu" else "native")
  assert depthwise.resolve_impl("native") == "native"
  x, kernel = _inputs((1, 3, 4, 4, 2))
  with pytest.raises(ValueError, match="unknown depthwise impl"):
    depthwise.depthwise_conv3d(x, kernel, impl="fast")
  with pytest.raises(ValueError, match="expected kernel"):
    depthwise.depthwise_conv3d(x, kernel[..., :1])
  with pytest.raises(ValueError, match="strides"):
    depthwise.depthwise_conv3d(x, kernel, strides=(1, 2))


def test_module_params_are_identical_across_impls():
  x, _ = _inputs((2, 3, 7, 7, 8))
  variables = {
      impl: jax.jit(depthwise.DepthwiseConv3D(8, (1, 2, 2), impl).init)(jax.random.key(0), x)
      for impl in depthwise.IMPLS
  }
  ref = variables["native"]
  assert jax.tree.map(jnp.shape, ref) == {"params": {"kernel": (3, 3, 3, 1, 8)}}
  for impl, v in variables.items():
    assert jax.tree.structure(v) == jax.tree.structure(ref), impl
    np.testing.assert_array_equal(v["params"]["kernel"], ref["params"]["kernel"])
  outs = {impl: jax.jit(depthwise.DepthwiseConv3D(8, (1, 2, 2), impl).apply)(ref, x)
          for impl in depthwise.IMPLS}
  assert outs["native"].shape == (2, 3, 4, 4, 8)
  for impl, y in outs.items():
    assert _rel_err(y, outs["native"]) < 1e-5, impl


def test_module_layout_is_flax_grouped_conv():
  """Checkpoints are interchangeable with nn.Conv(feature_group_count=C) (torch padding)."""
  x, _ = _inputs((2, 3, 6, 6, 4))
  module = depthwise.DepthwiseConv3D(4, (1, 2, 2), "shifted")
  variables = jax.jit(module.init)(jax.random.key(0), x)
  grouped = nn.Conv(4, (3, 3, 3), strides=(1, 2, 2), padding=((1, 1),) * 3,
                    feature_group_count=4, use_bias=False)
  assert jax.tree.map(jnp.shape, grouped.init(jax.random.key(0), x)) == jax.tree.map(
      jnp.shape, variables)
  want = jax.jit(grouped.apply)(variables, x)
  got = jax.jit(module.apply)(variables, x)
  assert _rel_err(got, want) < 1e-5


def test_module_computes_in_dtype_with_float32_params():
  x, _ = _inputs((1, 2, 4, 4, 4))
  module = depthwise.DepthwiseConv3D(4, dtype=jnp.bfloat16, impl="shifted")
  variables = jax.eval_shape(module.init, jax.random.key(0), x)
  assert variables["params"]["kernel"].dtype == jnp.float32
  assert jax.eval_shape(module.apply, variables, x).dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="channels"):
    jax.eval_shape(module.apply, variables, x[..., :2])

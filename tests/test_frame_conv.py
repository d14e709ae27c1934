"""3D conv with temporal stride 1 as a 2D conv over stacked frames: equal to lax's 3D conv."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fakedet.models import frame_conv


def _reference(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, (1, *strides), padding,
                                  dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
                                  precision=lax.Precision.HIGHEST)


@pytest.mark.parametrize("kernel_shape,strides,padding", [
    ((3, 7, 7, 3, 8), (2, 2), ((1, 1), (3, 3), (3, 3))),  # the CSN stem
    ((3, 3, 3, 4, 5), (1, 1), ((1, 1), (1, 1), (1, 1))),
    ((2, 3, 1, 2, 3), (1, 2), ((0, 1), (1, 1), (0, 0))),  # asymmetric temporal padding
    ((1, 3, 3, 2, 2), (2, 1), ((0, 0), (0, 1), (1, 0))),
])
@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
@pytest.mark.parametrize("impl", ["frames", "native"])
def test_matches_lax_conv3d_values_and_grads(kernel_shape, strides, padding, impl):
  kx, kk = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (2, 5, 11, 10, kernel_shape[3]))
  kernel = jax.random.normal(kk, kernel_shape)
  ours = lambda x, k: frame_conv.conv3d_t1(x, k, strides, padding, impl)
  ref = lambda x, k: _reference(x, k, strides, padding)
  out, expected = jax.jit(ours)(x, kernel), ref(x, kernel)
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
  cot = jax.random.normal(jax.random.key(2), out.shape)
  g = jax.jit(jax.grad(lambda x, k: jnp.vdot(ours(x, k), cot), argnums=(0, 1)))(x, kernel)
  g_ref = jax.grad(lambda x, k: jnp.vdot(ref(x, k), cot), argnums=(0, 1))(x, kernel)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_module_params_match_flax_conv():
  """Same param path, shape and initial values as the nn.Conv it replaces."""
  x = jnp.ones((1, 3, 8, 8, 3))
  ours = frame_conv.FrameConv3D(4, (3, 7, 7), (2, 2), ((1, 1), (3, 3), (3, 3)), "frames")
  flax_conv = nn.Conv(4, (3, 7, 7), strides=(1, 2, 2), padding=((1, 1), (3, 3), (3, 3)),
                      use_bias=False)
  p_ours = ours.init(jax.random.key(0), x)
  p_flax = flax_conv.init(jax.random.key(0), x)
  np.testing.assert_array_equal(p_ours["params"]["kernel"], p_flax["params"]["kernel"])
  np.testing.assert_allclose(ours.apply(p_ours, x), flax_conv.apply(p_flax, x),
                             rtol=1e-5, atol=1e-5)


def test_impl_resolution_and_bad_input():
  assert frame_conv.resolve_impl("auto") == "frames"  # tests run on CPU
  with pytest.raises(ValueError, match="unknown frame-conv impl 'fast'"):
    frame_conv.resolve_impl("fast")
  with pytest.raises(ValueError, match=r"expected x \[B, T, H, W, Cin\]"):
    frame_conv.conv3d_t1(jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 3, 3, 4)), (1, 1),
                         ((1, 1),) * 3)

"""Depthwise 3×3×3 convolution with a choice of two exact implementations.

XLA:CPU has no fast path for grouped convolutions: ``lax.conv_general_dilated`` with
``feature_group_count=C`` runs ~40× slower than PyTorch on CPU (docs: STACK_NOTES.md,
"Performance on XLA:CPU vs PyTorch"). A depthwise kernel is only 27 per-channel weights, so the
same op can be written as 27 shifted multiply-adds, which XLA fuses into one loop:

  "native"   lax.conv_general_dilated(..., feature_group_count=C); fast on GPU/TPU.
  "shifted"  forward = Σ_taps shifted strided slice × per-channel weight, with a custom VJP:
             input gradient = the same shifted sum over the (zero-dilated) cotangent with the
             flipped kernel; kernel gradient = per-tap reductions, one frame at a time
             (``lax.scan`` over B·T') so the working set stays in cache.
  "auto"     "shifted" when ``jax.default_backend()`` is "cpu" at trace time, else "native".

Both compute the same function: x [B, T, H, W, C] → [B, T', H', W', C] with padding 1 on each
side of T, H and W (torch-style, not XLA "SAME", which pads (0, 1) for even sizes at stride 2),
so T' = ceil(T / st), H' = ceil(H / sh), W' = ceil(W / sw). The kernel uses flax's grouped-conv
layout [3, 3, 3, 1, C], so parameters are interchangeable between implementations.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("auto", "native", "shifted")
_K = 3  # kernel size along T, H and W
_PAD = 1  # per side; keeps size at stride 1 and gives ceil(n / s) at stride s

# He init on fan-out (C·27 for a depthwise kernel), as torchvision initialises video ResNets.
HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

Strides = Tuple[int, int, int]


def choose_impl(impl: str, allowed: Sequence[str], cpu_impl: str, what: str) -> str:
  """Validates ``impl`` against ``allowed``; "auto" → ``cpu_impl`` on CPU, "native" elsewhere.

  Shared by the convs that have an XLA:CPU-friendly form besides the native one.
  """
  if impl not in allowed:
    raise ValueError(f"unknown {what} impl {impl!r}; expected one of {tuple(allowed)}")
  if impl == "auto":
    return cpu_impl if jax.default_backend() == "cpu" else "native"
  return impl


def resolve_impl(impl: str) -> str:
  """Maps "auto" to "shifted" on CPU and "native" elsewhere; validates the name."""
  return choose_impl(impl, IMPLS, "shifted", "depthwise")


def output_shape(shape: Sequence[int], strides: Strides) -> Tuple[int, ...]:
  """[B, T, H, W, C] → [B, ceil(T/st), ceil(H/sh), ceil(W/sw), C]."""
  b, *spatial, c = shape
  return (b, *((n - 1) // s + 1 for n, s in zip(spatial, strides)), c)


def depthwise_conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1, 1),
                     impl: str = "auto") -> jax.Array:
  """Depthwise 3×3×3 convolution, padding 1.

  Args:
    x: [B, T, H, W, C].
    kernel: [3, 3, 3, 1, C] (flax grouped-conv layout).
    strides: (st, sh, sw).
    impl: "native", "shifted" or "auto" (see module docstring).

  Returns:
    [B, ceil(T/st), ceil(H/sh), ceil(W/sw), C] in the common dtype of ``x`` and ``kernel``.
  """
  strides = tuple(int(s) for s in strides)
  _check_args(x, kernel, strides)
  dtype = jnp.result_type(x, kernel)
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  if resolve_impl(impl) == "native":
    return _native(x, kernel, strides)
  return _shifted(x, kernel, strides)


def _check_args(x: jax.Array, kernel: jax.Array, strides: Strides) -> None:
  if x.ndim != 5:
    raise ValueError(f"expected x [B, T, H, W, C]; got shape {x.shape}")
  if kernel.shape != (_K, _K, _K, 1, x.shape[-1]):
    raise ValueError(f"expected kernel {(_K, _K, _K, 1, x.shape[-1])} for x {x.shape}; "
                     f"got {kernel.shape}")
  if len(strides) != 3 or min(strides) < 1:
    raise ValueError(f"expected 3 positive strides (t, h, w); got {strides}")


def _native(x: jax.Array, kernel: jax.Array, strides: Strides) -> jax.Array:
  return lax.conv_general_dilated(
      x, kernel, window_strides=strides, padding=((_PAD, _PAD),) * 3,
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), feature_group_count=x.shape[-1])


def _acc_dtype(dtype: Any) -> Any:
  """Accumulate low-precision inputs in float32 (what a conv's accumulator does)."""
  return jnp.promote_types(dtype, jnp.float32)


def _tap(xp: jax.Array, offset: Sequence[int], out_sizes: Sequence[int],
         strides: Sequence[int]) -> jax.Array:
  """Strided slice of ``xp`` over its last len(offset)+1 axes (trailing channel axis kept).

  Leading axes are taken whole; ``offset``/``out_sizes``/``strides`` index the spatial axes.
  """
  lead = xp.ndim - len(offset) - 1
  start = (0,) * lead + tuple(offset) + (0,)
  limit = (xp.shape[:lead] + tuple(o + s * (n - 1) + 1
                                   for o, n, s in zip(offset, out_sizes, strides))
           + (xp.shape[-1],))
  return lax.slice(xp, start, limit, (1,) * lead + tuple(strides) + (1,))


def _shifted_sum(xp: jax.Array, k: jax.Array, out_sizes: Sequence[int],
                 strides: Sequence[int]) -> jax.Array:
  """Σ_{a,b,c} xp[:, a + st·t, b + sh·h, c + sw·w] · k[a, b, c]; xp already padded.

  xp: [B, Tp, Hp, Wp, C]; k: [3, 3, 3, C] → [B, *out_sizes, C]. One fused elementwise loop.
  """
  acc_dtype = _acc_dtype(xp.dtype)
  k = k.astype(acc_dtype)
  acc = None
  for a in range(_K):
    for b in range(_K):
      for c in range(_K):
        term = _tap(xp, (a, b, c), out_sizes, strides).astype(acc_dtype) * k[a, b, c]
        acc = term if acc is None else acc + term
  return acc.astype(xp.dtype)


def _pad_input(x: jax.Array) -> jax.Array:
  cfg = ((0, 0, 0),) + ((_PAD, _PAD, 0),) * 3 + ((0, 0, 0),)
  return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def _forward(x: jax.Array, kernel: jax.Array, strides: Strides) -> jax.Array:
  out_sizes = output_shape(x.shape, strides)[1:4]
  return _shifted_sum(_pad_input(x), kernel[:, :, :, 0], out_sizes, strides)


def _input_grad(g: jax.Array, kernel: jax.Array, in_shape: Sequence[int],
                strides: Strides) -> jax.Array:
  """Transposed conv: dx[t] = Σ_a G[t + a] · k[2 - a], G = g zero-dilated by the stride.

  With gd[j] = g[j / s] (j ≡ 0 mod s), y[o] = Σ_a xp[s·o + a] k[a] gives
  dx[t] = Σ_a gd[t + 1 - a] k[a]; padding gd by 1 in front and up to length n + 2 behind turns
  that into the same stride-1 shifted sum with the flipped kernel.
  """
  spatial = tuple(in_shape[1:4])
  cfg = [(0, 0, 0)]
  for n, m, s in zip(spatial, g.shape[1:4], strides):
    cfg.append((_K - 1 - _PAD, n - s * (m - 1), s - 1))
  cfg.append((0, 0, 0))
  gp = lax.pad(g, jnp.zeros((), g.dtype), cfg)  # [B, T+2, H+2, W+2, C]
  flipped = kernel[::-1, ::-1, ::-1, 0]
  return _shifted_sum(gp, flipped, spatial, (1, 1, 1))


def _kernel_grad(x: jax.Array, g: jax.Array, strides: Strides) -> jax.Array:
  """dk[a, b, c] = Σ_{n, t, h, w} xp[n, st·t + a, sh·h + b, sw·w + c] · g[n, t, h, w].

  Scans over the B·T' output frames; each step reads 3 padded input frames and one cotangent
  frame (a few MB at CSN sizes), so the 27 reductions run from cache. x: [B, T, H, W, C],
  g: [B, T', H', W', C] → [3, 3, 3, 1, C].
  """
  xp = _pad_input(x)
  _, t_out, h_out, w_out, c = g.shape
  st, sh, sw = strides
  acc_dtype = _acc_dtype(x.dtype)

  def step(acc, inputs):
    i, g_frame = inputs
    n, t = i // t_out, i % t_out
    frames = lax.dynamic_slice(xp, (n, st * t, 0, 0, 0), (1, _K) + xp.shape[2:])[0]
    g_frame = g_frame.astype(acc_dtype)
    taps = [[[jnp.sum(_tap(frames[a], (b, c_), (h_out, w_out), (sh, sw)).astype(acc_dtype)
                      * g_frame, axis=(0, 1))
              for c_ in range(_K)] for b in range(_K)] for a in range(_K)]
    return acc + jnp.asarray(taps), None

  num_frames = g.shape[0] * t_out
  g_frames = g.reshape((num_frames, h_out, w_out, c))
  acc0 = jnp.zeros((_K, _K, _K, c), acc_dtype)
  dk, _ = lax.scan(step, acc0, (jnp.arange(num_frames), g_frames))
  return dk[:, :, :, None, :].astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shifted(x: jax.Array, kernel: jax.Array, strides: Strides) -> jax.Array:
  return _forward(x, kernel, strides)


def _shifted_fwd(x, kernel, strides):
  return _forward(x, kernel, strides), (x, kernel)


def _shifted_bwd(strides, residuals, g):
  x, kernel = residuals
  g = g.astype(x.dtype)
  return _input_grad(g, kernel, x.shape, strides), _kernel_grad(x, g, strides)


_shifted.defvjp(_shifted_fwd, _shifted_bwd)


class DepthwiseConv3D(nn.Module):
  """Depthwise 3×3×3 conv (no bias), padding 1: [B, T, H, W, C] → [B, T', H', W', C].

  The ``kernel`` param is [3, 3, 3, 1, C] whatever ``impl`` is, so checkpoints and param counts
  do not depend on the implementation.

  Attributes:
    features: channels C (must equal the input's).
    strides: (st, sh, sw).
    impl: "native", "shifted" or "auto" (see module docstring).
    kernel_init: initialiser for the [3, 3, 3, 1, C] kernel.
    dtype: computation dtype; the kernel param is ``param_dtype``.
  """
  features: int
  strides: Sequence[int] = (1, 1, 1)
  impl: str = "auto"
  kernel_init: Callable[..., jax.Array] = HE_FAN_OUT
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[-1] != self.features:
      raise ValueError(f"input has {x.shape[-1]} channels; module expects {self.features}")
    kernel = self.param("kernel", self.kernel_init, (_K, _K, _K, 1, self.features),
                        self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return depthwise_conv3d(x, kernel, self.strides, self.impl)

"""Loss helpers every objective shares: normalisation, masked means, the BYOL frame term.

Pure functions on device arrays. ``masked_mean`` takes the weights that decide which samples
count, so padded evaluation rows and (stage 2) fake clips in the auxiliary loss never do.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def masked_mean(x: jax.Array, weights: jax.Array) -> jax.Array:
  """Σ x·w / Σ w over all elements (0 when every weight is 0): means over valid samples."""
  return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def frame_byol(target: jax.Array, prediction: jax.Array) -> jax.Array:
  """½‖sg(norm(target)) − norm(prediction)‖² per frame: [B, T, D] → [B, T]."""
  t = jax.lax.stop_gradient(l2_normalize(target))
  return 0.5 * jnp.sum((t - l2_normalize(prediction)) ** 2, axis=-1)


def byol_term(target: jax.Array, prediction: jax.Array) -> jax.Array:
  """``frame_byol`` averaged over samples and frames: [B, T, D] → scalar."""
  return jnp.mean(frame_byol(target, prediction))


def collapse_std(z: jax.Array, valid: jax.Array) -> jax.Array:
  """Collapse monitor: per-dimension std across valid rows of l2-normalised embeddings z
  [B, D], averaged and ×√D (≈1 when spread out, 0 when every row is the same point)."""
  w = valid.astype(jnp.float32)[:, None]
  n = jnp.maximum(jnp.sum(w), 1.0)
  mean = jnp.sum(z * w, 0) / n
  std = jnp.sqrt(jnp.sum(((z - mean) ** 2) * w, 0) / n)
  return jnp.mean(std) * jnp.sqrt(z.shape[-1])

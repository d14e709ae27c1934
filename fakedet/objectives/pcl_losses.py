"""PCL losses (Zhao et al., ICCV 2021, Eq. 2–4): consistency targets from forgery masks, the
volume BCE, the classification BCE and their sum L = λ·L_pcl + L_cls (λ = 10, §4.1).

Pure functions on device arrays (jax/optax/numpy only). Each loss returns ``(loss, metrics)``
and takes ``valid`` [B], so padded samples of a last batch count for nothing:

  downsample_mask      soft mask M [B, H, W] → patch grid [B, H′, W′] (average per patch)
  consistency_target   Eq. 2: G[i, j] = 1 − |M_i − M_j| → [B, N, N]
  volume_bce           Eq. 3: BCE over all N² entries, from the volume logits
  classification_bce   L_cls, from the fake logit
  pcl_total_loss       Eq. 4

The mask's value is the fraction of a pixel taken from the source face (I2G's blended mask, or
the thresholded DSSIM mask of a dataset fake). A real image has an all-zero mask; any constant
mask gives the all-ones target, which is what §4.2 prescribes for real frames.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

Metrics = Dict[str, jax.Array]
PCL_WEIGHT = 10.0  # λ of Eq. 4, §4.1 ("set to be 10 by default"; Table 7).


def masked_mean(values: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean of values [B] over the samples where ``valid`` [B] is true; 0 when none is."""
  w = valid.astype(jnp.float32)
  return jnp.sum(values.astype(jnp.float32) * w) / jnp.maximum(jnp.sum(w), 1.0)


def downsample_mask(mask: jax.Array, grid: Sequence[int]) -> jax.Array:
  """Soft mask [B, H, W] in [0, 1] → [B, H′, W′]: the mean of each patch's H/H′ × W/W′ pixels.

  The paper says "bi-linear down-sampling"; at a 16× reduction, bilinear resampling without
  anti-aliasing reads only the 2×2 pixels around each patch centre, so a blend edge or a small
  region would be labelled by a few pixels. The patch average is the fraction of the patch's
  pixels that are fake, which is what a patch-level consistency label should say. H, W must be
  multiples of H′, W′ (256 / 16 in the paper).
  """
  b, h, w = mask.shape
  gh, gw = grid
  if h % gh or w % gw:
    raise ValueError(f"mask {h}×{w} is not a whole number of {gh}×{gw} patches")
  patches = mask.astype(jnp.float32).reshape(b, gh, h // gh, gw, w // gw)
  return jnp.mean(patches, axis=(2, 4))


def consistency_target(coarse: jax.Array) -> jax.Array:
  """Eq. 2 for every base patch: coarse mask [B, H′, W′] → V [B, N, N], N = H′W′ (row-major),
  V[i, j] = 1 − |M_i − M_j|: 1 for two patches from the same source, 0 across sources."""
  m = coarse.reshape(coarse.shape[0], -1)
  return 1.0 - jnp.abs(m[:, :, None] - m[:, None, :])


def volume_bce(volume_logits: jax.Array, target: jax.Array,
               valid: jax.Array) -> Tuple[jax.Array, Metrics]:
  """Eq. 3: BCE(V, σ(logits)) averaged over the N² entries of each sample, then over the valid
  samples. volume_logits, target: [B, N, N]; soft targets allowed. Computed from logits with
  log-sigmoid, so saturated scores give finite losses and gradients.

  Metrics: ``pcl_loss``; ``volume_mae`` = mean |σ(logit) − V| (0 for a perfect volume, while
  the BCE of a soft target stays above the target's entropy).
  """
  target = target.astype(jnp.float32)
  per = optax.sigmoid_binary_cross_entropy(volume_logits.astype(jnp.float32), target)
  loss = masked_mean(jnp.mean(per, axis=(1, 2)), valid)
  mae = jnp.mean(jnp.abs(jax.nn.sigmoid(volume_logits.astype(jnp.float32)) - target),
                 axis=(1, 2))
  return loss, {"pcl_loss": loss, "volume_mae": masked_mean(mae, valid)}


def classification_bce(logit: jax.Array, label: jax.Array,
                       valid: jax.Array) -> Tuple[jax.Array, Metrics]:
  """L_cls: BCE of σ(logit [B]) against label [B] (1 = fake), mean over valid samples. The
  paper's two-class CE on logits [a, b] equals this BCE on z = b − a.

  Metrics: ``cls_loss``, ``cls_accuracy`` (logit > 0 means fake).
  """
  label = label.astype(jnp.float32)
  per = optax.sigmoid_binary_cross_entropy(logit.astype(jnp.float32), label)
  loss = masked_mean(per, valid)
  correct = ((logit > 0).astype(jnp.float32) == label).astype(jnp.float32)
  return loss, {"cls_loss": loss, "cls_accuracy": masked_mean(correct, valid)}


def pcl_total_loss(volume_logits: jax.Array, logit: jax.Array, mask: jax.Array,
                   label: jax.Array, valid: jax.Array, grid: Sequence[int],
                   pcl_weight: float = PCL_WEIGHT) -> Tuple[jax.Array, Metrics]:
  """Eq. 4: L = λ·L_pcl + L_cls.

  Args:
    volume_logits: [B, N, N] the model's Eq. 1 logits, N = H′W′.
    logit: [B] the model's fake logit.
    mask: [B, H, W] soft forgery mask in [0, 1] (all zero for real images).
    label: [B] 1 = fake, 0 = real.
    valid: [B] false for padding samples, which then contribute nothing.
    grid: (H′, W′), the patch grid of the volume (the model's ``heatmap`` shape).
    pcl_weight: λ.
  Returns:
    (loss, metrics) with ``loss``, ``pcl_loss``, ``volume_mae``, ``cls_loss``, ``cls_accuracy``.
  """
  gh, gw = grid
  if volume_logits.shape[1:] != (gh * gw, gh * gw):
    raise ValueError(f"volume_logits {volume_logits.shape} do not match a {gh}×{gw} grid")
  target = consistency_target(downsample_mask(mask, grid))
  l_pcl, m_pcl = volume_bce(volume_logits, target, valid)
  l_cls, m_cls = classification_bce(logit, label, valid)
  loss = pcl_weight * l_pcl + l_cls
  return loss, {"loss": loss, **m_pcl, **m_cls}

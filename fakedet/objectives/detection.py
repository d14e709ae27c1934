"""Loss pieces of the supervised detectors (RealForensics stage 2 §3.2, B.3; FakeOut §3.2).

Pure functions on device arrays, each taking the masks that decide which samples count:

  fake_prior            π = fraction of fakes among the batch's valid samples (Eq. 5)
  logit_adjusted_bce    BCE on s·cos + log(π / (1 − π)) — logit adjustment for class imbalance
  masked_frame_byol     Eq. 3: ½‖norm(target) − norm(prediction)‖² per frame, averaged over the
                        frames of the samples in ``mask`` only (stage 2: real samples only)

The cosine classifier itself is a head (``fakedet.models.heads.CosineClassifier``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fakedet.objectives.losses import frame_byol, masked_mean


def fake_prior(labels: jax.Array, valid: jax.Array, eps: float = 1e-3) -> jax.Array:
  """π = (#fake valid samples) / (#valid samples), kept inside (eps, 1 − eps) so the log-odds
  stay finite for a batch that happens to be all real or all fake."""
  pi = masked_mean((labels == 1).astype(jnp.float32), valid.astype(jnp.float32))
  return jnp.clip(pi, eps, 1.0 - eps)


def logit_adjusted_bce(logits: jax.Array, labels: jax.Array, prior: jax.Array,
                       valid: jax.Array) -> jax.Array:
  """Mean over valid samples of BCE(σ(logit + log(π/(1−π))), label): logits, labels [B].

  Adding the log prior odds during training (Menon et al.'s logit adjustment) makes the learned
  logit estimate the balanced log-odds, so at test time the raw logit (no adjustment) is used.
  """
  adjusted = logits + jnp.log(prior) - jnp.log1p(-prior)
  per = optax.sigmoid_binary_cross_entropy(adjusted, labels.astype(jnp.float32))
  return masked_mean(per, valid.astype(jnp.float32))


def masked_frame_byol(target: jax.Array, prediction: jax.Array, mask: jax.Array) -> jax.Array:
  """½‖sg(norm(target)) − norm(prediction)‖² per frame, averaged over the frames of the samples
  where ``mask`` [B] is true; 0 when no sample is selected. target, prediction: [B, T, D]."""
  per_sample = jnp.mean(frame_byol(target, prediction), axis=-1)
  return masked_mean(per_sample, mask.astype(jnp.float32))

"""PCL: patch-wise consistency learning (Zhao et al., ICCV 2021, §3.1, Fig. 2–3).

A forged face is stitched from patches of different sources, so a model that can tell whether
two patches share a source can detect (and localise) the forgery. On the backbone's feature map
F [B, H′, W′, C] (ResNet-34 layer3: H/16, C = 256) the consistency branch scores every pair of
the N = H′W′ patches (Eq. 1):

  V̂[i, j] = σ(θ(f_i) · φ(f_j) / √C′),   θ, φ: 1×1 convs C → C′,

a 4D volume H′×W′×H′×W′, kept here flattened as [B, N, N] (row i = base patch). The
classification branch scores the whole image from F. Losses (Eq. 2–4) live in
``fakedet.objectives.pcl_losses``.

Where the paper is silent:
  C′ (``embed_dim``): not stated in the text (Fig. 3 draws it). Default 128 = C/2, the choice of
    non-local networks [57], whose dot-product similarity Eq. 1 cites. θ and φ keep torch's
    default conv bias.
  classifier: §3.1 says F "is fed into another convolution operation", then global average
    pooling and an FC; §4.5 says λ = 0 gives "a network architecture equivalent to vanilla
    ResNet-34". Both hold when that convolution is ResNet-34's remaining stage (layer4), so the
    default "backbone" classifies the backbone's ``pooled`` output (GAP of layer4, ImageNet
    initialised). "conv" is the literal alternative: one 3×3 conv-BN-ReLU (``cls_features``) on
    F, then GAP and FC; use it with a 3-stage backbone. One logit replaces the paper's two-class
    softmax: the two are equivalent (softmax CE of [0, z] is the BCE of z).
  heatmap: the paper "fuses the volume over all patches" without a formula. Here patch j's
    inconsistency is 1 − mean over base patches i of V̂[i, j]. With a perfect volume a fake patch
    scores the real area fraction and a real patch the fake fraction, so the fake region is the
    hot one whenever it covers less than half the face (consistency alone cannot say which
    side is fake).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fakedet import models
from fakedet.models import MODELS


def consistency_logits(theta: jax.Array, phi: jax.Array) -> jax.Array:
  """Eq. 1 before the sigmoid: θ [B, H′, W′, C′], φ [B, H′, W′, C′] → [B, N, N], N = H′W′,
  entry [i, j] = θ_i · φ_j / √C′ (row-major patch order). Computed in float32: the N² logits
  feed a BCE, and the matmul is tiny next to the backbone (256² × 128 MACs per image)."""
  b, h, w, c = theta.shape
  q = theta.reshape(b, h * w, c).astype(jnp.float32)
  k = phi.reshape(b, h * w, c).astype(jnp.float32)
  return jnp.einsum("bic,bjc->bij", q, k) / math.sqrt(c)


def inconsistency_heatmap(volume: jax.Array, grid: Sequence[int]) -> jax.Array:
  """Per-patch inconsistency for visualisation: volume [B, N, N] in [0, 1] → [B, H′, W′] with
  entry j = mean over base patches i of 1 − V[i, j]; ``grid`` = (H′, W′), H′W′ = N."""
  h, w = grid
  if volume.shape[-1] != h * w:
    raise ValueError(f"volume {volume.shape} does not hold {h}×{w} patches")
  return (1.0 - jnp.mean(volume, axis=1)).reshape(volume.shape[0], h, w)


def upsample_heatmap(heatmap: jax.Array, size: Sequence[int]) -> jax.Array:
  """[B, H′, W′] → [B, H, W] by bilinear interpolation (half-pixel centres, as torch's
  ``align_corners=False``), to overlay the patch heatmap on the input image (§3.1, Fig. 5)."""
  return jax.image.resize(heatmap, (heatmap.shape[0], *size), method="linear")


class PCL(nn.Module):
  """Backbone + consistency branch + classification branch (module docstring).

  Attributes:
    backbone: model spec ``{"name": registered_name, **kwargs}`` whose outputs include
      ``features`` [B, H′, W′, C] and, for classifier "backbone", ``pooled`` [B, C2]; the paper's
      is ``{"name": "resnet34"}``.
    embed_dim: C′, the width of θ and φ.
    classifier: "backbone" (FC on the backbone's ``pooled``) or "conv" (conv-BN-ReLU on
      ``features``, GAP, FC).
    cls_features: the "conv" classifier's channels.
    dtype: computation dtype of the heads (a jnp dtype or its name); the backbone takes its own
      from its spec. Volume logits are float32 regardless.
  """
  backbone: Mapping[str, Any]
  embed_dim: int = 128
  classifier: str = "backbone"
  cls_features: int = 512
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Normalised face crop [B, H, W, 3] → dict of

      features: [B, H′, W′, C] backbone map (H′ = H/16, C = 256 for ResNet-34);
      volume_logits: [B, N, N] Eq. 1 before the sigmoid, N = H′W′ (for a stable BCE);
      volume: [B, N, N] consistency scores in [0, 1], row i = base patch;
      heatmap: [B, H′, W′] per-patch inconsistency in [0, 1] (``inconsistency_heatmap``);
      pooled: [B, D] the classifier's input;
      logit: [B] fake-vs-real logit (σ(logit) = P(fake)).
    """
    if self.classifier not in ("backbone", "conv"):
      raise ValueError(f"pcl classifier={self.classifier!r}; allowed: backbone, conv")
    dtype = jnp.dtype(self.dtype)
    out = models.build(self.backbone, "backbone")(image, train=train)
    f = out["features"]
    embed = lambda name: nn.Conv(self.embed_dim, (1, 1), dtype=dtype, name=name)(f)
    logits = consistency_logits(embed("theta"), embed("phi"))
    volume = jax.nn.sigmoid(logits)

    if self.classifier == "backbone":
      pooled = out["pooled"]
    else:
      y = nn.Conv(self.cls_features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                  dtype=dtype, name="cls_conv")(f)
      y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                       name="cls_bn")(y)
      pooled = jnp.mean(nn.relu(y), axis=(1, 2))
    logit = nn.Dense(1, dtype=dtype, name="classifier")(pooled)[:, 0]
    return {"features": f, "volume_logits": logits, "volume": volume,
            "heatmap": inconsistency_heatmap(volume, f.shape[1:3]), "pooled": pooled,
            "logit": logit}


MODELS.register("pcl")(PCL)

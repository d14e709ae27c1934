"""Per-frame projectors and predictors of RealForensics stage 1 (§3.1, B.3, Table 12).

Every head maps a frame sequence [B, T, C] → [B, T, D] and is chosen by name from ``HEADS``:

  conv_projector         1×1 conv (= per-frame Dense) → BN, D = 256 (paper default, "Linear")
  transformer_predictor  1-block ViT-style encoder, BN instead of LN before the MLP (default)
  mlp_projector          3-layer MLP, every layer followed by BN (Table 12 ablation)
  mlp_predictor          2-layer MLP bottleneck (Table 12 ablation)

and ``cosine_classifier`` (stage 2's supervised head, Eq. 5) maps a pooled feature [B, C] → [B].

BatchNorm normalises over batch AND time (a per-frame BN1d), with torch's momentum and epsilon.
Where the paper is silent, the layout follows the authors' released code (ahaliassos/RealForensics,
``stage1/models/{mlps,transformer}.py``); each class docstring says where that matters.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from fakedet.registry import Registry

HEADS = Registry("head")


def _bn(train: bool, dtype: Any, name: str, affine: bool = True) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      use_scale=affine, use_bias=affine, dtype=dtype, name=name)


def _check_frames(x: jax.Array) -> None:
  if x.ndim != 3:
    raise ValueError(f"heads take frame sequences [B, T, C]; got shape {x.shape}")


@HEADS.register("conv_projector")
class ConvProjector(nn.Module):
  """The paper's projector: a 1×1 convolution to ``features`` channels, then BN.

  On [B, T, C] a 1×1 conv1d is a per-frame Dense. The bias is kept (``use_bias``) because both
  torch's Conv1d/Linear default and the authors' LinearProjector have one, so parameter counts
  match theirs (C·D + 3·D with BN); it is redundant in training, where BN removes any constant
  shift (its gradient is zero), and only shifts outputs relative to the running mean in eval.
  """
  features: int = 256
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool,
               bn_mask: Optional[jax.Array] = None) -> jax.Array:
    """[B, T, C] → [B, T, features]; frames never interact except through BN batch stats
    (taken over the clips where ``bn_mask`` [B] is True, when given: see `csn.CSN`)."""
    _check_frames(x)
    x = nn.Dense(self.features, use_bias=self.use_bias, dtype=self.dtype, name="dense")(x)
    mask = None if bn_mask is None else jnp.broadcast_to(bn_mask[:, None, None], x.shape)
    return _bn(train, self.dtype, "bn")(x, mask=mask)


class _Attention(nn.Module):
  """Multi-head self-attention over frames: [B, T, W] → [B, T, W].

  The q/k/v width is ``num_heads · head_dim`` (512 in the paper), independent of the model width.
  """
  num_heads: int
  head_dim: int
  qkv_bias: bool
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, width = x.shape
    qkv = nn.Dense(3 * self.num_heads * self.head_dim, use_bias=self.qkv_bias, dtype=self.dtype,
                   name="qkv")(x)
    q, k, v = jnp.split(qkv.reshape(b, t, 3 * self.num_heads, self.head_dim), 3, axis=2)
    y = nn.dot_product_attention(q, k, v, dtype=self.dtype)  # scale 1/√head_dim
    return nn.Dense(width, dtype=self.dtype, name="out")(y.reshape(b, t, -1))


class _FeedForward(nn.Module):
  """Dense(mlp_dim) → GELU → Dense(width): [B, T, W] → [B, T, W]."""
  mlp_dim: int
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(x)
    y = nn.gelu(y, approximate=False)  # torch nn.GELU is the exact (erf) form
    return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(y)


@HEADS.register("transformer_predictor")
class TransformerPredictor(nn.Module):
  """The paper's predictor: a 1-block ViT-style transformer encoder over frames.

  Block (pre-norm): x + Attn(LN(x)), then x + MLP(BN(x)); the BN before the MLP replaces ViT's
  LayerNorm (the paper's change), LN before attention is kept. 8 heads × 64 dims, MLP 2048.

  The paper does not give the model width. With ``io_projections`` (default) the layout is the
  authors' released one: a Dense in-projection to ``width`` (default num_heads·head_dim = 512),
  the block at that width, then a BN + Dense head back to ``out_features`` (default: the input
  width, 256), as a ViT embeds patches and ends in a norm + linear head. 3,414,784 params at
  paper size. ``io_projections=False`` is the minimal reading: the block runs at the input width
  (256) and there is no in-projection or head. In training, biases feeding only into a BN-
  normalised path (attention/MLP output biases when a head follows) get zero gradient.

  The paper mentions no positional embedding and the authors' code has none, so
  ``use_pos_emb`` defaults to False (frames are told apart by their content, which the temporal
  backbones already mix); True adds a learned embedding for up to ``max_len`` frames.
  """
  num_heads: int = 8
  head_dim: int = 64
  mlp_dim: int = 2048
  width: Optional[int] = None
  out_features: Optional[int] = None
  io_projections: bool = True
  qkv_bias: bool = False  # the authors' code (vit-pytorch) has none; original ViT has one
  use_pos_emb: bool = False
  max_len: int = 64
  dtype: Any = jnp.float32

  def _widths(self, in_features: int):
    """(model width, output width) for an input of ``in_features`` channels."""
    if self.io_projections:
      return (self.width or self.num_heads * self.head_dim, self.out_features or in_features)
    if {self.width, self.out_features} - {None, in_features}:
      raise ValueError(f"io_projections=False runs the block at the input width {in_features}; "
                       f"got width={self.width}, out_features={self.out_features}")
    return in_features, in_features

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B, T, C] → [B, T, out_features]; attention lets every frame see the whole clip."""
    _check_frames(x)
    width, out = self._widths(x.shape[-1])
    if self.io_projections:
      x = nn.Dense(width, dtype=self.dtype, name="embed")(x)
    if self.use_pos_emb:
      x = x + self._pos_emb(x.shape[1], width)
    x = x + _Attention(self.num_heads, self.head_dim, self.qkv_bias, self.dtype, name="attn")(
        nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="attn_norm")(x))
    x = x + _FeedForward(self.mlp_dim, self.dtype, name="mlp")(
        _bn(train, self.dtype, "mlp_norm")(x))
    if self.io_projections:
      x = _bn(train, self.dtype, "head_norm")(x)
      x = nn.Dense(out, dtype=self.dtype, name="head")(x)
    return x

  def _pos_emb(self, length: int, width: int) -> jax.Array:
    if length > self.max_len:
      raise ValueError(f"{length} frames exceed the position embedding's max_len={self.max_len}")
    table = self.param("pos_embedding", nn.initializers.normal(0.02), (self.max_len, width))
    return table[:length].astype(self.dtype)


@HEADS.register("mlp_projector")
class MLPProjector(nn.Module):
  """Ablation projector (B.3, after SimSiam [22]): 3 per-frame Dense layers, each then BN.

  Dense(hidden) → BN → ReLU → Dense(hidden) → BN → ReLU → Dense(features) → BN; no ReLU at the
  output. Dense biases and an affine output BN follow the authors' MLPProjector (SimSiam itself
  drops the biases and makes the last BN non-affine). ``features`` defaults to 256, the
  authors' ablation config (projection_size) rather than SimSiam's 2048, so projector names can
  be swapped without touching the predictor.
  """
  features: int = 256
  hidden_dim: int = 2048
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B, T, C] → [B, T, features]."""
    _check_frames(x)
    for i, dim in enumerate((self.hidden_dim, self.hidden_dim, self.features)):
      if i:
        x = nn.relu(x)
      x = nn.Dense(dim, dtype=self.dtype, name=f"dense{i + 1}")(x)
      x = _bn(train, self.dtype, f"bn{i + 1}")(x)
    return x


@HEADS.register("mlp_predictor")
class MLPPredictor(nn.Module):
  """Ablation predictor (B.3, after SimSiam [22]): per-frame bottleneck MLP.

  Dense(hidden_dim=512) → BN → ReLU → Dense(out_features); no BN or ReLU at the output. The
  paper says "output dimension 2048" (SimSiam's projection size); the prediction must match the
  target's width, so ``out_features`` defaults to the input width, as in the authors' code.
  """
  hidden_dim: int = 512
  out_features: Optional[int] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B, T, C] → [B, T, out_features or C]."""
    _check_frames(x)
    out = self.out_features or x.shape[-1]
    y = nn.Dense(self.hidden_dim, dtype=self.dtype, name="dense1")(x)
    y = nn.relu(_bn(train, self.dtype, "bn1")(y))
    return nn.Dense(out, dtype=self.dtype, name="dense2")(y)


@HEADS.register("cosine_classifier")
class CosineClassifier(nn.Module):
  """Stage 2's supervised head (Eq. 5): logit = s · w·e / (‖w‖‖e‖), no bias, s = 64.

  Normalising both the feature and the weight makes the logit a scaled cosine, the same
  geometry as the auxiliary loss, which the paper found combines better with it.
  """
  scale: float = 64.0
  eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """[B, C] → logits [B]."""
    del train
    if x.ndim != 2:
      raise ValueError(f"cosine_classifier takes pooled features [B, C]; got shape {x.shape}")
    w = self.param("weight", nn.initializers.normal(0.01), (x.shape[-1],))
    unit = lambda v: v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, axis=-1, keepdims=True),
                                                    self.eps ** 2))
    return self.scale * jnp.sum(unit(x.astype(self.dtype)) * unit(w.astype(self.dtype)), axis=-1)

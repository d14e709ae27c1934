"""Vision Transformer pieces for RFFR: a ViT encoder that can encode a subset of patches, the
MAE decoder, and the masked autoencoder built from both.

RFFR (Shi et al.) needs two things a plain classifier ViT does not give: stage 1 is an MAE-Base
inpainter that encodes only the visible patches and decodes the full grid, and stage 2's
detector branches encode only the selected blocks' patches while "each patch is aided with its
own position embedding" (§3.3). Both reduce to one encoder that adds each patch's full-image
position embedding BEFORE dropping patches (MAE's encoder order), so a subset is encoded exactly
as if the other patches had been removed from the full image.

Layouts follow the released parameter names so checkpoints convert one-to-one
(``fakedet.importers.mae``): timm's ``VisionTransformer`` and facebookresearch/mae's
``MaskedAutoencoderViT`` share the encoder (``patch_embed`` conv 16/16, ``cls_token``,
``pos_embed``, pre-LN ``blocks`` with fused-qkv attention and a 4× GELU MLP, final ``norm``; LN
eps 1e-6, exact-erf GELU as torch's ``nn.GELU``). Position embeddings are either learned (timm
ViT; ImageNet weights, RFFR's detector) or MAE's fixed 2-D sin-cos table (a constant here, not
a parameter, so an optimizer can never move it). Neither RFFR nor MAE-Base pretraining uses
dropout or drop-path (timm's defaults are 0), so ``train`` changes nothing.

Two ways to choose the encoded patches (both keep each patch's own position embedding):
  ``ids_keep`` [B, K] int  patch indices gathered before the blocks: K is static, compute ∝ K
                           (MAE's encoder; the order of ``ids_keep`` is the token order);
  ``keep``     [B, N] bool every patch runs through the blocks but dropped ones are masked out
                           of attention as keys: a per-sample, jit-friendly variable count; kept
                           tokens match the gathered version, dropped tokens are zeroed.

Sizes at 224 px: ``VIT_B16`` 85,798,656 params (timm vit_base_patch16_224 without head);
``MAE_BASE`` 111,655,680 trainable (encoder 85,647,360 without the fixed pos_embed + decoder
26,008,320), i.e. 111,907,840 with MAE's two fixed sin-cos tables, as in MAE's checkpoint.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fakedet.models import MODELS

LN_EPS = 1e-6  # timm ViT and MAE both build LayerNorm with eps 1e-6

# Model sizes (module kwargs). ViT-B/16 = MAE-Base's encoder; MAE-Base's decoder is 512 wide,
# 8 deep, 16 heads (MAE §A.1, ``mae_vit_base_patch16_dec512d8b``).
VIT_B16 = dict(image_size=224, patch_size=16, width=768, depth=12, num_heads=12, mlp_dim=3072)
MAE_BASE_DECODER = dict(width=512, depth=8, num_heads=16, mlp_dim=2048)
MAE_BASE = dict(**VIT_B16, decoder_width=512, decoder_depth=8, decoder_num_heads=16,
                decoder_mlp_dim=2048)
# Tiny sizes for tests and demos: 64-px images, 4×4 patches of 16 px.
VIT_TINY = dict(image_size=64, patch_size=16, width=32, depth=2, num_heads=4, mlp_dim=128)
MAE_TINY = dict(**VIT_TINY, decoder_width=24, decoder_depth=2, decoder_num_heads=2,
                decoder_mlp_dim=96)

# MAE initialises every Linear (and the patch conv seen as a Linear) with xavier-uniform and
# zero bias, cls/mask tokens and learned embeddings with N(0, 0.02).
_DENSE_INIT = nn.initializers.xavier_uniform()
_TOKEN_INIT = nn.initializers.normal(0.02)


def _patch_kernel_init(key, shape, dtype=jnp.float32):
  """xavier-uniform on the conv kernel viewed as a [p·p·C, D] Linear (MAE's patch-embed init);
  flax's own xavier on a conv kernel would also count the receptive field in fan-out."""
  flat = _DENSE_INIT(key, (int(np.prod(shape[:-1])), shape[-1]), dtype)
  return flat.reshape(shape)


# ----------------------------------------------------------------------------- helpers
def sincos_pos_embed(grid_size: int, width: int) -> np.ndarray:
  """MAE's fixed 2-D sin-cos position table for a square grid: [grid², width] float32.

  Row r·grid + c (raster order) is the patch in grid row r, column c. The first width/2 channels
  encode the column c, the second half the row r (MAE passes ``meshgrid(w, h)``, so its "h"
  half is the column); each half is [sin(c·ω), cos(c·ω)] with ω_d = 10000^(-d / (width/4)),
  d = 0 … width/4 − 1. The class token's entry (not included here) is all zeros.
  """
  if width % 4:
    raise ValueError(f"sin-cos position embeddings need width divisible by 4; got {width}")
  omega = 1.0 / 10000 ** (np.arange(width // 4, dtype=np.float64) / (width / 4))
  rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")

  def half(pos: np.ndarray) -> np.ndarray:
    angles = pos.reshape(-1, 1).astype(np.float64) * omega[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

  return np.concatenate([half(cols), half(rows)], axis=1).astype(np.float32)


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """[B, H, W, C] → [B, N, p·p·C], patches in raster order, each flattened as (row, col, C):
  MAE's ``patchify`` layout, so ``pred`` targets and MAE checkpoints' ``decoder_pred`` agree."""
  b, h, w, c = images.shape
  p = patch_size
  if h % p or w % p:
    raise ValueError(f"image {h}×{w} is not divisible into {p}-px patches")
  x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: jax.Array, patch_size: int, channels: int = 3) -> jax.Array:
  """Inverse of ``patchify`` for a square grid: [B, N, p·p·C] → [B, √N·p, √N·p, C]."""
  b, n, _ = patches.shape
  g = int(round(n ** 0.5))
  if g * g != n:
    raise ValueError(f"unpatchify needs a square patch grid; got {n} patches")
  p = patch_size
  x = patches.reshape(b, g, g, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, g * p, g * p, channels)


def keep_to_ids(keep: jax.Array, num_keep: int) -> jax.Array:
  """Boolean patch mask [B, N] with exactly ``num_keep`` True per row → their indices [B, K] in
  raster order (a stable sort puts kept patches first), for the gathering (``ids_keep``) path.
  Rows with more True entries are cut to the first ``num_keep``; callers guarantee the count."""
  order = jnp.argsort(jnp.logical_not(keep).astype(jnp.int8), axis=1, stable=True)
  return order[:, :num_keep]


def _check_selection(n: int, keep: Optional[jax.Array], ids_keep: Optional[jax.Array]) -> None:
  if keep is not None and ids_keep is not None:
    raise ValueError("pass either keep (boolean [B, N]) or ids_keep (indices [B, K]), not both")
  if keep is not None and (keep.ndim != 2 or keep.shape[1] != n or keep.dtype != jnp.bool_):
    raise ValueError(f"keep must be a boolean [B, {n}] patch mask; got {keep.dtype}{keep.shape}")
  if ids_keep is not None and (ids_keep.ndim != 2 or
                               not jnp.issubdtype(ids_keep.dtype, jnp.integer)):
    raise ValueError(f"ids_keep must be integer patch indices [B, K]; got "
                     f"{ids_keep.dtype}{ids_keep.shape}")


def _gather(tokens: jax.Array, ids: jax.Array) -> jax.Array:
  """tokens [B, N, D], ids [B, K] → [B, K, D]."""
  return jnp.take_along_axis(tokens, ids[..., None].astype(jnp.int32), axis=1)


def _attention_mask(keep: Optional[jax.Array], num_prefix: int) -> Optional[jax.Array]:
  """Key mask [B, 1, 1, prefix + N] (True = may be attended to); prefix tokens always count."""
  if keep is None:
    return None
  prefix = jnp.ones((keep.shape[0], num_prefix), jnp.bool_)
  return jnp.concatenate([prefix, keep], axis=1)[:, None, None, :]


# ----------------------------------------------------------------------------- layers
class Attention(nn.Module):
  """Multi-head self-attention with one fused qkv Dense: [B, L, D] → [B, L, D].

  qkv's outputs are laid out (3, heads, head_dim), as timm's ``attn.qkv``, so its weight
  converts by a transpose. Scale 1/√head_dim. ``mask`` [B, 1, 1, L] hides keys.
  """
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    b, length, width = x.shape
    if width % self.num_heads:
      raise ValueError(f"width {width} is not divisible by {self.num_heads} heads")
    qkv = nn.Dense(3 * width, kernel_init=_DENSE_INIT, dtype=self.dtype, name="qkv")(x)
    qkv = qkv.reshape(b, length, 3, self.num_heads, width // self.num_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    y = nn.dot_product_attention(q, k, v, mask=mask, dtype=self.dtype)
    return nn.Dense(width, kernel_init=_DENSE_INIT, dtype=self.dtype,
                    name="proj")(y.reshape(b, length, width))


class MLP(nn.Module):
  """fc1 → GELU (exact, erf) → fc2: [B, L, D] → [B, L, D]."""
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.Dense(self.mlp_dim, kernel_init=_DENSE_INIT, dtype=self.dtype, name="fc1")(x)
    y = nn.gelu(y, approximate=False)  # torch nn.GELU's default is the erf form
    return nn.Dense(x.shape[-1], kernel_init=_DENSE_INIT, dtype=self.dtype, name="fc2")(y)


class Block(nn.Module):
  """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)); [B, L, D] → [B, L, D]."""
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    ln = lambda name: nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name=name)
    x = x + Attention(self.num_heads, self.dtype, name="attn")(ln("norm1")(x), mask)
    return x + MLP(self.mlp_dim, self.dtype, name="mlp")(ln("norm2")(x))


# ----------------------------------------------------------------------------- models
class ViTEncoder(nn.Module):
  """ViT encoder (timm / MAE layout) over all patches or a subset of them.

  Attributes:
    image_size: square input side in px (fixes the position table; 224 in RFFR).
    patch_size: patch side in px (16).
    width, depth, num_heads, mlp_dim: transformer size (``VIT_B16``: 768, 12, 12, 3072).
    pos_embed: "learned" (timm ViT, a [1, 1+N, D] parameter) or "sincos" (MAE's fixed table).
    dtype: computation dtype (a jnp dtype or its name, e.g. "bfloat16"); params stay float32.
  """
  image_size: int = 224
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  pos_embed: str = "learned"
  dtype: Any = jnp.float32

  @property
  def grid_size(self) -> int:
    return self.image_size // self.patch_size

  @property
  def num_patches(self) -> int:
    return self.grid_size ** 2

  def _check_images(self, images: jax.Array) -> None:
    if self.image_size % self.patch_size:
      raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size "
                       f"{self.patch_size}")
    if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
      raise ValueError(f"expected images [B, {self.image_size}, {self.image_size}, 3]; got "
                       f"shape {images.shape}")

  def _positions(self) -> jax.Array:
    """[1, 1 + N, D] position table; entry 0 is the class token's."""
    shape = (1, 1 + self.num_patches, self.width)
    if self.pos_embed == "learned":
      return self.param("pos_embed", _TOKEN_INIT, shape)
    if self.pos_embed == "sincos":
      table = sincos_pos_embed(self.grid_size, self.width)
      return jnp.asarray(np.concatenate([np.zeros((1, self.width), np.float32), table]))[None]
    raise ValueError(f"pos_embed must be 'learned' or 'sincos'; got {self.pos_embed!r}")

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool, keep: Optional[jax.Array] = None,
               ids_keep: Optional[jax.Array] = None,
               use_cls: bool = True) -> Dict[str, jax.Array]:
    """Images [B, H, W, 3] (H = W = image_size) → dict of

      tokens: [B, 1 + K, D] after the final norm: the class token, then the encoded patches
        (K = N without a selection, K = ids_keep.shape[1] with ``ids_keep``, K = N with
        ``keep``, where dropped patches' tokens are zeros);
      cls: [B, D] = tokens[:, 0] (absent with ``use_cls=False``);
      patch_tokens: [B, K, D] = tokens[:, 1:].

    ``keep`` [B, N] bool or ``ids_keep`` [B, K] int select patches (module docstring); each
    selected patch keeps its full-image position embedding. ``use_cls=False`` leaves the class
    token out of the sequence (RFFR's released detector does; see ``rffr.DualBranchViT``), and
    then ``tokens`` = ``patch_tokens``. Pixel scale is the caller's: RFFR feeds the MAE [0, 1]
    RGB and the detector's original branch ImageNet-normalised RGB.
    """
    del train  # no dropout or drop-path in RFFR / MAE-Base (module docstring)
    self._check_images(images)
    _check_selection(self.num_patches, keep, ids_keep)
    dtype = jnp.dtype(self.dtype)
    p = self.patch_size
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID",
                kernel_init=_patch_kernel_init, dtype=dtype, name="patch_embed")(
                    images.astype(dtype))
    x = x.reshape(x.shape[0], -1, self.width)
    pos = self._positions().astype(dtype)
    x = x + pos[:, 1:]  # before any gather: a patch keeps its own position wherever it goes
    if ids_keep is not None:
      x = _gather(x, ids_keep)
    # Created even when unused, so the parameter tree (and checkpoints) do not depend on use_cls.
    cls = self.param("cls_token", _TOKEN_INIT, (1, 1, self.width)).astype(dtype) + pos[:, :1]
    if use_cls:
      x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.width)), x], axis=1)
    prefix = 1 if use_cls else 0
    mask = _attention_mask(keep, prefix)
    for i in range(self.depth):
      x = Block(self.num_heads, self.mlp_dim, dtype, name=f"block{i}")(x, mask)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, name="norm")(x)
    if keep is not None:
      x = jnp.where(mask[:, 0, 0, :, None], x, jnp.zeros((), x.dtype))
    out = {"tokens": x, "patch_tokens": x[:, prefix:]}
    if use_cls:
      out["cls"] = x[:, 0]
    return out


class MAEDecoder(nn.Module):
  """MAE's decoder: encoder tokens of the visible patches → pixels of every patch.

  Encoder tokens are projected (``embed``, MAE's ``decoder_embed``), each missing patch gets the
  learned ``mask_token``, the full sequence (class token first) gets the decoder's fixed sin-cos
  positions, then ``block{i}``, ``norm`` and ``pred`` (MAE's ``decoder_pred``) to p·p·C pixel
  values per patch in ``patchify`` order. MAE-Base: 512 wide, 8 deep, 16 heads, MLP 2048.
  """
  image_size: int = 224
  patch_size: int = 16
  channels: int = 3
  width: int = 512
  depth: int = 8
  num_heads: int = 16
  mlp_dim: int = 2048
  dtype: Any = jnp.float32

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool, ids_keep: Optional[jax.Array] = None,
               keep: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    """Encoder tokens [B, 1 + K, De] (class token first) → ``pred`` [B, N, p·p·C] for every
    patch, N = (image_size / patch_size)², and ``tokens`` [B, 1 + N, width] (after ``norm``).

    Where the visible patches sit in the grid: ``ids_keep`` [B, K] (the encoder's; token i
    is patch ids_keep[:, i]), or ``keep`` [B, N] bool with K = N tokens (the encoder's masked
    path), or neither when K = N and every patch was visible. This scatter is MAE's
    ``ids_restore`` unshuffle written the other way round.
    """
    del train
    n = self.num_patches
    _check_selection(n, keep, ids_keep)
    dtype = jnp.dtype(self.dtype)
    b = tokens.shape[0]
    k = tokens.shape[1] - 1
    if ids_keep is not None and ids_keep.shape != (b, k):
      raise ValueError(f"ids_keep {ids_keep.shape} does not match {k} encoder patch tokens")
    if ids_keep is None and k != n:
      raise ValueError(f"{k} encoder patch tokens for {n} patches: pass ids_keep")
    x = nn.Dense(self.width, kernel_init=_DENSE_INIT, dtype=dtype, name="embed")(tokens)
    mask_token = self.param("mask_token", _TOKEN_INIT, (1, 1, self.width)).astype(dtype)
    cls, patches = x[:, :1], x[:, 1:]
    if ids_keep is not None:
      full = jnp.broadcast_to(mask_token, (b, n, self.width))
      full = full.at[jnp.arange(b)[:, None], ids_keep.astype(jnp.int32)].set(patches)
    elif keep is not None:
      full = jnp.where(keep[..., None], patches, mask_token)
    else:
      full = patches
    table = sincos_pos_embed(self.image_size // self.patch_size, self.width)
    pos = np.concatenate([np.zeros((1, self.width), np.float32), table])[None]
    x = jnp.concatenate([cls, full], axis=1) + jnp.asarray(pos, dtype)
    for i in range(self.depth):
      x = Block(self.num_heads, self.mlp_dim, dtype, name=f"block{i}")(x)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, name="norm")(x)
    pred = nn.Dense(self.patch_size ** 2 * self.channels, kernel_init=_DENSE_INIT, dtype=dtype,
                    name="pred")(x)
    return {"pred": pred[:, 1:], "tokens": x}


class MaskedAutoencoder(nn.Module):
  """MAE (He et al. 2022): ``encoder`` (ViTEncoder, sin-cos positions) on the visible patches,
  ``decoder`` (MAEDecoder) predicting every patch's pixels. RFFR stage 1 is MAE-Base on 224-px
  faces with one block masked (see ``fakedet.models.rffr``); the attributes are flat, as in
  MAE's ``MaskedAutoencoderViT``, and ``MAE_BASE`` / ``MAE_TINY`` hold the sizes.
  """
  image_size: int = 224
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  pos_embed: str = "sincos"
  decoder_width: int = 512
  decoder_depth: int = 8
  decoder_num_heads: int = 16
  decoder_mlp_dim: int = 2048
  dtype: Any = jnp.float32

  def setup(self):
    self.encoder = ViTEncoder(self.image_size, self.patch_size, self.width, self.depth,
                              self.num_heads, self.mlp_dim, self.pos_embed, self.dtype)
    self.decoder = MAEDecoder(self.image_size, self.patch_size, 3, self.decoder_width,
                              self.decoder_depth, self.decoder_num_heads, self.decoder_mlp_dim,
                              self.dtype)

  def __call__(self, images: jax.Array, *, train: bool, ids_keep: Optional[jax.Array] = None,
               keep: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    """Images [B, H, W, 3] with the visible patches given by ``ids_keep`` [B, K] or ``keep``
    [B, N] (neither: all visible) → ``pred`` [B, N, p·p·3] (pixels of EVERY patch, in
    ``patchify`` order; the loss and compositing pick the masked ones), ``tokens`` [B, 1+K, D]
    and ``cls`` [B, D] from the encoder."""
    enc = self.encoder(images, train=train, keep=keep, ids_keep=ids_keep)
    dec = self.decoder(enc["tokens"], train=train, ids_keep=ids_keep, keep=keep)
    return {"pred": dec["pred"], "tokens": enc["tokens"], "cls": enc["cls"]}


MODELS.register("vit")(ViTEncoder)
MODELS.register("mae_decoder")(MAEDecoder)
MODELS.register("mae")(MaskedAutoencoder)

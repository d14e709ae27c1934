"""RFFR (Shi et al., "Real Face Foundation Representation Learning for Generalized Deepfake
Detection"): the block geometry, MAE inpainting and residuals (§3.2–3.3, Eqs. 1–5), and the
dual-branch ViT detector (Eqs. 6–7).

Why a block geometry module: the paper splits a 224-px face into k×k blocks (Eq. 1, k = 4) and
masks ONE block at a time, but the MAE sees 16-px patches and 224/4 = 56 px is 3.5 patches, so
"a block" must be defined on the patch grid. The paper is silent; the authors' released code
(shiliang26/RFFR, ``rffr_classifier/models/model_detector.py`` ``block_to_patch`` and
``model_mae.py`` ``random_masking`` / ``patch_by_patch_DIFF``) hard-codes k = 4 as 3×3-patch
(48-px) blocks whose top-left patch is (3r + 1, 3c + 1) on the 14×14 grid: the blocks tile the
central 12×12 patches (px 16–208) and the 1-patch (16-px) border ring is never masked,
reconstructed or given to the detector — also at test time, where "all blocks" are 144 of the
196 patches. The rule here reproduces that exactly and extends it to any k:

  block side s = ⌊n / k⌋ patches (n = image_size / patch_size), the k×k grid of s×s-patch blocks
  is centred, the n − k·s leftover patches form a margin of ⌊(n − k·s)/2⌋ before the first
  block (the odd one, if any, after the last); blocks are numbered row-major, j = k·r + c.

At 224 px / 16 px: k = 2 → 7×7-patch (112-px) blocks, no margin; k = 4 → 3×3 (48 px), margin 1;
k = 6 → 2×2 (32 px), margin 1. Only k = 4 exists in the authors' code; k = 2 (Table 9) and
k = 6 are this rule's extension. A block is a set of whole patches, so "mask block j" is "drop
its s² patches from the MAE encoder", and its pixel box is exactly the union of those patches.

Where the paper and the released code differ, the function or class docstring says which one
is followed and what the other does.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fakedet.models import MODELS
from fakedet.models import vit


# ----------------------------------------------------------------------------- block geometry
def block_layout(k: int, image_size: int = 224, patch_size: int = 16) -> Tuple[int, int, int]:
  """(n, s, margin): patches per image side, patches per block side, patches before the first
  block (module docstring's rule). k = 4 at 224/16 → (14, 3, 1), the authors' layout."""
  if image_size % patch_size:
    raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
  n = image_size // patch_size
  if not 1 <= k <= n:
    raise ValueError(f"k={k} blocks per side do not fit {n} patches per side")
  s = n // k
  return n, s, (n - k * s) // 2


def block_patches(k: int, image_size: int = 224, patch_size: int = 16) -> np.ndarray:
  """Patch indices (raster order on the n×n grid) of every block: int32 [k², s²], row j for
  block j = k·r + c, its patches in raster order. Rows are disjoint; the margin is in none."""
  n, s, m = block_layout(k, image_size, patch_size)
  offsets = np.arange(s)
  rows = m + s * np.arange(k)[:, None] + offsets[None]  # [k, s] patch rows of block row r
  ids = (rows[:, None, :, None] * n + rows[None, :, None, :]).reshape(k * k, s * s)
  return ids.astype(np.int32)


def block_boxes(k: int, image_size: int = 224, patch_size: int = 16) -> np.ndarray:
  """Pixel box of every block: int32 [k², 4] = (top, left, bottom, right), bottom/right
  exclusive, so block j is ``image[top:bottom, left:right]``. k = 4: block 0 is px 16–64."""
  _, s, m = block_layout(k, image_size, patch_size)
  start = (m + s * np.arange(k)) * patch_size
  top, left = np.meshgrid(start, start, indexing="ij")
  top, left = top.reshape(-1), left.reshape(-1)
  side = s * patch_size
  return np.stack([top, left, top + side, left + side], axis=1).astype(np.int32)


def patch_block_index(k: int, image_size: int = 224, patch_size: int = 16) -> np.ndarray:
  """Block of every patch: int32 [N] (raster order), −1 for margin patches in no block."""
  n, _, _ = block_layout(k, image_size, patch_size)
  index = np.full(n * n, -1, np.int32)
  for j, ids in enumerate(block_patches(k, image_size, patch_size)):
    index[ids] = j
  return index


def selected_patches(selected: jax.Array, k: int, image_size: int = 224,
                     patch_size: int = 16) -> jax.Array:
  """Per-block selection [B, k²] bool → patch mask [B, N] bool (True: the patch's block is
  selected; margin patches never are). The detector's ``keep`` for a set of blocks; all-True
  rows give the test-time input (every block)."""
  index = jnp.asarray(patch_block_index(k, image_size, patch_size))
  if selected.ndim != 2 or selected.shape[1] != k * k:
    raise ValueError(f"selected must be [B, {k * k}] per-block flags; got {selected.shape}")
  return jnp.where(index >= 0, jnp.take(selected, jnp.maximum(index, 0), axis=1), False)


def pixel_mask(patch_mask: jax.Array, patch_size: int) -> jax.Array:
  """Patch mask [B, N] (square grid) → pixel mask [B, H, W]: each patch's p×p pixels."""
  b, n = patch_mask.shape
  g = int(round(n ** 0.5))
  grid = patch_mask.reshape(b, g, g)
  return jnp.repeat(jnp.repeat(grid, patch_size, axis=1), patch_size, axis=2)


# ----------------------------------------------------------------------------- inpainting
def _block_patch_mask(block: jax.Array, k: int, image_size: int, patch_size: int) -> jax.Array:
  """Block index per image [B] → its patches as a mask [B, N]."""
  index = jnp.asarray(patch_block_index(k, image_size, patch_size))
  return index[None, :] == block[:, None]


def inpaint(mae: vit.MaskedAutoencoder, params: Any, images: jax.Array,
            block: Union[int, jax.Array], *, k: int = 4) -> jax.Array:
  """B̂ of Eq. 2 composited into the image: ``images`` with block ``block`` replaced by the MAE's
  reconstruction from every other patch. [B, H, W, 3] → [B, H, W, 3].

  ``block`` is one index (all images) or [B] (one per image), j = k·r + c. The MAE encodes the
  N − s² visible patches (each with its own position), the decoder predicts all N, and only the
  masked block's pixels are taken from the prediction, so outside the block the result IS the
  input (as the authors' ``patch_by_patch_DIFF``). ``params``: the MAE's variables
  ({"params": …}). Pure: jit it with ``mae`` and ``k`` static.
  """
  b, size = images.shape[0], images.shape[1]
  p = mae.patch_size
  n, s, _ = block_layout(k, size, p)
  if isinstance(block, int) and not 0 <= block < k * k:  # traced indices cannot be checked
    raise ValueError(f"block {block} is not one of the {k * k} blocks of a {k}×{k} split")
  block = jnp.broadcast_to(jnp.asarray(block, jnp.int32), (b,))
  masked = _block_patch_mask(block, k, size, p)
  ids_keep = vit.keep_to_ids(jnp.logical_not(masked), n * n - s * s)
  pred = mae.apply(params, images, train=False, ids_keep=ids_keep)["pred"]
  recon = vit.unpatchify(pred, p, images.shape[-1]).astype(images.dtype)
  return jnp.where(pixel_mask(masked, p)[..., None], recon, images)


def reconstruct(mae: vit.MaskedAutoencoder, params: Any, images: jax.Array, blocks: jax.Array,
                *, k: int = 4) -> jax.Array:
  """Several blocks inpainted, each from the ORIGINAL rest of the image (one MAE pass per
  block, as the paper's test time and Fig. 3): blocks [B, M] int → [B, H, W, 3]. Test time is
  ``blocks = arange(k²)`` for every image (k² passes); repeated indices are harmless."""
  if blocks.ndim != 2 or blocks.shape[0] != images.shape[0]:
    raise ValueError(f"blocks must be [B, M] block indices; got {blocks.shape}")

  def step(out, block):
    one = inpaint(mae, params, images, block, k=k)
    box = pixel_mask(_block_patch_mask(block, k, images.shape[1], mae.patch_size),
                     mae.patch_size)
    return jnp.where(box[..., None], one, out), None

  out, _ = jax.lax.scan(step, images, jnp.swapaxes(blocks, 0, 1))
  return out


def residual(images: jax.Array, reconstructed: jax.Array, alpha: float = 4.0,
             clip: Optional[float] = None) -> jax.Array:
  """Eq. 5: R = α(B̂ − B), [B, H, W, C] → same; zero wherever nothing was inpainted.

  α = 4 (§4.1) scales the small reconstruction error up towards the range of natural images.
  The paper has no clipping; the authors' code additionally clips R to [−1, 1] (images in
  [0, 1]): pass ``clip=1.0`` to follow it.
  """
  r = alpha * (reconstructed - images)
  return r if clip is None else jnp.clip(r, -clip, clip)


# ----------------------------------------------------------------------------- detector
class DualBranchViT(nn.Module):
  """RFFR's detector (§3.3, Eqs. 6–7): two ViT encoders, ``original`` on the image and
  ``residual`` on R, fed the SAME patch positions (the selected blocks' patches in training,
  every block at test time), each patch with its full-image position embedding.

  The two branch features are concatenated, [original, residual] → [B, 2D], and a linear
  ``head`` gives one logit (the paper: "the two tokens are merged to create a final feature …
  and subsequently a prediction"; the authors' code concatenates in this order and uses a
  2-way Linear + softmax cross-entropy, which is a sigmoid of the logit difference, so one
  logit with binary cross-entropy is the same model: w = W[1] − W[0], b = b[1] − b[0]).

  ``readout`` = "cls" (default, the paper): each branch's class token after the final norm.
  "first_patch" reproduces the released ``BlockClassifier.forward``, which gathers patch
  tokens from ``cat(cls, patches)`` with indices shifted past the class token, so the class
  token never enters the sequence and ``x[:, 0]`` is the first selected patch's token.

  An image with no selected patch has no feature (its readout is the class token alone, or
  an arbitrary patch with "first_patch"); the authors' code then feeds every block instead.

  Attributes are ViTEncoder's (ViT-B/16 at 224 px, learned positions for ImageNet weights —
  the paper initialises both branches from the same ImageNet ViT-B/16), plus ``readout``.
  """
  image_size: int = 224
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  pos_embed: str = "learned"
  readout: str = "cls"
  dtype: Any = jnp.float32

  def setup(self):
    if self.readout not in ("cls", "first_patch"):
      raise ValueError(f"readout must be 'cls' or 'first_patch'; got {self.readout!r}")
    branch = lambda: vit.ViTEncoder(self.image_size, self.patch_size, self.width, self.depth,
                                    self.num_heads, self.mlp_dim, self.pos_embed, self.dtype)
    self.original = branch()
    self.residual = branch()
    self.head = nn.Dense(1, dtype=self.dtype)

  def _feature(self, encoder: vit.ViTEncoder, images: jax.Array, train: bool,
               keep: Optional[jax.Array], ids_keep: Optional[jax.Array]) -> jax.Array:
    use_cls = self.readout == "cls"
    out = encoder(images, train=train, keep=keep, ids_keep=ids_keep, use_cls=use_cls)
    if use_cls:
      return out["cls"]
    if keep is None:  # ids_keep order (or raster order) decides which patch is first
      return out["patch_tokens"][:, 0]
    first = jnp.argmax(keep, axis=1)  # the first kept patch in raster order
    return jnp.take_along_axis(out["patch_tokens"], first[:, None, None], axis=1)[:, 0]

  def __call__(self, original: jax.Array, residual: jax.Array, *, train: bool,
               keep: Optional[jax.Array] = None,
               ids_keep: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    """original, residual [B, H, W, 3] (same H = W = image_size) and the patches to use —
    ``keep`` [B, N] bool (e.g. ``selected_patches``; any count per image) or ``ids_keep``
    [B, K] int; neither: all N patches — → dict of

      logit: [B] (fake > 0);
      original_cls, residual_cls: [B, D] the branch features (class tokens, or first-patch
        tokens with readout="first_patch");
      features: [B, 2D] their concatenation, the head's input.
    """
    if original.shape != residual.shape:
      raise ValueError(f"original {original.shape} and residual {residual.shape} differ")
    f_orig = self._feature(self.original, original, train, keep, ids_keep)
    f_res = self._feature(self.residual, residual, train, keep, ids_keep)
    features = jnp.concatenate([f_orig, f_res], axis=-1)
    logit = self.head(features)[:, 0]
    return {"logit": logit, "original_cls": f_orig, "residual_cls": f_res,
            "features": features}


MODELS.register("rffr_detector")(DualBranchViT)

"""RFFR (Shi et al., "Real Face Foundation Representation Learning for Generalized Deepfake
Detection") as two objectives on the shared trainer — a frame-level method: clips of one frame,
``video`` uint8 [B, 1, H, W, 3], H = W = the model's ``image_size``.

  rffr_mim       stage 1 (§3.2, Eqs. 1–4): an MAE on REAL faces; the face is split into a k×k
                 grid of blocks (``fakedet.models.rffr`` says how 56-px blocks map onto 16-px
                 patches), ONE random block per image is dropped from the encoder's input and
                 the decoder's prediction of it is scored by the mean squared error over its
                 pixels. Evaluation: every block inpainted in turn (the detector's test-time
                 input), its MSE against a mean-colour fill (how much the MAE knows of faces).
  rffr_detector  stage 2 (§3.3, Eqs. 5–7): the stage-1 MAE, frozen, inpaints blocks; the residual
                 R = α(B̂ − B) (Eq. 5, α = 4) and the original image enter the two ViT branches of
                 ``rffr.DualBranchViT`` on the SAME patches (each with its full-image position
                 embedding); binary cross-entropy (Eq. 7). Training: the random-input mechanism
                 (each block with probability p = 0.25, each selected block inpainted by its own
                 MAE pass); test (``predict``): all k² blocks inpainted and fed whole. ``maps``:
                 the residual magnitude and the reconstruction (the paper's Fig. 3).

Pixel scales are the authors': the MAE sees [0, 1] RGB (their ``ToTensor`` only), the original
branch ImageNet-normalised RGB (``config.model.pixel_mean/std``), the residual branch R itself.

Where the paper and the authors' released code (shiliang26/RFFR) differ, the objective offers
both and the configs say which is the default (configs/rffr_mim.py, configs/rffr_detect.py):

  objective.selection  "batch" (code: one Bernoulli(p) draw per block per STEP, the same blocks
                       for every image) | "image" (paper: "every block in an image is selected
                       with probability p"). Either way an image with no selected block gets
                       every block (the code's fallback; the paper is silent).
  objective.residual_clip  1.0 (code: R clipped to [−1, 1]) | 0.0 (paper: no clipping).
  model.detector.readout   "first_patch" (code: the class token never enters the sequence) |
                       "cls" (paper: "each ViT branch generates a class token").
  objective.masking    (rffr_mim) "grid_block" (paper, Eqs. 1–3) | "random" (what the released
                       ``rffr_generative/train.py`` runs: MAE's default per-patch random masking
                       at ``mask_ratio`` = 0.75; its one-block path is only used for pictures).
  loss                 MSE over the masked pixels, averaged over the batch (code, MAE's
                       ``forward_loss``); Eq. 4 writes Σᵢ‖B̂ⱼ − Bⱼ‖₂ (an unsquared norm, summed).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fakedet import models
from fakedet.models import rffr, vit
from fakedet.objectives import OBJECTIVES, Objective, normalize_video
from fakedet.objectives.losses import masked_mean

# config.init.rules of the detector: the frozen inpainter from a ``rffr_mim`` workdir (its
# params ARE the MAE's) or from ``python -m fakedet.import_weights --format=mae`` (same layout).
MIM_INIT_RULES = (("params", "params/mae"),)
# config.init.rules of stage 1 from an imported MAE (the paper starts from MAE-Base).
MAE_INIT_RULES = (("params", "params"),)

# The residual stage 1's ``maps`` draws (it has no α of its own): the detector's defaults.
FIG3_ALPHA, FIG3_CLIP = 4.0, 1.0

MASKINGS = ("grid_block", "random")
SELECTIONS = ("batch", "image")


# ----------------------------------------------------------------------------- pieces
def frames01(video: jax.Array, image_size: int, ops_key: str) -> jax.Array:
  """uint8 clips of one frame [B, 1, H, W, 3] → float32 [B, H, W, 3] in [0, 1] (the MAE's
  input scale). Fails, naming the op string that sets the frame size, on the wrong shape."""
  if video.ndim != 5 or video.shape[1] != 1:
    raise ValueError(f"RFFR is frame-level: expected video [B, 1, H, W, 3] "
                     f"(config.input.clip_frames=1); got {video.shape}")
  if video.shape[2:] != (image_size, image_size, 3):
    raise ValueError(f"frames are {video.shape[2]}×{video.shape[3]}×{video.shape[4]}, the model "
                     f"expects {image_size}×{image_size}×3: make config.input.{ops_key} resize "
                     f"to {image_size}")
  return video[:, 0].astype(jnp.float32) / 255.0


def sample_blocks(rng: jax.Array, batch: int, k: int, p: float, per_image: bool) -> jax.Array:
  """The random-input mechanism (§3.3): [B, k²] bool, each block selected with probability p —
  one draw per image (``per_image``, the paper) or one per batch shared by every image (the
  released code). A row with no block selected selects every block (the code's fallback)."""
  shape = (batch, k * k) if per_image else (1, k * k)
  selected = jax.random.bernoulli(rng, p, shape)
  selected = selected | ~jnp.any(selected, axis=1, keepdims=True)
  return jnp.broadcast_to(selected, (batch, k * k))


def inpaint_selected(mae: vit.MaskedAutoencoder, variables: Any, images: jax.Array,
                     selected: jax.Array, *, k: int) -> jax.Array:
  """B̂: every selected block of every image replaced by the MAE's reconstruction of it from the
  ORIGINAL rest of the image (one MAE pass per block, Eq. 2). images [B, H, W, 3] in [0, 1],
  selected [B, k²] bool → [B, H, W, 3]; unselected pixels are the input's.

  Pass m inpaints each image's m-th selected block (selected blocks first, in block order), and
  a pass no image needs is skipped (``lax.cond``): a step costs max_i(#selected_i) MAE passes —
  about k²·p with the code's per-batch selection — not k².
  """
  size, p = images.shape[1], mae.patch_size
  order = jnp.argsort(jnp.logical_not(selected), axis=1, stable=True).astype(jnp.int32)
  count = jnp.sum(selected, axis=1)
  index = jnp.asarray(rffr.patch_block_index(k, size, p))

  def one_pass(out, m):
    block = order[:, m]
    active = m < count  # [B]: image i still has an m-th selected block

    def run(out):
      filled = rffr.inpaint(mae, variables, images, block, k=k)
      box = rffr.pixel_mask(index[None, :] == block[:, None], p) & active[:, None, None]
      return jnp.where(box[..., None], filled, out)

    return jax.lax.cond(jnp.any(active), run, lambda out: out, out), None

  out, _ = jax.lax.scan(one_pass, images, jnp.arange(k * k))
  return out


def residual_magnitude(r: jax.Array) -> jax.Array:
  """Residual [B, H, W, 3] → its per-pixel magnitude mean_c |R| clipped to [0, 1]: [B, H, W]
  (with the code's clip to [−1, 1] the clip changes nothing)."""
  return jnp.clip(jnp.mean(jnp.abs(r), axis=-1), 0.0, 1.0)


def _per_patch_sums(images: jax.Array, patch_size: int) -> Tuple[jax.Array, jax.Array]:
  """[B, H, W, C] → per-patch Σx and Σx² per channel, [B, N, C] each."""
  c = images.shape[-1]
  x = vit.patchify(images, patch_size)
  x = x.reshape(x.shape[0], x.shape[1], -1, c)
  return jnp.sum(x, axis=2), jnp.sum(jnp.square(x), axis=2)


def mean_fill_mse(images: jax.Array, k: int, patch_size: int) -> jax.Array:
  """A reference inpainter with no knowledge of faces: each block filled with the mean colour of
  the rest of its image. Its MSE over the blocks' pixels, per image: [B]. The MIM's ``block_mse``
  must fall well below it for the residuals to carry anything but texture."""
  size = images.shape[1]
  index = rffr.patch_block_index(k, size, patch_size)  # [N], −1 in the margin
  onehot = jnp.asarray(index[:, None] == np.arange(k * k)[None], jnp.float32)  # [N, k²]
  s1, s2 = _per_patch_sums(images, patch_size)  # [B, N, C]
  block_s1 = jnp.einsum("bnc,nj->bjc", s1, onehot)
  block_s2 = jnp.einsum("bnc,nj->bjc", s2, onehot)
  area = float(rffr.block_layout(k, size, patch_size)[1] * patch_size) ** 2
  total = jnp.sum(s1, axis=1, keepdims=True)  # [B, 1, C]
  fill = (total - block_s1) / (size * size - area)  # mean colour outside each block
  sse = block_s2 - 2.0 * fill * block_s1 + area * jnp.square(fill)  # Σ over the block (x − f)²
  return jnp.sum(sse, axis=(1, 2)) / (k * k * area * images.shape[-1])


def block_mse(images: jax.Array, reconstructed: jax.Array, k: int, patch_size: int) -> jax.Array:
  """MSE of a reconstruction over the pixels of all k² blocks (the margin excluded), per image:
  [B]. All blocks have the same area, so this is also the mean over blocks of each block's MSE."""
  inside = jnp.asarray(rffr.patch_block_index(k, images.shape[1], patch_size) >= 0)
  err = vit.patchify(jnp.square(reconstructed - images), patch_size)  # [B, N, p²·C]
  return jnp.sum(jnp.where(inside[None, :, None], err, 0.0), axis=(1, 2)) / (
      jnp.sum(inside) * err.shape[-1])


def fig3_maps(reconstructed: jax.Array, r: jax.Array) -> Dict[str, jax.Array]:
  """The paper's Fig. 3 rows as ``Objective.maps`` images: ``residual`` [B, H, W] (|R|, the
  amplified error) and ``reconstruction`` [B, H, W, 3], both in [0, 1]."""
  return {"residual": residual_magnitude(r).astype(jnp.float32),
          "reconstruction": jnp.clip(reconstructed, 0.0, 1.0).astype(jnp.float32)}


def _need(config: ml_collections.ConfigDict, section: str, keys, name: str) -> None:
  node = config[section]
  missing = [k for k in keys if k not in node]
  if missing:
    raise KeyError(f"objective {name!r} needs config.{section}.{missing[0]}; has {sorted(node)}")


def _check_k(k: Any, mae: Dict[str, Any]) -> None:
  if not isinstance(k, int) or isinstance(k, bool):
    raise ValueError(f"config.objective.k={k!r}: expected an integer number of blocks per side")
  try:
    rffr.block_layout(k, mae["image_size"], mae["patch_size"])
  except ValueError as e:
    raise ValueError(f"config.objective.k={k}: {e}") from e


def _check_frames(config: ml_collections.ConfigDict, name: str) -> None:
  if config.input.clip_frames != 1:
    raise ValueError(f"objective {name!r} is frame-level: config.input.clip_frames must be 1; "
                     f"got {config.input.clip_frames}")


# ----------------------------------------------------------------------------- stage 1
@OBJECTIVES.register("rffr_mim")
class RFFRMaskedImageModelling(Objective):
  """Stage 1. Parameters: the MAE's own tree (``{"encoder", "decoder"}``), so an imported MAE
  (``MAE_INIT_RULES``) starts it and the detector takes it whole (``MIM_INIT_RULES``)."""
  input_keys = ("video",)
  eval_keys = ("video",)
  eval_metric_patterns = (r"eval/(block_mse|mean_fill_mse)",)

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> None:
    name = "rffr_mim"
    _need(config, "objective", ("k", "masking", "mask_ratio"), name)
    _need(config, "model", ("mae",), name)
    _check_frames(config, name)
    obj = config.objective
    if obj.masking not in MASKINGS:
      raise ValueError(f"config.objective.masking={obj.masking!r}; allowed: {', '.join(MASKINGS)}")
    if not 0.0 < obj.mask_ratio < 1.0:
      raise ValueError(f"config.objective.mask_ratio={obj.mask_ratio}: expected a fraction in "
                       f"(0, 1) (MAE: 0.75)")
    _check_k(obj.k, config.model.mae.to_dict())

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.mae = models.get("mae")(**config.model.mae.to_dict())
    self.k = int(config.objective.k)
    self.masking = str(config.objective.masking)
    self.mask_ratio = float(config.objective.mask_ratio)
    self.size, self.patch = self.mae.image_size, self.mae.patch_size

  def _images(self, video, ops_key="train_ops"):
    return frames01(video, self.size, ops_key)

  def init(self, rng, batch):
    return {"params": self.mae.init(rng, self._images(batch["video"]), train=False)["params"]}

  def masked_patches(self, rng: jax.Array, batch: int) -> jax.Array:
    """[B, N] bool, True = dropped from the encoder and scored. "grid_block": the patches of one
    uniformly drawn block j of the k×k grid per image (Eq. 3); "random": MAE's per-patch random
    masking of ``mask_ratio`` of the patches."""
    n = (self.size // self.patch) ** 2
    if self.masking == "grid_block":
      block = jax.random.randint(rng, (batch,), 0, self.k * self.k)
      index = jnp.asarray(rffr.patch_block_index(self.k, self.size, self.patch))
      return index[None, :] == block[:, None]
    num_masked = n - int(n * (1.0 - self.mask_ratio))  # MAE keeps int(N · (1 − ratio))
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(rng, (batch, n)), axis=1), axis=1)
    return rank >= n - num_masked

  def loss(self, params, state, batch, rng):
    del state
    images = self._images(batch["video"])
    masked = self.masked_patches(rng, images.shape[0])
    ids_keep = vit.keep_to_ids(jnp.logical_not(masked), self._num_keep())
    pred = self.apply(self.mae, {"params": params}, images, train=True, ids_keep=ids_keep)["pred"]
    per_patch = jnp.mean(jnp.square(pred - vit.patchify(images, self.patch)), axis=-1)  # [B, N]
    loss = masked_mean(per_patch, masked.astype(jnp.float32))
    return loss, ({"masked_mse": loss}, {})

  def _num_keep(self) -> int:
    """Visible patches per image (static): N − s² for one block, int(N·(1 − ratio)) for MAE."""
    n, s, _ = rffr.block_layout(self.k, self.size, self.patch)
    if self.masking == "grid_block":
      return n * n - s * s
    return int(n * n * (1.0 - self.mask_ratio))

  def _reconstruct_all(self, params, images):
    every = jnp.ones((images.shape[0], self.k * self.k), bool)
    return inpaint_selected(self.mae, {"params": params}, images, every, k=self.k)

  def eval_step(self, state, batch):
    """Sums over valid clips: ``block_mse`` (every block inpainted from the rest, as the
    detector's test time) and the mean-colour reference ``mean_fill_mse``."""
    images = self._images(batch["video"], "eval.ops")
    recon = self._reconstruct_all(state.params, images)
    w = batch["valid"].astype(jnp.float32)
    return {"count": jnp.sum(w),
            "block_mse": jnp.sum(w * block_mse(images, recon, self.k, self.patch)),
            "mean_fill_mse": jnp.sum(w * mean_fill_mse(images, self.k, self.patch))}

  def maps(self, state, batch):
    """Fig. 3 for the MAE alone: every block inpainted; R = α(B̂ − B) with the detector's
    default α and clip (``FIG3_ALPHA``, ``FIG3_CLIP``)."""
    images = self._images(batch["video"], "eval.ops")
    recon = self._reconstruct_all(state.params, images)
    return fig3_maps(recon, rffr.residual(images, recon, FIG3_ALPHA, FIG3_CLIP))


# ----------------------------------------------------------------------------- stage 2
@OBJECTIVES.register("rffr_detector")
class RFFRDetector(Objective):
  """Stage 2. Parameters ``{"mae": frozen inpainter, "detector": DualBranchViT}``; the MAE is
  never differentiated (stop-gradient here, and ``optim.groups`` freezes it, so it has no
  optimizer state either)."""
  input_keys = ("video", "label")
  eval_keys = ("video",)

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> None:
    name = "rffr_detector"
    _need(config, "objective", ("k", "p", "alpha", "residual_clip", "selection"), name)
    _need(config, "model", ("mae", "detector", "pixel_mean", "pixel_std"), name)
    _check_frames(config, name)
    obj, m = config.objective, config.model
    if obj.selection not in SELECTIONS:
      raise ValueError(f"config.objective.selection={obj.selection!r}; allowed: "
                       f"{', '.join(SELECTIONS)}")
    if not 0.0 < obj.p <= 1.0:
      raise ValueError(f"config.objective.p={obj.p}: expected a probability in (0, 1] (paper: "
                       f"0.25)")
    if not obj.alpha > 0:
      raise ValueError(f"config.objective.alpha={obj.alpha}: expected > 0 (paper: 4)")
    if obj.residual_clip < 0:
      raise ValueError(f"config.objective.residual_clip={obj.residual_clip}: expected >= 0 "
                       f"(0 = no clipping)")
    for key in ("image_size", "patch_size"):
      if m.detector[key] != m.mae[key]:
        raise ValueError(f"config.model.detector.{key}={m.detector[key]} must equal "
                         f"config.model.mae.{key}={m.mae[key]}: blocks are whole patches of both")
    _check_k(obj.k, m.mae.to_dict())

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m, obj = config.model, config.objective
    self.mae = models.get("mae")(**m.mae.to_dict())
    self.detector = models.get("rffr_detector")(**m.detector.to_dict())
    self.mean, self.std = tuple(m.pixel_mean), tuple(m.pixel_std)
    self.k, self.p, self.alpha = int(obj.k), float(obj.p), float(obj.alpha)
    self.clip: Optional[float] = float(obj.residual_clip) or None
    self.per_image = obj.selection == "image"
    self.size, self.patch = self.mae.image_size, self.mae.patch_size

  def _images(self, video, ops_key="train_ops"):
    return frames01(video, self.size, ops_key)

  def init(self, rng, batch):
    images = self._images(batch["video"])
    mae_rng, det_rng = jax.random.split(rng)
    return {"params": {
        "mae": self.mae.init(mae_rng, images, train=False)["params"],
        "detector": self.detector.init(det_rng, images, images, train=False)["params"]}}

  def _forward(self, params, video, images, selected, train: bool):
    """Inpaint the selected blocks (frozen MAE), residual (Eq. 5), both branches on the selected
    blocks' patches (Eq. 6). → (detector outputs, reconstruction, residual)."""
    mae_vars = {"params": jax.lax.stop_gradient(params["mae"])}
    recon = inpaint_selected(self.mae, mae_vars, images, selected, k=self.k)
    r = rffr.residual(images, recon, self.alpha, self.clip)
    keep = rffr.selected_patches(selected, self.k, self.size, self.patch)
    original = normalize_video(video[:, 0], self.mean, self.std)
    out = self.apply(self.detector, {"params": params["detector"]}, original, r, train=train,
                     keep=keep)
    return out, recon, r

  def loss(self, params, state, batch, rng):
    del state
    images = self._images(batch["video"])
    selected = sample_blocks(rng, images.shape[0], self.k, self.p, self.per_image)
    out, _, r = self._forward(params, batch["video"], images, selected, train=True)
    labels = batch["label"].astype(jnp.float32)
    loss = jnp.mean(optax.sigmoid_binary_cross_entropy(out["logit"], labels))
    # Mean |R| over each image's selected pixels, by class: the premise (fakes inpaint worse).
    box = rffr.pixel_mask(rffr.selected_patches(selected, self.k, self.size, self.patch),
                          self.patch).astype(jnp.float32)
    energy = jnp.sum(jnp.mean(jnp.abs(r), -1) * box, (1, 2)) / jnp.maximum(
        jnp.sum(box, (1, 2)), 1.0)
    metrics = {
        "bce": loss,
        "accuracy": jnp.mean(((out["logit"] > 0) == (labels == 1)).astype(jnp.float32)),
        "selected_blocks": jnp.mean(jnp.sum(selected, axis=1).astype(jnp.float32)),
        "residual_abs_real": masked_mean(energy, (labels == 0).astype(jnp.float32)),
        "residual_abs_fake": masked_mean(energy, (labels == 1).astype(jnp.float32))}
    return loss, (metrics, {})

  def _full(self, state, batch):
    images = self._images(batch["video"], "eval.ops")
    every = jnp.ones((images.shape[0], self.k * self.k), bool)
    return self._forward(state.params, batch["video"], images, every, train=False)

  def predict(self, state, batch):
    """Test time (§4.1): every block inpainted (k² MAE passes) and fed whole → logits [B]."""
    return self._full(state, batch)[0]["logit"]

  def maps(self, state, batch):
    """``residual``: mean_c |R| of the full test-time residual [B, H, W] in [0, 1] (where the
    MAE failed to inpaint a real-looking face); ``reconstruction``: B̂ [B, H, W, 3]. The border
    ring outside the k×k blocks is never inpainted: zero residual, the input's own pixels."""
    _, recon, r = self._full(state, batch)
    return fig3_maps(recon, r)

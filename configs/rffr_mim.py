"""RFFR stage 1 (Shi et al. §3.2, §4.1, Eqs. 1–4): masked image modelling on real faces.

MAE-Base (ViT-B/16 encoder, 512-wide 8-deep decoder) on 224×224 aligned REAL faces. Each face is
split into a k×k grid of blocks (k = 4); one block per image is dropped from the encoder's input
and the decoder's prediction of it is scored by the MSE over its pixels (objective ``rffr_mim``).
At 224 px a 56-px block would be 3.5 of the MAE's 16-px patches, so blocks are defined on the
patch grid as in the authors' code: 3×3 patches (48 px) each, the 4×4 grid centred, a 16-px
border ring never masked (``fakedet/models/rffr.py``; k = 2 → 7×7-patch blocks, k = 6 → 2×2).

The paper starts from MAE and trains on the reals of FaceForensics++ and ForgeryNet (FF + FN,
Table 3) with batch 128 and lr 7.5e-5 (MAE's 1.5e-4 · batch / 256) under warm-up + cosine:

  python -m fakedet.import_weights --format=mae --weights=mae_visualize_vit_base.pth \
      --workdir=gs://BUCKET/mae_base                      # user-supplied MAE (encoder + decoder)
  python -m fakedet.main --config=configs/rffr_mim.py --workdir=gs://BUCKET/rffr_mim \
      --config.init.workdir=gs://BUCKET/mae_base \
      --config.input.sources.reals.data_dir=gs://BUCKET/ffpp_c23 \
      --config.input.sources.extra.data_dir=gs://BUCKET/forgerynet_reals \
      --config.input.eval.data_dir=gs://BUCKET/ffpp_c23

Paper vs the released code (shiliang26/RFFR ``rffr_generative``), and what is used here:
  * masking: the paper's one grid block (Eqs. 1–3, what the detector inpaints) is the default.
    The released ``train.py`` calls the MAE with its defaults, i.e. MAE's per-patch random
    masking of 75 %: ``--config.objective.masking=random`` (``mask_ratio`` 0.75).
  * batch 128 and lr 7.5e-5 (paper); the code runs batch 600 at 1.5e-4·600/256 = 3.5e-4.
  * the paper gives no optimiser or schedule lengths: the code's AdamW (β 0.9 / 0.95, weight
    decay 0.05 except biases and norm scales — timm's ``param_groups_weight_decay``), 2,500
    warm-up steps and 25,000 steps in all, cosine to 0.
  * no augmentation, frames resized to 224 (the code: ``cv2.resize`` + ``ToTensor``, [0, 1]).
  * the split of the 128 between the two real corpora (32 FF + 96 extra) is our choice: the
    code shuffles the union, so its mix follows the corpora's sizes. ``ff_only`` is Table 3's
    "FF" row (batch 128 of the forgery set's reals).

Evaluation (every 2,500 steps, reals of the validation split; no model selection — stage 2
takes the final state): ``eval/block_mse``, every block inpainted in turn from the rest (the
detector's test-time input), next to ``eval/mean_fill_mse``, each block filled with the mean
colour of the rest of its image (an inpainter that knows nothing of faces).

Variants (comma-separated): ``k=K`` blocks per side (Table 9: 2, 4, 6; give the detector the same
``k``); ``ff_only``; ``demo`` — a small MAE (64 px, 8-px patches, 4×4 blocks of 2×2 patches) on
the reals of the embedded synthetic data (``synthetic:demo``, the forgery set, + ``synthetic:
extra``, other people, as FF + FN), 2 CPU cores, from scratch; the detector demo
(``configs/rffr_detect.py:demo``) starts from its workdir:

  python -m fakedet.main --config=configs/rffr_mim.py:demo --workdir=/tmp/fakedet_rffr_mim

Measured (2-core CPU, 3,000 steps of 32 reals, 64 px): 7 min 7 s wall at load ≈ 3 (8 steps/s;
17 min 53 s when other jobs held the load at 12–14; the first run also builds ``synthetic:
extra``, ≈ 2.5 min, once). ``eval/block_mse`` 0.0159 / 0.0107 / 0.0095 at steps 1k / 2k / 3k
against ``eval/mean_fill_mse`` 0.0352 (bit-identical across two runs). Used alone as a score
(no detector), the final MAE's block MSE separates the validation fakes from the reals with
AUC 0.63 (autoencoder_swap), 0.55 (graphics_swap), 0.52 (neural_texture), 0.47 (reenactment).
"""
import ml_collections

from configs import common
from fakedet.models import vit
from fakedet.objectives.rffr import MAE_INIT_RULES
from fakedet.trainers import train
from input_pipeline import config as input_config

# No augmentation (§4.1): the aligned face resized to the model's input.
OPS = "center_crop(size={crop}, resize={size})"

# MAE-Base at 224 px and the demo's small MAE at 64 px (8-px patches: an 8×8 grid).
MAE_DEMO = dict(image_size=64, patch_size=8, width=64, depth=4, num_heads=4, mlp_dim=256,
                decoder_width=64, decoder_depth=2, decoder_num_heads=4, decoder_mlp_dim=256)


def mae_lr(batch_size: int) -> float:
  """MAE's linear scaling rule, 1.5e-4 per 256 images: 7.5e-5 at the paper's batch 128."""
  return 1.5e-4 * batch_size / 256


def adamw_no_decay_groups() -> ml_collections.ConfigDict:
  """timm's ``param_groups_weight_decay`` as the code uses it: no decay on biases and LayerNorm
  scales (every 1-D parameter); cls/mask tokens are decayed, as there."""
  return ml_collections.ConfigDict(dict(
      no_decay=dict(pattern=r".*/(bias|scale)", weight_decay=0.0)))


def get_config(arg=None):
  variant = common.variants(arg, "configs/rffr_mim.py", flags=("demo", "ff_only"),
                            keys=("k",))
  config = common.base_config()
  config.objective = ml_collections.ConfigDict(dict(
      name="rffr_mim", k=int(variant.get("k", 4)), masking="grid_block", mask_ratio=0.75))
  config.model = ml_collections.ConfigDict(dict(mae=dict(vit.MAE_BASE)))

  config.input.clip_frames = 1  # A frame-level method: clips of one frame.
  # fakedet's face records are 150-px aligned crops: the central 140 resized to 224, as the
  # other detectors crop them.
  config.input.train_ops = OPS.format(crop=140, size=224)
  config.input.eval.ops = OPS.format(crop=140, size=224)
  config.input.sources = ml_collections.ConfigDict({
      "reals": input_config.source_config("", "train", 32, labels=(0,)),
      "extra": input_config.source_config("", "train", 96, labels=(0,))})
  config.input.eval.split = "val"
  config.input.eval.labels = (0,)  # The MAE models real faces: scored on reals.
  config.input.eval.clips_per_video = 4
  config.input.eval.batch_size = 128
  config.input.num_workers = 8

  config.total_steps = 25_000
  config.optim = ml_collections.ConfigDict(dict(
      name="adamw", lr=mae_lr(128), weight_decay=0.05, b1=0.9, b2=0.95, eps=1e-8,
      warmup_steps=2_500, schedule="cosine", grad_clip_norm=0.0,
      groups=adamw_no_decay_groups()))
  # Starts from an imported MAE when config.init.workdir names one (the paper); else scratch.
  config.init.rules = MAE_INIT_RULES
  config.selection = train.selection_config()  # The final state goes to stage 2.
  config.eval_every = 2_500
  config.eval_batches = 0
  config.checkpoint.every_steps = 2_500

  if variant.get("ff_only"):
    del config.input.sources["extra"]
    config.input.sources.reals.batch_size = 128
  if variant.get("demo"):
    _demo(config, ff_only=bool(variant.get("ff_only")))
  return config


def _demo(config, ff_only: bool):
  """The small MAE on the embedded data's reals (2 CPU cores), from scratch."""
  config.model.mae = dict(MAE_DEMO)
  config.input.train_ops = OPS.format(crop=88, size=64)
  config.input.eval.ops = OPS.format(crop=88, size=64)
  sources = config.input.sources
  sources.reals.data_dir = "synthetic:demo"
  if ff_only:
    sources.reals.batch_size = 32
  else:
    sources.reals.batch_size = 16
    sources.extra.data_dir = "synthetic:extra"
    sources.extra.batch_size = 16
  config.input.eval.data_dir = "synthetic:demo"
  config.input.eval.clips_per_video = 2
  config.input.eval.batch_size = 64
  config.input.num_workers = 0
  config.init.rules = ()
  config.total_steps = 3_000
  config.optim.lr = 1e-3
  config.optim.warmup_steps = 100
  config.eval_every = 1_000
  config.checkpoint.every_steps = 1_000
  config.log_every = 100

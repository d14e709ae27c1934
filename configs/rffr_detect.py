"""RFFR stage 2 (Shi et al. §3.3, §4.1–4.4, Eqs. 5–7): the dual-branch ViT deepfake detector.

The stage-1 MAE (a ``configs/rffr_mim.py`` workdir, frozen) inpaints blocks of each face; the
residual R = α(B̂ − B) (Eq. 5, α = 4) and the original face enter two ViT-B/16 branches on the
same patches, each patch with its full-image position embedding; the two branch features are
concatenated into one logit, binary cross-entropy (Eqs. 6–7; objective ``rffr_detector``).
Training feeds randomly selected blocks (each with p = 0.25, each inpainted by its own MAE
pass); testing inpaints all k×k blocks and feeds them whole (k = 4: the central 12×12 of the
14×14 patches; the 16-px border ring is never used, as in the authors' code). 224-px faces,
no augmentation, Adam at 2e-5, 15k iterations; model selection is validation-free (Table 6 /
Appendix A: ``selection.metric = ""``): the FINAL state is what ``fakedet.evaluate`` scores.
The periodic evaluation (every 1,000 steps, the validation split) only draws the curves of
Fig. 5; nothing is chosen by it.

  python -m fakedet.import_weights --format=mae --mae_model=vit \
      --weights=jx_vit_base_p16_224-80ecf9dd.pth --workdir=gs://BUCKET/imagenet_vit_b16
  python -m fakedet.main --config=configs/rffr_detect.py:train_on=face2face \
      --workdir=gs://BUCKET/rffr_f2f --config.init.workdir=gs://BUCKET/rffr_mim \
      --config.init.also.workdir=gs://BUCKET/imagenet_vit_b16 \
      --config.input.sources.forgery.data_dir=gs://BUCKET/ffpp_c23 \
      --config.input.eval.data_dir=gs://BUCKET/ffpp_c23
  python -m fakedet.evaluate --config=configs/rffr_detect.py:train_on=face2face \
      --checkpoint=gs://BUCKET/rffr_f2f --config.input.eval.split=test \
      --config.input.eval.data_dir=gs://BUCKET/ffpp_c23

The paper initialises both branches from an ImageNet ViT-B/16: ``config.init`` grafts the
stage-1 MAE, then ``config.init.also`` both branches from the imported ViT workdir above
(``IMAGENET_INIT_RULES``); without ``init.also.workdir`` the branches start from scratch.

Paper vs the released code (shiliang26/RFFR ``rffr_classifier``); the defaults follow the code,
the ``paper`` variant switches to what the paper describes:
  * block selection: the code draws once per block per STEP (every image of the batch gets the
    same blocks); the paper selects "every block in an image" independently
    (``objective.selection`` "batch" | "image"). With no block drawn the code feeds every block.
  * the residual is clipped to [−1, 1] in the code (``residual_clip=1.0``); the paper has no
    clip (0.0).
  * readout: the code's ``BlockClassifier`` gathers patch tokens from [cls, patches] with
    indices shifted past the class token, so the class token never enters the sequence and its
    "class token" is the first selected patch's token (``readout="first_patch"``); the paper
    speaks of each branch's class token (``"cls"``).
  * batch: the code's 16 real + 16 fake (class-balanced 32); the paper gives none.
  * iterations: 15k (the paper's validation-free setting); the code runs 500k iterations with a
    validation pass every 50 and keeps the best — ``selection.metric`` would do that here.
  * the head: the code's 2-way Linear + softmax CE on [original, residual] features is one
    logit + BCE here (identical model: the logit is the difference of the two).
  * Adam at 2e-5, no weight decay, constant (code; the paper gives only the lr).

Protocols: Table 1 trains on one FF++ family and tests on all (``train_on=FAMILY``; one frame per
test video, as the paper: ``input.eval.clips_per_video=1``); ``holdout=FAMILY`` is the
leave-one-out protocol of the other detectors; Table 2 (train on FF++, test on Celeb-DF / DFDC)
is ``fakedet.evaluate --config.input.eval.data_dir=...`` on the final state.

Variants (comma-separated): ``k=K`` (Table 9; the stage-1 run should use the same ``k``),
``paper``, ``train_on=FAMILY``, ``holdout=FAMILY``, ``demo`` — a small dual-branch ViT on the
embedded synthetic forgery set (64 px, 8-px patches), its frozen MAE from the MIM demo's workdir
/tmp/fakedet_rffr_mim (run ``configs/rffr_mim.py:demo`` first), 2 CPU cores:

  python -m fakedet.main --config=configs/rffr_detect.py:demo --workdir=/tmp/fakedet_rffr_detect
  python -m fakedet.evaluate --checkpoint=/tmp/fakedet_rffr_detect

Measured (2-core CPU, 1,500 steps of 16 class-balanced frames, the MIM demo's final MAE): 6 min
53 s wall at load 8–10 (5 min 21 s at load ≈ 3); validation video AUC 0.692 / 0.697 / 0.705 at
steps 500 / 1,000 / 1,500; ``fakedet.evaluate`` on the final state (21 s) reproduces 0.705:
autoencoder_swap 0.917, graphics_swap 0.785, reenactment 0.604, neural_texture 0.513 (one
frame per video, 36 real + 144 fake validation videos). ``demo,paper``: 0.716 / 0.707 / 0.753
(6 min 18 s: per-image selection needs more MAE passes per step).
"""
import ml_collections

from configs import common
from configs import rffr_mim
from fakedet import config_variants
from fakedet.models import vit
from fakedet.objectives.rffr import MIM_INIT_RULES
from fakedet.trainers import train
from input_pipeline import config as input_config

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Both branches from one ImageNet ViT-B/16 (``import_weights --format=mae --mae_model=vit``):
# ``config.init.also`` (module docstring).
IMAGENET_INIT_RULES = (("params", "params/detector/original"),
                       ("params", "params/detector/residual"))

DETECTOR_DEMO = dict(image_size=64, patch_size=8, width=64, depth=4, num_heads=4, mlp_dim=256)


def get_config(arg=None):
  variant = common.variants(arg, "configs/rffr_detect.py", flags=("demo", "paper"),
                            keys=("k", "holdout", "train_on"))
  config = common.base_config()
  config.objective = ml_collections.ConfigDict(dict(
      name="rffr_detector", k=int(variant.get("k", 4)), p=0.25, alpha=4.0,
      residual_clip=1.0, selection="batch"))
  config.model = ml_collections.ConfigDict(dict(
      mae=dict(vit.MAE_BASE),  # The stage-1 run's architecture (its weights: config.init).
      detector=dict(**vit.VIT_B16, pos_embed="learned", readout="first_patch"),
      pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD))  # Original branch only.

  config.input.clip_frames = 1
  config.input.train_ops = rffr_mim.OPS.format(crop=140, size=224)  # No augmentation (§4.1).
  config.input.eval.ops = rffr_mim.OPS.format(crop=140, size=224)
  config.input.sources = ml_collections.ConfigDict({
      "forgery": input_config.source_config("", "train", 32, balance="class")})
  config.input.eval.split = "val"
  config.input.eval.clips_per_video = 1  # "only use one frame every video for testing" (§4.2).
  config.input.eval.batch_size = 64
  config.input.num_workers = 8

  config.total_steps = 15_000
  config.optim = ml_collections.ConfigDict(dict(
      name="adam", lr=2e-5, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=0,
      schedule="constant", grad_clip_norm=0.0,
      groups=ml_collections.ConfigDict(dict(
          # The stage-1 inpainter is frozen (the code: torch.no_grad, Adam on the detector only).
          mae=dict(pattern=r"mae/.*", lr=0.0, weight_decay=0.0, schedule="constant",
                   warmup_steps=0, freeze=True)))))
  config.init.rules = MIM_INIT_RULES  # config.init.workdir: the rffr_mim run.
  config.init.also.rules = IMAGENET_INIT_RULES  # config.init.also.workdir: an ImageNet ViT.
  # Validation-free model selection (Table 6, Appendix A): no metric, the final state (step
  # 15k) is saved last and is what fakedet.evaluate scores.
  config.selection = train.selection_config()
  config.eval_every = 1_000
  config.eval_batches = 0
  config.checkpoint.every_steps = 1_000

  if variant.get("paper"):
    config.objective.selection = "image"
    config.objective.residual_clip = 0.0
    config.model.detector.readout = "cls"
  if variant.get("demo"):
    _demo(config)
  if "train_on" in variant and "holdout" in variant:
    raise ValueError("configs/rffr_detect.py: train_on (Table 1) and holdout (leave one out) "
                     "are alternative protocols; choose one")
  if "train_on" in variant:
    train_on(config, variant["train_on"])
  if "holdout" in variant:
    config_variants.hold_out(config, variant["holdout"])
  return config


def train_on(config: ml_collections.ConfigDict, family: str) -> None:
  """Table 1: train on the reals and ONE manipulation (class-balanced), evaluate on all."""
  if not family or "," in family:
    raise ValueError(f"train_on={family!r}: name one manipulation of the dataset")
  config.input.sources.forgery.manipulations = ("real", family)


def _demo(config):
  """The small dual-branch ViT on ``synthetic:demo``, its MAE from the MIM demo, 2 CPU cores."""
  config.model.mae = dict(rffr_mim.MAE_DEMO)
  config.model.detector = dict(**DETECTOR_DEMO, pos_embed="learned",
                               readout=config.model.detector.readout)
  config.input.train_ops = rffr_mim.OPS.format(crop=88, size=64)
  config.input.eval.ops = rffr_mim.OPS.format(crop=88, size=64)
  config_variants.synthetic_detector_demo(config, init_workdir="/tmp/fakedet_rffr_mim")
  config.selection = train.selection_config()  # Still validation-free.
  config.input.eval.clips_per_video = 1
  config.total_steps = 1_500
  config.eval_every = 500  # The curve only: the final state is what is scored.
  config.checkpoint.every_steps = 500
  config.log_every = 100
  config.optim.lr = 5e-4  # From scratch (the paper fine-tunes ImageNet weights at 2e-5).

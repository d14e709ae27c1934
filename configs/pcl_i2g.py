"""PCL + I2G (Zhao et al., ICCV 2021): patch-wise consistency learning on I2G-augmented frames.

A frame-level detector on the shared records, pipeline, trainer and evaluator: a clip of one
frame. Per training record 32 random frames per epoch (§4.1); each real frame becomes an I2G
fake with probability 0.5 (§4.2; the I2G stage of the input pipeline, which also gives every
frame its forgery mask: I2G's, the record's own, or the DSSIM to the paired real frame).
ResNet-34 layer3 features (H/16 × 256) → the 4D consistency volume (Eq. 1) against
1 − |M_i − M_j| (Eq. 2), BCE (Eq. 3) + the classification BCE, L = 10·L_pcl + L_cls (Eq. 4).
256×256 inputs with ImageNet mean/std; Adam (0.9, 0.999, 1e-8), batch 128, lr linearly up to
5e-5 over the first quarter and down to 0 over the last, 150 epochs. A video's score is the
mean of its frames' fake probabilities (``input.eval.video_score="mean_prob"``).

  # ImageNet ResNet-34 (user-supplied torchvision file; nothing downloads):
  python -m fakedet.import_weights --format=torchvision_resnet34 \
      --weights=resnet34-b627a593.pth --workdir=gs://BUCKET/imagenet_r34
  python -m fakedet.main --config=configs/pcl_i2g.py --workdir=gs://BUCKET/pcl \
      --config.init.workdir=gs://BUCKET/imagenet_r34 \
      --config.input.sources.forgery.data_dir=gs://BUCKET/ffpp_c23 \
      --config.input.eval.data_dir=gs://BUCKET/ffpp_c23

Variants (comma-separated):
  ``reals_only``  the cross-dataset protocol (Table 1): train on the REAL videos only, every fake
                  is I2G's — the model never sees a real forgery; no model selection (a
                  validation set of real forgeries would leak them), the final state is scored.
  ``lambda=X``    λ of Eq. 4 (Table 7: 0, 1, 10, 100; 0 is plain ResNet-34 classification).
  ``demo``        a small ResNet on the embedded synthetic data at 64 px, 2 CPU cores.
  ``holdout=FAMILY``  leave one manipulation out (the in-dataset variant only).

  python -m fakedet.main --config=configs/pcl_i2g.py:demo --workdir=/tmp/fakedet_pcl
  python -m fakedet.main --config=configs/pcl_i2g.py:demo,reals_only --workdir=/tmp/fakedet_pcl_r

Where the paper is silent (our choices): the rotation range (±10°) and the 32 test frames per
video (uniformly spaced). The paper's "extra max-pool" reading is in ``models/resnet2d.py``.
"""
import ml_collections

from configs import common
from fakedet import config_variants
from fakedet.trainers import train
from input_pipeline import config as input_config

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Geometry moves the frame and its mask together; I2G's post-augmentation (JPEG, noise / blur,
# brightness / contrast, erasing, colour jitter; input.i2g.augment_all) runs on every frame.
TRAIN_OPS = ("random_crop(size={crop}, resize={size}, also=('mask',))"
             "|flip(keys=('video', 'mask'))"
             "|rotate(keys=('video', 'mask'), degrees=10.0, p=0.5)")
EVAL_OPS = "center_crop(size={crop}, resize={size})"
# ImageNet ResNet-34 from a `python -m fakedet.import_weights --format=torchvision_resnet34`
# workdir (config.init.workdir): its weights sit at the top of the saved state.
IMAGENET_INIT_RULES = (("params", "params/backbone"), ("batch_stats", "batch_stats/backbone"))
DEMO_STEPS = 2000


def get_config(arg=None):
  variant = common.variants(arg, "configs/pcl_i2g.py", flags=("demo", "reals_only"),
                            keys=("lambda", "holdout"))
  config = common.base_config()
  config.objective = ml_collections.ConfigDict(dict(
      name="pcl", pcl_weight=float(variant.get("lambda", 10.0))))
  config.model = ml_collections.ConfigDict(dict(
      backbone=dict(name="resnet34", stage_blocks=(3, 4, 6, 3), width_multiplier=1.0,
                    feature_stage=3, dtype="float32"),
      embed_dim=128, classifier="backbone",
      pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD))

  config.input.clip_frames = 1
  config.input.i2g = input_config.i2g_config(p=0.5)
  # fakedet's face records are 150-px aligned crops: a 140 crop resized to the paper's 256.
  config.input.train_ops = TRAIN_OPS.format(crop=140, size=256)
  config.input.eval.ops = EVAL_OPS.format(crop=140, size=256)
  # §4.2: "balance the total number of real and fake data": class-balanced records (half the
  # reals then become I2G fakes, so ~1/4 of the frames stay real; the paper finds the ratio
  # unimportant "as long as it is not extremely imbalanced").
  config.input.sources = ml_collections.ConfigDict({
      "forgery": input_config.source_config("", "train", 128, balance="class",
                                            samples_per_record=32)})
  config.input.eval.split = "val"
  config.input.eval.clips_per_video = 32
  config.input.eval.video_score = "mean_prob"  # §4.1: "the mean of the frame scores".
  config.input.eval.batch_size = 128
  config.input.num_workers = 16  # I2G runs in the input workers (benchmarks/i2g.py).

  config.num_epochs = 150.0
  config.optim = ml_collections.ConfigDict(dict(
      name="adam", lr=5e-5, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=0,
      schedule="trapezoid", grad_clip_norm=0.0, groups=ml_collections.ConfigDict()))
  config.warmup_epochs = config.num_epochs / 4  # Up over the first quarter, down over the last.
  config.init.rules = IMAGENET_INIT_RULES
  config.selection = train.selection_config("eval/overall/video_auc", "max")
  config.eval_every = 5000
  config.eval_batches = 0

  if variant.get("demo"):
    _demo(config)
  if variant.get("reals_only"):
    _reals_only(config)
  if "holdout" in variant:
    if variant.get("reals_only"):
      raise ValueError("configs/pcl_i2g.py: holdout needs the in-dataset variant (reals_only "
                       "trains on no forgery family to hold out)")
    config_variants.hold_out(config, variant["holdout"])
  return config


def _reals_only(config):
  """Table 1's cross-dataset protocol: real training videos only, I2G makes every fake."""
  forgery = config.input.sources.forgery
  forgery.labels = (0,)
  forgery.balance = "none"
  config.selection = train.selection_config()  # No real forgery may choose the checkpoint.


def _demo(config):
  """ResNet (1, 1, 1) at ¼ width on 64-px frames of the embedded data, from scratch."""
  config.model.backbone.update(stage_blocks=(1, 1, 1), width_multiplier=0.25)
  config.model.embed_dim = 32
  config.model.classifier = "conv"  # A 3-stage backbone: the "conv" head on layer3.
  config.model.cls_features = 64
  config.input.train_ops = TRAIN_OPS.format(crop=88, size=64)
  config.input.eval.ops = EVAL_OPS.format(crop=88, size=64)
  config_variants.synthetic_detector_demo(config, init_workdir="", steps=DEMO_STEPS)
  config.init.rules = ()
  config.input.sources.forgery.samples_per_record = 1
  config.input.eval.clips_per_video = 4
  config.eval_every = config.checkpoint.every_steps = 250
  config.optim.lr = 1e-3
  config.optim.warmup_steps = DEMO_STEPS // 4  # Up over the first quarter, down the last.
  config.warmup_epochs = 0.0

"""Audio-visual contrastive transformer, fine-tuning for forgery detection (§3.3, §4.1).

The pre-trained video encoder (``configs/avcl.py``) with its frontend (3D conv + ResNet) frozen,
its contrastive head replaced by a new MLP on the temporal average of the last layer, trained
with binary cross-entropy (Eq. 4) on 1-s clips (25 frames) with the pre-training augmentations;
learning rates 0.01 for the new head, 0.005 for the last transformer layer and × 0.9 for each
earlier one; real clips from the pre-training corpus balance the classes (§4.1):

  python -m fakedet.main --config=configs/avcl_finetune.py --workdir=gs://BUCKET/avcl_ff \
      --config.init.workdir=gs://BUCKET/avcl \
      --config.input.sources.forgery.data_dir=gs://BUCKET/ffpp_c23/mouth \
      --config.input.sources.reals.data_dir=gs://BUCKET/voxceleb2/mouth \
      --config.input.eval.data_dir=gs://BUCKET/ffpp_c23/mouth
  python -m fakedet.evaluate --checkpoint=gs://BUCKET/avcl_ff/best

Variants (comma-separated): ``demo`` — the ``configs/avcl.py:demo`` encoder on the embedded
mouth crops, starting from that demo's workdir /tmp/fakedet_avcl; ``holdout=FAMILY`` — leave
one manipulation out (Table 2), e.g.

  python -m fakedet.main --config=configs/avcl_finetune.py:demo --workdir=/tmp/fakedet_avcl_ft
  python -m fakedet.evaluate --checkpoint=/tmp/fakedet_avcl_ft/best

Where the paper is silent (our choices):
  * The MLP head: Dense(512) → LayerNorm → ReLU → Dense(1) on the clip's mean token
    (``AVCLDetector``); the input projection and position table get one more ×0.9 below layer
    0, the final LayerNorm the last layer's rate (``objectives.avcl.finetune_groups``).
  * Optimiser and schedule: §4.1's pre-training ones (AdamW, weight decay 0.01, × 0.9 per epoch,
    floor 1e-4) — the paper gives "initial" rates, so they decay.
  * Batch: 40 forgery-set clips + 24 extra reals (FF++'s 4:1 fakes:reals → 32 fakes : 32
    reals); 20 epochs with early stopping on validation video AUC (patience 5 evaluations).
  * Evaluation: every non-overlapping 1-s clip of a video, the video's score from their mean
    logit (the shared evaluator).
"""
import ml_collections

from configs import avcl
from configs import common
from fakedet import config_variants
from fakedet.objectives.avcl import PRETRAIN_INIT_RULES, finetune_groups
from fakedet.trainers import train
from input_pipeline import config as input_config

CLIP_FRAMES = 25  # 1 s at 25 fps (§3.3).


def _optim(num_layers: int) -> ml_collections.ConfigDict:
  """§3.3's per-layer learning rates on §4.1's optimiser and per-epoch decay."""
  lr, groups = finetune_groups(num_layers, head_lr=0.01, last_lr=0.005, decay=0.9)
  return ml_collections.ConfigDict(dict(
      name="adamw", lr=lr, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=0,
      schedule="exponential", decay_rate=0.9, decay_steps=0, decay_epochs=1.0, min_lr=1e-4,
      grad_clip_norm=0.0, groups=groups))


def get_config(arg=None):
  variant = common.variants(arg, "configs/avcl_finetune.py", flags=("demo",), keys=("holdout",))
  config = common.base_config()
  config.objective = ml_collections.ConfigDict(dict(name="avcl_detector"))
  video = avcl.video_encoder()
  video.freeze_frontend = True  # §3.3: the frontend keeps its pre-trained local features.
  config.model = ml_collections.ConfigDict(dict(
      video=video, hidden=512, pool_tokens=1,
      pixel_mean=avcl.PIXEL_MEAN, pixel_std=avcl.PIXEL_STD))

  config.input.clip_frames = CLIP_FRAMES
  config.input.train_ops = avcl.AUGMENT_OPS.format(size=88)
  config.input.eval.ops = avcl.EVAL_OPS.format(size=88)
  # §4.1: "we sample real videos with similar quality from the pre-train dataset to make the
  # training set balanced". An epoch is a pass over the first source in name order: forgery.
  config.input.sources = ml_collections.ConfigDict({
      "forgery": input_config.source_config("", "train", 40),
      "reals": input_config.source_config("", "train", 24, labels=(0,))})
  config.input.eval.split = "val"
  config.input.eval.clips_per_video = 0  # Every 1-s clip.
  config.input.eval.batch_size = 64
  config.input.num_workers = 8

  config.optim = _optim(video.num_layers)
  config.num_epochs = 20.0
  config.init.rules = PRETRAIN_INIT_RULES
  config.selection = train.selection_config("eval/overall/video_auc", "max", patience=5)
  config.eval_every = 500
  config.eval_batches = 0

  if variant.get("demo"):
    _demo(config)
  if "holdout" in variant:
    config_variants.hold_out(config, variant["holdout"])
  return config


def _demo(config):
  """The pre-training demo's encoder on the embedded mouth crops, from /tmp/fakedet_avcl."""
  video = avcl.demo_video_encoder()
  video.freeze_frontend = True
  config.model.video = video
  config.model.hidden = 128
  config.optim = _optim(video.num_layers)
  config.input.train_ops = avcl.AUGMENT_OPS.format(size=44)
  config.input.eval.ops = avcl.EVAL_OPS.format(size=44)
  config_variants.synthetic_detector_demo(config, init_workdir="/tmp/fakedet_avcl")
  # 10 forgery-set clips (8 fake : 2 real on average) + 6 reals of the pre-training data.
  config.input.sources.forgery.data_dir = "synthetic:demo_mouth"
  config.input.sources.forgery.batch_size = 10
  config.input.sources.reals.data_dir = "synthetic:extra_mouth"
  config.input.sources.reals.batch_size = 6
  config.input.eval.data_dir = "synthetic:demo_mouth"
  config.optim.warmup_steps = 0

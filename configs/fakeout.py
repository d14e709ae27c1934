"""FakeOut fine-tuning (FakeOut §3.2, §4.1, App. B, F): MMV's backbones → forgery detector.

The TSM-ResNet-50 video backbone and ResNet-50 audio backbone start from an MMV run or an
imported MMV checkpoint (``configs/mmv.py``, ``python -m fakedet.import_weights --format=mmv``);
their pooled features are concatenated and the authors' released head (linear 512 → linear 128 →
linear 2, no activations; ``classifier="fakeout"``) gives the clip's logit; everything is
fine-tuned with cross-entropy, Adam (β 0.9 / 0.999, ε 1e-8), lr 1e-5 with cosine decay to
α = 0.95 of it, for 6 epochs, the minority class oversampled to balance the classes. As the
authors' code: 224-px faces (``preprocess --preset=fakeout``), 32 frames at stride 2, each
training clip augmented by a flip, a brightness shift (δ ≤ 32/255) and a hue shift (δ ≤ 0.2),
each with p 0.5, RGB in [0, 1]; FakeOut's log-mel (``log_mel(preset='fakeout')``, records at
44.1 kHz; a video without audio gives zeros, ``input_pipeline.enrich`` attaches FF++'s):

  python -m fakedet.main --config=configs/fakeout.py --workdir=gs://BUCKET/fakeout \
      --config.init.workdir=gs://BUCKET/mmv_imported \
      --config.input.sources.forgery.data_dir=gs://BUCKET/ffpp_c23_enriched \
      --config.input.eval.data_dir=gs://BUCKET/ffpp_c23_enriched

Not in the paper or the released code (our choices): batch 32 (the paper does not give it).
Variants (comma-separated): ``video_only`` — the video backbone alone (FakeOut's "V" rows);
``linear_probe`` — only the head trains, the backbones fixed with their BatchNorm statistics
(App. F.2's comparison); ``mlp`` — the paper's text (§4.1 "a multi-layer perceptron with 2
hidden layers": ReLU layers 512, 512) instead of the released head; ``demo`` — the MMV demo's
model on the embedded synthetic forgery set, starting from ``configs/mmv.py:demo`` run in
/tmp/fakedet_mmv; ``holdout=FAMILY`` — leave one manipulation out (Table 2);
``train_families=A+B`` — FakeOut's cross-approach protocol (Table 3: train on one approach's
families, evaluate on the others; docs/evaluation.md).

  python -m fakedet.main --config=configs/fakeout.py:demo --workdir=/tmp/fakedet_fakeout
"""
import ml_collections

from configs import common
from fakedet import config_variants
from fakedet.objectives.video_detector import MMV_AUDIO_INIT_RULES, MMV_INIT_RULES
from fakedet.trainers import train
from input_pipeline import config as input_config

# The authors' augmentation (fakeout/data/data_utils.py): flip, then brightness and hue, each
# with its own p 0.5 (the paper's B.1 gives the deltas, not the probabilities).
# 32 frames at stride 2 with the audio of the first 32 frames' duration (their sampler):
# clips of 63 frames, every other one kept.
STRIDE_OP = "temporal_stride(stride=2, audio_frames=32)"
CLIP_FRAMES = 63
TRAIN_OPS = (STRIDE_OP + "|random_crop(size={crop}, resize={size})|flip"
             "|color_jitter(hue=0.2, brightness={brightness}, hue_p=0.5, brightness_p=0.5)")
EVAL_OPS = STRIDE_OP + "|center_crop(size={crop}, resize={size})"
FAKEOUT_LOG_MEL = "log_mel(preset='fakeout')"  # tf.signal framing at 44.1 kHz, raw dB.


def _ops(crop: int, size, audio: bool, mel: str = FAKEOUT_LOG_MEL):
  mel = f"|{mel}" if audio else ""
  return (TRAIN_OPS.format(crop=crop, size=size, brightness=32 / 255) + mel,
          EVAL_OPS.format(crop=crop, size=size) + mel)


def get_config(arg=None):
  variant = common.variants(arg, "configs/fakeout.py",
                            flags=("demo", "video_only", "linear_probe", "mlp"),
                            keys=("holdout", "train_families"))
  audio = not variant.get("video_only")
  config = common.base_config()
  config.objective = ml_collections.ConfigDict(dict(
      name="video_detector", logit_adjustment=False, aux_weight=0.0))

  config.model = ml_collections.ConfigDict(dict(
      backbone=dict(name="tsm_resnet", stage_blocks=(3, 4, 6, 3), width_multiplier=1.0,
                    shift_fraction=0.125, dtype="float32"),
      audio_backbone=dict(name="resnet50_audio", stage_blocks=(3, 4, 6, 3),
                          width_multiplier=1.0, dtype="float32") if audio else None,
      # The released head (fakeout/inference.py): linear 512 → 128 → 2, no activations.
      classifier="fakeout", mlp_hidden=(512, 512),
      pixel_mean=(0.0, 0.0, 0.0),  # As MMV: RGB in [0, 1].
      pixel_std=(1.0, 1.0, 1.0),
  ))

  config.input.clip_frames = CLIP_FRAMES
  # 224-px faces (preprocess --preset=fakeout); the crop keeps them whole, as the authors'
  # resize-to-224 + 224 crop does.
  config.input.train_ops, config.input.eval.ops = _ops(224, None, audio)
  config.input.sample_rate = 44100  # FakeOut's audio front end is defined at 44.1 kHz.
  # The authors' training sampler (sample_linspace_sequence with one window) always starts at
  # frame 0, so a video trains on its first 63 frames only; the paper (§3.2) says clips are
  # "randomly sampled" — frame_window=0 gives that.
  config.input.sources = ml_collections.ConfigDict({
      "forgery": input_config.source_config("", "train", 32, balance="class",
                                            frame_window=CLIP_FRAMES)})
  config.input.eval.split = "val"
  # Linearly spaced clips over the video, logits averaged per track (their num_test_windows;
  # F.1).
  config.input.eval.clips_per_video = 9
  config.input.eval.batch_size = 64
  config.input.num_workers = 8

  config.num_epochs = 6.0
  config.optim = ml_collections.ConfigDict(dict(
      name="adam", lr=1e-5, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=0,
      schedule="cosine", cosine_alpha=0.95, grad_clip_norm=0.0,
      groups=ml_collections.ConfigDict()))
  config.init.rules = MMV_AUDIO_INIT_RULES if audio else MMV_INIT_RULES
  # "6 epochs, chosen by the validation set": the best checkpoint by validation video AUC is
  # kept in <workdir>/best.
  config.selection = train.selection_config("eval/overall/video_auc", "max")
  config.eval_every = 1000
  config.eval_batches = 0

  if variant.get("mlp"):
    config.model.classifier = "mlp"
  if variant.get("linear_probe"):
    _linear_probe(config)
  if variant.get("demo"):
    _demo(config, audio)
  if "holdout" in variant:
    config_variants.hold_out(config, variant["holdout"])
  if "train_families" in variant:
    config_variants.train_families(config, variant["train_families"])
  return config


def _linear_probe(config):
  """App. F.2: only the head adapts; the backbones keep their weights and BN statistics."""
  config.model.frozen_backbones = True
  config.optim.groups = ml_collections.ConfigDict(dict(backbones=dict(
      pattern=r"(audio_)?backbone/.*", lr=0.0, weight_decay=0.0, schedule="constant",
      warmup_steps=0, freeze=True)))


def _demo(config, audio: bool):
  """The MMV demo's backbones (one block per stage, width ×1/8) on the synthetic forgeries."""
  m = config.model
  for backbone in (m.backbone, m.audio_backbone) if audio else (m.backbone,):
    backbone.stage_blocks = (1, 1, 1, 1)
    backbone.width_multiplier = 0.125
  m.mlp_hidden = (128, 128)
  m.pixel_mean = (0.421, 0.421, 0.421)  # As the MMV demo.
  m.pixel_std = (0.165, 0.165, 0.165)
  # The synthetic records are 16 kHz and the MMV demo learnt on the default log-mel.
  config.input.sample_rate = 16000
  config.input.train_ops, config.input.eval.ops = _ops(56, 48, audio, mel="log_mel")
  config_variants.synthetic_detector_demo(config, init_workdir="/tmp/fakedet_mmv")
  config.optim.lr = 5e-4  # 1e-5 barely moves a 400-step run.
  config.optim.cosine_alpha = 0.0

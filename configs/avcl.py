"""Audio-visual contrastive transformer, pre-training (§3.2, §3.3, §4.1, Table 4).

Symmetric InfoNCE (Eq. 1–3, τ = 0.1) between a mouth-video encoder — 3D conv 5×7×7 + per-frame
ResNet-18, 6-layer transformer (1024 wide, 8 heads × 128, MLP 2048, dropout 0.2), pooling and an
MLP head into 256-d — and a wav2vec2 audio encoder (CNN frozen) with the same pooling and head,
on 2-s clips (50 frames of greyscale 96×96 mouth crops, randomly cropped to 88, with the raw
16 kHz waveform of the same instants); AdamW at lr 0.01, × 0.9 per epoch down to 1e-4, stopped
when the training loss has not fallen for 3 epochs. Point it at mouth-crop records of real talking
faces (``python -m input_pipeline.preprocess ... --mouth`` writes them to OUT/mouth) and, as the
paper does, start the audio encoder from a wav2vec2 fine-tuned for speech recognition:

  python -m fakedet.import_weights --format=wav2vec2 --weights=wav2vec2-base-960h/ \
      --workdir=gs://BUCKET/wav2vec2_base
  python -m fakedet.main --config=configs/avcl.py --workdir=gs://BUCKET/avcl \
      --config.init.workdir=gs://BUCKET/wav2vec2_base \
      --config.input.sources.reals.data_dir=gs://BUCKET/voxceleb2/mouth \
      --config.input.eval.data_dir=gs://BUCKET/voxceleb2/mouth

Variants (comma-separated): ``r50`` — Table 4's ResNet-50 frontend (backend width doubled);
``layers=N`` — N transformer layers (Table 4: 4, 6, 8); ``demo`` — a reduced model on the
embedded synthetic mouth crops (below). Fine-tuning: ``configs/avcl_finetune.py``.

Where the paper is silent (our choices, following the method's lineage):
  * AdamW's β = (0.9, 0.999), ε = 1e-8 and weight decay 0.01 (torch.optim.AdamW's defaults), no
    warm-up (none is mentioned), batch 256 (InfoNCE gains from many negatives; not given).
  * Augmentation magnitudes: motion blur of 3–7 px in a random direction, Gaussian noise σ ≤
    0.05, brightness × U[0.8, 1.2], each on half the clips; no flip (the paper lists none).
  * Normalisation: LipForensics' greyscale mean / std 0.421 / 0.165 (the lipreading ResNet's);
    per-clip zero-mean, unit-variance audio (wav2vec2's feature extractor).
  * An upper bound of 100 epochs beside the plateau rule; evaluation = within-batch clip
    retrieval on held-out real videos (one clip each), which the paper does not report.
  * The wav2vec2 the paper starts from is not named: base-960h here (``model.audio``; large-lv60
    is ``wav2vec2.config("large_lv60")`` and a 1024-wide backbone).

``:demo`` — one residual block per stage at width ×1/8, a 2-layer 64-wide transformer, a 2-layer
64-wide wav2vec2 (32-channel CNN, frozen like the paper's — here at its random init), 44-px
input (the 88-px crop halved: the synthetic lips are rendered at a third of the crop's
resolution), batches of 16 two-second clips from ``synthetic:extra_mouth`` (240 real videos of
60 people), retrieval scored on the 36 real val videos of ``synthetic:demo_mouth`` (6 unseen
people, one batch: chance 1/36):

  python -m fakedet.main --config=configs/avcl.py:demo --workdir=/tmp/fakedet_avcl

Measured: see docs/avcl.md.
"""
import ml_collections

from configs import common
from fakedet.models import avcl as avcl_models
from fakedet.models import wav2vec2
from fakedet.objectives.avcl import WAV2VEC2_INIT_RULES
from fakedet.trainers import train
from input_pipeline import config as input_config

# §3.3: identical on every frame of a clip — random crop 96 → 88, motion blur, Gaussian noise,
# random brightness (magnitudes and probabilities: ours, see above).
AUGMENT_OPS = ("random_crop(size=88, resize={size})"
               "|motion_blur(p=0.5, kernel=(3, 7))"
               "|gaussian_noise(p=0.5, std=(0.0, 0.05))"
               "|brightness(p=0.5, delta=0.2)")
EVAL_OPS = "center_crop(size=88, resize={size})"
PIXEL_MEAN, PIXEL_STD = (0.421,), (0.165,)  # One value: the model takes one luma channel.
CLIP_FRAMES = 50  # 2 s at 25 fps (§3.3); the waveform spans the same 2 s (640 samples/frame).


def video_encoder(frontend: str = "resnet18", num_layers: int = 6) -> ml_collections.ConfigDict:
  """``AVCLVideoEncoder`` arguments for a row of Table 4 (§4.1's transformer sizes)."""
  return ml_collections.ConfigDict(dict(
      avcl_models.config(frontend, num_layers), stage_blocks=None, width_multiplier=1.0,
      stem_act="prelu",  # LipForensics' stem (module docstring of fakedet/models/avcl.py).
      stem_impl="auto", dropout=0.2, max_len=CLIP_FRAMES,
      num_tokens=8, head_hidden=2048, proj_dim=256,  # 256-d common space (§4.1).
      freeze_frontend=False, dtype="float32"))


def audio_encoder() -> ml_collections.ConfigDict:
  """``AVCLAudioEncoder`` arguments: wav2vec2-base with its CNN frozen (§3.2)."""
  return ml_collections.ConfigDict(dict(
      wav2vec2.config("base"), pos_conv_impl="auto", freeze_feature_encoder=True,
      num_tokens=8, head_hidden=2048, proj_dim=256, dtype="float32"))


def demo_video_encoder() -> ml_collections.ConfigDict:
  """The demo's video encoder (fine-tuning's demo restores exactly this one)."""
  video = video_encoder()
  video.update(stage_blocks=(1, 1, 1, 1), width_multiplier=0.125, num_layers=2, width=64,
               num_heads=4, mlp_dim=128, head_hidden=256, proj_dim=64)
  return video


def get_config(arg=None):
  variant = common.variants(arg, "configs/avcl.py", flags=("demo", "r50"), keys=("layers",))
  config = common.base_config()
  config.objective = ml_collections.ConfigDict(dict(name="avcl", temperature=0.1))  # §3.2
  layers = int(variant.get("layers", 6))
  config.model = ml_collections.ConfigDict(dict(
      video=video_encoder("resnet50" if variant.get("r50") else "resnet18", layers),
      audio=audio_encoder(), pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD))

  config.input.clip_frames = CLIP_FRAMES
  config.input.train_ops = AUGMENT_OPS.format(size=88)
  config.input.eval.ops = EVAL_OPS.format(size=88)
  config.input.sources = ml_collections.ConfigDict({
      "reals": input_config.source_config("", "train", 256, labels=(0,))})
  config.input.eval.split = "val"
  # Clip retrieval on real videos, one clip each (clips of one video resemble each other).
  config.input.eval.labels = (0,)
  config.input.eval.clips_per_video = 1
  config.input.eval.batch_size = 256
  config.input.num_workers = 8

  # §4.1: AdamW, lr 0.01 decayed by 0.9 every epoch to a minimum of 1e-4; the wav2vec2 CNN is
  # frozen (§3.2; no update, no weight decay).
  config.optim = ml_collections.ConfigDict(dict(
      name="adamw", lr=0.01, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=0,
      schedule="exponential", decay_rate=0.9, decay_steps=0, decay_epochs=1.0, min_lr=1e-4,
      grad_clip_norm=0.0,
      groups=dict(audio_cnn=dict(pattern=rf"audio/{wav2vec2.FEATURE_ENCODER}/.*", lr=0.0,
                                 weight_decay=0.0, freeze=True))))
  # §4.1: "we end the pre-training when the training loss stops descending for 3 epochs".
  config.selection = train.selection_config(plateau_epochs=3)
  config.num_epochs = 100.0  # An upper bound (ours); the plateau rule ends the run.
  config.init.rules = WAV2VEC2_INIT_RULES  # Used when --config.init.workdir names an import.
  config.checkpoint.every_steps = 5000
  config.log_every = 100
  config.eval_every = 5000
  config.eval_batches = 10

  if variant.get("demo"):
    _demo(config)
  return config


def _demo(config):
  """Reduced model on the embedded mouth crops; 2 CPU cores (docs/avcl.md)."""
  config.model.video = demo_video_encoder()
  config.model.audio.update(conv_dim=(32,) * 7, hidden_size=64, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=128,
                            num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4,
                            head_hidden=256, proj_dim=64)
  config.input.train_ops = AUGMENT_OPS.format(size=44)
  config.input.eval.ops = EVAL_OPS.format(size=44)
  # Like VoxCeleb2 for the paper: real talking faces of other people than the forgery set's.
  config.input.sources.reals = input_config.source_config("synthetic:extra_mouth", "train", 16,
                                                          labels=(0,))
  config.input.eval.data_dir = "synthetic:demo_mouth"
  config.input.eval.batch_size = 36  # All 36 real val videos: one retrieval batch.
  config.input.num_workers = 0
  config.num_epochs = 0.0
  config.total_steps = 300  # 20 epochs of the 240 videos; the plateau rule may stop it first.
  # The paper's lr 0.01 collapses this small model within 5 steps (every clip on one point:
  # loss = ln 16, collapse_std 0.01; measured); 1e-3 with the same × 0.9 per epoch and floor.
  config.optim.lr = 1e-3
  config.checkpoint.every_steps = 100
  config.log_every = 15  # One log per epoch.
  config.eval_every = 100
  config.eval_batches = 1

"""MMV pretraining (FakeOut §3.1, App. C; Alayrac et al. 2020): the FakeOut backbone.

NCE between video and audio in the fine space S_va (512-d) + MIL-NCE between video and K
temporally close narrations in the coarse space S_vat (256-d), τ = 0.07, λ_va = λ_vt = 1, on a
TSM-ResNet-50 (v2) video backbone (2048-d; ``:x2`` = TSM-ResNet-50×2, 4096-d), a ResNet-50 audio
backbone on 80-bin log-mels (2048-d) and a word2vec → linear 2048 + ReLU → max-pool text branch.
Optimiser as in MMV: Adam, lr 2e-3 at batch 4096 (scale it with your batch), 5k warm-up steps,
cosine decay over 500k steps. Point it at narrated real video (HowTo100M / AudioSet-like records
with word timings) and a word2vec text file:

  python -m fakedet.main --config=configs/mmv.py --workdir=gs://BUCKET/mmv \
      --config.input.sources.main.data_dir=gs://BUCKET/howto100m_records \
      --config.input.eval.data_dir=gs://BUCKET/howto100m_records \
      --config.model.text_backbone.vocab_path=/data/word2vec.txt \
      --config.input.train_ops="$(python -c 'import configs.mmv as m; print(m.ops("/data/word2vec.txt")[0])')"

(the vocabulary path appears in the model and in both op strings; the objective checks they
agree). Deviations: clips are ``clip_frames`` consecutive frames at the records' own rate (MMV
samples 32 frames at 10 fps) and the audio spans the same time (Ta = 4·Tv log-mel frames).

``:demo`` — TSM-ResNet / ResNet-50 reduced to one block per stage at width ×1/8 (381k params),
48-px tight face crops, 1200 steps of 32 clips (16 windows of 32 frames, each cut into two
adjacent 16-frame clips) from ``synthetic:narrated`` (84 identities; each video's words come from
one of 10 topics that a badge in the picture shows; narrations = pairs of its words). Measured at
step 1200 on the 36 val videos (unseen identities): video→audio top-1 0.667 / top-5 1.0, video→
text 0.361 / 1.0 (chance 0.028 / 0.139); 8 min 37 s on an idle 2-core CPU (+ ≈ 50 s to generate
the preset once). Details, and what the text figure shows, in docs/mmv.md.

  python -m fakedet.main --config=configs/mmv.py:demo --workdir=/tmp/fakedet_mmv
"""
import ml_collections

from configs import common
from input_pipeline import config as input_config

NARRATED_VOCABULARY = "synthetic:narrated/vocabulary.txt"
TRAIN_OPS = ("{train_crop}(size={crop}, resize={size})|flip|color_jitter"
             "|log_mel|narrations(num={num}, words_per_narration={words}, max_words=16"
             ", vocab_path={vocab!r})")
EVAL_OPS = ("center_crop(size={crop}, resize={size})|log_mel"
            "|narrations(num={num}, words_per_narration={words}, max_words=16"
            ", vocab_path={vocab!r})")


def ops(vocab_path: str = "", crop: int = 140, size: int = 200, num: int = 5, words: int = 8,
        parts: int = 1, train_crop: str = "random_crop"):
  """(train ops, eval ops) with the narration sampler reading ``vocab_path``; ``parts`` > 1
  cuts every training clip into that many adjacent sub-clips (``split_time``)."""
  kw = dict(crop=crop, size=size, num=num, words=words, vocab=vocab_path)
  train_ops = TRAIN_OPS.format(train_crop=train_crop, **kw)
  if parts > 1:
    train_ops = train_ops.replace("|narrations(", f"|split_time(keys=('video', 'audio'), "
                                  f"parts={parts})|narrations(parts={parts}, ")
  return train_ops, EVAL_OPS.format(**kw)


def get_config(arg=None):
  variant = common.variants(arg, "configs/mmv.py", flags=("x2", "demo"))
  config = common.base_config()
  config.objective = ml_collections.ConfigDict(dict(
      name="mmv", temperature=0.07, lambda_va=1.0, lambda_vt=1.0,
      train_parts=1))  # Sub-clips per training sample; must match the split_time op (ops()).

  config.model = ml_collections.ConfigDict(dict(
      video_backbone=dict(name="tsm_resnet", stage_blocks=(3, 4, 6, 3), width_multiplier=1.0,
                          shift_fraction=0.125, dtype="float32"),
      audio_backbone=dict(name="resnet50_audio", stage_blocks=(3, 4, 6, 3),
                          width_multiplier=1.0, dtype="float32"),
      # vocab_path: a word2vec text file the user supplies (the same path in both op strings).
      text_backbone=dict(name="text_encoder", vocab_path="", embedding_dim=300, features=2048,
                         freeze_embeddings=True),
      # FAC heads as released (mmv/config.py): video → va MLP@512 + BN, audio → va linear,
      # ReLU, va → vat linear + BN, text → vat linear.
      va_dim=512, vat_dim=256, va_hidden=512,
      pixel_mean=(0.0, 0.0, 0.0),  # MMV feeds RGB in [0, 1].
      pixel_std=(1.0, 1.0, 1.0),
  ))

  config.input.clip_frames = 32
  config.input.with_words = True
  config.input.train_ops, config.input.eval.ops = ops()
  config.input.sources = ml_collections.ConfigDict({
      "main": input_config.source_config("", "train", 4096, labels=(0,))})
  config.input.eval.split = "val"
  # Within-batch retrieval on real clips, one per video (clips of one video resemble each other).
  config.input.eval.labels = (0,)
  config.input.eval.clips_per_video = 1
  config.input.eval.batch_size = 256
  config.input.num_workers = 8

  config.total_steps = 500_000
  config.optim = ml_collections.ConfigDict(dict(
      name="adam", lr=2e-3, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=5000,
      schedule="cosine", grad_clip_norm=0.0,
      # A word2vec table stays fixed: stop_gradient in the model, and no decay here.
      groups=dict(word_embeddings=dict(pattern=r".*word_embeddings.*", weight_decay=0.0))))
  # MMV pretraining starts from scratch and keeps its last state (no model selection).
  config.checkpoint.every_steps = 5000
  config.log_every = 100
  config.eval_every = 5000
  config.eval_batches = 10

  if variant.get("x2"):
    config.model.video_backbone.width_multiplier = 2.0
  if variant.get("demo"):
    _demo(config)
  return config


def _demo(config):
  """One block per stage at width ×1/8; 16 windows × 2 sub-clips of 16 × 48² frames."""
  m = config.model
  m.video_backbone.stage_blocks = (1, 1, 1, 1)
  m.video_backbone.width_multiplier = 0.125
  m.audio_backbone.stage_blocks = (1, 1, 1, 1)
  m.audio_backbone.width_multiplier = 0.125
  m.text_backbone.embedding_dim = 64
  m.text_backbone.features = 256
  m.va_dim, m.vat_dim, m.va_hidden = 128, 64, 128
  m.pixel_mean = (0.421, 0.421, 0.421)  # The synthetic faces' statistics (as stage 1).
  m.pixel_std = (0.165, 0.165, 0.165)
  # 32-frame windows cut into two adjacent 16-frame training clips: each clip's sibling (same
  # face, voice and background, other words) is in the batch as a negative, so matching
  # identities cannot solve NCE; evaluation uses the whole 32-frame window.
  config.input.clip_frames = 32
  # A tight centre crop (eyebrows to chin): the mouth is ~12 px wide at 48 px, not ~7.
  config.objective.train_parts = 2
  # The dataset's own word list (the synthetic pseudo-words have no word2vec): random, trained
  # embeddings.
  m.text_backbone.vocab_path = NARRATED_VOCABULARY
  config.input.train_ops, config.input.eval.ops = ops(NARRATED_VOCABULARY, crop=56, size=48,
                                                      num=3, words=2,
                                                      parts=config.objective.train_parts,
                                                      train_crop="center_crop")
  # The narrated preset (reals only, 84 train / 9 val identities): each video's words come from
  # one of 10 topics whose badge is in the picture, as HowTo100M speech is about what is shown.
  config.input.sources.main = input_config.source_config("synthetic:narrated", "train", 16,
                                                         labels=(0,))
  config.input.eval.data_dir = "synthetic:narrated"
  config.input.eval.batch_size = 36  # All 36 val videos: one retrieval batch.
  config.input.num_workers = 0
  config.total_steps = 1200  # 8.6 min on an idle 2-core CPU.
  config.optim.lr = 2e-3
  config.optim.warmup_steps = 50
  config.optim.schedule = "constant"
  config.checkpoint.every_steps = 200
  config.log_every = 25
  config.eval_every = 100
  config.eval_batches = 1

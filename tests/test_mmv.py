"""MMV pretraining end to end: narrations op, text branch (word2vec, frozen), FAC model, configs,
objective checks and a few-step trainer smoke run."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fakedet import models, objectives
from fakedet import train_state as train_state_lib
from fakedet.trainers import train
from input_pipeline import config as input_config
from input_pipeline import narrations, ops
from tests import tiny_configs

T, SIZE = 4, 32
VOCAB = "synthetic:tiny/vocabulary.txt"  # The embedded dataset's word list (no vectors).


def mmv_tiny():
  """configs/mmv.py:demo shrunk to a few-second compile, on ``synthetic:tiny``."""
  module = tiny_configs.config_module("mmv")
  config = module.get_config("demo")
  m = config.model
  m.video_backbone.width_multiplier = 1 / 16
  m.audio_backbone.width_multiplier = 1 / 16
  m.text_backbone.embedding_dim = 8
  m.text_backbone.features = 16
  m.text_backbone.vocab_path = VOCAB
  m.va_dim, m.vat_dim, m.va_hidden = 16, 8, 16
  config.input.clip_frames = T
  config.objective.train_parts = 1
  config.input.train_ops, config.input.eval.ops = module.ops(VOCAB, crop=36, size=SIZE, num=2,
                                                             words=2)
  config.input.sources = ml_collections.ConfigDict({"main": input_config.source_config(
      "synthetic:tiny", "train", 8, labels=(0,))})
  config.input.eval.data_dir = "synthetic:tiny"
  config.input.eval.batch_size = 8
  config.total_steps = 3
  config.optim.warmup_steps = 1
  config.checkpoint.every_steps = 3
  config.checkpoint.async_save = False
  config.log_every = 1
  config.eval_every = 0
  config.eval_batches = 1
  return config


def fake_batch(b=8, k=2, seed=0):
  rng = np.random.default_rng(seed)
  text = rng.integers(2, 52, (b, k, 16)).astype(np.int32)
  text[..., 3:] = 0
  return {"video": rng.integers(0, 256, (b, T, SIZE, SIZE, 3), dtype=np.uint8),
          "audio": rng.normal(size=(b, 4 * T, 80)).astype(np.float32),
          "text": text, "text_valid": np.ones((b, k), bool), "valid": np.ones(b, bool)}


# ----------------------------------------------------------------------------- narrations
def test_narration_windows_nearest_the_clip_centre_first():
  start = np.array([0.0, 0.5, 1.0, 1.5])
  end = start + 0.4
  # Clip [0, 1.2) s → centre 0.6; 2-word windows centred at 0.45, 0.95, 1.45.
  assert narrations.select_narrations(start, end, 1.2, 2, 2) == [(0, 2), (1, 3)]
  assert narrations.select_narrations(start, end, 1.2, 5, 2) == [(0, 2), (1, 3), (2, 4)]
  assert narrations.select_narrations(start[:1], end[:1], 1.2, 3, 2) == [(0, 1)]
  assert narrations.select_narrations(start[:0], end[:0], 1.2, 3, 2) == []


def test_narrations_op_tokenises_pads_and_drops_the_transcript():
  op = ops.build(f"narrations(num=3, words_per_narration=2, max_words=4, vocab_path={VOCAB!r})")
  example = {"words": ["mala", "tiso", "zzz"], "word_start": np.float32([0.1, 0.5, 0.9]),
             "word_end": np.float32([0.4, 0.8, 1.2]), "clip_duration": np.float32(0.64),
             "video": np.zeros(1)}
  out = op(example, np.random.default_rng(0))
  vocab = narrations.vocabulary(VOCAB)
  mala, tiso = vocab.index("mala"), vocab.index("tiso")
  assert vocab[:2] == ("<pad>", "<unk>")
  np.testing.assert_array_equal(out["text"], [[mala, tiso, 0, 0], [tiso, 1, 0, 0], [0] * 4])
  np.testing.assert_array_equal(out["text_valid"], [True, True, False])
  assert sorted(out) == ["text", "text_valid", "video"]
  with pytest.raises(KeyError, match="with_words=True"):
    op({"video": np.zeros(1)}, np.random.default_rng(0))


def test_split_time_and_per_part_narrations():
  spec = ("split_time(keys=('video', 'audio'), parts=2)"
          f"|narrations(num=1, words_per_narration=1, max_words=2, parts=2, vocab_path={VOCAB!r})")
  video = np.arange(8)[:, None, None, None] * np.ones((8, 2, 2, 3), np.uint8)
  audio = np.arange(32, dtype=np.float32)[:, None] * np.ones((32, 80), np.float32)
  example = {"video": video, "audio": audio, "words": ["mala", "tiso"],
             "word_start": np.float32([0.0, 0.2]), "word_end": np.float32([0.1, 0.3]),
             "clip_duration": np.float32(0.32)}
  out = ops.build(spec)(example, np.random.default_rng(0))
  assert out["video"].shape == (2, 4, 2, 2, 3) and out["audio"].shape == (2, 16, 80)
  np.testing.assert_array_equal(out["video"][1, :, 0, 0, 0], [4, 5, 6, 7])
  np.testing.assert_array_equal(out["audio"][1, :, 0], np.arange(16, 32))
  vocab = narrations.vocabulary(VOCAB)
  # Sub-clip 0 is [0, 0.16) s: "mala" is nearest; sub-clip 1 is [0.16, 0.32): "tiso".
  np.testing.assert_array_equal(out["text"][:, 0, 0], [vocab.index("mala"), vocab.index("tiso")])
  assert out["text"].shape == (2, 1, 2) and out["text_valid"].shape == (2, 1)
  with pytest.raises(ValueError, match="not divisible"):
    ops.build("split_time(keys=('video',), parts=3)")({"video": video}, None)


@pytest.mark.integration
def test_objective_flattens_sub_clips_into_the_batch():
  config = mmv_tiny()
  objective = objectives.get("mmv")(config)
  split = mmv_tiny()
  split.objective.train_parts = 2  # Declared, not inferred from the batch rank.
  split_objective = objectives.get("mmv")(split)
  flat = fake_batch(8)
  nested = {k: v.reshape((4, 2) + v.shape[1:]) for k, v in flat.items() if k != "valid"}
  variables = split_objective.init(jax.random.key(0), nested)
  state = train_state_lib.TrainState(step=0, params=variables["params"],
                                     batch_stats=variables["batch_stats"], opt_state=None,
                                     ema_params={}, ema_batch_stats={})
  a = split_objective.loss(variables["params"], state, nested, None)[0]
  b = objective.loss(variables["params"], state, flat, None)[0]
  np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
  # A batch that does not hold the declared sub-clips is an error, not silently reshaped.
  with pytest.raises(ValueError, match=r"train_parts=2: expected training video \[B, 2"):
    split_objective.loss(variables["params"], state, flat, None)
  with pytest.raises(ValueError, match="train_parts"):
    objective.check(split)  # train_parts=2 but the train ops have no split_time.


def test_pipeline_with_words_gives_fixed_size_narrations():
  config = mmv_tiny()
  from input_pipeline import pipeline
  batch = next(iter(pipeline.train_dataset(config.input, 0, process_index=0, process_count=1)))
  assert batch["text"].shape == (8, 2, 16) and batch["text"].dtype == np.int32
  assert batch["text_valid"].shape == (8, 2) and batch["text_valid"][:, 0].all()
  assert batch["audio"].shape == (8, 4 * T, 80)
  assert (batch["text"][:, 0, 0] >= 2).all()  # a known pseudo-word, not <pad>/<unk>
  ev = next(iter(pipeline.eval_dataset(config.input, process_index=0, process_count=1)))
  assert ev["text"].shape == (8, 2, 16) and ev["valid"].sum() == 2  # 2 real val videos


@pytest.fixture()
def word2vec_file(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / "w2v.txt"
  lines = ["3 300"] + [w + " " + " ".join(f"{x:.4f}" for x in rng.normal(size=300))
                        for w in ("mala", "tiso", "bune")]
  path.write_text("\n".join(lines) + "\n")
  return str(path)


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_word2vec_file_gives_vocab_and_a_frozen_table(word2vec_file):
  words, table = narrations.load_vocabulary(word2vec_file)
  assert words == ("<pad>", "<unk>", "mala", "tiso", "bune") and table.shape == (5, 300)
  np.testing.assert_array_equal(table[:2], 0)
  np.testing.assert_array_equal(narrations.tokenize(["bune", "kato"], word2vec_file), [4, 1])
  model = models.get("text_encoder")(vocab_path=word2vec_file, features=8)
  tokens = jnp.array([[2, 3, 0, 0], [0, 0, 0, 0]])
  params = model.init(jax.random.key(0), tokens, train=False)["params"]
  np.testing.assert_allclose(params["word_embeddings"], table, rtol=1e-6)
  loss = lambda p: jnp.sum(model.apply({"params": p}, tokens, train=True)["pooled"] ** 2)
  grads = jax.grad(loss)(params)
  assert float(jnp.max(jnp.abs(grads["word_embeddings"]))) == 0.0
  assert float(jnp.max(jnp.abs(grads["word_proj"]["kernel"]))) > 0.0
  trainable = models.get("text_encoder")(vocab_path=VOCAB, embedding_dim=8, features=8)
  p2 = trainable.init(jax.random.key(0), tokens, train=False)["params"]
  g2 = jax.grad(lambda p: jnp.sum(trainable.apply({"params": p}, tokens, train=True)["pooled"]
                                  ** 2))(p2)
  assert float(jnp.max(jnp.abs(g2["word_embeddings"]))) > 0.0


def test_vocabulary_comes_from_the_data_never_from_code(tmp_path):
  """A word list (the dataset's vocabulary.txt) gives ids and random embeddings; no path is an
  error naming what to give, not a silent fallback to the synthetic generator's words."""
  words = narrations.vocabulary(VOCAB)
  from input_pipeline.synthetic import speech
  assert words == ("<pad>", "<unk>") + tuple(speech.VOCABULARY)  # What the dataset shipped.
  path = tmp_path / "words.txt"
  path.write_text("alpha\nbeta\n")
  assert narrations.load_vocabulary(str(path)) == (("<pad>", "<unk>", "alpha", "beta"), None)
  with pytest.raises(ValueError, match="vocab_path is empty"):
    ops.build("narrations(num=1)")
  bad = tmp_path / "bad.txt"
  bad.write_text("alpha 0.1 0.2\nbeta 0.3\n")
  with pytest.raises(ValueError, match="bad.txt:2: 1 values, expected 2"):
    narrations.load_vocabulary(str(bad))


def test_text_encoder_max_pools_like_the_released_model_or_over_real_words_only():
  tokens = jnp.array([[[5, 7, 0], [0, 0, 0]]])  # [B=1, K=2, L=3]
  # Default (released MMV TextModule): max over every position, padding included.
  model = models.get("text_encoder")(vocab_path=VOCAB, embedding_dim=4, features=6)
  variables = model.init(jax.random.key(0), tokens, train=False)
  out = model.apply(variables, tokens, train=False)
  assert out["words"].shape == (1, 2, 3, 6) and out["pooled"].shape == (1, 2, 6)
  np.testing.assert_allclose(out["pooled"][0], jnp.max(out["words"][0], axis=1))
  # mask_padding=True: real words only; an empty narration pools to zeros.
  masked = models.get("text_encoder")(vocab_path=VOCAB, embedding_dim=4, features=6,
                                      mask_padding=True)
  out = masked.apply(variables, tokens, train=False)
  np.testing.assert_allclose(out["pooled"][0, 0], jnp.max(out["words"][0, 0, :2], axis=0))
  np.testing.assert_array_equal(out["pooled"][0, 1], 0)


@pytest.mark.integration  # > 5 s on 2 cores: kept out of the fast subset.
def test_text_encoder_vocab_size_holds_a_converted_table_frozen():
  model = models.get("text_encoder")(embedding_dim=4, features=6, vocab_size=100)
  tokens = jnp.array([[99, 3, 0]])
  params = model.init(jax.random.key(0), tokens, train=False)["params"]
  assert params["word_embeddings"].shape == (100, 4)
  grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, tokens, train=True)["pooled"]
                                     ** 2))(params)
  assert float(jnp.max(jnp.abs(grads["word_embeddings"]))) == 0.0  # As MMV's stop_gradient.


# ----------------------------------------------------------------------------- model + configs
@pytest.mark.integration  # Compiles a whole model: tens of seconds.
def test_mmv_model_outputs_fac_spaces():
  config = mmv_tiny()
  objective = objectives.get("mmv")(config)
  batch = fake_batch()
  variables = objective.init(jax.random.key(0), batch)
  out = objective._apply(variables, batch, False)
  shapes = {k: v.shape for k, v in out.items()}
  assert shapes == {"video_pooled": (8, 128), "video_va": (8, 16), "video_vat": (8, 8),
                    "audio_pooled": (8, 128), "audio_va": (8, 16),
                    "text_pooled": (8, 2, 16), "text_vat": (8, 2, 8)}
  # The released FAC heads (mmv/config.py): video → va MLP (linear, BN, ReLU, linear without
  # bias, BN); audio → va, text → vat linear; va → vat linear + BN. mmv_tiny's va_hidden=16
  # is the old name of the video → va hidden width.
  shape = lambda tree: jax.tree.map(jnp.shape, tree)
  p, bs = variables["params"], variables["batch_stats"]
  assert shape(p["video_to_va"]) == {
      "hidden0": {"kernel": (128, 16), "bias": (16,)}, "hidden0_bn": {"scale": (16,),
                                                                       "bias": (16,)},
      "proj": {"kernel": (16, 16)}, "proj_bn": {"scale": (16,), "bias": (16,)}}
  assert shape(p["va_to_vat"]) == {"proj": {"kernel": (16, 8), "bias": (8,)},
                                   "proj_bn": {"scale": (8,), "bias": (8,)}}
  assert shape(p["audio_to_va"]) == {"proj": {"kernel": (128, 16), "bias": (16,)}}
  assert shape(p["text_to_vat"]) == {"proj": {"kernel": (16, 8), "bias": (8,)}}
  assert set(bs) == {"video_backbone", "audio_backbone", "video_to_va", "va_to_vat"}
  # S_vat is reached from relu(S_va): the va → vat head sees no negative video_va.
  model = objective.model
  va = out["video_va"]
  vat = model.apply(variables, va, train=False, method=lambda m, x, train: m.va_to_vat(
      nn.relu(x), train=train))
  np.testing.assert_allclose(vat, out["video_vat"], rtol=1e-5, atol=1e-6)
  assert float(jnp.min(va)) < 0  # So the ReLU matters in this check.


@pytest.mark.parametrize("variant,video_dim", [("", 2048), ("x2", 4096), ("demo", 256)])
def test_configs_build_and_pass_the_trainer_check(variant, video_dim):
  config = tiny_configs.config_module("mmv").get_config(variant)
  train.check(config)
  assert config.objective.temperature == 0.07
  assert config.objective.lambda_va == config.objective.lambda_vt == 1.0
  assert (config.model.va_dim, config.model.vat_dim) == (512, 256) or variant == "demo"
  b = config.model.video_backbone
  assert int(round(2048 * b.width_multiplier)) == video_dim
  with pytest.raises(ValueError, match="unknown variant"):
    tiny_configs.config_module("mmv").get_config("nope")


def test_check_fails_on_mismatched_vocabulary_and_missing_words():
  config = mmv_tiny()
  config.model.text_backbone.vocab_path = "/data/w2v.txt"
  with pytest.raises(ValueError, match="vocab_path"):
    objectives.get("mmv").check(config)
  config = mmv_tiny()
  config.input.with_words = False
  with pytest.raises(ValueError, match="with_words"):
    objectives.get("mmv").check(config)


# ----------------------------------------------------------------------------- trainer
# (Sharding equivalence: tests/test_mmv_losses.py for the global-batch losses on 8 devices,
# tests/test_trainer.py for the shared train step.)
@pytest.mark.integration
def test_trainer_runs_mmv_on_synthetic_tiny(tmp_path):
  result = train.run(mmv_tiny(), str(tmp_path))
  assert result["step"] == 3 and result["last_checkpoint"] == 3
  assert np.isfinite(result["train"]["train/loss"])
  ev = result["eval"]
  np.testing.assert_allclose(ev["eval/retrieval_va_chance_top1"], 0.5)  # 2 valid clips
  for key in ("retrieval_va_top1", "retrieval_va_top5", "retrieval_vt_top1", "nce_va",
              "mil_nce_vt", "collapse_std"):
    assert np.isfinite(ev[f"eval/{key}"]), key

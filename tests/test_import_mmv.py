"""MMV / FakeOut checkpoint import: parity with a Haiku reference, sizes, and error reports.

A Haiku model with the released MMV's module and parameter names (tests/reference/mmv_haiku.py:
TSM-ResNet-50 video, ResNet-50 audio, text, FAC heads and FakeOut's head) gets random weights,
biases, BatchNorm scales / offsets and moving statistics (every ``mean_ema``/``var_ema``
``average``), is pickled as
``{"params": ..., "state": ...}`` of numpy arrays (what the releases hold), read back with
``read_pickle``, converted, and run in evaluation mode next to fakedet's models on the same
frames ([0, 1] RGB), log-mels and tokens: the backbone features, ``video_va``, ``audio_va``,
``video_vat``, ``text_vat`` (MMV) and the per-frame features and clip logits (FakeOut, as
logit_fake − logit_real) must agree to 1e-4 relative error (max abs diff / max abs value). The
networks run at toy width and depth (1/8 and 1/4 width, two blocks in the first stage so an
identity-shortcut block is included); full-size parameter counts come from ``jax.eval_shape``.

What this cannot check: that the reference equals the released code beyond what its structure,
names and shapes fix (it was written from the released source's description, not run against a
released file), nor the released files' exact contents — e.g. whether their containers are
Haiku ``FlatMapping`` (read as dicts), whether ``audio2txt_embd`` is present (both accepted),
or the BatchNorm names an older Haiku produced (``__cross_replica_batch_norm`` here; other
``batch_norm`` spellings are accepted). No real checkpoint is available here.
"""
import dataclasses
import functools
import pickle

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fakedet.importers import WeightsError, flatten
from fakedet.importers import mmv as importer
from fakedet.models import mmv as mmv_model
from fakedet.models import video_detector
from fakedet.train_state import count_params
from tests.reference import mmv_haiku as ref

B, T, SIZE, TA, MELS, WORDS = 2, 4, 32, 32, 16, 5
TOL = 1e-4
BLOCKS = (2, 1, 1, 1)
REF = ref.RefConfig(video_width=1 / 8, video_blocks=BLOCKS, audio_width=1 / 8,
                    audio_blocks=BLOCKS, vocab_size=40, word_dim=12, sentence_dim=32, va_dim=16,
                    va_hidden=24, vat_dim=8, fakeout_hidden=(512, 128))
VIDEO = dict(name="tsm_resnet", stage_blocks=BLOCKS, width_multiplier=1 / 8)
AUDIO = dict(name="resnet50_audio", stage_blocks=BLOCKS, width_multiplier=1 / 8)
MMV_CFG = dict(video_backbone=VIDEO, audio_backbone=AUDIO,
               text_backbone=dict(name="text_encoder", embedding_dim=12, features=32),
               va_dim=16, vat_dim=8, va_hidden=24, pixel_mean=(0.0,) * 3, pixel_std=(1.0,) * 3)
# FakeOut at a different video width than audio (the released audio net is always ×1).
FAKEOUT_REF = dataclasses.replace(REF, video_width=1 / 4)
FAKEOUT_CFG = dict(backbone={**VIDEO, "width_multiplier": 1 / 4}, audio_backbone=AUDIO,
                   classifier="fakeout")


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _inputs(seed: int):
  rng = np.random.default_rng(seed)
  video = rng.uniform(0, 1, (B, T, SIZE, SIZE, 3)).astype(np.float32)
  audio = rng.normal(size=(B, TA, MELS)).astype(np.float32)
  words = rng.integers(1, REF.vocab_size, (B, WORDS)).astype(np.int32)
  words[:, 3:] = 0  # Padding: the released model max-pools over it too.
  return video, audio, words


def _random_checkpoint(shapes, seed: int):
  """Numpy values for a Haiku (params, state) of ShapeDtypeStructs: He-scaled weights, word
  vectors N(0, 1), biases / BN offsets N(0, 0.2), BN scales U(0.5, 1.5), BN moving means
  N(0, 0.2) and variances U(0.5, 2)."""
  rng = np.random.default_rng(seed)
  def leaf(module, name, x):
    if name == "w":
      return rng.normal(0, (2.0 / np.prod(x.shape[:-1])) ** 0.5, x.shape)
    if name in ("b", "offset"):
      return rng.normal(0, 0.2, x.shape)
    if name == "scale":
      return rng.uniform(0.5, 1.5, x.shape)
    if name == "embeddings":
      return rng.normal(0, 1, x.shape)
    if name == "counter":
      return np.ones(x.shape, np.int32)
    if module.endswith("var_ema"):
      return rng.uniform(0.5, 2.0, x.shape)
    return rng.normal(0, 0.2, x.shape)  # mean_ema average / hidden
  return [{m: {k: np.asarray(leaf(m, k, v), v.dtype) for k, v in leaves.items()}
           for m, leaves in tree.items()} for tree in shapes]


@functools.lru_cache(maxsize=None)
def _checkpoint(fakeout: bool):
  """(the reference's Haiku checkpoint as numpy {"params", "state"}, its eval apply)."""
  cfg = FAKEOUT_REF if fakeout else REF
  fn = functools.partial(ref.fakeout_forward if fakeout else ref.mmv_forward, cfg=cfg)
  forward = hk.transform_with_state(fn)
  video, audio, words = _inputs(1)
  # Structure of a model initialised in training mode, as the released files were written
  # (audio2txt_embd included); eval_shape, as a jitted Haiku init is slow to compile.
  shapes = jax.eval_shape(lambda k: forward.init(k, video, audio[..., None], words, True),
                          jax.random.key(0))
  params, state = _random_checkpoint(shapes, 2)
  apply = jax.jit(lambda p, s, v, a, w: forward.apply(p, s, None, v, a[..., None], w, False)[0])
  return {"params": params, "state": state}, apply


def _file(tree, tmp_path):
  path = tmp_path / "checkpoint.pkl"
  path.write_bytes(pickle.dumps(tree))
  return importer.read_pickle(str(path))


def _mmv_model(imported):
  cfg = {k: v for k, v in MMV_CFG.items() if k not in ("pixel_mean", "pixel_std")}
  text = dict(cfg["text_backbone"], vocab_size=imported.model_updates["text_backbone.vocab_size"])
  return mmv_model.MMV(**{**cfg, "text_backbone": text})


# ----------------------------------------------------------------------------- parity
@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_mmv_checkpoint_gives_the_released_embeddings(tmp_path):
  tree, ref_apply = _checkpoint(False)
  imported = importer.convert(_file(tree, tmp_path), MMV_CFG, source="mmv_tsm_resnet.pkl")
  assert imported.model_updates == {"text_backbone.vocab_size": REF.vocab_size}
  assert imported.width_multiplier == 1 / 8
  assert any("txt2audio_embd" in n for n in imported.notes)
  model = _mmv_model(imported)
  video, audio, words = _inputs(3)
  out = jax.jit(lambda v, x, a, w: model.apply(v, x, a, w, train=False))(
      imported.variables, video, audio, words[:, None])
  want = ref_apply(tree["params"], tree["state"], video, audio, words)
  pairs = {"video_pooled": "video_repr", "video_va": "video_va", "video_vat": "video_vat",
           "audio_pooled": "audio_repr", "audio_va": "audio_va"}
  errors = {k: _rel_err(out[k], want[r]) for k, r in pairs.items()}
  errors["text_pooled"] = _rel_err(out["text_pooled"][:, 0], want["text_repr"])
  errors["text_vat"] = _rel_err(out["text_vat"][:, 0], want["text_vat"])
  assert max(errors.values()) <= TOL, errors
  # Non-trivial: the BN statistics and the embeddings are not degenerate.
  assert float(np.std(want["video_vat"])) > 1e-2 and float(np.std(want["text_vat"])) > 1e-2
  # Every converted leaf is used and has the fakedet model's shape.
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), video, audio, words[:, None],
                                             train=False))
  assert jax.tree.map(np.shape, shapes) == jax.tree.map(np.shape, imported.variables)


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_fakeout_checkpoint_gives_the_authors_clip_logits(tmp_path):
  tree, ref_apply = _checkpoint(True)
  imported = importer.convert_fakeout(_file(tree, tmp_path), FAKEOUT_CFG)
  assert imported.absent == () and imported.model_updates == {}
  assert imported.width_multiplier == 1 / 4
  model = video_detector.VideoDetector(**FAKEOUT_CFG)
  video, audio, words = _inputs(4)
  out = jax.jit(lambda v, x, a: model.apply(v, x, a, train=False))(imported.variables, video,
                                                                    audio)
  want = ref_apply(tree["params"], tree["state"], video, audio, words)
  logits = np.asarray(want["logits"])
  errors = {"frames": _rel_err(out["frames"], want["video_frames"]),
            "pooled": _rel_err(out["pooled"], np.concatenate([want["video_repr"],
                                                              want["audio_repr"]], -1)),
            "logit": _rel_err(out["logit"], logits[:, 1] - logits[:, 0])}
  assert max(errors.values()) <= TOL, errors
  # sigmoid(logit) is the authors' softmax fake probability.
  np.testing.assert_allclose(jax.nn.sigmoid(out["logit"]), jax.nn.softmax(logits)[:, 1],
                             rtol=1e-4, atol=1e-6)


def test_video_only_fakeout_file_switches_the_audio_branch_off():
  tree, _ = _checkpoint(True)
  params = dict(tree["params"])
  video_dim = int(2048 * FAKEOUT_REF.video_width)
  w = params["first_mlp_layer"]["w"][:video_dim]  # The head of a use_audio=False run.
  params["first_mlp_layer"] = {"w": w, "b": params["first_mlp_layer"]["b"]}
  imported = importer.convert_fakeout({**tree, "params": params}, FAKEOUT_CFG)
  assert imported.absent == ("audio_backbone",)
  assert imported.model_updates == {"audio_backbone": None}
  assert "audio_backbone" not in imported.variables["params"]
  np.testing.assert_array_equal(imported.variables["params"]["classifier"]["hidden0"]["kernel"], w)
  # The other way round, the error says what the config lacks.
  with pytest.raises(WeightsError, match="needs model.audio_backbone"):
    importer.convert_fakeout(tree, {**FAKEOUT_CFG, "audio_backbone": None})


def test_flattened_names_bn_variants_and_flatmapping_containers_read_the_same(tmp_path):
  tree, _ = _checkpoint(False)
  nested = importer.convert(tree, MMV_CFG).variables
  same = lambda variables: jax.tree.all(jax.tree.map(np.array_equal, variables, nested))
  flat_tree = {c: flatten(tree[c]) for c in ("params", "state")}
  assert all("/" in k and not isinstance(v, dict) for k, v in flat_tree["params"].items())
  assert same(importer.convert(flat_tree, MMV_CFG).variables)
  # A model built with use_xreplica_bn=False names its BatchNorms "__batch_norm".
  plain = {c: {m.replace(ref.BN_NAME, "__batch_norm"): v for m, v in tree[c].items()}
           for c in ("params", "state")}
  imported = importer.convert(plain, MMV_CFG)
  assert same(imported.variables)
  assert any("BatchNorm module(s) not named" in n for n in imported.notes)
  # Haiku containers (FlatMapping) unpickle as dicts without Haiku's classes.
  path = tmp_path / "flatmapping.pkl"
  path.write_bytes(pickle.dumps({"params": hk.data_structures.to_immutable_dict(tree["params"]),
                                 "state": tree["state"]}))
  read = importer.read_pickle(str(path))
  assert type(read["params"]) is dict
  assert same(importer.convert(read, MMV_CFG).variables)


# ----------------------------------------------------------------------------- sizes
_FULL = dict(video_backbone=dict(name="tsm_resnet"), audio_backbone=dict(name="resnet50_audio"),
             text_backbone=dict(name="text_encoder", vocab_size=65536))


def _ref_counts(cfg: ref.RefConfig):
  forward = hk.transform_with_state(functools.partial(ref.mmv_forward, cfg=cfg))
  params, _ = jax.eval_shape(lambda: forward.init(
      jax.random.key(0), jnp.zeros((1, 2, 64, 64, 3)), jnp.zeros((1, 64, 80, 1)),
      jnp.zeros((1, 16), jnp.int32), True))
  parts = {"video_backbone": "visual_module/", "audio_backbone": "audio_module/",
           "text_backbone": "text_module/", "video_to_va": "vid2audio_embd/",
           "audio_to_va": "audio_embd/", "va_to_vat": "vis_embd/", "text_to_vat": "txt_embd/",
           "unused": ("txt2audio_embd/", "audio2txt_embd/")}
  return {k: sum(int(np.prod(x.shape)) for m, leaves in params.items()
                 if m.startswith(tuple(f"{ref.ROOT}/{p}" for p in np.atleast_1d(prefix)))
                 for x in leaves.values())
          for k, prefix in parts.items()}


@pytest.mark.parametrize("width,video,video_to_va", [(1, 23_500_352, 1_313_280),
                                                     (2, 93_891_712, 2_361_856)])
@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_full_size_parameter_counts_equal_the_released_architecture(width, video, video_to_va):
  want = _ref_counts(ref.RefConfig(video_width=width))
  model = mmv_model.MMV(**{**_FULL, "video_backbone": dict(name="tsm_resnet",
                                                           width_multiplier=float(width))})
  params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 2, 64, 64, 3)), jnp.zeros((1, 64, 80)),
      jnp.zeros((1, 1, 16), jnp.int32), train=False))["params"]
  got = {k: count_params(v) for k, v in params.items()}
  assert got == {k: v for k, v in want.items() if k != "unused"}
  # The numbers, written out (docs and tsm_resnet.PAPER_PARAMS quote them).
  assert got["video_backbone"] == video and got["video_to_va"] == video_to_va
  assert got["audio_backbone"] == 23_494_080
  # audio → va 2048·512 + 512; va → vat 512·256 + 256 + BN 2·256; text → vat 2048·256 + 256;
  # text: 65,536·300 table + 300·2048 + 2048.
  assert (got["audio_to_va"], got["va_to_vat"], got["text_to_vat"]) == (1_049_088, 131_840,
                                                                        524_544)
  assert got["text_backbone"] == 19_660_800 + 616_448
  assert want["unused"] == 2 * 1_049_088  # txt2audio_embd + audio2txt_embd: dropped.


def test_fakeout_head_size():
  model = video_detector.VideoDetector(backbone=dict(name="tsm_resnet", width_multiplier=2.0),
                                       audio_backbone=dict(name="resnet50_audio"),
                                       classifier="fakeout")
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 2, 64, 64, 3)),
                                             jnp.zeros((1, 64, 80)), train=False))["params"]
  # 6144 = 4096 (TSM-50×2) + 2048 (audio), FakeOut's mlp_first_layer_size.
  assert count_params(params["classifier"]) == 6144 * 512 + 512 + 512 * 128 + 128 + 128 * 2 + 2


# ----------------------------------------------------------------------------- errors
def test_renamed_missing_and_misshaped_names_in_one_error():
  tree, _ = _checkpoint(False)
  params, state = dict(tree["params"]), dict(tree["state"])
  unit = f"{ref.ROOT}/visual_module/~/TSMResNetV2/tsm_resnet_unit_1/block_0/"
  params[unit + "conv_zero"] = params.pop(unit + "conv_0")  # renamed
  ema = f"{ref.ROOT}/vis_embd/{ref.BN_NAME}/~/var_ema"
  state[ema] = {k: v for k, v in state[ema].items() if k != "average"}  # missing
  conv1 = f"{ref.ROOT}/text_module/~/text_conv1"
  params[conv1] = {**params[conv1], "b": np.zeros(7, np.float32)}  # mis-shaped
  with pytest.raises(WeightsError) as e:
    importer.convert({"params": params, "state": state}, MMV_CFG, source="broken.pkl")
  msg = str(e.value)
  assert msg.startswith("broken.pkl does not fit the released MMV")
  assert f"params/{unit}conv_0/w" in msg and f"params/{unit}conv_zero/w" in msg
  assert f"state/{ema}/average" in msg
  assert f"params/{conv1}/b (7,) (expected (32,))" in msg


def test_s3d_checkpoint_and_wrong_width_are_named():
  s3d = {"params": {f"{ref.ROOT}/visual_module/~/S3D/Conv2d_1a_7x7/conv_3d/w":
                        np.zeros((7, 7, 7, 3, 64)),
                    f"{ref.ROOT}/audio_module/~/res_net_v2/~/initial_conv/w": np.zeros(1)},
         "state": {}}
  with pytest.raises(WeightsError, match="S3D-G checkpoint.*mmv_tsm_resnet_x1.pkl"):
    importer.convert(s3d, MMV_CFG)
  tree, _ = _checkpoint(False)
  wide = {**MMV_CFG, "video_backbone": {**VIDEO, "width_multiplier": 1 / 4}}
  with pytest.raises(WeightsError, match=r"TSM-ResNet-50×0.125 .* set width_multiplier=0.125"):
    importer.convert(tree, wide)
  with pytest.raises(WeightsError, match="S3D-G is not supported"):
    importer.convert(tree, {**MMV_CFG, "video_backbone": dict(name="csn")})
  with pytest.raises(WeightsError, match="use convert_fakeout"):
    importer.convert(_checkpoint(True)[0], {**MMV_CFG, "video_backbone": FAKEOUT_CFG["backbone"]})
  with pytest.raises(WeightsError, match="classifier='fakeout'"):
    importer.convert_fakeout(tree, {**FAKEOUT_CFG, "classifier": "mlp"})


def test_read_pickle_refuses_code_and_non_checkpoints(tmp_path):
  import datetime
  path = tmp_path / "x.pkl"
  path.write_bytes(pickle.dumps({"params": {}, "when": datetime.date(2020, 1, 1)}))
  with pytest.raises(WeightsError, match="datetime.date"):
    importer.read_pickle(str(path))
  path.write_bytes(pickle.dumps([1, 2]))
  with pytest.raises(WeightsError, match="expected a dict"):
    importer.read_pickle(str(path))
  with pytest.raises(WeightsError, match="expected a Haiku checkpoint"):
    importer.convert({"weights": {}}, MMV_CFG)


@pytest.mark.integration  # Writes a workdir through the CLI's code path: ~10 s on 2 cores.
def test_import_weights_fills_the_mmv_config_and_writes_a_workdir(tmp_path):
  """``python -m fakedet.import_weights --format=mmv --config=configs/mmv.py`` end to end (the
  converter tests above bypass the config check that once refused every MMV config)."""
  import json
  from fakedet import import_weights
  from tests import tiny_configs
  tree, _ = _checkpoint(False)
  path = tmp_path / "mmv_tsm_resnet_x1.pkl"
  path.write_bytes(pickle.dumps(tree))
  config = tiny_configs.config_module("mmv").get_config("demo")
  for key in ("video_backbone", "audio_backbone", "va_dim", "vat_dim", "va_hidden"):
    config.model[key] = MMV_CFG[key]
  vocabulary = tmp_path / "vocabulary.txt"  # The released table's size (a word list).
  # A word list gets two extra rows (padding, unknown): the table holds vocab_size rows.
  vocabulary.write_text("".join(f"w{i}\n" for i in range(REF.vocab_size - 2)))
  config.model.text_backbone.update(embedding_dim=12, features=32, vocab_path=str(vocabulary))
  for key in ("train_ops", "eval.ops"):  # The ops tokenise with the same vocabulary.
    node, leaf = (config.input.eval, "ops") if key == "eval.ops" else (config.input, key)
    node[leaf] = node[leaf].replace("synthetic:narrated/vocabulary.txt", str(vocabulary))
  record = import_weights.run("mmv", str(path), str(tmp_path / "out"), config)
  assert record["parameters"] > 0 and record["model_updates"] == {}  # The table fits.
  saved = json.loads((tmp_path / "out" / "config.json").read_text())
  assert saved["objective"]["name"] == "mmv"
  assert (tmp_path / "out" / "checkpoints" / "0").is_dir()

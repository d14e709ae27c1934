"""wav2vec2 backbone and AVCL audio encoder: parity with transformers, sizes, importer errors.

Tiny ``transformers`` wav2vec2 models of both families (base-like: group norm, post-LN, no conv
bias, saved as ``Wav2Vec2ForCTC`` with its ``wav2vec2.`` prefix and ``lm_head``; large-lv60-like:
layer norms, pre-LN, conv bias, a bare ``Wav2Vec2Model``) get random weights, random norm affine
parameters and a random weight-normed positional conv, are saved with ``save_pretrained``
(model.safetensors + config.json) and re-read through ``read``/``config_from_hf``/``convert``;
``extract_features``, ``last_hidden_state`` and each layer's output must agree to 1e-4 relative
error (max abs diff / max abs value) on 0.5 s of audio. The 7-conv feature encoder keeps the
released kernels and strides at 16–24 channels; the positional conv is 16 taps / 4 groups (even,
base family) and 15 taps (odd, the other path of HF's same-padding). Full-size models are only
counted (``jax.eval_shape``; torch's meta device).
"""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from fakedet.importers import WeightsError
from fakedet.importers import wav2vec2 as importer
from fakedet.models import MODELS
from fakedet.models import wav2vec2

torch.set_num_threads(1)

TOL = 1e-4
SAMPLES = 8000  # 0.5 s at 16 kHz → 24 frames
TINY = dict(conv_dim=(16, 16, 16, 16, 16, 16, 24), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
            conv_stride=(5, 2, 2, 2, 2, 2, 2), hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=48, num_conv_pos_embedding_groups=4)
FAMILIES = {
    "group": dict(TINY, conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False,
                  num_conv_pos_embeddings=16),
    "layer": dict(TINY, conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
                  num_conv_pos_embeddings=15),
}


# ----------------------------------------------------------------------------- helpers
def _randomize(model: torch.nn.Module, seed: int) -> None:
  """Fan-in scaled random weights, norm scales around 1, non-zero biases, random weight norm."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      if name.endswith("original0"):  # weight-norm magnitude g, one per kernel tap
        p.copy_(0.5 + torch.rand(p.shape, generator=g))
      elif "norm" in name and name.endswith("weight"):
        p.copy_(1.0 + 0.3 * noise)
      elif name.endswith("bias") or name.endswith("masked_spec_embed"):
        p.copy_(0.2 * noise)
      else:
        p.copy_(noise * 1.5 / np.sqrt(p[0].numel()))
  model.eval()


def _audio(seed: int = 0, batch: int = 2, samples: int = SAMPLES) -> np.ndarray:
  rng = np.random.default_rng(seed)
  t = np.arange(samples) / 16000
  wave = np.sin(2 * np.pi * 220 * t) + 0.5 * rng.normal(size=(batch, samples))
  return np.array(wav2vec2.normalize_waveform(wave.astype(np.float32)))  # writable, for torch


def _rel(ours, ref) -> float:
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def _num_params(tree) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def _paths(tree):
  return ["/".join(str(k.key) for k in path)
          for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def saved(request, tmp_path_factory):
  """(family, checkpoint dir, HF reference outputs) for one tiny family."""
  family = request.param
  hf_config = transformers.Wav2Vec2Config(**FAMILIES[family], vocab_size=8)
  torch.manual_seed(0)
  if family == "group":  # as facebook/wav2vec2-base-960h: a CTC model, "wav2vec2." prefix
    model = transformers.Wav2Vec2ForCTC(hf_config)
    backbone = model.wav2vec2
  else:
    model = backbone = transformers.Wav2Vec2Model(hf_config)
  _randomize(model, seed=1)
  path = tmp_path_factory.mktemp(f"w2v_{family}")
  model.save_pretrained(path)
  with torch.no_grad():
    out = backbone(torch.from_numpy(_audio()), output_hidden_states=True)
  ref = {"features": out.extract_features.numpy(), "hidden": out.last_hidden_state.numpy(),
         "layers": [h.numpy() for h in out.hidden_states]}
  return family, str(path), ref


# ----------------------------------------------------------------------------- parity
def test_parity_with_transformers(saved):
  family, path, ref = saved
  with open(f"{path}/config.json") as f:
    cfg = importer.config_from_hf(json.load(f))
  assert {k: cfg[k] for k in FAMILIES[family]} == FAMILIES[family]
  variables = importer.convert(importer.read(path), cfg)
  model = wav2vec2.Wav2Vec2(**cfg)  # pos_conv_impl "auto": the scanned taps on CPU
  out, state = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]))(
      variables, _audio())
  errors = {k: _rel(out[k], ref[k]) for k in ("features", "hidden")}
  # HF's hidden_states[i + 1] is layer i's output (the last one after the pre-LN final norm).
  inter = state["intermediates"]["encoder"]
  errors["layer_0"] = _rel(inter["layer_0"][0], ref["layers"][1])
  print(family, errors)
  assert max(errors.values()) <= TOL, errors
  assert out["hidden"].shape == (2, wav2vec2.num_frames(SAMPLES), 32)


def test_checkpoint_directory_load(saved):
  """``load`` = config.json + model.safetensors; the CTC head and SpecAugment vector are dropped,
  a .safetensors path reads the same tensors as the directory."""
  family, path, _ = saved
  tensors = importer.read(f"{path}/model.safetensors")
  assert set(tensors) == set(importer.read(path))
  assert ("lm_head.weight" in tensors) == (family == "group")
  assert any(k.endswith("masked_spec_embed") for k in tensors)
  cfg, variables = importer.load(path)
  assert set(variables["params"]) == {"feature_encoder", "feature_projection", "encoder"}
  shapes = jax.eval_shape(lambda x: wav2vec2.Wav2Vec2(**cfg).init(jax.random.key(0), x,
                                                                   train=False),
                          jax.ShapeDtypeStruct((1, SAMPLES), jnp.float32))
  assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda s: s.shape, shapes)


def test_weight_norm_forms_agree_with_torch():
  rng = np.random.default_rng(0)
  g, v = rng.uniform(0.5, 1.5, (1, 1, 6)), rng.normal(size=(8, 2, 6))
  expected = torch._weight_norm(torch.from_numpy(v), torch.from_numpy(g), 2).numpy()
  np.testing.assert_allclose(importer.fold_weight_norm(g, v), expected, rtol=1e-6)


def test_old_weight_g_v_names_convert_the_same(saved):
  family, path, _ = saved
  tensors = importer.read(path)
  renamed = {k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"): v
             for k, v in tensors.items()}
  assert renamed.keys() != tensors.keys()
  cfg = importer.config_from_hf(transformers.Wav2Vec2Config(**FAMILIES[family]).to_dict())
  new, old = importer.convert(tensors, cfg), importer.convert(renamed, cfg)
  np.testing.assert_array_equal(new["params"]["encoder"]["pos_conv"]["kernel"],
                                old["params"]["encoder"]["pos_conv"]["kernel"])


@pytest.mark.parametrize("kernel", [6, 7])
def test_positional_conv_impls_agree(kernel):
  """"native" (grouped lax.conv) and "taps" (scan): same values and gradients."""
  rng = np.random.default_rng(kernel)
  x = jnp.asarray(rng.normal(size=(2, 9, 12)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, 4, 12)), jnp.float32)
  run = {impl: jax.jit(jax.value_and_grad(
      lambda x, w, impl=impl: jnp.sum(jnp.sin(wav2vec2.grouped_frame_conv(x, w, 3, impl))),
      argnums=(0, 1))) for impl in ("native", "taps")}
  (v1, (gx1, gw1)), (v2, (gx2, gw2)) = run["native"](x, w), run["taps"](x, w)
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  np.testing.assert_allclose(gx1, gx2, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(gw1, gw2, rtol=1e-4, atol=1e-5)
  # Even kernels drop the last of T + 1 outputs: output t sees frames t − K//2 … t − K//2 + K − 1.
  y = wav2vec2.grouped_frame_conv(x, w, 3, "native")
  manual = sum(jnp.einsum("bgi,igo->bgo", x[:, 4 - kernel // 2 + k].reshape(2, 3, 4),
                          w[k].reshape(4, 3, 4)) for k in range(kernel)
               if 0 <= 4 - kernel // 2 + k < 9)
  np.testing.assert_allclose(y[:, 4], manual.reshape(2, 12), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("name", ["base", "large_lv60"])
def test_full_size_parameter_count_matches_transformers(name):
  cfg = wav2vec2.config(name)
  model = wav2vec2.Wav2Vec2(**cfg)
  x = jax.ShapeDtypeStruct((2, 32000), jnp.float32)  # 2 s, the paper's pre-training clips
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  d = cfg["hidden_size"]
  assert out["features"].shape == (2, 99, 512) and out["hidden"].shape == (2, 99, d)
  hf_cfg = transformers.Wav2Vec2Config(**{k: v for k, v in cfg.items()})
  with torch.device("meta"):
    hf_model = transformers.Wav2Vec2Model(hf_cfg)
  hf_count = sum(p.numel() for p in hf_model.parameters())
  # HF also holds SpecAugment's mask vector [D] and the weight-norm magnitudes g [K], which the
  # importer drops / folds into the kernel.
  ours = _num_params(variables["params"])
  assert ours == hf_count - d - cfg["num_conv_pos_embeddings"]
  assert (ours, hf_count) == {"base": (94_370_816, 94_371_712),
                              "large_lv60": (315_437_568, 315_438_720)}[name]


def test_avcl_full_size_head_and_bfloat16():
  model = wav2vec2.AVCLAudioEncoder(**wav2vec2.config("base"), dtype="bfloat16")
  x = jax.ShapeDtypeStruct((2, 32000), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert {k: v.shape for k, v in out.items()} == {
      "features": (2, 99, 512), "hidden": (2, 99, 768), "pooled": (2, 8, 768), "proj": (2, 256)}
  assert out["proj"].dtype == jnp.bfloat16
  head = 8 * 768 * 2048 + 2048 + 2 * 2048 + 2048 * 256 + 256
  assert _num_params(variables["params"]) == 94_370_816 + head
  assert _num_params(variables["params"]["head"]) == head


# ----------------------------------------------------------------------------- errors
def test_one_error_names_renamed_missing_and_misshaped(saved):
  family, path, _ = saved
  tensors = dict(importer.read(path))
  prefix = "wav2vec2." if family == "group" else ""
  q = f"{prefix}encoder.layers.0.attention.q_proj.weight"
  tensors[q.replace("q_proj", "query")] = tensors.pop(q)
  del tensors[f"{prefix}feature_projection.projection.bias"]
  tensors[f"{prefix}encoder.layer_norm.weight"] = np.ones(33, np.float32)
  cfg = importer.config_from_hf(transformers.Wav2Vec2Config(**FAMILIES[family]).to_dict())
  with pytest.raises(WeightsError) as info:
    importer.convert(tensors, cfg)
  message = str(info.value)
  for name in ("encoder.layers.0.attention.q_proj.weight",
               "encoder.layers.0.attention.query.weight",
               "feature_projection.projection.bias", "encoder.layer_norm.weight (33,)"):
    assert name in message, message


def test_config_errors_name_every_unsupported_setting():
  hf = transformers.Wav2Vec2Config().to_dict()
  with pytest.raises(ValueError) as info:
    importer.config_from_hf({**hf, "feat_extract_norm": "batch", "hidden_act": "relu",
                             "add_adapter": True})
  for name in ("feat_extract_norm='batch'", "hidden_act='relu'", "add_adapter=True"):
    assert name in str(info.value)
  with pytest.raises(ValueError, match="model_type 'hubert'"):
    importer.config_from_hf({**hf, "model_type": "hubert"})
  assert importer.config_from_hf({**hf, "feat_proj_dropout": 0.1}) == wav2vec2.BASE


# ----------------------------------------------------------------------------- ops
@pytest.mark.parametrize("length,bins", [(99, 8), (24, 5), (7, 3), (10, 10), (5, 8), (13, 1)])
def test_adaptive_avg_pool_matches_torch(length, bins):
  x = np.random.default_rng(length).normal(size=(2, length, 3)).astype(np.float32)
  ours = wav2vec2.adaptive_avg_pool(jnp.asarray(x), bins, axis=1)
  ref = torch.nn.functional.adaptive_avg_pool1d(torch.from_numpy(x).transpose(1, 2), bins)
  np.testing.assert_allclose(ours, ref.transpose(1, 2).numpy(), rtol=1e-6, atol=1e-6)


def test_normalize_waveform_matches_feature_extractor():
  x = np.random.default_rng(0).normal(3.0, 2.0, size=(2, 500)).astype(np.float32)
  ref = transformers.Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm(list(x), None)
  np.testing.assert_allclose(wav2vec2.normalize_waveform(jnp.asarray(x)), np.stack(ref),
                             rtol=1e-5, atol=1e-5)


def test_registered_and_rejects_short_audio():
  assert MODELS.get("wav2vec2") is wav2vec2.Wav2Vec2
  assert MODELS.get("avcl_audio") is wav2vec2.AVCLAudioEncoder
  assert wav2vec2.num_frames(32000) == 99 and wav2vec2.num_frames(16000) == 49
  model = wav2vec2.Wav2Vec2(**FAMILIES["group"])
  with pytest.raises(ValueError, match="receptive field"):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                   jax.ShapeDtypeStruct((1, 399), jnp.float32))


# ----------------------------------------------------------------------------- AVCL encoder
# Smaller than TINY (3 convs, 1 layer): this test compiles init + a training gradient.
SMALL = dict(conv_dim=(8, 8, 12), conv_kernel=(10, 4, 4), conv_stride=(5, 4, 4), hidden_size=16,
             num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
             num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
             pos_conv_impl="native")  # compiles faster; the impls agree (test above)


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_avcl_encoder_shapes_gradients_and_frozen_feature_encoder():
  model = wav2vec2.AVCLAudioEncoder(**SMALL, num_tokens=3, head_hidden=16)
  audio = jnp.asarray(_audio(seed=3, samples=1600))  # 19 frames
  probe = jax.random.normal(jax.random.key(1), (2, 256))

  @jax.jit
  def init_and_grad(audio):
    """One program (compiling is the slow part): fresh params, train-mode outputs, gradients."""
    params = model.init(jax.random.key(0, impl="rbg"), audio, train=False)["params"]

    def loss(params):
      out = model.apply({"params": params}, audio, train=True,
                        rngs={"dropout": jax.random.key(2, impl="rbg")})
      return jnp.sum(out["proj"] * probe), out

    (_, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return params, out, grads

  params, out, grads = init_and_grad(audio)
  assert {k: v.shape for k, v in out.items()} == {
      "features": (2, 19, 12), "hidden": (2, 19, 16), "pooled": (2, 3, 16), "proj": (2, 256)}
  np.testing.assert_allclose(out["pooled"], wav2vec2.adaptive_avg_pool(out["hidden"], 3),
                             rtol=1e-5, atol=1e-6)
  assert set(params) == {"feature_encoder", "feature_projection", "encoder", "head"}
  # The documented optimizer pattern selects exactly the top-level feature_encoder group.
  frozen = [p for p in _paths(params) if re.fullmatch(r".*feature_encoder.*", p)]
  assert frozen == [f"{wav2vec2.FEATURE_ENCODER}/{p}"
                    for p in _paths(params[wav2vec2.FEATURE_ENCODER])]
  # The loss on ``proj`` reaches every transformer/projection/head parameter; the frozen CNN
  # gets exactly zero (no backward pass through it).
  for group in ("feature_projection", "encoder", "head"):
    dead = [p for p, g in zip(_paths(grads[group]), jax.tree.leaves(grads[group]))
            if not np.any(np.abs(g) > 0)]
    assert not dead, (group, dead)
  assert all(not np.any(g) for g in jax.tree.leaves(grads["feature_encoder"]))

"""Hugging Face wav2vec2 checkpoint (model.safetensors + config.json) → ``fakedet.models.wav2vec2``.

The audio encoder of the audio-visual contrastive transformer (§3.2) starts from a released
wav2vec2 fine-tuned for speech recognition (facebook/wav2vec2-base-960h,
facebook/wav2vec2-large-960h-lv60-self). Their Hub repositories hold a safetensors state dict of
``Wav2Vec2ForCTC`` and its config.json; this module reads both without torch:

  read(path)            directory or .safetensors file → {HF name: numpy array}
  config_from_hf(json)  config.json dict → ``Wav2Vec2`` keyword arguments (unsupported → error)
  convert(tensors, cfg) → {"params": ...} of ``Wav2Vec2(**cfg)`` (also the same-path sub-tree of
                        ``AVCLAudioEncoder(**cfg)``)
  load(path)            (cfg, variables) from a checkpoint directory

Name mapping (an optional ``wav2vec2.`` prefix, as in ForCTC / ForPreTraining, is stripped):

  feature_extractor.conv_layers.{i}.conv.{weight,bias}  → feature_encoder/conv_{i}/{kernel,bias}
  feature_extractor.conv_layers.{i}.layer_norm.*        → feature_encoder/norm_{i}/{scale,bias}
  feature_projection.{layer_norm,projection}.*          → feature_projection/{layer_norm,projection}
  encoder.pos_conv_embed.conv.{bias, weight-norm g & v} → encoder/pos_conv/{bias,kernel}
  encoder.layer_norm.*                                  → encoder/layer_norm
  encoder.layers.{i}.attention.{q,k,v,out}_proj.*       → encoder/layers_{i}/attention/...
  encoder.layers.{i}.{layer_norm,final_layer_norm}.*    → encoder/layers_{i}/...
  encoder.layers.{i}.feed_forward.{intermediate,output}_dense.* → .../feed_forward/...

The positional conv is stored weight-normed along the kernel axis (torch ``weight_norm(dim=2)``):
``parametrizations.weight.original0/1`` (torch ≥ 2.1) or ``weight_g``/``weight_v`` (older
saves), g [1, 1, K], v [D, D/G, K]; the converter folds w[:, :, k] = g[k] · v[:, :, k] /
‖v[:, :, k]‖ (Frobenius norm over the other two axes) in float64. A plain ``weight`` is accepted
too. Deliberately dropped: the CTC ``lm_head.*``, ``masked_spec_embed`` (SpecAugment's mask
vector) and pre-training's ``quantizer.*``, ``project_q.*``, ``project_hid.*``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from fakedet.importers import Tensors, WeightsError, conv, linear, nest
from fakedet.models import wav2vec2 as model_lib

_PREFIX = "wav2vec2."
_DROPPED = ("lm_head.", "masked_spec_embed", "quantizer.", "project_q.", "project_hid.")
_WEIGHT_NORM = (("parametrizations.weight.original0", "parametrizations.weight.original1"),
                ("weight_g", "weight_v"))

# Fields read from config.json, with Wav2Vec2Config's defaults: transformers fills absent keys
# the same way, so an old or trimmed config.json means what transformers would build from it.
_HF_DEFAULTS = dict(
    conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_bias=False, feat_extract_norm="group", hidden_size=768, num_hidden_layers=12,
    num_attention_heads=12, intermediate_size=3072, num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16, do_stable_layer_norm=False, layer_norm_eps=1e-5,
    hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, feat_proj_dropout=0.0)
# Settings the flax module does not implement, with the value that means "off".
_UNSUPPORTED_UNLESS = dict(
    feat_extract_activation="gelu", hidden_act="gelu", add_adapter=False, adapter_attn_dim=None)


def read(path: str) -> Dict[str, np.ndarray]:
  """``{HF name: array}`` from a .safetensors file or a checkpoint directory (its
  model.safetensors, or every shard named by model.safetensors.index.json)."""
  # safetensors is not a core dependency yet (test extra); only reading files needs it.
  from safetensors.numpy import load_file  # Only reading HF checkpoints needs safetensors.
  if os.path.isdir(path):
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
      with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
      tensors: Dict[str, np.ndarray] = {}
      for shard in shards:
        tensors.update(load_file(os.path.join(path, shard)))
      return tensors
    single = os.path.join(path, "model.safetensors")
    if not os.path.exists(single):
      raise WeightsError(f"{path} holds no model.safetensors (a pytorch_model.bin-only checkpoint "
                         f"must first be re-saved as safetensors, e.g. with transformers)")
    path = single
  if not path.endswith(".safetensors"):
    raise WeightsError(f"{path}: expected a .safetensors file or a checkpoint directory")
  return load_file(path)


def config_from_hf(config_json: Mapping[str, Any]) -> Dict[str, Any]:
  """HF wav2vec2 config.json (as a dict) → ``Wav2Vec2`` keyword arguments.

  Raises ValueError naming every setting the flax module does not implement (another
  model_type, a feature-encoder norm other than group/layer, a non-GELU activation, adapters,
  mismatched conv lists). Training-only HF settings (layerdrop, SpecAugment masking) are ignored.
  """
  problems = []
  model_type = config_json.get("model_type", "wav2vec2")
  if model_type != "wav2vec2":
    problems.append(f"model_type {model_type!r} (only 'wav2vec2')")
  for key, off in _UNSUPPORTED_UNLESS.items():
    if config_json.get(key, off) != off:
      problems.append(f"{key}={config_json[key]!r} (supported: {off!r})")
  cfg = {k: config_json.get(k, default) for k, default in _HF_DEFAULTS.items()}
  for key in ("conv_dim", "conv_kernel", "conv_stride"):
    cfg[key] = tuple(int(v) for v in cfg[key])
  if cfg["feat_extract_norm"] not in model_lib.FEAT_EXTRACT_NORMS:
    problems.append(f"feat_extract_norm={cfg['feat_extract_norm']!r} (supported: "
                    f"{model_lib.FEAT_EXTRACT_NORMS})")
  if not len(cfg["conv_dim"]) == len(cfg["conv_kernel"]) == len(cfg["conv_stride"]):
    problems.append("conv_dim, conv_kernel and conv_stride differ in length")
  groups = cfg["num_conv_pos_embedding_groups"]
  if cfg["num_conv_pos_embeddings"] < 1 or groups < 1 or cfg["hidden_size"] % groups:
    problems.append(f"num_conv_pos_embeddings={cfg['num_conv_pos_embeddings']} with "
                    f"{cfg['num_conv_pos_embedding_groups']} groups for hidden_size "
                    f"{cfg['hidden_size']}")
  if problems:
    raise ValueError("unsupported wav2vec2 config: " + "; ".join(problems))
  return cfg


def _norm(t: Tensors, src: str, dst: str, width: int, params: Dict[str, np.ndarray]) -> None:
  params[f"{dst}/scale"] = t.get(f"{src}.weight", (width,))
  params[f"{dst}/bias"] = t.get(f"{src}.bias", (width,))


def _dense(t: Tensors, src: str, dst: str, n_in: int, n_out: int,
           params: Dict[str, np.ndarray]) -> None:
  params[f"{dst}/kernel"] = linear(t.get(f"{src}.weight", (n_out, n_in)))
  params[f"{dst}/bias"] = t.get(f"{src}.bias", (n_out,))


def fold_weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
  """torch ``weight_norm(dim=2)`` of a Conv1d: g [1, 1, K], v [out, in, K] → g·v/‖v‖ with the
  norm over (out, in) per kernel tap k; float64 in, float32 out."""
  norms = np.sqrt(np.sum(np.square(v), axis=(0, 1), keepdims=True))
  return (g * v / norms).astype(np.float32)


def _pos_conv_weight(t: Tensors, src: str, shape: Tuple[int, int, int]) -> np.ndarray:
  """The positional conv kernel [D, D/G, K] from whichever of the three stored forms exists."""
  g_shape = (1, 1, shape[2])
  for g_name, v_name in _WEIGHT_NORM:
    if f"{src}.{g_name}" in t or f"{src}.{v_name}" in t:
      return fold_weight_norm(t.get(f"{src}.{g_name}", g_shape, np.float64),
                              t.get(f"{src}.{v_name}", shape, np.float64))
  if f"{src}.weight" in t:
    return t.get(f"{src}.weight", shape)
  g_name, v_name = _WEIGHT_NORM[0]  # report the names a current save would have
  return fold_weight_norm(t.get(f"{src}.{g_name}", g_shape, np.float64),
                          t.get(f"{src}.{v_name}", shape, np.float64))


def _feature_encoder(t: Tensors, cfg: Mapping[str, Any], params: Dict[str, np.ndarray]) -> None:
  cin = 1
  for i, (dim, k) in enumerate(zip(cfg["conv_dim"], cfg["conv_kernel"])):
    src, dst = f"feature_extractor.conv_layers.{i}", "feature_encoder"
    params[f"{dst}/conv_{i}/kernel"] = conv(t.get(f"{src}.conv.weight", (dim, cin, k)))
    if cfg["conv_bias"]:
      params[f"{dst}/conv_{i}/bias"] = t.get(f"{src}.conv.bias", (dim,))
    if cfg["feat_extract_norm"] == "layer" or i == 0:
      _norm(t, f"{src}.layer_norm", f"{dst}/norm_{i}", dim, params)
    cin = dim


def _encoder(t: Tensors, cfg: Mapping[str, Any], params: Dict[str, np.ndarray]) -> None:
  d, inner = cfg["hidden_size"], cfg["intermediate_size"]
  k, groups = cfg["num_conv_pos_embeddings"], cfg["num_conv_pos_embedding_groups"]
  src = "encoder.pos_conv_embed.conv"
  params["encoder/pos_conv/kernel"] = conv(_pos_conv_weight(t, src, (d, d // groups, k)))
  params["encoder/pos_conv/bias"] = t.get(f"{src}.bias", (d,))
  _norm(t, "encoder.layer_norm", "encoder/layer_norm", d, params)
  for i in range(cfg["num_hidden_layers"]):
    src, dst = f"encoder.layers.{i}", f"encoder/layers_{i}"
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
      _dense(t, f"{src}.attention.{proj}", f"{dst}/attention/{proj}", d, d, params)
    _norm(t, f"{src}.layer_norm", f"{dst}/layer_norm", d, params)
    _norm(t, f"{src}.final_layer_norm", f"{dst}/final_layer_norm", d, params)
    _dense(t, f"{src}.feed_forward.intermediate_dense", f"{dst}/feed_forward/intermediate_dense",
           d, inner, params)
    _dense(t, f"{src}.feed_forward.output_dense", f"{dst}/feed_forward/output_dense", inner, d,
           params)


def convert(tensors: Mapping[str, np.ndarray], cfg: Mapping[str, Any],
            source: str = "wav2vec2 state dict") -> Dict[str, Dict]:
  """``{HF name: array}`` → ``{"params": ...}`` of ``Wav2Vec2(**cfg)`` (float32 numpy leaves).

  ``cfg`` holds the architecture keys of ``config_from_hf`` / ``model_lib.config`` (extra keys,
  e.g. an ``AVCLAudioEncoder``'s, are ignored). Raises ``WeightsError`` naming every missing,
  mis-shaped and unexpected tensor at once.
  """
  if any(str(k).startswith(_PREFIX) for k in tensors):
    tensors = {(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): v for k, v in tensors.items()}
    source = f"{source} (names below without their {_PREFIX!r} prefix)"
  t = Tensors(tensors, source)
  t.ignore(*_DROPPED)
  params: Dict[str, np.ndarray] = {}
  _feature_encoder(t, cfg, params)
  c, d = cfg["conv_dim"][-1], cfg["hidden_size"]
  _norm(t, "feature_projection.layer_norm", "feature_projection/layer_norm", c, params)
  _dense(t, "feature_projection.projection", "feature_projection/projection", c, d, params)
  _encoder(t, cfg, params)
  t.finish(f"wav2vec2 ({cfg['num_hidden_layers']} layers, width {d}, "
           f"feat_extract_norm={cfg['feat_extract_norm']!r})")
  return {"params": nest(params)}


def load(path: str) -> Tuple[Dict[str, Any], Dict[str, Dict]]:
  """(``Wav2Vec2`` keyword arguments, variables) from a checkpoint directory holding
  config.json and model.safetensors, e.g. a download of facebook/wav2vec2-base-960h."""
  with open(os.path.join(path, "config.json")) as f:
    cfg = config_from_hf(json.load(f))
  return cfg, convert(read(path), cfg, source=path)

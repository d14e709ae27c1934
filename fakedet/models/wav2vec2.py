"""wav2vec 2.0 backbone and the audio encoder of the audio-visual contrastive transformer (§3.2).

The paper's audio encoder is a wav2vec2 fine-tuned for speech recognition (facebook/wav2vec2-*
checkpoints, converted by ``fakedet.importers.wav2vec2``). ``Wav2Vec2`` reproduces Hugging Face
``transformers.Wav2Vec2Model`` numerically (inference) for both released architecture families:

  feature_encoder     7 × Conv1d (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2; 512 channels;
                      GELU) on the raw waveform: 320 samples per frame (20 ms at 16 kHz), 400-
                      sample receptive field. "group" family: a per-channel GroupNorm after the
                      first conv only; "layer" family: a LayerNorm over channels after every conv.
  feature_projection  LayerNorm → Dense(D) → dropout.
  encoder             x + GELU(grouped conv over frames, kernel 128, 16 groups), then
                      D-wide transformer layers (heads, MLP, GELU, LayerNorm eps 1e-5).
                      post-LN family (``do_stable_layer_norm=False``, base): LN right after the
                      positional-conv residual, each layer x = LN(x + Attn(x)); x = LN(x + MLP(x)).
                      pre-LN family (``do_stable_layer_norm=True``, large-lv60 / robust): no LN
                      before the layers, each layer x = x + Attn(LN(x)); x = x + MLP(LN(x)), and
                      one final LN after the last layer.

Attribute names are Hugging Face's config.json field names, so ``importers.wav2vec2.
config_from_hf`` is a checked copy. Input is float32 audio [B, S] at 16 kHz, already normalised
the way the checkpoint's ``Wav2Vec2FeatureExtractor`` does (``do_normalize``: per-clip zero mean,
unit variance): that is a data op for the caller, ``normalize_waveform`` below. There is no
attention mask: clips have a fixed length and are never padded (HF needs the mask only for padded
batches). Not implemented, because inference and our fine-tuning do not need them: LayerDrop
(``layerdrop`` skips whole layers in HF training), SpecAugment time/feature masking and its
``masked_spec_embed``, adapters, and the weight-norm reparametrisation of the positional conv
(the importer folds g·v/‖v‖ into one plain kernel, which is then trained as a plain kernel).

Two convolutions have XLA:CPU-friendly exact forms (STACK_NOTES.md: grouped convs
have no fast path there):
  * the positional conv (768 channels, 16 groups, kernel 128) with ``pos_conv_impl``:
    "native" ``lax.conv_general_dilated(feature_group_count=16)``; "taps" a ``lax.scan`` over the
    128 taps, each a per-group [48 × 48] matmul of the shifted frames. Measured on 2 CPU cores,
    B=2, 99 frames (2 s), D=768: native 0.07–0.11 s forward but 2.4 s forward+backward; taps
    0.12–0.17 s forward, 0.39–0.51 s forward+backward (a per-group dense-conv loop: 5.4 s; an
    unfolded-patches einsum: 0.65–1.0 s and B·T·128·D memory). "auto" = taps on CPU, native
    elsewhere (GPU/TPU convs have grouped fast paths; not measured here, no accelerator).
  * every feature-encoder conv whose kernel is a multiple of its stride (layers 0, 5, 6) is a
    matmul over non-overlapping frames of ``stride`` samples (k/s adjacent frames concatenated):
    the same sum in a different order, 7× faster than XLA:CPU's conv for the 1-channel first
    layer (24 ms vs 172 ms on 2 s × 2 clips); the others are plain convs.

``AVCLAudioEncoder`` (registered "avcl_audio") is a ``Wav2Vec2`` plus the paper's pooling and
projection head (its class docstring gives the choices the paper leaves open).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fakedet.models import MODELS
from fakedet.models import depthwise

POS_CONV_IMPLS = ("auto", "native", "taps")
FEAT_EXTRACT_NORMS = ("group", "layer")
FEATURE_ENCODER = "feature_encoder"  # submodule name: freeze it with r".*feature_encoder.*"

# Hyper-parameters of the released checkpoints (their config.json; dropouts are their
# fine-tuning values and apply only with train=True).
BASE = dict(  # facebook/wav2vec2-base-960h: 94.4M params (Wav2Vec2Model)
    conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_bias=False, feat_extract_norm="group", hidden_size=768, num_hidden_layers=12,
    num_attention_heads=12, intermediate_size=3072, num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16, do_stable_layer_norm=False, layer_norm_eps=1e-5,
    hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, feat_proj_dropout=0.1)
LARGE_LV60 = dict(  # facebook/wav2vec2-large-960h-lv60-self: 315M params
    BASE, conv_bias=True, feat_extract_norm="layer", hidden_size=1024, num_hidden_layers=24,
    num_attention_heads=16, intermediate_size=4096, do_stable_layer_norm=True)
CONFIGS = {"base": BASE, "large_lv60": LARGE_LV60}

# Initialisers as wav2vec2 / HF initialise a fresh model (only used without pretrained weights).
_DENSE_INIT = nn.initializers.normal(0.02)
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # kaiming_normal_
_GELU_EXACT = dict(approximate=False)  # HF "gelu" is the erf form; flax defaults to tanh


def config(name: str) -> Dict[str, Any]:
  """A copy of a named architecture: "base" (wav2vec2-base-960h) or "large_lv60"
  (wav2vec2-large-960h-lv60-self), as ``Wav2Vec2``/``AVCLAudioEncoder`` keyword arguments."""
  if name not in CONFIGS:
    raise KeyError(f"unknown wav2vec2 config {name!r}; expected one of {sorted(CONFIGS)}")
  return dict(CONFIGS[name])


def normalize_waveform(audio: jax.Array, eps: float = 1e-7) -> jax.Array:
  """Per-clip zero mean / unit variance over the last (time) axis, as HF's
  ``Wav2Vec2FeatureExtractor(do_normalize=True)``: (x − mean) / √(var + 1e-7).

  [..., S] float → same shape. Both released checkpoints were trained on normalised audio; run
  this (or the equivalent data op) on unpadded clips before ``Wav2Vec2``.
  """
  mean = jnp.mean(audio, axis=-1, keepdims=True)
  var = jnp.var(audio, axis=-1, keepdims=True)
  return (audio - mean) / jnp.sqrt(var + eps)


def num_frames(num_samples: int, conv_kernel: Sequence[int] = BASE["conv_kernel"],
               conv_stride: Sequence[int] = BASE["conv_stride"]) -> int:
  """Frames T' the feature encoder makes from ``num_samples`` (valid convs): 99 for 2 s, 49 for
  1 s at 16 kHz with the released kernels; ≤ 0 when the clip is shorter than 400 samples."""
  n = num_samples
  for k, s in zip(conv_kernel, conv_stride):
    n = (n - k) // s + 1
  return n


def adaptive_avg_pool(x: jax.Array, num_bins: int, axis: int = 1) -> jax.Array:
  """Average pooling of ``axis`` (length L) to ``num_bins`` bins, as torch AdaptiveAvgPool1d.

  Bin i averages [floor(i·L/n), ceil((i+1)·L/n)): neighbouring bins share the element at a
  boundary i·L/n that is not an integer, and bins repeat elements when n > L. Written as a fixed [n, L] averaging matrix (L and n
  are static), so it is one exact matmul and differentiable. x [..., L, ...] → [..., n, ...].
  """
  length = x.shape[axis]
  if num_bins < 1 or length < 1:
    raise ValueError(f"cannot pool {length} steps to {num_bins} bins")
  weights = np.zeros((num_bins, length), np.float64)
  for i in range(num_bins):
    start, end = (i * length) // num_bins, -((-(i + 1) * length) // num_bins)
    weights[i, start:end] = 1.0 / (end - start)
  moved = jnp.moveaxis(x, axis, -1)
  pooled = jnp.einsum("...l,nl->...n", moved, jnp.asarray(weights, x.dtype))
  return jnp.moveaxis(pooled, -1, axis)


# ----------------------------------------------------------------------------- feature encoder
class StridedConv1D(nn.Module):
  """Valid 1D conv [B, S, Cin] → [B, (S − k) // s + 1, features], flax kernel [k, Cin, out].

  When k is a multiple of s the input is cut into frames of s samples and each output is one
  matmul over k/s adjacent frames (exact; see the module docstring for why), else a plain conv.
  """
  features: int
  kernel_size: int
  stride: int
  use_bias: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, s = self.kernel_size, self.stride
    cin = x.shape[-1]
    kernel = self.param("kernel", _CONV_INIT, (k, cin, self.features)).astype(self.dtype)
    x = x.astype(self.dtype)
    out_len = (x.shape[1] - k) // s + 1
    if out_len < 1:
      raise ValueError(f"{x.shape[1]} steps are shorter than the kernel {k}")
    if k % s == 0:
      span = k // s  # adjacent frames per output
      frames = x[:, :(out_len + span - 1) * s].reshape(x.shape[0], -1, s * cin)
      patches = jnp.concatenate([frames[:, j:j + out_len] for j in range(span)], axis=-1)
      y = patches @ kernel.reshape(k * cin, self.features)  # (tap, channel) row order
    else:
      y = lax.conv_general_dilated(x, kernel, (s,), "VALID",
                                   dimension_numbers=("NWC", "WIO", "NWC"))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


class FeatureEncoder(nn.Module):
  """The convolutional feature encoder: waveform [B, S] → frames [B, T', conv_dim[-1]].

  Submodules ``conv_{i}`` and ``norm_{i}`` (norm_0 only for "group", one per conv for "layer").
  Norm epsilons are torch's default 1e-5 (HF does not pass ``layer_norm_eps`` here).
  """
  conv_dim: Sequence[int]
  conv_kernel: Sequence[int]
  conv_stride: Sequence[int]
  conv_bias: bool
  feat_extract_norm: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, audio: jax.Array) -> jax.Array:
    x = audio[..., None]
    for i, (dim, k, s) in enumerate(zip(self.conv_dim, self.conv_kernel, self.conv_stride)):
      x = StridedConv1D(dim, k, s, self.conv_bias, self.dtype, name=f"conv_{i}")(x)
      if self.feat_extract_norm == "layer":
        x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, use_fast_variance=False,
                         name=f"norm_{i}")(x)
      elif i == 0:  # GroupNorm(groups = channels): each channel normalised over time
        x = nn.GroupNorm(num_groups=dim, epsilon=1e-5, dtype=self.dtype,
                         use_fast_variance=False, name=f"norm_{i}")(x)
      x = nn.gelu(x, **_GELU_EXACT)
    return x


class FeatureProjection(nn.Module):
  """LayerNorm → Dense(hidden) → dropout: [B, T', C] → ([B, T', D], normed [B, T', C])."""
  hidden_size: int
  layer_norm_eps: float
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> Tuple[jax.Array, jax.Array]:
    normed = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype,
                          use_fast_variance=False, name="layer_norm")(x)
    y = nn.Dense(self.hidden_size, dtype=self.dtype, kernel_init=_DENSE_INIT,
                 name="projection")(normed)
    return nn.Dropout(self.dropout, deterministic=not train)(y), normed


# ----------------------------------------------------------------------------- encoder
def grouped_frame_conv(x: jax.Array, kernel: jax.Array, groups: int,
                       impl: str = "auto") -> jax.Array:
  """wav2vec2's positional conv without bias/activation: "same" length T, padding K//2 per side
  and, for even K, the last output dropped (HF's SamePad), i.e. output t sees frames
  t − K//2 … t − K//2 + K − 1.

  Args:
    x: [B, T, D].
    kernel: [K, D / groups, D], flax grouped-conv layout (output channels group-major).
    groups: channel groups (16 in the released models).
    impl: "native", "taps" or "auto" (module docstring).

  Returns:
    [B, T, D] in x's dtype; "taps" accumulates in float32.
  """
  b, t, d = x.shape
  k, cg, _ = kernel.shape
  if kernel.shape != (k, d // groups, d) or d % groups:
    raise ValueError(f"kernel {kernel.shape} does not fit x {x.shape} with {groups} groups")
  pad = k // 2
  if depthwise.choose_impl(impl, POS_CONV_IMPLS, "taps", "positional conv") == "native":
    y = lax.conv_general_dilated(x, kernel.astype(x.dtype), (1,), [(pad, pad)],
                                 dimension_numbers=("NWC", "WIO", "NWC"),
                                 feature_group_count=groups)
    return y[:, :t]
  xp = jnp.pad(x, ((0, 0), (pad, pad), (0, 0))).reshape(b, t + 2 * pad, groups, cg)
  taps = kernel.astype(x.dtype).reshape(k, cg, groups, cg)  # [K, in, group, out]

  def step(acc, tap):
    offset, w = tap
    frames = lax.dynamic_slice_in_dim(xp, offset, t, axis=1)  # [B, T, G, Cg]
    return acc + jnp.einsum("btgi,igo->btgo", frames, w,
                            preferred_element_type=jnp.float32), None

  acc, _ = lax.scan(step, jnp.zeros((b, t, groups, cg), jnp.float32), (jnp.arange(k), taps))
  return acc.reshape(b, t, d).astype(x.dtype)


class PositionalConv(nn.Module):
  """Relative positional embedding: GELU(grouped conv over frames + bias), [B, T, D] → same."""
  kernel_size: int
  groups: int
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    # wav2vec2 draws the (weight-normed) kernel from N(0, 4 / (K·D)).
    init = nn.initializers.normal(2.0 / math.sqrt(self.kernel_size * d))
    kernel = self.param("kernel", init, (self.kernel_size, d // self.groups, d))
    bias = self.param("bias", nn.initializers.zeros, (d,))
    y = grouped_frame_conv(x.astype(self.dtype), kernel, self.groups, self.impl)
    return nn.gelu(y + bias.astype(self.dtype), **_GELU_EXACT)


class SelfAttention(nn.Module):
  """Multi-head self-attention with biased q/k/v/out projections: [B, T, D] → [B, T, D]."""
  num_heads: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    b, t, d = x.shape
    head_dim = d // self.num_heads
    dense = lambda name: nn.Dense(d, dtype=self.dtype, kernel_init=_DENSE_INIT, name=name)
    split = lambda y: y.reshape(b, t, self.num_heads, head_dim)
    q = split(dense("q_proj")(x)) * (head_dim ** -0.5)
    k, v = split(dense("k_proj")(x)), split(dense("v_proj")(x))
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k).astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    probs = nn.Dropout(self.dropout, deterministic=not train)(probs)
    y = jnp.einsum("bhqk,bkhc->bqhc", probs, v).reshape(b, t, d)
    return dense("out_proj")(y)


class FeedForward(nn.Module):
  """Dense(intermediate) → GELU → dropout → Dense(D) → dropout."""
  intermediate_size: int
  activation_dropout: float
  hidden_dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = nn.Dense(self.intermediate_size, dtype=self.dtype, kernel_init=_DENSE_INIT,
                 name="intermediate_dense")(x)
    y = nn.Dropout(self.activation_dropout, deterministic=not train)(nn.gelu(y, **_GELU_EXACT))
    y = nn.Dense(x.shape[-1], dtype=self.dtype, kernel_init=_DENSE_INIT, name="output_dense")(y)
    return nn.Dropout(self.hidden_dropout, deterministic=not train)(y)


class EncoderLayer(nn.Module):
  """One transformer layer, post-LN (``stable=False``) or pre-LN (``stable=True``)."""
  num_heads: int
  intermediate_size: int
  stable: bool
  layer_norm_eps: float
  hidden_dropout: float
  attention_dropout: float
  activation_dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype,
                                     use_fast_variance=False, name=name)
    attention = SelfAttention(self.num_heads, self.attention_dropout, self.dtype,
                              name="attention")
    feed_forward = FeedForward(self.intermediate_size, self.activation_dropout,
                               self.hidden_dropout, self.dtype, name="feed_forward")
    drop = nn.Dropout(self.hidden_dropout, deterministic=not train)
    if self.stable:
      x = x + drop(attention(norm("layer_norm")(x), train=train))
      return x + feed_forward(norm("final_layer_norm")(x), train=train)
    x = norm("layer_norm")(x + drop(attention(x, train=train)))
    return norm("final_layer_norm")(x + feed_forward(x, train=train))


class Encoder(nn.Module):
  """Positional conv + transformer layers: [B, T', D] → [B, T', D].

  Sows each layer's output into ``intermediates`` as ``layer_{i}`` (pre-LN family: before the
  final LN, like HF's ``hidden_states[i + 1]`` for all but the last layer).
  """
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  num_conv_pos_embeddings: int
  num_conv_pos_embedding_groups: int
  do_stable_layer_norm: bool
  layer_norm_eps: float
  hidden_dropout: float
  attention_dropout: float
  activation_dropout: float
  pos_conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    norm = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype,
                        use_fast_variance=False, name="layer_norm")
    x = x + PositionalConv(self.num_conv_pos_embeddings, self.num_conv_pos_embedding_groups,
                           self.pos_conv_impl, self.dtype, name="pos_conv")(x)
    if not self.do_stable_layer_norm:
      x = norm(x)
    x = nn.Dropout(self.hidden_dropout, deterministic=not train)(x)
    for i in range(self.num_hidden_layers):
      x = EncoderLayer(self.num_attention_heads, self.intermediate_size,
                       self.do_stable_layer_norm, self.layer_norm_eps, self.hidden_dropout,
                       self.attention_dropout, self.activation_dropout, self.dtype,
                       name=f"layers_{i}")(x, train=train)
      self.sow("intermediates", f"layer_{i}", x)
    return norm(x) if self.do_stable_layer_norm else x


# ----------------------------------------------------------------------------- models
class Wav2Vec2(nn.Module):
  """wav2vec 2.0 backbone (HF ``Wav2Vec2Model`` at inference); defaults are ``BASE``.

  Attributes (HF config.json names; see ``BASE`` / ``LARGE_LV60``):
    conv_dim, conv_kernel, conv_stride, conv_bias: the feature encoder's convs.
    feat_extract_norm: "group" (norm after conv 0 only) or "layer" (after every conv).
    hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: the transformer.
    num_conv_pos_embeddings, num_conv_pos_embedding_groups: positional conv kernel and groups.
    do_stable_layer_norm: pre-LN layers + final LN (large-lv60) instead of post-LN (base).
    layer_norm_eps: of the projection and transformer LNs (the conv norms use 1e-5).
    hidden_dropout, attention_dropout, activation_dropout, feat_proj_dropout: active only with
      train=True (then ``apply`` needs a "dropout" rng).
    pos_conv_impl: "auto", "native" or "taps" (module docstring).
    freeze_feature_encoder: stop gradients at the feature encoder's output, so no backward pass
      runs through it (its parameter gradients are exactly zero). An optimizer must still mask
      the ``feature_encoder`` group: decoupled weight decay moves parameters with zero gradient.
    dtype: computation dtype (a jnp dtype or its name); params stay float32.

  Top-level parameter groups: ``feature_encoder`` (the CNN), ``feature_projection``,
  ``encoder`` (positional conv, transformer layers ``layers_{i}``, ``layer_norm``).
  """
  conv_dim: Sequence[int] = BASE["conv_dim"]
  conv_kernel: Sequence[int] = BASE["conv_kernel"]
  conv_stride: Sequence[int] = BASE["conv_stride"]
  conv_bias: bool = BASE["conv_bias"]
  feat_extract_norm: str = BASE["feat_extract_norm"]
  hidden_size: int = BASE["hidden_size"]
  num_hidden_layers: int = BASE["num_hidden_layers"]
  num_attention_heads: int = BASE["num_attention_heads"]
  intermediate_size: int = BASE["intermediate_size"]
  num_conv_pos_embeddings: int = BASE["num_conv_pos_embeddings"]
  num_conv_pos_embedding_groups: int = BASE["num_conv_pos_embedding_groups"]
  do_stable_layer_norm: bool = BASE["do_stable_layer_norm"]
  layer_norm_eps: float = BASE["layer_norm_eps"]
  hidden_dropout: float = BASE["hidden_dropout"]
  attention_dropout: float = BASE["attention_dropout"]
  activation_dropout: float = BASE["activation_dropout"]
  feat_proj_dropout: float = BASE["feat_proj_dropout"]
  pos_conv_impl: str = "auto"
  freeze_feature_encoder: bool = False
  dtype: Any = jnp.float32

  def _check(self) -> None:
    n = len(self.conv_dim)
    if len(self.conv_kernel) != n or len(self.conv_stride) != n:
      raise ValueError(f"conv_dim {tuple(self.conv_dim)}, conv_kernel {tuple(self.conv_kernel)}"
                       f" and conv_stride {tuple(self.conv_stride)} must have the same length")
    if self.feat_extract_norm not in FEAT_EXTRACT_NORMS:
      raise ValueError(f"feat_extract_norm {self.feat_extract_norm!r}; expected one of "
                       f"{FEAT_EXTRACT_NORMS}")
    for what, groups in (("num_attention_heads", self.num_attention_heads),
                         ("num_conv_pos_embedding_groups", self.num_conv_pos_embedding_groups)):
      if self.hidden_size % groups:
        raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {what} {groups}")

  def setup(self):
    self._check()
    dtype = jnp.dtype(self.dtype)
    self.feature_encoder = FeatureEncoder(self.conv_dim, self.conv_kernel, self.conv_stride,
                                          self.conv_bias, self.feat_extract_norm, dtype)
    self.feature_projection = FeatureProjection(self.hidden_size, self.layer_norm_eps,
                                                self.feat_proj_dropout, dtype)
    self.encoder = Encoder(self.num_hidden_layers, self.num_attention_heads,
                           self.intermediate_size, self.num_conv_pos_embeddings,
                           self.num_conv_pos_embedding_groups, self.do_stable_layer_norm,
                           self.layer_norm_eps, self.hidden_dropout, self.attention_dropout,
                           self.activation_dropout, self.pos_conv_impl, dtype)

  def backbone(self, audio: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """The ``__call__`` outputs; shared with ``AVCLAudioEncoder``."""
    if audio.ndim != 2:
      raise ValueError(f"expected normalised waveforms [B, S]; got shape {audio.shape}")
    if num_frames(audio.shape[1], self.conv_kernel, self.conv_stride) < 1:
      raise ValueError(f"{audio.shape[1]} samples give no frame: the feature encoder's receptive"
                       f" field is longer")
    conv = self.feature_encoder(audio.astype(jnp.dtype(self.dtype)))
    if self.freeze_feature_encoder:
      conv = lax.stop_gradient(conv)
    self.sow("intermediates", "conv", conv)
    x, features = self.feature_projection(conv, train=train)
    return {"features": features, "hidden": self.encoder(x, train=train)}

  def __call__(self, audio: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Normalised 16 kHz waveforms [B, S] → dict of

      features: [B, T', C] the feature encoder's output after the feature projection's
        LayerNorm (HF's ``extract_features``; the raw conv output is sown as ``conv``);
      hidden: [B, T', D] the last layer's output (HF's ``last_hidden_state``),
    with T' = ``num_frames(S)`` (S // 320 − 1 for S ≥ 400 and S divisible by 320), C = 512,
    D = ``hidden_size``. Per-layer outputs are sown into ``intermediates`` (``Encoder``).
    """
    return self.backbone(audio, train=train)


class MLPHead(nn.Module):
  """Dense(hidden) → LayerNorm → ReLU → Dense(features): [B, C] → [B, features]."""
  hidden: int
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(self.hidden, dtype=self.dtype, name="dense1")(x)
    x = nn.relu(nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(x))
    return nn.Dense(self.features, dtype=self.dtype, name="dense2")(x)


class AVCLAudioEncoder(Wav2Vec2):
  """The audio encoder of §3.2: wav2vec2 → temporal adaptive average pooling of the last layer to
  ``num_tokens`` tokens → flatten → MLP projection head into the common space.

  It is a ``Wav2Vec2`` with extra attributes, so a converted wav2vec2 checkpoint is a sub-tree of
  its parameters at the same paths (warm start = tree merge) and the CNN the paper freezes is the
  top-level ``feature_encoder`` group: an optimizer pattern r".*feature_encoder.*" selects it and
  nothing else. ``freeze_feature_encoder`` defaults to True here (no backward pass through it).

  Choices where the paper is silent (ours):
    num_tokens = 8: ~0.25 s of audio per token for the 2 s pre-training clips (T' = 99 frames),
      coarse enough for a small head, fine enough to keep syllable-scale order.
    head = Dense(2048) → LayerNorm → ReLU → Dense(256) (the paper gives only the 256-d output).
      LayerNorm rather than BatchNorm: the head stays a per-sample function with no batch_stats,
      identical in train and eval, and the contrastive negatives (the other clips of the batch)
      cannot leak through shared per-device batch statistics (the leak MoCo fixes with
      shuffled BN).
  """
  num_tokens: int = 8
  head_hidden: int = 2048
  proj_dim: int = 256
  freeze_feature_encoder: bool = True

  def setup(self):
    super().setup()
    self.head = MLPHead(self.head_hidden, self.proj_dim, jnp.dtype(self.dtype))

  def __call__(self, audio: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Normalised 16 kHz waveforms [B, S] → dict of ``features`` [B, T', 512] and ``hidden``
    [B, T', D] (as ``Wav2Vec2``), ``pooled`` [B, num_tokens, D] (adaptive average pooling of
    ``hidden`` over time) and ``proj`` [B, proj_dim] (head output, not normalised)."""
    out = self.backbone(audio, train=train)
    pooled = adaptive_avg_pool(out["hidden"], self.num_tokens, axis=1)
    out["pooled"] = pooled
    out["proj"] = self.head(pooled.reshape(pooled.shape[0], -1))
    return out


MODELS.register("wav2vec2")(Wav2Vec2)
MODELS.register("avcl_audio")(AVCLAudioEncoder)

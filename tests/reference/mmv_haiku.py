"""Haiku reference of DeepMind's released MMV network (and FakeOut's head on it), for parity tests.

Written for this project from the public description of the released model (deepmind-research
``mmv/config.py``, ``mmv/models/{mm_embeddings,tsm_resnet,tsm_utils,resnet,normalization}.py``)
and gilikn/FakeOut ``fakeout/inference.py``: not a copy of either. What must be identical is what
a checkpoint fixes — the Haiku module/parameter names and shapes — and the computation. Names
come out of Haiku exactly as in the released code because every module is created in the same
place (in a parent's ``__init__`` → ``parent/~/child``; in its ``__call__`` → ``parent/child``)
and under the same name. The released BatchNorms are unnamed instances of a private class
``_CrossReplicaBatchNorm``, which Haiku names ``__cross_replica_batch_norm`` (``_1``, ``_2`` for
repeats in one scope); here they are plain ``hk.BatchNorm`` given that name explicitly and no
cross-replica axis (the tests run one device).

Layout of a ``hk.transform_with_state`` checkpoint of ``mmv_forward`` (root module
``text_audio_video``: the ``name`` entry of the released ``get_model_config``)::

  text_audio_video/visual_module/~/TSMResNetV2/tsm_resnet_stem                       w
  …/TSMResNetV2/tsm_resnet_unit_{u}/block_{b}/{conv_0,conv_1,conv_2,shortcut_conv}   w
  …/TSMResNetV2/tsm_resnet_unit_{u}/block_{b}/__cross_replica_batch_norm{,_1,_2}      scale, offset
  …/TSMResNetV2/__cross_replica_batch_norm                                            (final BN)
  text_audio_video/audio_module/~/res_net_v2/~/initial_conv                           w
  …/res_net_v2/~/block_group_{u}/block_{b}/~/{conv_0,conv_1,conv_2,shortcut_conv}     w
  …/res_net_v2/~/block_group_{u}/block_{b}/__cross_replica_batch_norm{,_1,_2}
  …/res_net_v2/__cross_replica_batch_norm
  text_audio_video/text_module/~/embed                                                embeddings
  text_audio_video/text_module/~/text_conv1                                           w, b
  text_audio_video/vid2audio_embd/{final_projection_inner (w, b), final_projection (w),
                                   __cross_replica_batch_norm, …_1}
  text_audio_video/vis_embd/{final_projection (w, b), __cross_replica_batch_norm}
  text_audio_video/{audio_embd, txt_embd, txt2audio_embd, audio2txt_embd}/final_projection
  (FakeOut) first_mlp_layer, second_mlp_layer, third_mlp_layer                        w, b

and the state holds, per BatchNorm, ``<bn>/~/mean_ema`` and ``<bn>/~/var_ema`` with
``average`` (what evaluation uses), ``hidden`` and ``counter``. ``audio2txt_embd`` only exists
when the model was initialised in training mode (the released training step calls it; the
evaluation graph sends audio through ``vis_embd`` instead).

Beyond the released model, widths may be fractional and depths chosen (``RefConfig``), so the
tests can run the same architecture at toy size; the released sizes are the defaults.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence

import haiku as hk
import jax
import jax.numpy as jnp

ROOT = "text_audio_video"
BN_NAME = "__cross_replica_batch_norm"
FAKEOUT_LAYERS = ("first_mlp_layer", "second_mlp_layer", "third_mlp_layer")


@dataclasses.dataclass(frozen=True)
class RefConfig:
  """Sizes of the reference; the defaults are the released TSM-ResNet-50 (×1) checkpoint's."""
  video_width: float = 1.0  # 2.0 for mmv_tsm_resnet_x2.pkl.
  video_blocks: Sequence[int] = (3, 4, 6, 3)
  shift_fraction: float = 0.125
  audio_width: float = 1.0  # The released audio ResNet-50 is always ×1.
  audio_blocks: Sequence[int] = (3, 4, 6, 3)
  vocab_size: int = 65536
  word_dim: int = 300
  sentence_dim: int = 2048
  va_dim: int = 512
  va_hidden: int = 512
  vat_dim: int = 256
  fakeout_hidden: Sequence[int] = (512, 128)


def _bn(x: jax.Array, is_training: bool) -> jax.Array:
  """A new BatchNorm module per call (decay 0.9, ε 1e-5), named as Haiku names the released
  ones, in whichever module is running."""
  return hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=0.9, eps=1e-5,
                      name=BN_NAME)(x, is_training)


def _conv(channels: int, kernel: int, stride: int, name: str) -> hk.Conv2D:
  return hk.Conv2D(channels, kernel, stride=stride, with_bias=False, padding="SAME", name=name)


def shift_channels(x: jax.Array, num_frames: int, fraction: float) -> jax.Array:
  """Temporal shift of [B·T, H, W, C] (batch-major clips): output channels [0, n) hold frame
  t+1's channels [C−n, C), [n, C−n) stay, [C−n, C) hold frame t−1's channels [0, n)."""
  c = x.shape[-1]
  n = int(c * fraction)
  clip = x.reshape((-1, num_frames) + x.shape[1:])
  no_time_pad = [(0, 0)] * (clip.ndim - 2)
  later = jnp.pad(clip[:, 1:, ..., c - n:], [(0, 0), (0, 1)] + no_time_pad)
  earlier = jnp.pad(clip[:, :-1, ..., :n], [(0, 0), (1, 0)] + no_time_pad)
  return jnp.concatenate([later, clip[..., n:c - n], earlier], axis=-1).reshape(x.shape)


# ----------------------------------------------------------------------------- video
class _TSMBlock(hk.Module):
  """Pre-activation bottleneck; every layer is created while it runs (``block/conv_0``)."""

  def __init__(self, channels: int, stride: int, projection: bool, num_frames: int,
               fraction: float, name: str):
    super().__init__(name=name)
    self._channels, self._stride, self._projection = channels, stride, projection
    self._num_frames, self._fraction = num_frames, fraction

  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    pre = jax.nn.relu(_bn(x, is_training))
    shortcut = x
    if self._projection:
      shortcut = _conv(self._channels, 1, self._stride, "shortcut_conv")(pre)
    if self._fraction:
      pre = shift_channels(pre, self._num_frames, self._fraction)
    inner = self._channels // 4
    y = _conv(inner, 1, 1, "conv_0")(pre)
    y = _conv(inner, 3, self._stride, "conv_1")(jax.nn.relu(_bn(y, is_training)))
    y = _conv(self._channels, 1, 1, "conv_2")(jax.nn.relu(_bn(y, is_training)))
    return shortcut + y


class _TSMUnit(hk.Module):

  def __init__(self, channels: int, blocks: int, stride: int, num_frames: int, fraction: float,
               name: str):
    super().__init__(name=name)
    self._args = (channels, blocks, stride, num_frames, fraction)

  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    channels, blocks, stride, num_frames, fraction = self._args
    for b in range(blocks):
      # The released TSM projects in every unit's first block, whatever the widths.
      x = _TSMBlock(channels, stride if b == 0 else 1, b == 0, num_frames, fraction,
                    name=f"block_{b}")(x, is_training)
    return x


class _TSMResNetV2(hk.Module):
  """Clips [B, T, H, W, 3] → {"frames": [B, T, D], "pooled": [B, D]}."""

  def __init__(self, cfg: RefConfig):
    super().__init__(name="TSMResNetV2")
    self._cfg = cfg

  def __call__(self, video: jax.Array, is_training: bool) -> Dict[str, jax.Array]:
    cfg = self._cfg
    b, t = video.shape[:2]
    x = video.reshape((b * t,) + video.shape[2:])
    x = _conv(int(64 * cfg.video_width), 7, 2, "tsm_resnet_stem")(x)
    x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")
    for u, (channels, blocks, stride) in enumerate(zip((256, 512, 1024, 2048), cfg.video_blocks,
                                                       (1, 2, 2, 2))):
      x = _TSMUnit(int(channels * cfg.video_width), blocks, stride, t, cfg.shift_fraction,
                   name=f"tsm_resnet_unit_{u}")(x, is_training)
    x = jax.nn.relu(_bn(x, is_training))
    frames = jnp.mean(x, axis=(1, 2)).reshape(b, t, -1)
    return {"frames": frames, "pooled": jnp.mean(frames, axis=1)}


class _VisualModule(hk.Module):

  def __init__(self, cfg: RefConfig):
    super().__init__(name="visual_module")
    self._cnn = _TSMResNetV2(cfg)  # Built here: visual_module/~/TSMResNetV2.

  def __call__(self, video: jax.Array, is_training: bool) -> Dict[str, jax.Array]:
    return self._cnn(video, is_training)


# ----------------------------------------------------------------------------- audio
class _Bottleneck(hk.Module):
  """Pre-activation bottleneck whose convs are built in ``__init__`` (``block/~/conv_0``)."""

  def __init__(self, channels: int, stride: int, projection: bool, name: str):
    super().__init__(name=name)
    self._convs = [_conv(channels // 4, 1, 1, "conv_0"), _conv(channels // 4, 3, stride, "conv_1"),
                   _conv(channels, 1, 1, "conv_2")]
    self._shortcut = _conv(channels, 1, stride, "shortcut_conv") if projection else None

  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    shortcut, y = x, x
    for i, conv in enumerate(self._convs):
      y = jax.nn.relu(_bn(y, is_training))
      if i == 0 and self._shortcut is not None:
        shortcut = self._shortcut(y)
      y = conv(y)
    return y + shortcut


class _ResUnit(hk.Module):

  def __init__(self, channels: int, blocks: int, stride: int, name: str):
    super().__init__(name=name)
    self._channels, self._blocks, self._stride = channels, blocks, stride

  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    for b in range(self._blocks):
      # Here (unlike the TSM) a projection only where the width changes.
      projection = b == 0 and x.shape[-1] != self._channels
      x = _Bottleneck(self._channels, self._stride if b == 0 else 1, projection,
                      name=f"block_{b}")(x, is_training)
    return x


class _ResNetV2(hk.Module):
  """Log-mel images [B, T', F, 1] → [B, D] (mean over time and frequency)."""

  def __init__(self, cfg: RefConfig):
    super().__init__(name="res_net_v2")
    w = cfg.audio_width
    self._stem = _conv(int(64 * w), 7, 2, "initial_conv")
    self._units = [_ResUnit(int(c * w), n, s, name=f"block_group_{u}") for u, (c, n, s) in
                   enumerate(zip((256, 512, 1024, 2048), cfg.audio_blocks, (1, 2, 2, 2)))]

  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    x = self._stem(x)
    x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")
    for unit in self._units:
      x = unit(x, is_training)
    x = jax.nn.relu(_bn(x, is_training))
    return jnp.mean(x, axis=(1, 2))


class _AudioModule(hk.Module):

  def __init__(self, cfg: RefConfig):
    super().__init__(name="audio_module")
    self._cnn = _ResNetV2(cfg)

  def __call__(self, spectrogram: jax.Array, is_training: bool) -> jax.Array:
    return self._cnn(spectrogram, is_training)


# ----------------------------------------------------------------------------- text + heads
class _TextModule(hk.Module):
  """Token ids [B, N] → [B, sentence_dim]: frozen embedding, width-1 conv, ReLU, max over N
  (padding positions included)."""

  def __init__(self, cfg: RefConfig):
    super().__init__(name="text_module")
    table = jnp.zeros((cfg.vocab_size, cfg.word_dim))  # A checkpoint supplies the real one.
    self._embed = hk.Embed(embedding_matrix=table)
    self._conv = hk.Conv1D(cfg.sentence_dim, 1, name="text_conv1")

  def __call__(self, word_ids: jax.Array, is_training: bool) -> jax.Array:
    del is_training
    words = jax.lax.stop_gradient(self._embed(word_ids))
    return jnp.max(jax.nn.relu(self._conv(words)), axis=1)


class _Head(hk.Module):
  """Projection: optional hidden linear-BN-ReLU, then a linear (bias dropped only when an MLP
  ends in BN), then an optional BN. Its layers are built per call, so a second call (audio
  through ``vis_embd``) shares the first call's weights and BN."""

  def __init__(self, dim: int, name: str, hidden: Optional[int] = None, bn_out: bool = False):
    super().__init__(name=name)
    self._dim, self._hidden, self._bn_out = dim, hidden, bn_out

  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    bias = True
    if self._hidden:
      x = hk.Linear(self._hidden, name="final_projection_inner")(x)
      x = jax.nn.relu(_bn(x, is_training))
      bias = not self._bn_out
    x = hk.Linear(self._dim, with_bias=bias, name="final_projection")(x)
    return _bn(x, is_training) if self._bn_out else x


class MMVReference(hk.Module):
  """Video, audio and text → the released model's representations and FAC embeddings."""

  def __init__(self, cfg: RefConfig, name: str = ROOT):
    super().__init__(name=name)
    self._cfg = cfg

  def __call__(self, images: jax.Array, spectrogram: jax.Array, word_ids: jax.Array,
               is_training: bool) -> Dict[str, jax.Array]:
    """images [B, T, H, W, 3]; spectrogram [B, T', F, 1]; word_ids [B, N] → video_repr,
    video_frames, video_va, video_vat, audio_repr, audio_va (+ audio_vat at evaluation),
    text_repr, text_vat, text_va."""
    cfg = self._cfg
    video = _VisualModule(cfg)(images, is_training)
    vis_embd = _Head(cfg.vat_dim, "vis_embd", bn_out=True)
    vid2audio = _Head(cfg.va_dim, "vid2audio_embd", hidden=cfg.va_hidden, bn_out=True)
    video_va = vid2audio(video["pooled"], is_training)
    out = {"video_repr": video["pooled"], "video_frames": video["frames"], "video_va": video_va,
           "video_vat": vis_embd(jax.nn.relu(video_va), is_training)}  # fac_relu

    audio = _AudioModule(cfg)(spectrogram, is_training)
    out["audio_repr"] = audio
    out["audio_va"] = _Head(cfg.va_dim, "audio_embd")(audio, is_training)
    if is_training:  # Audio reaches S_vat through its own head while training …
      out["audio_vat"] = _Head(cfg.va_dim, "audio2txt_embd")(audio, is_training)
    else:  # … and through the video's va → vat head at evaluation.
      out["audio_vat"] = vis_embd(jax.nn.relu(out["audio_va"]), is_training)

    text = _TextModule(cfg)(word_ids, is_training)
    out["text_repr"] = text
    out["text_vat"] = _Head(cfg.vat_dim, "txt_embd")(text, is_training)
    out["text_va"] = _Head(cfg.va_dim, "txt2audio_embd")(text, is_training)
    return out


def mmv_forward(images, spectrogram, word_ids, is_training, cfg: RefConfig):
  """For ``hk.transform_with_state``: the released MMV graph."""
  return MMVReference(cfg)(images, spectrogram, word_ids, is_training)


def fakeout_forward(images, spectrogram, word_ids, is_training, cfg: RefConfig,
                    use_audio: bool = True):
  """For ``hk.transform_with_state``: FakeOut's detector — MMV, then three linear layers (no
  activations, TruncatedNormal(0.02) weights) on [video repr, audio repr] (or video alone), at
  the top level of the transform → logits [B, 2] (class 1 = fake)."""
  out = MMVReference(cfg)(images, spectrogram, word_ids, is_training)
  x = out["video_repr"]
  if use_audio:
    x = jnp.concatenate([x, out["audio_repr"]], axis=1)
  widths = tuple(cfg.fakeout_hidden) + (2,)
  for name, width in zip(FAKEOUT_LAYERS, widths):
    x = hk.Linear(width, w_init=hk.initializers.TruncatedNormal(0.02), name=name)(x)
  return {"logits": x, **out}

"""Video encoder of the audio-visual contrastive transformer (§3.2, §4.1, Table 4).

Lip movements are learned by contrast with the synchronised speech (the audio side is
``wav2vec2.AVCLAudioEncoder``); the paper then fine-tunes this encoder for forgery detection with
its frontend frozen and per-layer learning rates (§3.3). Input: greyscale mouth crops, 96×96
stored, 88×88 random crop, 25 fps, normalised by a data op. At paper size (ResNet-18, 6 layers,
2-s clip of 50 frames):

  frontend  stem  3D conv 5×7×7, 64, /1×2×2, pad 2,3,3 → BN → PReLU   50×44×44×64
                  max-pool 1×3×3, /1×2×2, pad 0,1,1                    50×22×22×64
            trunk per-frame 2D ResNet-18 without its stem: res1..res4
                  (64/128/256/512, BasicBlocks ×2, /2 from res2 on)    50×3×3×512
                  mean over H, W                              → ``frames`` [B, 50, 512]
  backend   Dense(512 → 1024) + learned position embedding (``max_len`` frames)
            6 pre-LN transformer layers (1024 wide, 8 heads × 128, MLP 2048, GELU, dropout 0.2)
            final LayerNorm                                   → ``tokens`` [B, 50, 1024]
  head      adaptive average pool over time to 8 tokens       → ``pooled`` [B, 8, 1024]
            flatten → Dense(2048) → LN → ReLU → Dense(256)    → ``proj``   [B, 256]

The ResNet-50 variant of Table 4 swaps the trunk for a per-frame bottleneck ResNet-50 (2048-d
frames) and, as the paper says, doubles the backend width (2048 wide, MLP 4096); ``config()``
gives both as keyword arguments.

Where the paper is silent (each choice is stated where it is made):
  * Stem and trunk follow LipForensics (ahaliassos/LipForensics ``models/spatiotemporal_net.py``,
    after Martinez et al.'s lipreading ResNet), which the paper says it matches ("same setting as
    Lipforensics"): conv without bias, BN, per-channel PReLU (LipForensics' ``relu_type`` is
    "prelu"), He fan-out init. LipForensics also uses PReLU inside its BasicBlocks; the trunk
    here reuses ``resnet_audio.BasicBlock``, which is ReLU (3,840 PReLU slopes fewer), so a
    LipForensics checkpoint would need a PReLU block to load exactly.
  * The transformer layer is wav2vec2's pre-LN ``EncoderLayer`` (the audio side's layer). The
    paper's "1024 dims, 8 attention heads, 128 dims for each attention head, 2048 intermediate
    dims and 0.2 dropout" is the argument list of lucidrains/vit-pytorch's ``Transformer(dim,
    depth, heads, dim_head, mlp_dim, dropout)`` (our inference; the paper names no code): a
    pre-LN GELU transformer with that dropout on the attention probabilities, the attention
    output, the MLP hidden layer and the MLP output (all four here), closed by a final
    LayerNorm. q/k/v carry biases here (wav2vec2's; vit-pytorch has none: 3,072 parameters per
    layer, 0.04 % of one) and head dim = width / heads.
  * Head: the audio encoder's (``wav2vec2.MLPHead``, same ``num_tokens``), so the two sides are
    symmetric.

``AVCLPair`` (registered "avcl") holds both encoders for pre-training (parameters under
``video/...`` and ``audio/...``); ``AVCLDetector`` ("avcl_detector") is §3.3's fine-tuning
model: this encoder without its contrastive head, temporal average pooling of the last layer
and a new MLP classifier (``classifier/...``) giving one fake logit per clip.

Table 4's "total parameters" are matched within 0.15 % by everything here except the contrastive
projection ``head`` (frontend + embed + position table + layers + final norm; see
tests/test_avcl_video.py): the head is a pre-training device and is replaced at fine-tuning.

XLA:CPU: the stem is ``frame_conv.FrameConv3D``, the 5×7×7 conv as a 7×7 2D conv over 5 stacked
frames when ``stem_impl`` resolves to "frames" ("auto" on CPU). On 1 input channel XLA:CPU's 3D
conv is slow: for 2 clips of 50×88×88, 1.81 s forward and 3.58 s forward + kernel gradient as
a 3D conv, against 0.15 s and 1.38 s stacked (2-core dev CPU). The rest is 2D convs on frames
batched as images and dense layers, which all have fast CPU paths.

Parameter names, for optimizer groups written as regexes over '/'-joined paths:
  ``frontend/...``    stem and trunk: the part §3.3 freezes (``freeze_frontend``).
  ``embed``, ``pos_embedding``  the backend's input projection and position table.
  ``layer_{i}/...``   transformer layer i = 0 … num_layers − 1 (``layer_index``, ``layer_lr``).
  ``final_norm``      the LayerNorm after the last layer.
  ``head/...``        the contrastive projection head (pre-training only).
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from fakedet.models import MODELS
from fakedet.models import frame_conv
from fakedet.models import wav2vec2
from fakedet.models.resnet_audio import BasicBlock

FRONTEND = "frontend"
STEM_KERNEL = (5, 7, 7)
STEM_PADDING = ((2, 2), (3, 3), (3, 3))
STEM_ACTS = ("prelu", "relu")

# Per-frame trunks: block kind, blocks per stage, output channels per stage (multiplier 1).
TRUNKS = {
    "resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet50": ("bottleneck", (3, 4, 6, 3), (256, 512, 1024, 2048)),
}
# Backend sizes of Table 4: §4.1 for ResNet-18; "we double the width of its backend" for
# ResNet-50 (attention and MLP widths both doubled: only that reading gives Table 4's 33.55M per
# layer). 16 heads keep 128 dims per head (our choice; the count does not depend on it).
BACKENDS = {
    "resnet18": dict(width=1024, num_heads=8, mlp_dim=2048),
    "resnet50": dict(width=2048, num_heads=16, mlp_dim=4096),
}

# He init on fan-out, as torchvision and the lipreading ResNet initialise convolutions.
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_DENSE_INIT = nn.initializers.normal(0.02)  # as wav2vec2's layers, which the backend reuses
_LAYER = re.compile(r"(?:^|/)layer_(\d+)(?:/|$)")


def config(frontend: str = "resnet18", num_layers: int = 6) -> Dict[str, Any]:
  """``AVCLVideoEncoder`` keyword arguments for a row of Table 4 (defaults: the paper's model)."""
  if frontend not in TRUNKS:
    raise KeyError(f"unknown frontend {frontend!r}; expected one of {sorted(TRUNKS)}")
  return dict(frontend=frontend, num_layers=num_layers, **BACKENDS[frontend])


def layer_index(path: str) -> Optional[int]:
  """Transformer layer of a '/'-joined parameter path ("params/video/layer_3/..." → 3), or None
  for every parameter outside the transformer layers (frontend, embed, final_norm, head).

  Any prefix is allowed, so the encoder can sit inside a larger model; the frontend's blocks are
  named ``res{s}_block{b}`` so that no other segment has the ``layer_{i}`` form.
  """
  match = _LAYER.search(path)
  return int(match.group(1)) if match else None


def layer_pattern(index: int) -> str:
  """A regex that fully matches exactly the paths of layer ``index`` (for ``optim.groups``)."""
  return rf"(?:.*/)?layer_{index}/.*"


def layer_lr(index: int, num_layers: int, last_lr: float = 0.005, decay: float = 0.9) -> float:
  """§3.3's layer-wise learning rate: ``last_lr`` for the last layer, × ``decay`` per layer
  towards the input (layer 0 of 6: 0.005 · 0.9⁵ ≈ 0.00295)."""
  if not 0 <= index < num_layers:
    raise ValueError(f"layer {index} outside 0 … {num_layers - 1}")
  return last_lr * decay ** (num_layers - 1 - index)


def stem_conv(features: int, impl: str = "auto", dtype: Any = jnp.float32,
              name: Optional[str] = None) -> frame_conv.FrameConv3D:
  """The 5×7×7 stem, stride 1×2×2, padding 2,3,3, no bias: [B, T, H, W, Cin] → [B, T, H/2,
  W/2, features] (ceil). ``impl`` as ``frame_conv`` ("auto": stacked-frame 2D conv on CPU)."""
  return frame_conv.FrameConv3D(features, STEM_KERNEL, (2, 2), STEM_PADDING, impl,
                                kernel_init=_CONV_INIT, dtype=dtype, name=name)


def _bn(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  """torch BatchNorm defaults (momentum 0.1 there is 0.9 here, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)


def _conv2d(features: int, kernel: int, stride: int, dtype: Any, name: str) -> nn.Conv:
  """torch-style explicit padding ((k − 1) / 2), not "SAME": they differ at stride 2 on even
  sizes, and this keeps shapes equal to the PyTorch models'."""
  pad = (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False, kernel_init=_CONV_INIT,
                 dtype=dtype, name=name)


class PReLU(nn.Module):
  """Per-channel PReLU (torch ``nn.PReLU(num_parameters=C)``, slopes start at 0.25); flax's
  ``nn.PReLU`` has a single slope."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param("alpha", nn.initializers.constant(0.25), (x.shape[-1],))
    return jnp.where(x >= 0, x, alpha.astype(self.dtype) * x)


class Bottleneck(nn.Module):
  """torchvision ResNet-50 (v1.5) bottleneck: 1×1 → 3×3 (carries the stride) → 1×1 (×4), each
  conv followed by BN, ReLU after the first two and after the residual sum; 1×1 conv-BN
  shortcut when the shape changes.
  [N, H, W, Cin] → [N, ceil(H / stride), ceil(W / stride), features].

  Post-activation like ``BasicBlock``, so both trunks follow the same conv-BN-act stem; the
  repository's other bottlenecks are pre-activation (``tsm_resnet``) or 3D (``csn``).
  """
  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    inner = self.features // 4
    y = nn.relu(_bn(train, self.dtype, "bn1")(_conv2d(inner, 1, 1, self.dtype, "conv1")(x)))
    y = _conv2d(inner, 3, self.stride, self.dtype, "conv2")(y)
    y = nn.relu(_bn(train, self.dtype, "bn2")(y))
    y = _bn(train, self.dtype, "bn3")(_conv2d(self.features, 1, 1, self.dtype, "conv3")(y))
    if self.stride != 1 or x.shape[-1] != self.features:
      x = _conv2d(self.features, 1, self.stride, self.dtype, "proj_conv")(x)
      x = _bn(train, self.dtype, "proj_bn")(x)
    return nn.relu(x + y)


class Frontend(nn.Module):
  """3D stem + per-frame 2D ResNet trunk: video [B, T, H, W, Cin] → frames [B, T, C].

  Frames never mix after the stem: the trunk runs on the B·T frames as a batch of images, and
  its BatchNorms normalise over all of them (a per-frame BN2d, as LipForensics).

  Attributes:
    arch: "resnet18" (C = 512) or "resnet50" (C = 2048), a key of ``TRUNKS``.
    stage_blocks: blocks per stage; None = the arch's own (tiny test models pass fewer).
    width_multiplier: scales the stem and every stage width (tiny test / demo models).
    stem_act: "prelu" (LipForensics) or "relu".
    stem_impl: "auto", "native" or "frames" (``frame_conv``).
    dtype: computation dtype.
  """
  arch: str = "resnet18"
  stage_blocks: Optional[Sequence[int]] = None
  width_multiplier: float = 1.0
  stem_act: str = "prelu"
  stem_impl: str = "auto"
  dtype: Any = jnp.float32

  def _layout(self) -> Tuple[str, Tuple[int, ...], Tuple[int, ...], int]:
    """(block kind, blocks per stage, scaled stage widths, scaled stem width)."""
    if self.arch not in TRUNKS:
      raise ValueError(f"unknown frontend {self.arch!r}; expected one of {sorted(TRUNKS)}")
    if self.stem_act not in STEM_ACTS:
      raise ValueError(f"stem_act {self.stem_act!r}; expected one of {STEM_ACTS}")
    kind, blocks, widths = TRUNKS[self.arch]
    blocks = tuple(self.stage_blocks) if self.stage_blocks is not None else blocks
    if len(blocks) != len(widths):
      raise ValueError(f"stage_blocks {blocks} must name {len(widths)} stages for {self.arch}")
    minimum = 4 if kind == "bottleneck" else 1  # a bottleneck's inner width is width / 4
    scale = lambda w: max(minimum, int(round(w * self.width_multiplier)) // minimum * minimum)
    return kind, blocks, tuple(scale(w) for w in widths), max(1, round(64 * self.width_multiplier))

  @nn.compact
  def __call__(self, video: jax.Array, *, train: bool) -> jax.Array:
    kind, blocks, widths, stem_width = self._layout()
    b, t = video.shape[:2]
    x = stem_conv(stem_width, self.stem_impl, self.dtype, name="stem_conv")(video)
    x = _bn(train, self.dtype, "stem_bn")(x)
    x = PReLU(self.dtype, name="stem_prelu")(x) if self.stem_act == "prelu" else nn.relu(x)
    self.sow("intermediates", "stem", x)
    x = x.reshape(b * t, *x.shape[2:])  # frames as images from here on
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # -inf padding
    for s, (num_blocks, width) in enumerate(zip(blocks, widths)):
      for i in range(num_blocks):
        stride = 2 if (s > 0 and i == 0) else 1
        name = f"res{s + 1}_block{i + 1}"
        if kind == "basic":
          x = BasicBlock(width, (stride, stride), self.dtype, name=name)(x, train=train)
        else:
          x = Bottleneck(width, stride, self.dtype, name=name)(x, train=train)
    return jnp.mean(x, axis=(1, 2)).reshape(b, t, -1)


class AVCLVideoEncoder(nn.Module):
  """The video encoder of §3.2 (module docstring: layout, names, choices); defaults are the
  paper's ResNet-18 + 6-layer model (``config()`` for the other rows of Table 4).

  Attributes:
    frontend: "resnet18" or "resnet50" (the per-frame trunk).
    stage_blocks, width_multiplier: the frontend's depth / width (None, 1.0 = the paper's).
    stem_act: "prelu" or "relu" after the stem's BN.
    stem_impl: "auto", "native" or "frames" for the 3D stem (``frame_conv``).
    num_layers, width, num_heads, mlp_dim: the transformer (head dim = width / num_heads).
    dropout: the transformer's dropout rate (all four sites), active only with train=True
      (``apply`` then needs a "dropout" rng).
    max_len: frames the position table covers (50 = 2 s at 25 fps, the pre-training clips;
      fine-tuning's 1-s clips use its first 25 rows).
    num_tokens, head_hidden, proj_dim: pooling and projection head, as ``AVCLAudioEncoder``.
    with_head: build the contrastive projection head (pre-training); False leaves it out (no
      ``proj`` output, no ``head`` parameters), as the fine-tuned detector replaces it.
    freeze_frontend: §3.3's frozen frontend: gradients stop at ``frames`` (no backward pass
      through it) and its BatchNorms use their running statistics even with train=True, so
      fine-tuning batches do not rewrite the statistics the frozen weights were trained with.
      An optimizer must still leave the ``frontend`` group alone (decoupled weight decay moves
      parameters with zero gradient).
    dtype: computation dtype (a jnp dtype or its name, e.g. "bfloat16"); params stay float32.
  """
  frontend: str = "resnet18"
  stage_blocks: Optional[Sequence[int]] = None
  width_multiplier: float = 1.0
  stem_act: str = "prelu"
  stem_impl: str = "auto"
  num_layers: int = 6
  width: int = BACKENDS["resnet18"]["width"]
  num_heads: int = BACKENDS["resnet18"]["num_heads"]
  mlp_dim: int = BACKENDS["resnet18"]["mlp_dim"]
  dropout: float = 0.2
  max_len: int = 50
  num_tokens: int = wav2vec2.AVCLAudioEncoder.num_tokens
  head_hidden: int = wav2vec2.AVCLAudioEncoder.head_hidden
  proj_dim: int = wav2vec2.AVCLAudioEncoder.proj_dim
  with_head: bool = True
  freeze_frontend: bool = False
  dtype: Any = jnp.float32

  def _check(self, video: jax.Array) -> None:
    if video.ndim != 5:
      raise ValueError(f"expected video [B, T, H, W, C]; got shape {video.shape}")
    if video.shape[1] > self.max_len:
      raise ValueError(f"{video.shape[1]} frames exceed the position table's "
                       f"max_len={self.max_len}")
    if self.width % self.num_heads:
      raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")

  @nn.compact
  def __call__(self, video: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Normalised greyscale mouth crops [B, T, H, W, 1] (88×88 at paper size) → dict of

      frames: [B, T, C] frontend output, C = 512 (resnet18) or 2048 (resnet50), ×multiplier;
      tokens: [B, T, D] last transformer layer after the final LayerNorm, D = ``width``;
      pooled: [B, num_tokens, D] adaptive average pooling of ``tokens`` over time;
      proj: [B, proj_dim] head output (not normalised), the contrastive embedding.
    Each layer's output is sown into ``intermediates`` as ``layer_{i}_output``.
    """
    self._check(video)
    dtype = jnp.dtype(self.dtype)
    frames = Frontend(self.frontend, self.stage_blocks, self.width_multiplier, self.stem_act,
                      self.stem_impl, dtype, name=FRONTEND)(
                          video.astype(dtype), train=train and not self.freeze_frontend)
    if self.freeze_frontend:
      frames = lax.stop_gradient(frames)
    x = nn.Dense(self.width, dtype=dtype, kernel_init=_DENSE_INIT, name="embed")(frames)
    table = self.param("pos_embedding", _DENSE_INIT, (self.max_len, self.width))
    x = x + table[:video.shape[1]].astype(dtype)
    for i in range(self.num_layers):
      x = wav2vec2.EncoderLayer(self.num_heads, self.mlp_dim, stable=True, layer_norm_eps=1e-5,
                                hidden_dropout=self.dropout, attention_dropout=self.dropout,
                                activation_dropout=self.dropout, dtype=dtype,
                                name=f"layer_{i}")(x, train=train)
      self.sow("intermediates", f"layer_{i}_output", x)
    tokens = nn.LayerNorm(epsilon=1e-5, dtype=dtype, use_fast_variance=False,
                          name="final_norm")(x)
    pooled = wav2vec2.adaptive_avg_pool(tokens, self.num_tokens, axis=1)
    out = {"frames": frames, "tokens": tokens, "pooled": pooled}
    if self.with_head:
      out["proj"] = wav2vec2.MLPHead(self.head_hidden, self.proj_dim, dtype, name="head")(
          pooled.reshape(pooled.shape[0], -1))
    return out


class AVCLPair(nn.Module):
  """The pre-training model of §3.2: the video encoder (``video/...``) on mouth crops and the
  wav2vec2 audio encoder (``audio/...``) on the synchronised raw waveform.

  Attributes:
    video: ``AVCLVideoEncoder`` keyword arguments (``config()`` gives Table 4's rows).
    audio: ``wav2vec2.AVCLAudioEncoder`` keyword arguments (``wav2vec2.config("base")`` …).
  """
  video: Dict[str, Any]
  audio: Dict[str, Any]

  @nn.compact
  def __call__(self, video: jax.Array, waveform: jax.Array, *,
               train: bool) -> Dict[str, Dict[str, jax.Array]]:
    """Normalised mouth crops [B, T, H, W, 1] and normalised 16 kHz waveforms [B, S] → {"video":
    the video encoder's outputs, "audio": the audio encoder's}; each has ``proj`` [B, D]."""
    return {"video": AVCLVideoEncoder(**self.video, name="video")(video, train=train),
            "audio": wav2vec2.AVCLAudioEncoder(**self.audio, name="audio")(waveform,
                                                                          train=train)}


class AVCLDetector(nn.Module):
  """The fine-tuned detector of §3.3: video encoder (contrastive head removed) → adaptive
  average pooling of the last layer's tokens over time to ``pool_tokens`` → flatten → a new MLP
  (Dense(hidden) → LayerNorm → ReLU → Dense(1), ``classifier/...``) → the clip's fake logit.

  The paper gives neither the pooled length nor the MLP's shape. Ours: ``pool_tokens`` = 1, a
  global feature of the clip ("we extract global features by adaptive average pooling"), so
  the head does not depend on the clip length; the MLP is the contrastive heads' form
  (``wav2vec2.MLPHead``) with one output.

  Attributes:
    video: ``AVCLVideoEncoder`` keyword arguments (``with_head`` is forced off; set
      ``freeze_frontend=True`` for §3.3's frozen frontend).
    hidden: the MLP's hidden width.
    pool_tokens: tokens the pooled clip feature keeps.
  """
  video: Dict[str, Any]
  hidden: int = 512
  pool_tokens: int = 1

  @nn.compact
  def __call__(self, video: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Normalised mouth crops [B, T, H, W, 1] → {"logit": [B], "feature": [B, pool_tokens·D]}."""
    out = AVCLVideoEncoder(**dict(self.video, with_head=False), name="video")(video, train=train)
    pooled = wav2vec2.adaptive_avg_pool(out["tokens"], self.pool_tokens, axis=1)
    feature = pooled.reshape(pooled.shape[0], -1)
    dtype = jnp.dtype(self.video.get("dtype", jnp.float32))
    logit = wav2vec2.MLPHead(self.hidden, 1, dtype, name="classifier")(feature)[:, 0]
    return {"logit": logit.astype(jnp.float32), "feature": feature}


MODELS.register("avcl_video")(AVCLVideoEncoder)
MODELS.register("avcl")(AVCLPair)
MODELS.register("avcl_detector")(AVCLDetector)

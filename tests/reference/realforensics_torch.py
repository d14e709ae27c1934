"""PyTorch reference of the networks in RealForensics' released checkpoints, for parity tests.

Written for fakedet from the paper (§3, B.3, Tables 16–17) and the parameter NAMES and shapes of
the authors' modules (ahaliassos/RealForensics; their CSN comes from pytorchvideo's ``create_csn``
and their audio net from torchvision's ResNet), so that ``state_dict()`` of these modules has
exactly the keys of a released ``.pth`` file and ``fakedet.importers.realforensics`` can be
tested without downloading one. Nothing here is imported by the package.

Key layout (stage 1 = the Lightning module ``SSLLearner``; stage 2 = ``ModelCombined``):

  stage 1   model.model1.{backbone, projector, predictor}           video student
            model.model1.{target_backbone, target_projector}        video EMA teacher
              (or model.model1.target_encoder.{0,1}: the name stage2/train.py reads)
            model.model2.*                                           the same for audio
            prober_video.*, prober_audio.*                           stop-gradient probers
  stage 2   backbone.*, df_head.weight                               detector (what eval.py reads)
            target_encoder.{0,1}.*                                   frozen stage-1 video teacher
            ssl_head.{0,1}.*                                         auxiliary projector, predictor

Layouts: video [B, C, T, H, W]; log-mel [B, 1, Ta, F] (time is the height); backbones return
per-frame features [B, C, T]; projector and predictor map [B, C, T] → [B, T, D] → [B, T, D].

What this file cannot prove is that it matches the authors' code beyond what the names, shapes
and paper fix (e.g. the order of ops inside a block); the parameter counts it reproduces
(21,394,176 for CSN-101 RGB, 11,170,240 for the audio ResNet18) are a check on the layout only.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

CSN101_DEPTHS = (3, 4, 23, 3)
RESNET18_DEPTHS = (2, 2, 2, 2)


# ----------------------------------------------------------------------------- video backbone
class CSNStem(nn.Module):
  """3×7×7 conv /1×2×2 → BN → ReLU → max 1×3×3 /1×2×2 (Table 16 conv1 + pool1).
  Keys: ``conv.weight``, ``norm.*``."""

  def __init__(self, in_channels: int, width: int):
    super().__init__()
    self.conv = nn.Conv3d(in_channels, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3),
                          bias=False)
    self.norm = nn.BatchNorm3d(width)

  def forward(self, x):
    x = F.relu(self.norm(self.conv(x)))
    return F.max_pool3d(x, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))


class CSNBottleneck(nn.Module):
  """ir-CSN branch: 1×1×1 → depthwise 3×3×3 (carries the spatial stride) → 1×1×1, each + BN.
  Keys: ``conv_{a,b,c}.weight``, ``norm_{a,b,c}.*``."""

  def __init__(self, dim_in: int, inner: int, dim_out: int, stride: int):
    super().__init__()
    self.conv_a = nn.Conv3d(dim_in, inner, 1, bias=False)
    self.norm_a = nn.BatchNorm3d(inner)
    self.conv_b = nn.Conv3d(inner, inner, 3, stride=(1, stride, stride), padding=1, groups=inner,
                            bias=False)
    self.norm_b = nn.BatchNorm3d(inner)
    self.conv_c = nn.Conv3d(inner, dim_out, 1, bias=False)
    self.norm_c = nn.BatchNorm3d(dim_out)

  def forward(self, x):
    x = F.relu(self.norm_a(self.conv_a(x)))
    x = F.relu(self.norm_b(self.conv_b(x)))
    return self.norm_c(self.conv_c(x))


class CSNResBlock(nn.Module):
  """ReLU(shortcut(x) + branch2(x)); the shortcut is a strided 1×1×1 conv + BN when the shape
  changes (keys ``branch1_conv.weight``, ``branch1_norm.*``), else the identity."""

  def __init__(self, dim_in: int, inner: int, dim_out: int, stride: int):
    super().__init__()
    self.branch1_conv = self.branch1_norm = None
    if dim_in != dim_out or stride != 1:
      self.branch1_conv = nn.Conv3d(dim_in, dim_out, 1, stride=(1, stride, stride), bias=False)
      self.branch1_norm = nn.BatchNorm3d(dim_out)
    self.branch2 = CSNBottleneck(dim_in, inner, dim_out, stride)

  def forward(self, x):
    shortcut = x if self.branch1_conv is None else self.branch1_norm(self.branch1_conv(x))
    return F.relu(shortcut + self.branch2(x))


class CSNStage(nn.Module):
  """``res_blocks.{i}``; only the first block strides and changes width."""

  def __init__(self, depth: int, dim_in: int, dim_out: int, stride: int, ratio: int = 4):
    super().__init__()
    self.res_blocks = nn.ModuleList(
        CSNResBlock(dim_in if i == 0 else dim_out, dim_out // ratio, dim_out,
                    stride if i == 0 else 1) for i in range(depth))

  def forward(self, x):
    for block in self.res_blocks:
      x = block(x)
    return x


class CSN(nn.Module):
  """RealForensics' ir-CSN with temporal strides 1: [B, Cin, T, H, W] → frames [B, C, T].

  ``blocks.0`` is the stem, ``blocks.1``–``blocks.4`` the stages (widths 4·stem, doubling), and
  the spatial mean at the end has no parameters. ``stem_width=8`` gives the 1/8-width model.
  """

  def __init__(self, in_channels: int = 3, depths: Sequence[int] = CSN101_DEPTHS,
               stem_width: int = 64, spatial_strides: Sequence[int] = (1, 2, 2, 2)):
    super().__init__()
    blocks = [CSNStem(in_channels, stem_width)]
    dim_in, dim_out = stem_width, 4 * stem_width
    for depth, stride in zip(depths, spatial_strides):
      blocks.append(CSNStage(depth, dim_in, dim_out, stride))
      dim_in, dim_out = dim_out, 2 * dim_out
    self.blocks = nn.ModuleList(blocks)
    self.out_dim = dim_in

  def forward(self, x):
    for block in self.blocks:
      x = block(x)
    return x.mean(dim=(3, 4))


# ----------------------------------------------------------------------------- audio backbone
class BasicBlock(nn.Module):
  """Two 3×3 conv-BN, residual, ReLU; ``downsample.{0,1}`` (1×1 conv, BN) when shape changes."""

  def __init__(self, dim_in: int, dim_out: int, stride=(1, 1)):
    super().__init__()
    self.conv1 = nn.Conv2d(dim_in, dim_out, 3, stride=stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(dim_out)
    self.conv2 = nn.Conv2d(dim_out, dim_out, 3, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(dim_out)
    self.downsample = None
    if dim_in != dim_out or max(stride) > 1:
      self.downsample = nn.Sequential(nn.Conv2d(dim_in, dim_out, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(dim_out))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class _AudioResNet(nn.Module):
  def __init__(self, depths: Sequence[int], width: int):
    super().__init__()
    self.conv1 = nn.Conv2d(1, width, 7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    dim_in = width
    for i, depth in enumerate(depths):
      dim_out = width * 2 ** i
      stride = (1, 1) if i == 0 else (1, 2)  # after the stem only frequency is subsampled
      layer = [BasicBlock(dim_in, dim_out, stride)]
      layer += [BasicBlock(dim_out, dim_out) for _ in range(depth - 1)]
      setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
      dim_in = dim_out
    self.num_layers = len(depths)
    self.out_dim = dim_in

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for i in range(self.num_layers):
      x = getattr(self, f"layer{i + 1}")(x)
    return x.mean(dim=-1)  # frequency is the width axis


class AudioResNet18(nn.Module):
  """Log-mel [B, 1, Ta, F] → frames [B, C, Ta/4] (Table 17); keys under ``model.``."""

  def __init__(self, depths: Sequence[int] = RESNET18_DEPTHS, width: int = 64):
    super().__init__()
    self.model = _AudioResNet(depths, width)
    self.out_dim = self.model.out_dim

  def forward(self, x):
    return self.model(x)


# ----------------------------------------------------------------------------- heads
class LinearProjector(nn.Module):
  """Per-frame Linear (= 1×1 conv) then BN over batch·time: [B, C, T] → [B, T, D].
  Keys: ``net.{weight,bias}``, ``norm_layer.*``."""

  def __init__(self, in_dim: int, out_dim: int = 256):
    super().__init__()
    self.net = nn.Linear(in_dim, out_dim)
    self.norm_layer = nn.BatchNorm1d(out_dim)

  def forward(self, x):
    b, _, t = x.shape
    rows = x.transpose(1, 2).reshape(b * t, -1)
    return self.norm_layer(self.net(rows)).reshape(b, t, -1)


class SwapLast(nn.Module):
  """[B, T, C] ↔ [B, C, T], so BatchNorm1d normalises channels over batch and time."""

  def forward(self, x):
    return x.transpose(1, 2)


class Attention(nn.Module):
  """Multi-head self-attention; q, k, v from one bias-free Linear (``to_qkv``), split in three
  and then into heads; scale 1/√head_dim; output Linear ``to_out.0``."""

  def __init__(self, dim: int, heads: int, head_dim: int):
    super().__init__()
    self.heads = heads
    self.to_qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
    self.to_out = nn.Sequential(nn.Linear(heads * head_dim, dim), nn.Dropout(0.0))

  def forward(self, x):
    b, t, _ = x.shape
    q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2)
               for z in self.to_qkv(x).chunk(3, dim=-1))
    weights = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, t, -1)
    return self.to_out(out)


class FeedForward(nn.Module):
  """``net.0`` Linear → exact GELU → ``net.3`` Linear (indices 2, 4 are dropouts, p = 0)."""

  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0),
                             nn.Linear(hidden, dim), nn.Dropout(0.0))

  def forward(self, x):
    return self.net(x)


class PreNorm(nn.Module):
  """``fn(norm(x))``; the residual is added by the caller."""

  def __init__(self, norm: nn.Module, fn: nn.Module):
    super().__init__()
    self.norm, self.fn = norm, fn

  def forward(self, x):
    return self.fn(self.norm(x))


class TransformerBlocks(nn.Module):
  """``layers.{i}.0``: LN → attention; ``layers.{i}.1``: BN (``norm.1``) → MLP; pre-norm
  residuals (the paper's ViT block with BN instead of LN before the MLP)."""

  def __init__(self, dim: int, depth: int, heads: int, head_dim: int, mlp_dim: int):
    super().__init__()
    self.layers = nn.ModuleList(
        nn.ModuleList([
            PreNorm(nn.LayerNorm(dim), Attention(dim, heads, head_dim)),
            PreNorm(nn.Sequential(SwapLast(), nn.BatchNorm1d(dim), SwapLast()),
                    FeedForward(dim, mlp_dim)),
        ]) for _ in range(depth))

  def forward(self, x):
    for attn, mlp in self.layers:
      x = x + attn(x)
      x = x + mlp(x)
    return x


class TransformerPredictor(nn.Module):
  """Per-frame predictor [B, T, in_dim] → [B, T, out_dim]: ``projection_layer`` to ``dim``,
  1 block, then ``mlp_head`` = BN (``mlp_head.1``) → Linear (``mlp_head.3``). No positional
  embedding, no class token."""

  def __init__(self, in_dim: int = 256, dim: int = 512, out_dim: int = 256, heads: int = 8,
               head_dim: int = 64, mlp_dim: int = 2048, depth: int = 1):
    super().__init__()
    self.projection_layer = nn.Linear(in_dim, dim)
    self.transformer = TransformerBlocks(dim, depth, heads, head_dim, mlp_dim)
    self.mlp_head = nn.Sequential(SwapLast(), nn.BatchNorm1d(dim), SwapLast(),
                                  nn.Linear(dim, out_dim))

  def forward(self, x):
    return self.mlp_head(self.transformer(self.projection_layer(x)))


class CosineHead(nn.Module):
  """Stage 2's ``df_head``: clip logit = s·cos(mean_t(frames), w) (Eq. 5); key ``weight`` [1, C].
  [B, C, T] → [B, 1]."""

  def __init__(self, in_dim: int, scale: float = 64.0):
    super().__init__()
    self.weight = nn.Parameter(torch.randn(1, in_dim) * 0.01)
    self.scale = scale

  def forward(self, x):
    return F.linear(F.normalize(x.mean(dim=-1)), F.normalize(self.weight)) * self.scale


# ----------------------------------------------------------------------------- stage 1
class BranchConfig:
  """Widths and depths of the heads shared by both stages (paper: 256, 512, 8×64, 2048)."""

  def __init__(self, proj_dim=256, dim=512, heads=8, head_dim=64, mlp_dim=2048):
    self.proj_dim, self.dim, self.heads, self.head_dim, self.mlp_dim = (
        proj_dim, dim, heads, head_dim, mlp_dim)

  def projector(self, in_dim: int) -> LinearProjector:
    return LinearProjector(in_dim, self.proj_dim)

  def predictor(self) -> TransformerPredictor:
    return TransformerPredictor(self.proj_dim, self.dim, self.proj_dim, self.heads,
                                self.head_dim, self.mlp_dim)


class StudentTeacher(nn.Module):
  """One modality of stage 1: student ``backbone`` → ``projector`` → ``predictor`` and an EMA
  teacher without predictor, named ``target_backbone``/``target_projector`` or, with
  ``teacher_as_sequential``, ``target_encoder.{0,1}``."""

  def __init__(self, backbone: nn.Module, heads: BranchConfig,
               teacher_as_sequential: bool = False):
    super().__init__()
    self.backbone = backbone
    self.projector = heads.projector(backbone.out_dim)
    self.predictor = heads.predictor()
    teacher = (copy.deepcopy(self.backbone), copy.deepcopy(self.projector))
    self.teacher_as_sequential = teacher_as_sequential
    if teacher_as_sequential:
      self.target_encoder = nn.Sequential(*teacher)
    else:
      self.target_backbone, self.target_projector = teacher

  def forward(self, x):
    """→ (frames [B, C, T], projection z [B, T, D], prediction p [B, T, D])."""
    e = self.backbone(x)
    z = self.projector(e)
    return e, z, self.predictor(z)

  def targets(self, x):
    """The teacher's unnormalised targets [B, T, D]."""
    if self.teacher_as_sequential:
      return self.target_encoder(x)
    return self.target_projector(self.target_backbone(x))


class AVByol(nn.Module):
  """``model1`` video, ``model2`` audio."""

  def __init__(self, video: StudentTeacher, audio: StudentTeacher):
    super().__init__()
    self.model1, self.model2 = video, audio


class Stage1Learner(nn.Module):
  """The Lightning module whose ``state_dict`` is the released stage-1 file: ``model`` plus the
  probers (here a Linear each; only their names matter)."""

  def __init__(self, model: AVByol, num_classes: int = 7):
    super().__init__()
    self.model = model
    self.prober_video = nn.Sequential(nn.Linear(model.model1.backbone.out_dim, num_classes))
    self.prober_audio = nn.Sequential(nn.Linear(model.model2.backbone.out_dim, num_classes))


def stage1_learner(video_channels: int = 3, csn_depths=CSN101_DEPTHS, csn_stem: int = 64,
                   audio_depths=RESNET18_DEPTHS, audio_width: int = 64,
                   heads: BranchConfig = None, teacher_as_sequential: bool = False
                   ) -> Stage1Learner:
  heads = heads or BranchConfig()
  video = StudentTeacher(CSN(video_channels, csn_depths, csn_stem), heads, teacher_as_sequential)
  audio = StudentTeacher(AudioResNet18(audio_depths, audio_width), heads, teacher_as_sequential)
  return Stage1Learner(AVByol(video, audio))


# ----------------------------------------------------------------------------- stage 2
class Stage2Model(nn.Module):
  """``backbone`` + ``df_head`` (+ with ``ssl``: ``target_encoder`` teacher, ``ssl_head``)."""

  def __init__(self, video_channels: int = 3, csn_depths=CSN101_DEPTHS, csn_stem: int = 64,
               heads: BranchConfig = None, ssl: bool = True, scale: float = 64.0):
    super().__init__()
    heads = heads or BranchConfig()
    self.backbone = CSN(video_channels, csn_depths, csn_stem)
    self.df_head = CosineHead(self.backbone.out_dim, scale)
    self.ssl = ssl
    if ssl:
      self.target_encoder = nn.Sequential(CSN(video_channels, csn_depths, csn_stem),
                                          heads.projector(self.backbone.out_dim))
      self.ssl_head = nn.Sequential(heads.projector(self.backbone.out_dim), heads.predictor())

  def forward(self, video):
    """→ dict: frames [B, C, T], logit [B] (and aux_prediction, teacher_target [B, T, D])."""
    frames = self.backbone(video)
    out = {"frames": frames, "logit": self.df_head(frames)[:, 0]}
    if self.ssl:
      out["aux_prediction"] = self.ssl_head(frames)
      out["teacher_target"] = self.target_encoder(video)
    return out

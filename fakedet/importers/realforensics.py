"""RealForensics' released PyTorch checkpoints → fakedet ``av_byol`` / ``video_detector`` variables.

The authors (Haliassos et al., CVPR 2022; github.com/ahaliassos/RealForensics) released a stage-1
model trained on LRW and stage-2 detectors (four leave-one-out FF++ models, an FF++ model, one
trained without masking). Converting them lets fakedet evaluate the paper's own numbers, start
stage 2 from their stage 1, and compare its own runs against theirs.

Names in the files (from the authors' modules: stage1/models/byol_av.py, stage2/models/
model_combined.py; CSN from pytorchvideo ``create_csn``, audio ResNet18 from torchvision) and
where they go (``{...}`` = the same sub-mapping as the line above):

  stage 1 (Lightning ``SSLLearner.state_dict()``: the ``model.`` below is its attribute)
    model.model1.backbone.*                         params|batch_stats / video_backbone   (CSN)
    model.model1.projector.*                        … / video_projector                   (proj.)
    model.model1.predictor.*                        … / video_predictor                   (pred.)
    model.model1.target_backbone.*  or  …target_encoder.0.*   ema_params|ema_batch_stats /
                                                    video_backbone
    model.model1.target_projector.* or  …target_encoder.1.*   ema_* / video_projector
    model.model2.{the same}                         audio_{backbone, projector, predictor} (ResNet)
    prober_video.*, prober_audio.*                  dropped (stop-gradient LRW word classifiers)
  stage 2 (``ModelCombined.state_dict()``; stage2/eval.py reads only the first two)
    backbone.*                                      params|batch_stats / backbone         (CSN)
    df_head.weight [1, C]                           params / classifier / weight [C]     (cosine)
    df_head.linear.{weight, bias}                   params / classifier / {kernel, bias} (linear)
    target_encoder.0.*, target_encoder.1.*          … / teacher_backbone, teacher_projector
    ssl_head.0.*, ssl_head.1.*                      … / aux_projector, aux_predictor

  CSN (fakedet ``csn``)                      blocks.0.conv → stem_conv, blocks.0.norm → stem_bn;
    blocks.{s}.res_blocks.{b−1}.branch2.conv_{a,b,c} / norm_{a,b,c} → res{s}_block{b}/conv_{a,b,c}
    / bn_{a,b,c}; branch1_conv / branch1_norm → shortcut_conv / shortcut_bn
  audio ResNet18 (``resnet18_audio``)        model.conv1 / model.bn1 → stem_conv / stem_bn;
    model.layer{s}.{b−1}.{conv1, bn1, conv2, bn2} → res{s}_block{b}/{same};
    …downsample.0 / downsample.1 → proj_conv / proj_bn
  projector (``conv_projector``)             net → dense, norm_layer → bn
  predictor (``transformer_predictor``)      projection_layer → embed;
    transformer.layers.0.0.norm → attn_norm, ….0.fn.to_qkv → attn/qkv, ….0.fn.to_out.0 → attn/out,
    transformer.layers.0.1.norm.1 → mlp_norm, ….1.fn.net.0 / net.3 → mlp/fc1 / mlp/fc2,
    mlp_head.1 → head_norm, mlp_head.3 → head
  leaves: Linear weight [out, in] → kernel [in, out]; ConvNd weight [out, in, *k] → kernel
    [*k, in, out]; BN/LN weight → scale, bias → bias; running_mean / running_var → batch_stats
    mean / var; num_batches_tracked dropped.

Wrappers stripped before matching (each one listed in ``Imported.notes``):
  * ``state_dict`` — a Lightning checkpoint, either as a nested mapping ``{"state_dict": {...}}``
    or flattened to ``state_dict.<name>``; its other entries (optimizer_states, epoch, …) are
    dropped.
  * ``module.`` — DataParallel / DDP, when every name has it.
  * ``model.`` — the LightningModule attribute: expected on stage-1 files (``model.model1.*``;
    bare ``model1.*`` is accepted too), stripped from stage-2 files whose names start with
    ``model.backbone.`` (a Lightning ``CombinedLearner`` checkpoint rather than a released file).

The fakedet side is built from the caller's ``config.model`` (shapes come from ``jax.eval_shape``
of its init), so a file that does not fit the configured widths/depths fails with one
``WeightsError`` naming every missing, unexpected and mis-shaped tensor. What the file decides:
the stem's input channels (1 = greyscale, 3 = RGB; the authors' configs build either) and, for
stage 2, whether the optional teacher / auxiliary head are there; ``Imported`` reports both, with
the config changes the variables need and the authors' pixel normalisation for that stem.
Limits: only the released architecture (``csn``, ``resnet18_audio``, ``conv_projector`` with
bias, a 1-block ``transformer_predictor`` with io projections, no qkv bias, no position
embedding; the authors' attention drops ``to_out`` when heads = 1 and head_dim = width, a
configuration no released model uses).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fakedet.importers import Tensors, WeightsError, conv, linear
from fakedet.models import av_byol
from fakedet.models import video_detector

# The authors' input normalisation by stem channels (their data/channel/{rgb,grayscale}.yaml).
PIXEL_NORMALISATION = {
    3: ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    1: ((0.421,), (0.165,)),
}
_DATA_KEYS = ("pixel_mean", "pixel_std")  # config.model entries that are not model fields
_IGNORED_LEAVES = ("num_batches_tracked",)
_PROBERS = ("prober_video.", "prober_audio.")


@dataclasses.dataclass(frozen=True)
class Imported:
  """A converted checkpoint.

  Attributes:
    variables: flax variables as numpy float32 trees: ``params``, ``batch_stats`` and, for a
      stage-1 file with its teachers, ``ema_params`` / ``ema_batch_stats``.
    input_channels: the video stem's input channels in the file (1 greyscale, 3 RGB).
    pixel_mean, pixel_std: the authors' normalisation for that stem (per channel, on [0, 1]).
    absent: optional parts the file does not have ("teacher", "aux_head").
    model_updates: ``config.model`` changes the variables need (e.g. ``teacher=False`` when the
      file has no teacher); empty when the config already fits.
    notes: one line per decision taken (wrappers stripped, names dropped, naming variant).
  """
  variables: Dict[str, Any]
  input_channels: int
  pixel_mean: Tuple[float, ...]
  pixel_std: Tuple[float, ...]
  absent: Tuple[str, ...] = ()
  model_updates: Dict[str, Any] = dataclasses.field(default_factory=dict)
  notes: Tuple[str, ...] = ()


# ----------------------------------------------------------------------------- wrappers
def unwrap(tensors: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
  """Strips the Lightning ``state_dict`` wrapper and a ``module.`` prefix (module docstring);
  returns the flat mapping and a note per wrapper removed."""
  notes = []
  wrapper = "state_dict."
  if isinstance(tensors.get("state_dict"), Mapping):
    dropped = sorted(str(k) for k in tensors if k != "state_dict")
    tensors = tensors["state_dict"]
    notes.append(f"Lightning checkpoint: read its state_dict, dropped {dropped}")
  tensors = {str(k): v for k, v in tensors.items()}
  if any(k.startswith(wrapper) for k in tensors):
    dropped = sorted({k.split(".")[0] for k in tensors if not k.startswith(wrapper)})
    tensors = {k[len(wrapper):]: v for k, v in tensors.items() if k.startswith(wrapper)}
    notes.append(f"Lightning checkpoint: stripped {wrapper!r}, dropped {dropped}")
  if tensors and all(k.startswith("module.") for k in tensors):
    tensors = {k[len("module."):]: v for k, v in tensors.items()}
    notes.append("stripped the DataParallel/DDP prefix 'module.'")
  return tensors, notes


# ----------------------------------------------------------------------------- name maps
# flax module path (tuple) → the authors' module name, per fakedet model.
_CSN_BLOCK = {"conv_a": "branch2.conv_a", "bn_a": "branch2.norm_a", "conv_b": "branch2.conv_b",
              "bn_b": "branch2.norm_b", "conv_c": "branch2.conv_c", "bn_c": "branch2.norm_c",
              "shortcut_conv": "branch1_conv", "shortcut_bn": "branch1_norm"}
_AUDIO_BLOCK = {"conv1": "conv1", "bn1": "bn1", "conv2": "conv2", "bn2": "bn2",
                "proj_conv": "downsample.0", "proj_bn": "downsample.1"}
_PROJECTOR = {("dense",): "net", ("bn",): "norm_layer"}
_ATTN, _MLP = "transformer.layers.0.0", "transformer.layers.0.1"
_PREDICTOR = {("embed",): "projection_layer", ("attn_norm",): f"{_ATTN}.norm",
              ("attn", "qkv"): f"{_ATTN}.fn.to_qkv", ("attn", "out"): f"{_ATTN}.fn.to_out.0",
              ("mlp_norm",): f"{_MLP}.norm.1", ("mlp", "fc1"): f"{_MLP}.fn.net.0",
              ("mlp", "fc2"): f"{_MLP}.fn.net.3", ("head_norm",): "mlp_head.1",
              ("head",): "mlp_head.3"}
_BLOCK = re.compile(r"res(\d+)_block(\d+)")


def _block(name: str) -> Tuple[int, int]:
  m = _BLOCK.fullmatch(name)
  if not m:
    raise KeyError(name)
  return int(m[1]), int(m[2]) - 1


def _csn_name(path: Tuple[str, ...]) -> str:
  if path in (("stem_conv",), ("stem_bn",)):
    return "blocks.0." + ("conv" if path[0] == "stem_conv" else "norm")
  stage, block = _block(path[0])
  return f"blocks.{stage}.res_blocks.{block}.{_CSN_BLOCK[path[1]]}"


def _audio_name(path: Tuple[str, ...]) -> str:
  if path in (("stem_conv",), ("stem_bn",)):
    return "model." + ("conv1" if path[0] == "stem_conv" else "bn1")
  stage, block = _block(path[0])
  return f"model.layer{stage}.{block}.{_AUDIO_BLOCK[path[1]]}"


_NAMERS: Dict[str, Callable[[Tuple[str, ...]], str]] = {
    "csn": _csn_name,
    "resnet18_audio": _audio_name,
    "conv_projector": lambda path: _PROJECTOR[path],
    "transformer_predictor": lambda path: _PREDICTOR[path],
}
# Settings under which fakedet's head has the authors' parameters (module docstring: Limits).
_REQUIRED = {"conv_projector": {"use_bias": True},
             "transformer_predictor": {"io_projections": True, "qkv_bias": False,
                                       "use_pos_emb": False}}


def _check_spec(spec: Mapping[str, Any], what: str) -> str:
  """The registered name of a supported sub-model spec; raises on anything else."""
  name = spec["name"]
  if name not in _NAMERS:
    raise WeightsError(f"{what}={name!r} has no counterpart in the authors' released models; "
                       f"supported: {sorted(_NAMERS)}")
  for key, value in _REQUIRED.get(name, {}).items():
    if key in spec and spec[key] != value:
      raise WeightsError(f"{what} {name} with {key}={spec[key]!r}: the authors' model has "
                         f"{key}={value!r}")
  return name


# ----------------------------------------------------------------------------- leaf reading
def _read_leaf(t: Tensors, module: str, collection: str, leaf: str,
               shape: Tuple[int, ...]) -> np.ndarray:
  """One flax leaf of ``shape`` from the torch tensor it comes from (layout converted)."""
  if collection == "batch_stats":
    return t.get(f"{module}.running_{leaf}", shape)
  if leaf == "kernel" and len(shape) == 2:
    return linear(t.get(f"{module}.weight", shape[::-1]))
  if leaf == "kernel":
    return conv(t.get(f"{module}.weight", (shape[-1], shape[-2], *shape[:-2])))
  return t.get(f"{module}.{'weight' if leaf == 'scale' else leaf}", shape)


def _read_module(t: Tensors, prefix: str, kind: str, abstract: Mapping[str, Any]
                 ) -> Dict[str, Any]:
  """A fakedet sub-model's {collection: tree} from the names under ``prefix``.

  Args:
    t: the file.
    prefix: the authors' module prefix, e.g. "model.model1.backbone.".
    kind: the registered fakedet model name ("csn", …), which selects the name map.
    abstract: {collection: tree of ShapeDtypeStruct} of that sub-model.
  """
  namer = _NAMERS[kind]
  leaves = []
  for collection, tree in abstract.items():
    for path, leaf in traverse_util.flatten_dict(tree).items():
      try:
        module = prefix + namer(path[:-1])
      except KeyError as e:
        raise WeightsError(f"fakedet {kind} has {'/'.join(path)}, which the authors' model "
                           f"does not (config option?)") from e
      leaves.append((module, collection, path, tuple(leaf.shape)))
  # Read in the network's order (stem first), so an error lists names as the file does.
  leaves.sort(key=lambda x: (_natural(x[0]), x[1] == "batch_stats"))
  flat = {c: {} for c in abstract}
  for module, collection, path, shape in leaves:
    flat[collection][path] = _read_leaf(t, module, collection, path[-1], shape)
  return {c: traverse_util.unflatten_dict(f) for c, f in flat.items()}


def _natural(name: str) -> Tuple[Any, ...]:
  """Sort key with numbers compared as numbers: blocks.2 < blocks.10."""
  return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _sub(abstract: Mapping[str, Any], name: str) -> Dict[str, Any]:
  """{collection: abstract[collection][name]} for the collections that have ``name``."""
  return {c: tree[name] for c, tree in abstract.items() if name in tree}


def _stem_channels(t: Tensors, name: str) -> int:
  """Input channels of the CSN stem weight [C_out, C_in, 3, 7, 7]; 3 if it is missing (the
  missing name is then reported with the rest)."""
  if name not in t:
    return 3
  shape = tuple(np.shape(t.tensors[name]))
  if len(shape) != 5 or shape[1] not in PIXEL_NORMALISATION:
    raise WeightsError(f"{t.source}: {name} has shape {shape}; a RealForensics stem is "
                       f"[C_out, 1 or 3, 3, 7, 7] (greyscale or RGB)")
  return shape[1]


def _spec(spec) -> Dict[str, Any]:
  return dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)


def _abstract(model, channels: int, *extra) -> Dict[str, Any]:
  """Variables of ``model`` as ShapeDtypeStructs for a [1, 1, 32, 32, channels] clip; param
  shapes do not depend on the clip size."""
  video = jax.ShapeDtypeStruct((1, 1, 32, 32, channels), jnp.float32)
  init = lambda *xs: model.init(jax.random.key(0), *xs, train=False)
  return dict(jax.eval_shape(init, video, *extra))


def _dropped_note(t: Tensors, prefixes: Sequence[str]) -> List[str]:
  names = sorted(k for k in t.tensors if k.startswith(tuple(prefixes)))
  t.ignore(*prefixes)
  return [f"dropped {len(names)} names under {list(prefixes)}"] if names else []


# ----------------------------------------------------------------------------- stage 1
def convert_stage1(tensors: Mapping[str, Any], model_cfg: Mapping[str, Any],
                   source: str = "weights file") -> Imported:
  """The authors' stage-1 file → fakedet ``av_byol`` variables.

  Args:
    tensors: {name: array} of the file (``torch.load`` output as numpy; wrappers allowed).
    model_cfg: ``config.model`` of a ``byol_av`` run (video_backbone, audio_backbone,
      projector, predictor specs; other keys are ignored).
    source: how errors name the file.

  Returns:
    ``Imported`` with ``params``/``batch_stats`` of the students and, when the file has the EMA
    teachers, ``ema_params``/``ema_batch_stats``. The teachers have no predictor; fakedet's EMA
    tree mirrors the params and ``AVByol.targets`` never reads it, so the students' predictors
    are copied there.

  Raises:
    WeightsError: naming every missing, unexpected and mis-shaped tensor.
  """
  flat, notes = unwrap(tensors)
  t = Tensors(flat, source)
  root = "model." if t.has_prefix("model.model1.") else ""
  notes.append(f"stage-1 names under {root or '(no prefix)'}model1./model2.")
  specs = {k: _spec(model_cfg[k]) for k in ("video_backbone", "audio_backbone", "projector",
                                            "predictor")}
  kinds = {k: _check_spec(s, f"model.{k}") for k, s in specs.items()}
  channels = _stem_channels(t, f"{root}model1.backbone.blocks.0.conv.weight")
  model = av_byol.AVByol(**specs)
  abstract = _abstract(model, channels, jax.ShapeDtypeStruct((1, 4, 16), jnp.float32))

  branches = (("video", f"{root}model1.", kinds["video_backbone"]),
              ("audio", f"{root}model2.", kinds["audio_backbone"]))
  student = {"params": {}, "batch_stats": {}}
  teacher = {"params": {}, "batch_stats": {}}
  has_teacher = any(t.has_prefix(f"{p}target_") for _, p, _ in branches)
  for modality, prefix, backbone_kind in branches:
    parts = ((f"{modality}_backbone", "backbone.", backbone_kind),
             (f"{modality}_projector", "projector.", kinds["projector"]),
             (f"{modality}_predictor", "predictor.", kinds["predictor"]))
    for name, torch_name, kind in parts:
      _merge(student, name, _read_module(t, prefix + torch_name, kind, _sub(abstract, name)))
    if not has_teacher:
      continue
    sequential = t.has_prefix(f"{prefix}target_encoder.")
    teacher_names = (("target_encoder.0.", "target_encoder.1.") if sequential
                     else ("target_backbone.", "target_projector."))
    notes.append(f"{modality} teacher read from {prefix}{{{', '.join(teacher_names)}}}")
    for (name, _, kind), torch_name in zip(parts[:2], teacher_names):
      _merge(teacher, name, _read_module(t, prefix + torch_name, kind, _sub(abstract, name)))
    predictor = f"{modality}_predictor"
    for collection in teacher:
      if predictor in student[collection]:
        teacher[collection][predictor] = jax.tree.map(np.copy, student[collection][predictor])
  notes += _dropped_note(t, _PROBERS)
  t.ignore(*_IGNORED_LEAVES)
  t.finish("RealForensics stage 1 (SSLLearner: model.model1 video, model.model2 audio)"
           + _hint_stage2(t))
  variables = dict(student)
  if has_teacher:
    variables.update(ema_params=teacher["params"], ema_batch_stats=teacher["batch_stats"])
  mean, std = PIXEL_NORMALISATION[channels]
  notes.append(f"video stem: {channels} input channel(s)")
  return Imported(variables, channels, mean, std, absent=() if has_teacher else ("teacher",),
                  notes=tuple(notes))


def _merge(into: Dict[str, Dict[str, Any]], name: str, part: Mapping[str, Any]) -> None:
  for collection, tree in part.items():
    if tree:
      into.setdefault(collection, {})[name] = tree


def _hint_stage2(t: Tensors) -> str:
  if t.has_prefix("backbone.") or t.has_prefix("model.backbone."):
    return " — this looks like a stage-2 file (backbone.*): use convert_stage2"
  return ""


# ----------------------------------------------------------------------------- stage 2
def convert_stage2(tensors: Mapping[str, Any], model_cfg: Mapping[str, Any],
                   source: str = "weights file") -> Imported:
  """The authors' stage-2 file → fakedet ``video_detector`` variables.

  A released evaluation file may hold only ``backbone.*`` and ``df_head.*``: the teacher
  (``target_encoder.*``) and auxiliary head (``ssl_head.*``) are optional, and when the config
  asks for parts the file lacks, they are left out, listed in ``absent`` and switched off in
  ``model_updates`` (so the caller builds the detector that the variables fit).

  Args:
    tensors: {name: array} of the file (wrappers allowed, see the module docstring).
    model_cfg: ``config.model`` of a ``video_detector`` run (``pixel_mean``/``pixel_std`` are
      ignored; any other key must be a VideoDetector field).
    source: how errors name the file.

  Raises:
    WeightsError: naming every missing, unexpected and mis-shaped tensor.
  """
  flat, notes = unwrap(tensors)
  t = Tensors(flat, source)
  root = ""
  if t.has_prefix("model.backbone."):
    root = "model."
    notes.append("stripped the CombinedLearner attribute prefix 'model.'")
  cfg = {k: v for k, v in _spec(model_cfg).items() if k not in _DATA_KEYS}
  _check_spec(_spec(cfg["backbone"]), "model.backbone")
  if cfg.get("audio_backbone") is not None:
    raise WeightsError("model.audio_backbone: the authors' stage-2 detector is video-only")
  updates, absent = {}, []
  has_aux = t.has_prefix(f"{root}ssl_head.")
  has_teacher = t.has_prefix(f"{root}target_encoder.")
  if cfg.get("aux_projector") is not None and not has_aux:
    absent.append("aux_head")
    updates.update(aux_projector=None, aux_predictor=None)
  if cfg.get("teacher") and not (has_teacher and has_aux):
    absent.append("teacher")
    updates["teacher"] = False
  cfg.update(updates)
  for key in ("aux_projector", "aux_predictor"):
    if cfg.get(key) is not None:
      cfg[key] = _spec(cfg[key])
      _check_spec(cfg[key], f"model.{key}")
  kind = cfg["backbone"]["name"]
  channels = _stem_channels(t, f"{root}backbone.blocks.0.conv.weight")
  model = video_detector.VideoDetector(**cfg)
  abstract = _abstract(model, channels)

  variables = {"params": {}, "batch_stats": {}}
  parts = [("backbone", "backbone.", kind)]
  if cfg.get("aux_projector") is not None:
    parts += [("aux_projector", "ssl_head.0.", cfg["aux_projector"]["name"]),
              ("aux_predictor", "ssl_head.1.", cfg["aux_predictor"]["name"])]
  if cfg.get("teacher"):
    parts += [("teacher_backbone", "target_encoder.0.", kind),
              ("teacher_projector", "target_encoder.1.", cfg["aux_projector"]["name"])]
  for name, torch_name, part_kind in parts:
    _merge(variables, name, _read_module(t, root + torch_name, part_kind, _sub(abstract, name)))
  variables["params"]["classifier"] = _read_classifier(t, root, cfg.get("classifier", "cosine"),
                                                       abstract["params"]["classifier"])
  t.ignore(*_IGNORED_LEAVES)
  hint = ""
  if t.has_prefix("model.model1.") or t.has_prefix("model1."):
    hint = " — this looks like a stage-1 file (model.model1.*): use convert_stage1"
  elif (has_aux and cfg.get("aux_projector") is None) or (has_teacher and not cfg.get("teacher")):
    hint = (" — the file has the auxiliary head / teacher: set model.aux_projector, "
            "aux_predictor and teacher to import them")
  t.finish("RealForensics stage 2 (ModelCombined: backbone, df_head, ssl_head, target_encoder)"
           + hint)
  mean, std = PIXEL_NORMALISATION[channels]
  notes.append(f"video stem: {channels} input channel(s)")
  return Imported(variables, channels, mean, std, absent=tuple(absent), model_updates=updates,
                  notes=tuple(notes))


def _read_classifier(t: Tensors, root: str, classifier: str, abstract: Mapping[str, Any]
                     ) -> Dict[str, np.ndarray]:
  """``df_head``: the authors' MeanLinear, cosine (``weight`` [1, C]) or plain linear."""
  if classifier == "cosine":
    (c,) = abstract["weight"].shape
    return {"weight": t.get(f"{root}df_head.weight", (1, c)).reshape(c)}
  if classifier == "linear":
    c = abstract["kernel"].shape[0]
    return {"kernel": linear(t.get(f"{root}df_head.linear.weight", (1, c))),
            "bias": t.get(f"{root}df_head.linear.bias", (1,))}
  raise WeightsError(f"model.classifier={classifier!r}: the authors' df_head is 'cosine' "
                     f"(norm_linear) or 'linear'")

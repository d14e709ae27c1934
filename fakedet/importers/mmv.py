"""DeepMind's released MMV checkpoints and FakeOut's fine-tuned checkpoint → fakedet variables.

FakeOut (Knafo & Fried) fine-tunes DeepMind's released MMV networks (Alayrac et al., NeurIPS
2020; deepmind-research ``mmv/``: ``mmv_tsm_resnet_x1.pkl``, ``mmv_tsm_resnet_x2.pkl``,
``mmv_s3d.pkl``). Converting them lets fakedet start FakeOut fine-tuning from the very weights
the authors used (``convert`` → ``mmv`` variables; their backbones feed ``video_detector`` via
the ``MMV_*_INIT_RULES`` warm start) and evaluate the authors' own fine-tuned detector
(``convert_fakeout`` → ``video_detector`` with ``classifier="fakeout"``).

What the files are. Both are pickles of a dict ``{"params": ..., "state": ...}`` made by
``hk.transform_with_state`` (the released ``eval_ucf101.py`` reads ``['params']`` and
``['state']`` after ``dill.load``; FakeOut's ``inference.py`` does the same with
``pickle.load``). Each is a Haiku tree ``{module path: {leaf: array}}``; the released model is
one Haiku module named ``text_audio_video`` (the ``name`` entry of ``mmv/config.py``
``get_model_config``), so every path starts with ``text_audio_video/``; FakeOut's file adds its
head's three layers at the top level (``first_mlp_layer``, ``second_mlp_layer``,
``third_mlp_layer``: ``w`` [in, out], ``b`` [out]). The BatchNorm statistics are in the state:
``<bn>/~/mean_ema`` and ``<bn>/~/var_ema`` with ``average`` (what evaluation uses), ``hidden``
and ``counter`` (dropped). ``read_pickle`` loads such a file; nested trees and '/'-flattened
names (``"text_audio_video/…/conv_0/w"``) are both accepted.

Names (``{V}`` = ``text_audio_video/visual_module/~/TSMResNetV2``, ``{A}`` =
``text_audio_video/audio_module/~/res_net_v2``, ``{BN}k`` = ``__cross_replica_batch_norm``
with suffix ``""``, ``_1``, ``_2`` — Haiku's names for the released unnamed BatchNorms in the
order they run) and where they go::

  {V}/tsm_resnet_stem                              video_backbone/body/stem_conv
  {V}/tsm_resnet_unit_{u}/block_{b}/conv_{k}       …/body/stage{u+1}_block{b+1}/conv{k+1}
  {V}/tsm_resnet_unit_{u}/block_{b}/shortcut_conv  …/body/stage{u+1}_block{b+1}/proj_conv
  {V}/tsm_resnet_unit_{u}/block_{b}/{BN}0, 1, 2    …/preact_bn, bn1, bn2
  {V}/{BN}0                                        …/body/final_bn
  {A}/~/initial_conv                               audio_backbone/body/stem_conv
  {A}/~/block_group_{u}/block_{b}/~/conv_{k}       …/body/stage{u+1}_block{b+1}/conv{k+1}
      (…/~/shortcut_conv → proj_conv; …/block_{b}/{BN}0, 1, 2 → preact_bn, bn1, bn2;
      {A}/{BN}0 → final_bn)
  text_module/~/embed  embeddings [V, D]           text_backbone/word_embeddings
  text_module/~/text_conv1  w [1, D, F], b         text_backbone/word_proj  kernel [D, F], bias
  vid2audio_embd/final_projection_inner, {BN}0     video_to_va/hidden0, hidden0_bn
  vid2audio_embd/final_projection (no b), {BN}1    video_to_va/proj, proj_bn
  audio_embd/final_projection                      audio_to_va/proj
  vis_embd/final_projection, {BN}0                 va_to_vat/proj, proj_bn
  txt_embd/final_projection                        text_to_vat/proj
  txt2audio_embd, audio2txt_embd                   dropped (text → S_va, and audio → S_vat by
                                                   its own head in training: no FAC loss uses
                                                   them; fakedet does not build them)
  (FakeOut) first/second/third_mlp_layer           classifier/hidden0, hidden1, out
  leaves: Conv2D / Linear ``w`` → ``kernel`` (same layout), ``b`` → ``bias``; BN ``scale`` →
  ``scale``, ``offset`` → ``bias`` ([1, …, 1, C] → [C]); ``mean_ema``/``var_ema``
  ``average`` → batch_stats ``mean`` / ``var``.

BatchNorm modules named ``batch_norm``/``_batch_norm``/``__batch_norm`` (a model built with
``use_xreplica_bn=False``) are read like the cross-replica ones (noted in ``Imported.notes``).
The fakedet side is built from the caller's ``config.model`` (shapes from ``jax.eval_shape`` of
its init), so a file that does not fit fails with one ``WeightsError`` naming every missing,
unexpected and mis-shaped tensor, with a hint where the cause is known (×1 vs ×2 width, a
video-only FakeOut file). What the file decides: the text table's size (released: 65,536 × 300;
``model_updates`` sets ``text_backbone.vocab_size``) and, for FakeOut, whether the head reads the
audio features (a video-only file switches ``audio_backbone`` off).

Limits: S3D-G (``mmv_s3d.pkl``) has no fakedet counterpart and is rejected by name. The released
word ids index a vocabulary that is not part of the checkpoint; fakedet's tokenizer
(``input_pipeline/narrations.py``) does not produce those ids, so a converted text branch only
gives the released sentence features for token ids made with the released vocabulary.
"""
from __future__ import annotations

import dataclasses
import pickle
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fakedet.importers import Tensors, WeightsError, flatten
from fakedet.models import mmv as mmv_model
from fakedet.models import video_detector

ROOT = "text_audio_video"  # mmv/config.py get_model_config()["name"]; found, not assumed
_BN = "__cross_replica_batch_norm"
_BN_NAME = re.compile(r"_*(?:cross_replica_)?batch_norm(?:_(\d+))?")
_VIDEO = "visual_module/~/TSMResNetV2/"
_AUDIO = "audio_module/~/res_net_v2/"
_TEXT = "text_module/~/"
_FAKEOUT_LAYERS = ("first_mlp_layer", "second_mlp_layer", "third_mlp_layer")
_UNUSED_HEADS = ("txt2audio_embd/", "audio2txt_embd/")
_EMA_LEAVES = ("/hidden", "/counter")
_DATA_KEYS = ("pixel_mean", "pixel_std")  # config.model entries that are not model fields
_BLOCK = re.compile(r"stage(\d+)_block(\d+)")


@dataclasses.dataclass(frozen=True)
class Imported:
  """A converted checkpoint.

  Attributes:
    variables: flax variables as numpy float32 trees: ``params`` and ``batch_stats``.
    width_multiplier: the video backbone's width in the file (1 or 2).
    absent: parts the config asks for that the file lacks (``"audio_backbone"`` for a
      video-only FakeOut file).
    model_updates: ``config.model`` changes (dotted keys) the variables need; empty when the
      config already fits.
    notes: one line per decision taken (root prefix, names dropped, naming variants).
  """
  variables: Dict[str, Any]
  width_multiplier: float
  absent: Tuple[str, ...] = ()
  model_updates: Dict[str, Any] = dataclasses.field(default_factory=dict)
  notes: Tuple[str, ...] = ()


# ----------------------------------------------------------------------------- reading
class _Unpickler(pickle.Unpickler):
  """Plain ``pickle`` with a whitelist: numpy (and jax) arrays, plain containers, and Haiku's
  ``FlatMapping`` (read as a dict, so Haiku is not needed); anything else — code a pickle could
  run — is refused with its name."""
  _BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool",
               "str", "bytes", "bytearray", "slice", "range"}
  _PREFIXES = ("numpy.", "jax.", "jaxlib.")

  def find_class(self, module: str, name: str) -> Any:
    if module.startswith("haiku") and name in ("FlatMapping", "FlatMap"):
      return lambda *args: dict(*args)  # Pickled as (FlatMapping, (mapping,)).
    if module == "builtins" and name in self._BUILTINS:
      return super().find_class(module, name)
    if (module in ("numpy", "collections", "copyreg")
        or module.startswith(self._PREFIXES)):
      return super().find_class(module, name)
    raise WeightsError(f"the pickle needs {module}.{name}, which a weights file should not "
                       "(only numpy/jax arrays in dicts are read); re-save it as "
                       "{'params': {...}, 'state': {...}} of numpy arrays")


def read_pickle(path: str) -> Dict[str, Any]:
  """A released MMV / FakeOut checkpoint (``.pkl``) as ``{"params": ..., "state": ...}``.

  Needs only numpy for files of numpy arrays in dicts (what the releases hold: old jax device
  arrays pickle as numpy arrays); newer jax arrays need jax; Haiku ``FlatMapping`` containers
  are read as dicts without Haiku. ``dill``-written files of plain data are ordinary pickles.
  Only trusted files should be opened: a pickle names the code that rebuilds it, and anything
  beyond arrays and containers is refused.
  """
  with open(path, "rb") as f:
    try:
      data = _Unpickler(f).load()
    except WeightsError as e:
      raise WeightsError(f"{path}: {e}") from e
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
      raise WeightsError(f"{path} is not a readable pickle: {e}") from e
  if not isinstance(data, Mapping):
    raise WeightsError(f"{path} holds a {type(data).__name__}; expected a dict with 'params' "
                       "and 'state'")
  return dict(data)


def tensors_of(tree: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
  """``{"params": P, "state": S}`` (each a Haiku tree, nested or '/'-flattened) → one flat
  mapping ``{"params/<module>/<leaf>" | "state/<module>/<leaf>": array}`` with the BatchNorm
  module names made canonical; returns it and a note per decision."""
  if "params" not in tree:
    raise WeightsError(f"expected a Haiku checkpoint {{'params': ..., 'state': ...}}; the "
                       f"file's top level has {sorted(map(str, tree))[:8]}")
  notes = []
  dropped = sorted(str(k) for k in tree if k not in ("params", "state"))
  if dropped:
    notes.append(f"dropped top-level entries {dropped}")
  flat: Dict[str, Any] = {}
  renamed = set()
  for collection in ("params", "state"):
    for name, value in flatten(tree.get(collection) or {}).items():
      canonical, bn_module = _canonical(name)
      if bn_module:
        renamed.add(bn_module)
      flat[f"{collection}/{canonical}"] = value
  if renamed:
    notes.append(f"{len(renamed)} BatchNorm module(s) not named {_BN!r} (e.g. "
                 f"{sorted(renamed)[0]}) read as such")
  return flat, notes


def _canonical(name: str) -> Tuple[str, Optional[str]]:
  """``…/batch_norm_3/…`` (any underscores, cross-replica or not) → ``…/{_BN}_3/…``; also
  returns the BatchNorm module's original path when it was renamed."""
  parts = name.split("/")
  renamed = None
  for i, part in enumerate(parts):
    m = _BN_NAME.fullmatch(part)
    if m:
      parts[i] = _BN + (f"_{m[1]}" if m[1] else "")
      if parts[i] != part:
        renamed = "/".join(name.split("/")[:i + 1])
  return "/".join(parts), renamed


def _root(t: Tensors) -> str:
  """The MMV module prefix ("text_audio_video/"), found from the visual module's path."""
  roots = set()
  for name in t.tensors:
    module = name.split("/", 1)[1]
    if "visual_module/" in module:
      roots.add(module[:module.index("visual_module/")])
  if not roots:
    raise WeightsError(f"{t.source}: no 'visual_module' in the parameter names; not an MMV "
                       f"checkpoint (expected {ROOT}/visual_module/~/TSMResNetV2/…)")
  if len(roots) > 1:
    raise WeightsError(f"{t.source}: several MMV modules {sorted(roots)}")
  root = roots.pop()
  if root and not root.endswith("/"):
    raise WeightsError(f"{t.source}: unexpected prefix {root!r} before visual_module")
  backbones = {n.split("/", 1)[1][len(root + "visual_module/~/"):].split("/")[0]
               for n in t.tensors if n.split("/", 1)[1].startswith(root + "visual_module/~/")}
  if any("s3d" in b.lower() for b in backbones):
    raise WeightsError(f"{t.source} is the S3D-G checkpoint (mmv_s3d.pkl; visual module "
                       f"{sorted(backbones)}): fakedet has no S3D-G backbone — use "
                       "mmv_tsm_resnet_x1.pkl or mmv_tsm_resnet_x2.pkl")
  return root


# ----------------------------------------------------------------------------- name maps
# flax module path (tuple, below the part) → (the released module, kind of layer).
def _bn_name(k: int) -> str:
  return _BN + (f"_{k}" if k else "")


_BLOCK_BNS = {"preact_bn": 0, "bn1": 1, "bn2": 2}


def _resnet_namer(prefix: str, stem: str, unit: str, conv_sep: str
                  ) -> Callable[[Tuple[str, ...]], Tuple[str, str]]:
  """Names for fakedet's ``ResNetV2Body`` (under ``body``) in a released ResNet: ``unit`` is
  the stage's module ("tsm_resnet_unit_{u}/" …), ``conv_sep`` "" (convs built while the block
  runs) or "~/" (built in the block's constructor)."""
  def name(path: Tuple[str, ...]) -> Tuple[str, str]:
    if path[0] != "body":
      raise KeyError(path)
    if path[1:] == ("stem_conv",):
      return prefix + stem, "conv"
    if path[1:] == ("final_bn",):
      return prefix + _bn_name(0), "bn"
    m = _BLOCK.fullmatch(path[1])
    if not m or len(path) != 3:
      raise KeyError(path)
    block = prefix + unit.format(u=int(m[1]) - 1) + f"block_{int(m[2]) - 1}/"
    layer = path[2]
    if layer in _BLOCK_BNS:
      return block + _bn_name(_BLOCK_BNS[layer]), "bn"
    if layer == "proj_conv":
      return block + conv_sep + "shortcut_conv", "conv"
    if layer in ("conv1", "conv2", "conv3"):
      return block + conv_sep + f"conv_{int(layer[-1]) - 1}", "conv"
    raise KeyError(path)
  return name


def _video_namer(root: str):
  return _resnet_namer(root + _VIDEO, "tsm_resnet_stem", "tsm_resnet_unit_{u}/", "")


def _audio_namer(root: str):
  return _resnet_namer(root + _AUDIO, "~/initial_conv", "~/block_group_{u}/", "~/")


def _text_namer(root: str):
  def name(path: Tuple[str, ...]) -> Tuple[str, str]:
    if path == ():
      return root + _TEXT + "embed", "embed"
    if path == ("word_proj",):
      return root + _TEXT + "text_conv1", "conv1d"
    raise KeyError(path)
  return name


def _projection_namer(module: str, hidden_layers: int):
  """``mmv.Projection`` → the released EmbeddingModule ``module``: hidden{i} is the i-th
  ``final_projection_inner`` (Haiku suffixes repeats), hidden{i}_bn the i-th BN, proj the
  ``final_projection`` and proj_bn the BN after the hidden layers' ones."""
  def name(path: Tuple[str, ...]) -> Tuple[str, str]:
    (layer,) = path
    m = re.fullmatch(r"hidden(\d+)(_bn)?", layer)
    if m:
      i = int(m[1])
      if m[2]:
        return module + _bn_name(i), "bn"
      return module + "final_projection_inner" + (f"_{i}" if i else ""), "dense"
    if layer == "proj":
      return module + "final_projection", "dense"
    if layer == "proj_bn":
      return module + _bn_name(hidden_layers), "bn"
    raise KeyError(path)
  return name


def _fakeout_namer(path: Tuple[str, ...]) -> Tuple[str, str]:
  layers = {("hidden0",): 0, ("hidden1",): 1, ("out",): 2}
  if path not in layers:
    raise KeyError(path)
  return _FAKEOUT_LAYERS[layers[path]], "dense"


# ----------------------------------------------------------------------------- leaf reading
def _vector(t: Tensors, name: str, c: int) -> np.ndarray:
  """A per-channel BN array stored as [1, …, 1, C] (Haiku keeps the input's rank) → [C]."""
  shape = (c,)
  if name in t:
    stored = tuple(np.shape(t.tensors[name]))
    if stored and stored[-1] == c and int(np.prod(stored)) == c:
      shape = stored  # Otherwise reported as mis-shaped against [C].
  return t.get(name, shape).reshape(c)


def _read_leaf(t: Tensors, module: str, kind: str, collection: str, leaf: str,
               shape: Tuple[int, ...]) -> np.ndarray:
  if kind == "bn":
    if collection == "batch_stats":
      return _vector(t, f"state/{module}/~/{leaf}_ema/average", shape[0])
    return _vector(t, f"params/{module}/{'offset' if leaf == 'bias' else leaf}", shape[0])
  if kind == "embed":
    return t.get(f"params/{module}/embeddings", shape)
  if leaf == "bias":
    return t.get(f"params/{module}/b", shape)
  if kind == "conv1d":
    return t.get(f"params/{module}/w", (1,) + shape)[0]
  return t.get(f"params/{module}/w", shape)


def _read_part(t: Tensors, namer: Callable, abstract: Mapping[str, Any], what: str
               ) -> Dict[str, Any]:
  """A fakedet sub-model's {collection: tree} read through ``namer``.

  Args:
    t: the file.
    namer: flax module path (below the sub-model) → (released module, layer kind).
    abstract: {collection: tree of ShapeDtypeStruct} of that sub-model.
    what: how an error names the sub-model.
  """
  leaves = []
  for collection, tree in abstract.items():
    for path, leaf in traverse_util.flatten_dict(tree).items():
      try:
        module, kind = namer(path[:-1])
      except KeyError as e:
        raise WeightsError(f"fakedet {what} has {'/'.join(path)}, which the released model "
                           f"does not (config option?)") from e
      leaves.append((module, kind, collection, path, tuple(leaf.shape)))
  leaves.sort(key=lambda x: (_natural(x[0]), x[2]))  # Errors list names in the network's order.
  flat = {c: {} for c in abstract}
  for module, kind, collection, path, shape in leaves:
    flat[collection][path] = _read_leaf(t, module, kind, collection, path[-1], shape)
  return {c: traverse_util.unflatten_dict(f) for c, f in flat.items() if f}


def _natural(name: str) -> Tuple[Any, ...]:
  return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _sub(abstract: Mapping[str, Any], name: str) -> Dict[str, Any]:
  return {c: tree[name] for c, tree in abstract.items() if name in tree}


def _merge(into: Dict[str, Dict[str, Any]], name: str, part: Mapping[str, Any]) -> None:
  for collection, tree in part.items():
    into.setdefault(collection, {})[name] = tree


# ----------------------------------------------------------------------------- config side
def _spec(spec) -> Dict[str, Any]:
  return dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)


def _check_backbones(cfg: Mapping[str, Any], keys: Mapping[str, str]) -> None:
  for key, want in keys.items():
    spec = cfg.get(key)
    if spec is None:
      continue
    name = _spec(spec)["name"]
    if name != want:
      raise WeightsError(f"model.{key}={name!r}: the released MMV {key.split('_')[0]} network "
                         f"is fakedet's {want!r} (S3D-G is not supported)")


def _file_width(t: Tensors, root: str) -> float:
  """The video stem's width / 64: 1 (x1) or 2 (x2) in the releases."""
  stem = t.tensors.get(f"params/{root}{_VIDEO}tsm_resnet_stem/w")
  return float(np.shape(stem)[-1]) / 64 if stem is not None else 0.0


def _width_hint(t: Tensors, root: str, spec: Mapping[str, Any]) -> str:
  width = _file_width(t, root)
  want = float(_spec(spec).get("width_multiplier", 1.0))
  if width and width != want:
    return (f" — the file's video backbone is TSM-ResNet-50×{width:g} (stem "
            f"{int(width * 64)} channels): set width_multiplier={width:g}")
  return ""


def _abstract_mmv(cfg: Mapping[str, Any]) -> Dict[str, Any]:
  model = mmv_model.MMV(**cfg)
  video = jax.ShapeDtypeStruct((1, 2, 32, 32, 3), jnp.float32)  # Param shapes do not depend
  audio = jax.ShapeDtypeStruct((1, 32, 16), jnp.float32)  # on the input sizes.
  text = jax.ShapeDtypeStruct((1, 1, 4), jnp.int32)
  init = lambda v, a, x: model.init(jax.random.key(0), v, a, x, train=False)
  return dict(jax.eval_shape(init, video, audio, text))


def _abstract_detector(cfg: Mapping[str, Any]) -> Dict[str, Any]:
  model = video_detector.VideoDetector(**cfg)
  args = [jax.ShapeDtypeStruct((1, 2, 32, 32, 3), jnp.float32)]
  if cfg.get("audio_backbone") is not None:
    args.append(jax.ShapeDtypeStruct((1, 32, 16), jnp.float32))
  init = lambda *xs: model.init(jax.random.key(0), *xs, train=False)
  return dict(jax.eval_shape(init, *args))


# ----------------------------------------------------------------------------- MMV
def convert(tree: Mapping[str, Any], model_cfg: Mapping[str, Any],
            source: str = "weights file") -> Imported:
  """A released MMV checkpoint (TSM-ResNet-50 ×1 or ×2) → fakedet ``mmv`` variables.

  Args:
    tree: the checkpoint, ``{"params": ..., "state": ...}`` (``read_pickle``), nested or with
      '/'-flattened module names.
    model_cfg: ``config.model`` of an ``mmv`` run (``pixel_mean``/``pixel_std`` are ignored;
      every other key must be an ``MMV`` field).
    source: how errors name the file.

  Returns:
    ``Imported`` with ``params`` and ``batch_stats`` of every backbone and FAC head.

  Raises:
    WeightsError: naming every missing, unexpected and mis-shaped tensor (or the S3D-G file).
  """
  flat, notes = tensors_of(tree)
  t = Tensors(flat, source)
  root = _root(t)
  notes.append(f"MMV module prefix {root or '(none)'}")
  cfg = {k: v for k, v in _spec(model_cfg).items() if k not in _DATA_KEYS}
  _check_backbones(cfg, {"video_backbone": "tsm_resnet", "audio_backbone": "resnet50_audio",
                         "text_backbone": "text_encoder"})
  for key in ("video_backbone", "audio_backbone", "text_backbone"):
    cfg[key] = _spec(cfg[key])
  updates = _text_updates(t, root, cfg["text_backbone"])
  cfg["text_backbone"].update({k.split(".", 1)[1]: v for k, v in updates.items()})
  notes += _behaviour_notes(cfg["video_backbone"], cfg["text_backbone"])
  abstract = _abstract_mmv(cfg)
  hidden = cfg["va_hidden"]
  parts = (("video_backbone", _video_namer(root)), ("audio_backbone", _audio_namer(root)),
           ("text_backbone", _text_namer(root)),
           ("video_to_va", _projection_namer(root + "vid2audio_embd/", 1 if hidden else 0)),
           ("audio_to_va", _projection_namer(root + "audio_embd/", 0)),
           ("va_to_vat", _projection_namer(root + "vis_embd/", 0)),
           ("text_to_vat", _projection_namer(root + "txt_embd/", 0)))
  variables: Dict[str, Dict[str, Any]] = {"params": {}, "batch_stats": {}}
  for name, namer in parts:
    _merge(variables, name, _read_part(t, namer, _sub(abstract, name), name))
  unused = [f"{c}/{root}{p}" for c in ("params", "state") for p in _UNUSED_HEADS]
  if any(t.has_prefix(p) for p in unused):
    notes.append(f"dropped the heads fakedet does not build: {list(_UNUSED_HEADS)}")
  t.ignore(*unused, *_EMA_LEAVES)
  hint = _width_hint(t, root, cfg["video_backbone"])
  if any(k.startswith("params/" + n) for k in t.tensors for n in _FAKEOUT_LAYERS):
    hint += " — this looks like a FakeOut file (first_mlp_layer …): use convert_fakeout"
  t.finish("the released MMV (TSM-ResNet-50, ResNet-50 audio, text, FAC heads)" + hint)
  width = _file_width(t, root)
  notes.append(f"video backbone TSM-ResNet-50×{width:g}; inputs as released: RGB in [0, 1] "
               "(pixel_mean 0, pixel_std 1)")
  return Imported(variables, width, model_updates=updates, notes=tuple(notes))


def _text_updates(t: Tensors, root: str, text_spec: Mapping[str, Any]) -> Dict[str, Any]:
  """``text_backbone.vocab_size`` the file's table needs (it decides the vocabulary size)."""
  table = t.tensors.get(f"params/{root}{_TEXT}embed/embeddings")
  if table is None or np.ndim(table) != 2:
    return {}
  rows = int(np.shape(table)[0])
  if text_spec.get("vocab_path"):
    return {}  # The word2vec file fixes the vocabulary; a mismatch is reported as mis-shaped.
  return {} if text_spec.get("vocab_size", 0) == rows else {"text_backbone.vocab_size": rows}


def _behaviour_notes(video: Mapping[str, Any], text: Mapping[str, Any]) -> List[str]:
  """Settings that do not change the weights' shapes but do change what they compute."""
  notes = []
  if float(video.get("shift_fraction", 0.125)) != 0.125:
    notes.append(f"video_backbone.shift_fraction={video['shift_fraction']}: the released "
                 "model shifts 1/8 of the channels each way")
  if text.get("mask_padding", False):
    notes.append("text_backbone.mask_padding=True: the released model max-pools over padding "
                 "positions too")
  return notes


# ----------------------------------------------------------------------------- FakeOut
def convert_fakeout(tree: Mapping[str, Any], model_cfg: Mapping[str, Any],
                    source: str = "weights file") -> Imported:
  """FakeOut's fine-tuned checkpoint → fakedet ``video_detector`` variables.

  The file (gilikn/FakeOut ``inference.py``: ``pickle.load(f)['params'|'state']``) is the MMV
  model fine-tuned inside the same transform as the authors' head; only the backbones and the
  head are read, the FAC heads and the text branch (present, unused by the detector) are
  dropped. The head's input size says whether the audio features were concatenated: a
  video-only file with a config that has ``audio_backbone`` switches it off
  (``model_updates``, ``absent``).

  Args:
    tree: the checkpoint, ``{"params": ..., "state": ...}`` (``read_pickle``).
    model_cfg: ``config.model`` of a ``video_detector`` run with ``classifier="fakeout"``.
    source: how errors name the file.

  Raises:
    WeightsError: naming every missing, unexpected and mis-shaped tensor.
  """
  flat, notes = tensors_of(tree)
  t = Tensors(flat, source)
  root = _root(t)
  notes.append(f"MMV module prefix {root or '(none)'}; head {list(_FAKEOUT_LAYERS)}")
  cfg = {k: v for k, v in _spec(model_cfg).items() if k not in _DATA_KEYS}
  if cfg.get("classifier") != "fakeout":
    raise WeightsError(f"model.classifier={cfg.get('classifier')!r}: FakeOut's head (linear "
                       "512 → 128 → 2) is video_detector classifier='fakeout'")
  for key in ("aux_projector", "aux_predictor"):
    if cfg.get(key) is not None:
      raise WeightsError(f"model.{key}: FakeOut's detector has no auxiliary head")
  if cfg.get("teacher"):
    raise WeightsError("model.teacher: FakeOut's detector has no teacher")
  _check_backbones(cfg, {"backbone": "tsm_resnet", "audio_backbone": "resnet50_audio"})
  notes += _behaviour_notes(_spec(cfg["backbone"]), {})
  updates, absent = {}, []
  abstract = _abstract_detector(cfg)
  head_in = abstract["params"]["classifier"]["hidden0"]["kernel"].shape[0]
  file_head = t.tensors.get(f"params/{_FAKEOUT_LAYERS[0]}/w")
  hint = ""
  if cfg.get("audio_backbone") is not None and file_head is not None:
    audio_dim = abstract["params"]["audio_backbone"]["body"]["final_bn"]["scale"].shape[0]
    if np.shape(file_head)[0] == head_in - audio_dim:
      notes.append("video-only FakeOut file (the head reads the video features alone): "
                   "audio_backbone switched off")
      updates["audio_backbone"], cfg["audio_backbone"] = None, None
      absent.append("audio_backbone")
      abstract = _abstract_detector(cfg)
  elif file_head is not None and np.shape(file_head)[0] > head_in:
    hint = (f" — the head reads {np.shape(file_head)[0]} features, the video backbone gives "
            f"{head_in}: an audio+video FakeOut file needs model.audio_backbone "
            "(resnet50_audio)")

  parts = [("backbone", _video_namer(root))]
  if cfg.get("audio_backbone") is not None:
    parts.append(("audio_backbone", _audio_namer(root)))
  parts.append(("classifier", _fakeout_namer))
  variables: Dict[str, Dict[str, Any]] = {"params": {}, "batch_stats": {}}
  for name, namer in parts:
    _merge(variables, name, _read_part(t, namer, _sub(abstract, name), name))
  kept = [f"params/{root}{_VIDEO}", f"state/{root}{_VIDEO}"]
  if cfg.get("audio_backbone") is not None:
    kept += [f"params/{root}{_AUDIO}", f"state/{root}{_AUDIO}"]
  head = tuple(f"{c}/{n}/" for c in ("params", "state") for n in _FAKEOUT_LAYERS)
  dropped = sorted({k.split("/", 1)[1][len(root):].split("/")[0] for k in t.tensors
                    if k.split("/", 1)[1].startswith(root)
                    and not k.startswith(tuple(kept) + head)})
  if dropped:
    notes.append(f"dropped the parts the detector does not use: {dropped}")
  t.ignore(*[f"{c}/{root}{d}/" for c in ("params", "state") for d in dropped], *_EMA_LEAVES)
  t.finish("FakeOut's detector (MMV TSM-ResNet-50 video + ResNet-50 audio backbones, "
           "first/second/third_mlp_layer)" + _width_hint(t, root, cfg["backbone"]) + hint)
  width = _file_width(t, root)
  notes.append(f"video backbone TSM-ResNet-50×{width:g}; inputs as FakeOut: RGB in [0, 1]; "
               "logit = logits[1] − logits[0] (class 1 = fake)")
  return Imported(variables, width, absent=tuple(absent), model_updates=updates,
                  notes=tuple(notes))

"""MAE / timm ViT checkpoints → fakedet ViT variables (RFFR's stage-1 inpainter and detector).

RFFR starts from released weights twice: stage 1 fine-tunes MAE-Base (facebookresearch/mae
``mae_pretrain_vit_base.pth``, encoder only, or ``mae_visualize_vit_base.pth`` with the decoder)
on real faces, and stage 2 initialises both detector branches from an ImageNet ViT-B/16 (timm
``vit_base_patch16_224``; the authors use ``jx_vit_base_p16_224-80ecf9dd.pth``). Both files use
the same encoder names:

  cls_token [1,1,D]  pos_embed [1,1+N,D]  patch_embed.proj.{weight,bias}  norm.{weight,bias}
  blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.{weight,bias}

plus, in a full MAE file, ``mask_token``, ``decoder_embed.*``, ``decoder_pos_embed``,
``decoder_blocks.{i}.*``, ``decoder_norm.*``, ``decoder_pred.*``; a timm file has ``head.*``
(the ImageNet classifier, dropped). The expected names and shapes come from the fakedet model
itself (``jax.eval_shape`` of its init), so the converted tree always fits the model.

MAE's position tables are fixed 2-D sin-cos values, constants in fakedet: for a "sincos" model
the file's table is checked against ours rather than loaded, and a learned table (a timm file
read as an MAE encoder) is reported. Reading the .pth itself is the caller's job (torch is not a
dependency here): pass ``{name: numpy array}``, possibly still wrapped as the file was.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from fakedet.importers import Tensors, WeightsError, conv, flatten, linear, names_with, nest
from fakedet.models import rffr, vit

# Models a MAE / ViT file converts into, by registered name.
_MODELS = {"vit": vit.ViTEncoder, "mae": vit.MaskedAutoencoder,
           "rffr_detector": rffr.DualBranchViT}
_DECODER_NAMES = ("decoder_", "mask_token")  # a full MAE file's decoder (prefixes)
_HEAD_NAMES = ("head.",)  # timm's ImageNet classifier: never part of an encoder


def state_dict(checkpoint: Mapping[str, Any]) -> Dict[str, Any]:
  """A loaded checkpoint → its flat state dict: unwraps MAE's ``{"model": …}`` and RFFR's
  ``{"state_dict": …}`` and strips a ``module.`` prefix that every name carries
  (torch DataParallel)."""
  for key in ("model", "state_dict"):
    if isinstance(checkpoint.get(key), Mapping):
      checkpoint = checkpoint[key]
      break
  names = list(checkpoint)
  if names and all(k.startswith("module.") for k in names):
    return {k[len("module."):]: v for k, v in checkpoint.items()}
  return dict(checkpoint)


def convert(tensors: Mapping[str, Any], cfg: Mapping[str, Any],
            source: str = "weights file") -> Dict[str, Any]:
  """Checkpoint tensors → ``{"params": tree, "not_in_file": (...), "dropped": (...)}``.

  ``cfg`` is the model spec ``{"name": "vit" | "mae" | "rffr_detector", **module kwargs}``
  (e.g. ``{"name": "mae", **vit.MAE_BASE}``). ``params`` is the model's parameter tree (numpy
  float32, flax layout). ``not_in_file`` names top-level subtrees the file did not provide and
  that the caller must take from a fresh init (and should warn about): "decoder" for an
  encoder-only MAE/timm file read as "mae", "head" for the detector (the paper trains it from
  scratch). ``dropped`` lists the file's names deliberately unused (``head.*``; the decoder
  when only an encoder is wanted). Both detector branches get the same encoder weights, as the
  paper initialises both from one ImageNet ViT. Raises ``WeightsError`` naming every missing,
  mis-shaped (or wrong-valued fixed table) and unexpected tensor at once.
  """
  kwargs = dict(cfg)
  name = kwargs.pop("name")
  if name not in _MODELS:
    raise WeightsError(f"a MAE/ViT file converts into {sorted(_MODELS)}; not {name!r}")
  model = _MODELS[name](**kwargs)
  expected = _abstract_params(model)
  t = Tensors(state_dict(tensors), source)
  has_decoder = any(t.has_prefix(p) for p in _DECODER_NAMES)
  drop = _HEAD_NAMES + (() if name == "mae" else _DECODER_NAMES)
  dropped = tuple(sorted(k for p in drop for k in names_with(t.tensors, p)))
  t.ignore(*drop)

  not_in_file: Tuple[str, ...] = ()
  if name == "vit":
    params = _encoder(t, expected, model)
  elif name == "rffr_detector":
    branch = _encoder(t, expected["original"], model)
    params = {"original": branch, "residual": jax.tree.map(np.copy, branch)}
    not_in_file = ("head",)
  else:
    params = {"encoder": _encoder(t, expected["encoder"], model)}
    if has_decoder:
      params["decoder"] = _decoder(t, expected["decoder"], model)
    else:
      not_in_file = ("decoder",)
  _finish(t, f"{name} ({_describe(model)})")
  return {"params": params, "not_in_file": not_in_file, "dropped": dropped}


# ----------------------------------------------------------------------------- internals
def _describe(model) -> str:
  return (f"width {model.width}, depth {model.depth}, {model.image_size} px, "
          f"patch {model.patch_size}")


def _abstract_params(model) -> Dict[str, Any]:
  """The model's params as ShapeDtypeStructs (nothing is allocated or compiled)."""
  images = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, 3), jnp.float32)
  n_inputs = 2 if isinstance(model, rffr.DualBranchViT) else 1
  init = functools.partial(model.init, train=False)
  return jax.eval_shape(init, jax.random.key(0), *([images] * n_inputs))["params"]


def _layout(leaf: str, shape: Tuple[int, ...]) -> Tuple[Tuple[int, ...], Callable]:
  """(torch shape, torch→flax transform) of a flax leaf."""
  if leaf == "kernel" and len(shape) == 4:  # [kh, kw, cin, cout] ← [cout, cin, kh, kw]
    return (shape[3], shape[2], shape[0], shape[1]), conv
  if leaf == "kernel":
    return (shape[1], shape[0]), linear
  return tuple(shape), lambda a: a


def _torch_name(path: str, decoder: bool) -> str:
  """fakedet path → released name: ``block3/attn/qkv/kernel`` → ``blocks.3.attn.qkv.weight``
  (``decoder_blocks.3…`` in the decoder, whose ``embed``/``norm``/``pred`` are MAE's
  ``decoder_embed``/``decoder_norm``/``decoder_pred``); ``patch_embed`` is timm's
  ``patch_embed.proj``; kernel and LayerNorm scale are torch's ``weight``."""
  parts = path.split("/")
  head = parts[0]
  if head.startswith("block"):
    parts[0] = ("decoder_blocks." if decoder else "blocks.") + head[len("block"):]
  elif decoder and head in ("embed", "norm", "pred"):
    parts[0] = "decoder_" + head
  elif head == "patch_embed":
    parts[0] = "patch_embed.proj"
  parts[-1] = {"kernel": "weight", "scale": "weight"}.get(parts[-1], parts[-1])
  return ".".join(parts)


def _read(t: Tensors, expected: Mapping[str, Any], decoder: bool) -> Dict[str, Any]:
  flat = {}
  for path, leaf in flatten(expected).items():
    torch_shape, to_flax = _layout(path.rsplit("/", 1)[-1], leaf.shape)
    flat[path] = to_flax(t.get(_torch_name(path, decoder), torch_shape))
  return nest(flat)


def _check_fixed_table(t: Tensors, name: str, grid: int, width: int) -> None:
  """A fixed sin-cos table in the file must be the one fakedet computes (else the file was
  trained with other positions, e.g. learned ones, and the model would silently differ)."""
  shape = (1, 1 + grid * grid, width)
  if name not in t or tuple(np.shape(t.tensors[name])) != shape:
    t.get(name, shape)  # records it as missing or mis-shaped
    return
  table = np.concatenate([np.zeros((1, width), np.float32), vit.sincos_pos_embed(grid, width)])
  diff = float(np.max(np.abs(t.get(name, shape)[0] - table)))
  if diff > 1e-5:
    t.misshaped.append(f"{name} (values differ from the fixed 2-D sin-cos table by up to "
                       f"{diff:.3g}: a learned table? use pos_embed='learned')")


def _encoder(t: Tensors, expected: Mapping[str, Any], model) -> Dict[str, Any]:
  params = _read(t, expected, decoder=False)
  if model.pos_embed == "sincos":
    _check_fixed_table(t, "pos_embed", model.image_size // model.patch_size, model.width)
  return params


def _decoder(t: Tensors, expected: Mapping[str, Any], model) -> Dict[str, Any]:
  params = _read(t, expected, decoder=True)
  _check_fixed_table(t, "decoder_pos_embed", model.image_size // model.patch_size,
                     model.decoder_width)
  return params


def _finish(t: Tensors, what: str) -> None:
  try:
    t.finish(what)
  except WeightsError as e:
    if "fc_norm.weight" in t and "norm.weight" not in t:
      raise WeightsError(f"{e} (fc_norm without norm: a global-average-pooled ViT, e.g. MAE "
                         f"fine-tuned; ViTEncoder normalises every token with norm)") from None
    raise

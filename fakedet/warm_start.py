"""Warm starts: copy sub-trees of another run's checkpoint into a freshly initialised state.

Stage 2 starts its backbone from the stage-1 video student and freezes a copy of the stage-1
video teacher; FakeOut fine-tunes MMV's video/audio backbones. Both are "take these sub-trees of
that run's train state and put them at these paths of mine", given as config rules:

  config.init.workdir = "/runs/stage1"   # a workdir of this trainer (or its checkpoints/ folder)
  config.init.step = -1                  # -1: the latest checkpoint
  config.init.rules = (("params/video_net", "params/backbone"),
                       ("ema_params/video_net", "params/teacher/backbone"))

Every leaf under each destination prefix must be filled by a leaf of the same relative path,
shape and dtype, so a renamed layer or a different width fails loudly, naming the path.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fakedet import checkpointing
from fakedet import optim


def init_config() -> ml_collections.ConfigDict:
  """``workdir``/``step``/``rules``, and ``also``: a second run to graft from after the first
  (RFFR: the detector's frozen MAE from its stage-1 run, both ViT branches from an imported
  ImageNet ViT)."""
  return ml_collections.ConfigDict(dict(
      workdir="", step=-1, rules=(),
      also=ml_collections.ConfigDict(dict(workdir="", step=-1, rules=()))))


def sections(init: ml_collections.ConfigDict):
  """The (workdir, step, rules) to graft from, in order; those without a workdir are skipped."""
  out = [init] + ([init.also] if "also" in init else [])
  return [(s.workdir, s.step, tuple(map(tuple, s.rules))) for s in out if s.workdir]


def _flatten(tree: Any) -> Dict[str, Any]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {optim.path_str(path): leaf for path, leaf in flat}


def _under(flat: Dict[str, Any], prefix: str) -> Dict[str, Any]:
  prefix = prefix.strip("/")
  return {k[len(prefix):].lstrip("/"): v for k, v in flat.items()
          if k == prefix or k.startswith(prefix + "/")}


def graft(state: Any, source: Any, rules: Sequence[Tuple[str, str]]) -> Any:
  """``state`` with every leaf under each rule's destination prefix replaced by the leaf at the
  same relative path under the source prefix (shapes, dtypes and shardings of ``state`` kept)."""
  src_flat, dst_flat = _flatten(source), _flatten(state)
  replacements: Dict[str, Any] = {}
  for src_prefix, dst_prefix in rules:
    src, dst = _under(src_flat, src_prefix), _under(dst_flat, dst_prefix)
    if not dst:
      raise KeyError(f"init rule {src_prefix!r} → {dst_prefix!r}: this model has no parameters "
                     f"under {dst_prefix!r}")
    missing = sorted(set(dst) - set(src))
    if missing:
      raise KeyError(f"init rule {src_prefix!r} → {dst_prefix!r}: the checkpoint lacks "
                     f"{len(missing)} of them, e.g. {src_prefix}/{missing[0]} (has "
                     f"{sorted(src)[:5]}{'...' if len(src) > 5 else ''})")
    for rel, leaf in dst.items():
      new = src[rel]
      if tuple(np.shape(new)) != tuple(leaf.shape):
        raise ValueError(f"init rule {src_prefix!r} → {dst_prefix!r}: {rel} has shape "
                         f"{np.shape(new)} in the checkpoint, {leaf.shape} in this model")
      key = f"{dst_prefix.strip('/')}/{rel}" if rel else dst_prefix.strip("/")
      replacements[key] = (new, leaf)
  paths, treedef = jax.tree_util.tree_flatten_with_path(state)
  leaves = []
  for path, leaf in paths:
    key = optim.path_str(path)
    if key in replacements:
      new, old = replacements[key]
      leaf = jax.device_put(jnp.asarray(new, old.dtype), old.sharding)
    leaves.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, leaves)


def warm_start(state: Any, init: ml_collections.ConfigDict) -> Any:
  """Applies ``config.init`` (then ``config.init.also``) to a freshly created state; a no-op
  when no workdir is set. A later graft overwrites what an earlier one put at the same path."""
  for workdir, step, rules in sections(init):
    state = graft(state, checkpointing.load_tree(workdir, step), rules)
  return state

"""Device mesh and shardings: data parallel over ``data`` (with room for ``fsdp``/``model``).

Batches are sharded over every batch-like axis (``BATCH_AXES``: decided here and only here;
``device_batch`` is the one choke point where host batches become global arrays); parameters
are replicated unless a rule in ``config.mesh.param_rules`` says otherwise. Because the train step is jitted over global arrays,
BatchNorm statistics computed inside it are over the GLOBAL batch (XLA inserts the all-reduce),
i.e. synchronised across the data axis, and results do not depend on the number of devices.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, Mapping, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def mesh_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      data=-1,  # -1: all remaining devices.
      fsdp=1,
      model=1,
      # (regex on the '/'-joined param path, PartitionSpec tuple); first match wins.
      param_rules=(),
  ))


def make_mesh(mcfg: Mapping[str, Any], devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  sizes = {"data": mcfg["data"], "fsdp": mcfg["fsdp"], "model": mcfg["model"]}
  fixed = 1
  for name, size in sizes.items():
    if size != -1:
      if size <= 0:
        raise ValueError(f"config.mesh.{name}={size}: expected a positive size or -1")
      fixed *= size
  free = [n for n, s in sizes.items() if s == -1]
  if len(free) > 1:
    raise ValueError(f"config.mesh: at most one axis may be -1, got {free}")
  if len(devices) % fixed:
    raise ValueError(f"config.mesh {sizes} does not divide the {len(devices)} devices")
  if free:
    sizes[free[0]] = len(devices) // fixed
  if sizes["data"] * sizes["fsdp"] * sizes["model"] != len(devices):
    raise ValueError(f"config.mesh {sizes} needs {sizes['data'] * sizes['fsdp'] * sizes['model']}"
                     f" devices, {len(devices)} available")
  shape = tuple(sizes.values())
  return jax.make_mesh(shape, tuple(sizes), axis_types=(AxisType.Auto,) * 3, devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def batch_devices(mesh: Mesh) -> int:
  """How many ways a global batch is split: the product of the batch axes' sizes."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_divisible(batch_size: int, mesh: Mesh, what: str) -> None:
  """A global batch must split evenly over the batch axes; fail naming the config key and the
  device count (JAX's own error names a tensor dimension, not a key)."""
  devices = batch_devices(mesh)
  if batch_size % devices:
    raise ValueError(f"{what} = {batch_size} does not split over the {devices} devices of the "
                     f"batch mesh axes {BATCH_AXES} ({jax.process_count()} process(es)); use a "
                     f"multiple of {devices}")


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> Dict[str, Any]:
  """Host batch → global arrays sharded over the batch axes (leading dim = global batch).

  Numeric fields become ``jax.Array``s; string metadata (video ids, manipulation names) stays
  on the host.
  """
  sharding = batch_sharding(mesh)
  return {k: (jax.make_array_from_process_local_data(sharding, v)
              if np.asarray(v).dtype.kind in "biuf" else v) for k, v in batch.items()}


def device_batch(batch: Mapping[str, np.ndarray], keys: Sequence[str],
                 mesh: Mesh) -> Dict[str, jax.Array]:
  """The ``keys`` fields an objective reads, as global arrays; a missing field names the ops
  that should have made it."""
  missing = [k for k in keys if k not in batch]
  if missing:
    raise KeyError(f"the objective needs batch fields {missing}; the input pipeline produces "
                   f"{sorted(batch)} (check config.input.train_ops / eval.ops)")
  return to_global({k: batch[k] for k in keys}, mesh)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_shardings(tree: Any, mesh: Mesh, rules: Sequence[Tuple[str, Tuple]] = ()) -> Any:
  """Per-leaf NamedShardings: the first matching rule's spec, else replicated."""
  compiled = [(re.compile(pattern), spec) for pattern, spec in rules]

  def leaf(path, _):
    name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    for pattern, spec in compiled:
      if pattern.fullmatch(name):
        return NamedSharding(mesh, P(*spec))
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(leaf, tree)

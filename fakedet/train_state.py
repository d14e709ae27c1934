"""The whole training state as one pytree, initialised shape-first with explicit shardings."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fakedet import sharding as sharding_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any  # Teacher (EMA of params); {} when the objective has none.
  ema_batch_stats: Any


def create(objective, tx: optax.GradientTransformation, batch, rng: jax.Array, mesh,
           mesh_config: Mapping[str, Any] | None = None) -> Tuple[TrainState, Any]:
  """Returns (state, state_shardings): eval_shape → shardings → jit(init, out_shardings), so a
  leaf split over ``fsdp`` is never materialised whole on one device."""

  def init_fn(rng):
    variables = objective.init(rng, batch)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params) if objective.uses_ema else {},
        ema_batch_stats=jax.tree.map(jnp.copy, batch_stats) if objective.uses_ema else {})

  abstract = jax.eval_shape(init_fn, rng)
  shardings = sharding_lib.state_shardings(abstract, mesh, mesh_config)
  state = jax.jit(init_fn, out_shardings=shardings)(rng)
  return state, shardings


def abstract_batch(batch: Mapping[str, np.ndarray], keys: Sequence[str],
                   process_count: int) -> Dict[str, jax.ShapeDtypeStruct]:
  """Global-batch shapes of ``keys`` from one host batch (for shape-first init)."""
  return {k: jax.ShapeDtypeStruct((np.shape(batch[k])[0] * process_count,)
                                  + np.shape(batch[k])[1:], np.asarray(batch[k]).dtype)
          for k in keys}


def abstract_inference_state(objective, example: Mapping[str, jax.ShapeDtypeStruct], mesh,
                             mesh_config: Mapping[str, Any] | None = None
                             ) -> Tuple[TrainState, Any]:
  """(abstract TrainState without optimizer state, its shardings) in the trainer's layout, so
  ``config.mesh`` rules match the same paths; what scoring and prediction restore into."""
  def init(rng, batch):
    variables = objective.init(rng, batch)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    ema = objective.uses_ema
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, opt_state={},
        ema_params=params if ema else {}, ema_batch_stats=batch_stats if ema else {})

  shapes = jax.eval_shape(init, jax.random.key(0), dict(example))
  shardings = sharding_lib.state_shardings(shapes, mesh, mesh_config)
  return abstract_with_shardings(shapes, shardings), shardings


def abstract_with_shardings(state: TrainState, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying shardings: the restore target for Orbax."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


def count_params(tree: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))

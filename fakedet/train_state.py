"""The whole training state as one pytree, initialised shape-first with explicit shardings."""
from __future__ import annotations

from typing import Any, Callable, Tuple

import flax
import jax
import jax.numpy as jnp
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
           param_rules=()) -> Tuple[TrainState, Any]:
  """Returns (state, state_shardings): eval_shape → shardings → jit(init, out_shardings)."""

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
  shardings = sharding_lib.param_shardings(abstract, mesh, param_rules)
  state = jax.jit(init_fn, out_shardings=shardings)(rng)
  return state, shardings


def abstract_with_shardings(state: TrainState, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying shardings: the restore target for Orbax."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


def count_params(tree: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))

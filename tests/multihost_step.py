"""One RealForensics stage-1 train step on a fixed global batch, as one of N processes.

  python tests/multihost_step.py --process_id=I --num_processes=N --port=P --out=FILE

Every process builds the same tiny model, owns rows [I·B/N, (I+1)·B/N) of the same global batch
(made from a seed), and runs the jitted train step over the global arrays; process 0 writes the
loss and the parameter norm after the step to FILE. With N=2 (two processes, CPU collectives over
localhost) the figures must equal those of N=1 — tests/test_trainer.py checks that.

With ``--eval_data_dir`` every process then runs the trainer's periodic evaluation
(``periodic.PeriodicEval``) on that dataset's val split, 4 clips per global batch; with 5 clips the
hosts get 3 and 2 (two batches and one), and process 0 also writes the eval figures.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _barrier(name: str) -> None:
  """All processes here before going on (the coordination service: no gloo deadline)."""
  import jax
  from jax._src import distributed
  if jax.process_count() > 1:
    distributed.global_state.client.wait_at_barrier(f"multihost_step_{name}", 600_000)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--process_id", type=int, required=True)
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--devices_per_process", type=int, default=2)
  parser.add_argument("--out", required=True)
  parser.add_argument("--eval_data_dir", default="")
  args = parser.parse_args()
  from tests import tiny_configs
  os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={args.devices_per_process}"
                             f" {tiny_configs.FAST_COMPILE}")
  import jax
  if args.num_processes > 1:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                               num_processes=args.num_processes, process_id=args.process_id)
  import jax.numpy as jnp
  from fakedet import optim, sharding
  from fakedet import train_state as train_state_lib
  from fakedet.evaluation import periodic
  from fakedet.trainers import train
  from fakedet import objectives

  config = tiny_configs.stage1_tiny()
  mesh = sharding.make_mesh(config.mesh)
  objective = objectives.get(config.objective.name)(config)
  batch = tiny_configs.fake_stage1_batch(global_batch=8, seed=0)
  n = 8 // args.num_processes
  rows = slice(args.process_id * n, (args.process_id + 1) * n)
  local = {k: v[rows] for k, v in batch.items()}
  gbatch = sharding.device_batch(local, objective.input_keys, mesh)
  tx = optim.make_optimizer(config.optim, config.total_steps)
  state, shardings = train_state_lib.create(objective, tx, gbatch, jax.random.key(0), mesh)
  step = train.jit_train_step(objective, tx, train.ema_momentum_fn(config, 8, 10), shardings,
                              mesh, donate=False)
  # Compile first, then meet: gloo gives a peer 30 s to join a collective, and on a loaded
  # 2-core machine one process can finish compiling much later than the other.
  key = jax.random.key(1)
  compiled = step.lower(state, gbatch, key).compile()
  _barrier("step")
  state, metrics = compiled(state, gbatch, key)
  norm_fn = jax.jit(lambda p: jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(p))))
  compiled_norm = norm_fn.lower(state.params).compile()
  _barrier("norm")
  norm = float(compiled_norm(state.params))
  result = {"loss": float(metrics["loss"]), "param_norm": norm, "devices": jax.device_count(),
            "processes": jax.process_count()}
  if args.eval_data_dir:
    config.input.eval.update(data_dir=args.eval_data_dir, split="val", batch_size=4)
    config.eval_batches = 0
    _barrier("eval")
    result["eval"] = periodic.PeriodicEval(config, objective, shardings, mesh)(state)
  if jax.process_index() == 0:
    with open(args.out, "w") as f:
      json.dump(result, f)


if __name__ == "__main__":
  main()

"""Tiny configs and batches shared by trainer tests and the multi-host script."""
import numpy as np

T, SIZE, MELS = 5, 32, 80

# Tests compile many tiny programs and run each a few times: XLA:CPU's LLVM optimisation
# dominates (a tiny ResNet init: 4.8 s → 0.9 s compile without it), run time does not matter.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def config_module(name: str):
  """``configs/<name>.py`` loaded by path, as ``--config=configs/<name>.py`` does (configs/ is
  not a package)."""
  import importlib.util
  import os
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"{name}_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def stage1_tiny():
  """configs/stage1.py:demo shrunk further: a few-second CPU compile, a real architecture."""
  module = config_module("stage1")
  config = module.get_config("demo")
  m = config.model
  m.video_backbone.width_multiplier = 1 / 16
  m.audio_backbone.width_multiplier = 1 / 16
  m.projector.features = 16
  m.predictor.num_heads = 2
  m.predictor.head_dim = 8
  m.predictor.mlp_dim = 32
  config.input.clip_frames = T
  config.input.train_ops = module.train_ops(crop=36, size=SIZE, tmask=2)
  config.input.eval.ops = module.EVAL_OPS.format(crop=36, size=SIZE)
  config.input.sources.reals.batch_size = 8
  config.input.eval.batch_size = 8
  config.total_steps = 10
  config.optim.warmup_steps = 2
  config.checkpoint.every_steps = 4
  config.checkpoint.async_save = False
  config.log_every = 2
  config.eval_every = 0
  config.eval_batches = 1
  return config


def fake_stage1_batch(global_batch: int = 8, seed: int = 0):
  """A deterministic host batch with the stage-1 fields (random pixels and log-mels)."""
  rng = np.random.default_rng(seed)
  video = rng.integers(0, 256, (global_batch, T, SIZE, SIZE, 3), dtype=np.uint8)
  audio = rng.normal(size=(global_batch, 4 * T, MELS)).astype(np.float32)
  masked = video.copy()
  masked[:, :, 8:20, 8:20] = 0
  audio_masked = audio.copy()
  audio_masked[:, :4] = 0
  return {"video": video, "video_masked": masked, "audio": audio, "audio_masked": audio_masked,
          "label": np.zeros(global_batch, np.int32), "valid": np.ones(global_batch, bool)}


def get_config(arg=None):
  """``--config=tests/tiny_configs.py:stage1``: the tiny stage-1 model on ``synthetic:tiny``."""
  if arg != "stage1":
    raise ValueError(f"unknown variant {arg!r} of tests/tiny_configs.py; allowed: 'stage1'")
  config = stage1_tiny()
  config.input.sources.reals.data_dir = "synthetic:tiny"
  config.input.eval.data_dir = "synthetic:tiny"
  config.input.eval.split = "val"
  return config

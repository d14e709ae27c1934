"""``--config=tests/tiny_detector_config.py``: a tiny ``video_detector`` (scratch-baseline shape)
on ``synthetic:tiny``, for evaluation-driver tests: a few-second CPU compile, real pipeline."""
import ml_collections

from fakedet.trainers import train

FRAMES, CROP, SIZE = 4, 36, 32
EVAL_OPS = f"center_crop(size={CROP}, resize={SIZE})"


def get_config(arg=None):
  """``arg``: ``None`` (default) or ``"cosine"`` (the stage-2 cosine classifier, no aux head)."""
  if arg not in (None, "cosine"):
    raise ValueError(f"unknown variant {arg!r} of tests/tiny_detector_config.py; allowed: 'cosine'")
  config = train.reference_config()
  config.objective = ml_collections.ConfigDict(dict(
      name="video_detector", logit_adjustment=False, aux_weight=0.0))
  config.model = ml_collections.ConfigDict(dict(
      backbone=dict(name="csn", stage_blocks=(1, 1, 1, 1), width_multiplier=1 / 16),
      classifier="cosine" if arg == "cosine" else "linear",
      pixel_mean=(0.45,) * 3, pixel_std=(0.225,) * 3))
  config.input.clip_frames = FRAMES
  config.input.train_ops = EVAL_OPS
  main = config.input.sources.main
  main.data_dir, main.split, main.batch_size, main.balance = "synthetic:tiny", "train", 8, "class"
  ev = config.input.eval
  ev.data_dir, ev.split, ev.batch_size, ev.clips_per_video, ev.ops = (
      "synthetic:tiny", "val", 8, 2, EVAL_OPS)
  config.total_steps = 2
  config.optim.name, config.optim.lr, config.optim.warmup_steps = "adam", 1e-3, 0
  config.optim.groups = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 2
  config.checkpoint.async_save = False
  config.log_every = 1
  return config


def multihost_config(data_dir: str):
  """Evaluation on tests/test_evaluate.py's multi-track set: 5 clips, so with 2 hosts of 2 rows
  host 0 runs 2 batches and host 1 one batch plus a blank one."""
  config = get_config()
  ev = config.input.eval
  ev.data_dir, ev.clips_per_video, ev.batch_size, ev.manipulations = (
      data_dir, 1, 4, ("real", "swap"))
  return config

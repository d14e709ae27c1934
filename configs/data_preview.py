"""Preview the input pipeline: the clips, views and log-mels a RealForensics-style config feeds.

  python -m fakedet.main --config=configs/data_preview.py:demo --workdir=/tmp/preview

``:demo`` runs on the embedded synthetic dataset (generated and cached on first use, ~1–3 min on
2 cores), then pulls 20 batches of 16 clips (12 real-corpus clips + 4 from the forgery set,
class-balanced) in about a minute on a laptop CPU; it writes ``data_preview.png`` (clean and
masked views, log-mel), ``data_summary.json`` and TensorBoard scalars to the workdir. The
default variant reads a user-supplied dataset: ``--config.input.sources.main.data_dir=DIR``.
"""
import ml_collections

from configs import common
from fakedet.trainers import data_preview
from input_pipeline import config as input_config

EVAL_OPS = "center_crop(size={crop}, resize={size})|" + common.REALFORENSICS_LOG_MEL


def train_ops(crop: int, size: int) -> str:
  """Stage 1's views (RealForensics §3.1, B.3, as the authors' code draws them), masking
  included, so the preview shows what a paper-size stage-1 run feeds."""
  return common.realforensics_views(crop, size, mean=common.RGB_MEAN, masking=True, audio=True)

def get_config(arg=None):
  variant = common.variants(arg, "configs/data_preview.py", flags=("demo",))
  config = data_preview.reference_config()  # This trainer's schema and defaults (20 steps).
  config.input.train_ops = train_ops(crop=140, size=112)
  config.input.eval.ops = EVAL_OPS.format(crop=140, size=112)
  config.input.sources.main.batch_size = 32
  if variant.get("demo"):
    # Stored 96 px faces → 84 px crops → 64 px, like RealForensics' 150 → 140 → 112.
    config.input.train_ops = train_ops(crop=84, size=64)
    config.input.eval.ops = EVAL_OPS.format(crop=84, size=64)
    config.input.sources = ml_collections.ConfigDict({
        "reals": input_config.source_config("synthetic:demo", "train", 12, labels=(0,)),
        "forgery": input_config.source_config("synthetic:demo", "train", 4, balance="class"),
    })
    config.input.eval.data_dir = "synthetic:demo"
  return config

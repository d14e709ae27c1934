r"""Generates the embedded synthetic dataset and prints the time taken and the record counts.

  python -m input_pipeline.synthetic.generate --preset=demo --out_dir=/tmp/synthetic_demo \
      [--num_workers=2]

Without --out_dir the dataset goes to the cache that `synthetic:<preset>` data dirs read
($FAKEDET_CACHE or ~/.cache/fakedet), and is only built if it is not there yet.
"""
import time

from absl import app, flags

from input_pipeline import records
from input_pipeline.synthetic import dataset

_PRESET = flags.DEFINE_enum("preset", "demo", sorted(dataset.PRESETS), "Config preset.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output directory (default: the cache).")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", None,
                                    "Generator processes (default: CPUs available, at most 8).")
_SEED = flags.DEFINE_integer("seed", None, "Overrides the preset's seed.")


def main(argv):
  del argv
  config = dataset.preset(_PRESET.value)
  if _SEED.value is not None:
    config = dataset.preset(_PRESET.value, seed=_SEED.value)
  start = time.time()
  if _OUT_DIR.value:
    out_dir = _OUT_DIR.value
    manifest = dataset.build(config, out_dir, _NUM_WORKERS.value)
  else:
    out_dir = dataset.ensure(config, num_workers=_NUM_WORKERS.value)
    manifest = records.read_manifest(out_dir)
  print(f"{config.name} ({config.source}) in {out_dir}: {time.time() - start:.1f} s")
  for split, info in manifest["splits"].items():
    counts = ", ".join(f"{k} {v}" for k, v in sorted(info["counts"]["manipulation"].items()))
    print(f"  {split}: {info['num_records']} records ({counts})")


if __name__ == "__main__":
  app.run(main)

"""Shared test fixtures: 8 simulated CPU devices and a tiny hand-made clip dataset."""
import os

from tests.tiny_configs import FAST_COMPILE  # pylint: disable=wrong-import-position

# Sharded code is tested on 8 simulated CPU devices; must be set before jax is imported.
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One persistent compilation cache for every test process and the CLIs they start: many tests
# compile the same tiny programs (a stage-1 train step compiles for ~50 s on 8 simulated CPU
# devices), and the second compile of an identical program becomes a file read.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join("/tmp", "fakedet_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

try:  # torchvision (the parity tests' reference, via timm too) crashes when it is imported
  import torchvision  # noqa: F401  after TensorFlow (which clu's writers import); before is fine.
except ImportError:
  pass
import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position

# grain worker processes read absl flags; tests run outside absl.app.run.
flags.FLAGS.mark_as_parsed()

FPS, SR = 25.0, 16000


def make_record(i: int, num_frames: int = 30, size: int = 48, label: int = 0,
                manipulation: str = "real", with_mask: bool = False, seed: int = 0):
  """A small valid record whose frames encode (record, frame) so tests can locate them.

  Every pixel of frame t of record i has value 4·t + 2 in channel 0 (decodable through JPEG to
  within a few levels), i in channel 1 and a smooth ramp in channel 2.
  """
  rng = np.random.default_rng([seed, i])
  frames = np.zeros((num_frames, size, size, 3), np.uint8)
  frames[..., 0] = (4 * np.arange(num_frames) + 2)[:, None, None]
  frames[..., 1] = i % 256
  frames[..., 2] = np.linspace(0, 255, size, dtype=np.uint8)[None, None, :]
  n = int(num_frames * SR // FPS)
  audio = (np.sin(np.arange(n) * 0.05 * (1 + i % 5)) * 8000 + rng.normal(0, 300, n)).astype(np.int16)
  rec = dict(frames=frames, audio=audio, fps=FPS, sample_rate=SR, video_id=f"vid{i:03d}",
             track_id=0, source="unit", label=label, manipulation=manipulation,
             identity=f"id{i // 2}", words=["hello", "world"], word_start=[0.1, 0.5],
             word_end=[0.4, 0.9])
  if with_mask:
    mask = np.zeros(frames.shape[:3], np.uint8)
    if label:
      mask[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    rec["mask"] = mask
  return rec


def write_tiny(out_dir, num_real=12, num_fake=4, num_frames=30, num_shards=3, with_mask=False):
  """Both formats (TFRecord is opt-in for users; tests cover it and the cross-format checks)."""
  from input_pipeline import records
  recs = [make_record(i, num_frames, with_mask=with_mask) for i in range(num_real)]
  recs += [make_record(num_real + j, num_frames, label=1, with_mask=with_mask,
                       manipulation=("swap" if j % 2 else "reenact")) for j in range(num_fake)]
  return records.write_dataset(str(out_dir), "unit", {"train": recs, "val": recs[:4] + recs[-2:]},
                               num_shards={"train": num_shards, "val": 1},
                               formats=records.FORMATS)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("tiny")
  write_tiny(d, with_mask=True)
  return str(d)


def pytest_collection_modifyitems(items):
  """Integration tests first (stable otherwise): they are the long ones, and the two CI
  workers finish together when the long tests start early and short ones fill in at the end
  (`--dist worksteal` in the README's command lets an idle worker take queued tests)."""
  items.sort(key=lambda item: item.get_closest_marker("integration") is None)

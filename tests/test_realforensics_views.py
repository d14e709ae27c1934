"""The RealForensics configs' training views, as the authors' code draws them: the teacher's
clean view is never grey, erased or time-masked; each view has its own crop and flip; the
normalisation matches the model's input channels; masking fills the normalisation mean."""
import numpy as np
import pytest

from configs import common
from fakedet.objectives import normalize_video
from input_pipeline import audio, augment, ops  # noqa: F401  (registers the ops)
from tests.test_config_and_main import _load

T, H, W = 4, 150, 150


def _clip(seed=0):
  """Brighter to the right, and every pixel's channels differ (G = R + 30, B = R + 60), so a
  flip, a grey frame and the (B < R) fill colour are each detectable."""
  rng = np.random.default_rng(seed)
  red = (0.8 * np.arange(W))[None, None, :] + rng.integers(0, 20, (T, H, W))
  return np.stack([red, red + 30, red + 60], axis=-1).astype(np.uint8)


def _example(seed=0):
  return {"video": _clip(seed), "waveform": np.zeros(T * 640, np.float32)}


def _views(arg, n=60):
  config = _load("configs/stage2.py", arg)
  fn = ops.build(config.input.train_ops)
  return config, [fn(_example(), np.random.default_rng(s)) for s in range(n)]


def _is_grey(v):
  return np.all(v[..., 0] == v[..., 1]) and np.all(v[..., 1] == v[..., 2])


def test_stage2_teacher_view_is_never_masked_and_the_student_view_is():
  config, outs = _views("demo")  # The demo trains unmasked: greys and flips only.
  _, masked = _views(None, n=80)
  fill = np.array(common.fill_value(config.model.pixel_mean), np.uint8)
  flips_differ = grey_student = erased_or_timed = 0
  for out in outs + masked:
    clean = out["video"]
    assert not _is_grey(clean)
    assert not np.any(np.all(clean == fill, axis=-1))  # No erased / time-masked pixel.
  for out in outs:
    grey_student += _is_grey(out["video_masked"])
  for out in masked:
    erased_or_timed += np.any(np.all(out["video_masked"] == fill, axis=-1))
  assert 0.3 < grey_student / len(outs) < 0.7  # p 0.5, student only.
  assert erased_or_timed > len(masked) // 3  # erase p 0.5, time mask p 0.5.
  # Per-view flips: mirror-left-right views of a left-right asymmetric clip show up as the
  # teacher's and student's column order disagreeing in some draws and agreeing in others.
  def leans_right(v):
    m = v.astype(float).mean(axis=(0, 1, 3))
    return m[-5:].mean() > m[:5].mean()
  for out in outs:
    flips_differ += leans_right(out["video"]) != leans_right(out["video_masked"])
  assert 0.2 < flips_differ / len(outs) < 0.8


def test_normalisation_follows_the_models_channels_and_fill_is_the_mean():
  rgb = _load("configs/stage2.py", None).model
  grey = _load("configs/stage2.py", "grey").model
  assert tuple(rgb.pixel_mean) == (0.485, 0.456, 0.406)
  assert tuple(rgb.pixel_std) == (0.229, 0.224, 0.225)
  assert tuple(grey.pixel_mean) == (0.421,) and tuple(grey.pixel_std) == (0.165,)
  assert tuple(_load("configs/stage1.py", None).model.pixel_mean) == tuple(rgb.pixel_mean)
  assert "grayscale" not in _load("configs/stage2.py", "grey").input.train_ops
  for model in (rgb, grey):
    fill = np.full((1, 1, 1, 1, 3), common.fill_value(model.pixel_mean), np.uint8)
    normalised = np.asarray(normalize_video(fill, model.pixel_mean, model.pixel_std))
    assert np.abs(normalised).max() < 0.5 / 255 / min(model.pixel_std) + 1e-6


def test_robustness_variant_trains_without_masking():
  ops_string = _load("configs/stage2.py", "robustness").input.train_ops
  assert "random_erase" not in ops_string and "time_mask" not in ops_string
  assert "grayscale" in ops_string and "flip" in ops_string and "random_crop" in ops_string


@pytest.mark.parametrize("arg", [None, "demo"])
def test_stage1_students_alone_turn_grey(arg):
  config = _load("configs/stage1.py", arg)
  spec = config.input.train_ops
  assert "grayscale(keys=('video_masked',))" in spec
  assert "flip(keys=('video',))|flip(keys=('video_masked',))" in spec

"""AV contrastive transformer data: the synthetic mouth-crop records and the clip-level
augmentations (motion blur, Gaussian noise, brightness: one draw per clip, same on every frame)."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest

from input_pipeline import ops
from input_pipeline.preprocess import faces as landmark_points
from input_pipeline.synthetic import dataset as synthetic

T, H, W = 6, 24, 20


def _tiny(mouth_size=0):
  return synthetic.preset("tiny", mouth_size=mouth_size)


def test_mouth_records_are_the_face_records_cut_on_the_lips():
  faces_group = synthetic._video_group(_tiny(), "train", 0)
  mouth_group = synthetic._video_group(_tiny(32), "train", 0)
  assert [r["video_id"] for r in faces_group] == [r["video_id"] for r in mouth_group]
  for face, mouth in zip(faces_group, mouth_group):
    frames = mouth["frames"]
    assert frames.shape == (len(face["frames"]), 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(mouth["audio"], face["audio"])  # Same recording.
    np.testing.assert_array_equal(frames[..., 0], frames[..., 1])  # Greyscale in 3 channels.
    np.testing.assert_array_equal(frames[..., 0], frames[..., 2])
    assert mouth["mask"].shape == frames.shape[:3]
    assert bool(mouth["mask"].any()) == bool(face["mask"].any())
    # The crop is centred on the lips (the centre of the mouth corners, smoothed over time).
    lips = landmark_points.five_from_68(mouth["landmarks"])[:, 3:].mean(axis=1)
    np.testing.assert_allclose(lips.mean(axis=0), [16, 16], atol=1.5)


def test_mouth_size_changes_the_cache_key_only_when_set():
  """Caches of the existing presets keep their names: a 0 field is not hashed."""
  demo = synthetic.preset("demo")
  fields = dataclasses.asdict(demo)
  del fields["topics"], fields["mouth_size"]
  blob = json.dumps([synthetic.GENERATOR_VERSION, fields], sort_keys=True)
  assert synthetic.fingerprint(demo) == hashlib.sha256(blob.encode()).hexdigest()[:10]
  mouth = synthetic.preset("demo_mouth")
  assert (mouth.mouth_size, mouth.identities, mouth.seed) == (96, demo.identities, demo.seed)
  assert synthetic.fingerprint(mouth) != synthetic.fingerprint(demo)
  with pytest.raises(ValueError, match="mouth_size"):
    synthetic.preset("tiny", mouth_size=8)


# ------------------------------------------------------------------------------ augmentations


def _still_clip(seed=0, channels=3):
  """Every frame the same random image: a clip-level op must keep the frames equal."""
  rng = np.random.default_rng(seed)
  frame = rng.integers(30, 220, (H, W, 1), dtype=np.uint8).repeat(channels, axis=-1)
  return np.repeat(frame[None], T, axis=0)


@pytest.mark.parametrize("spec", ["motion_blur(p=1.0, kernel=(5, 5))",
                                  "gaussian_noise(p=1.0, std=(0.05, 0.05))",
                                  "brightness(p=1.0, delta=0.3)"])
def test_ops_apply_one_draw_to_every_frame_and_channel(spec):
  clip = _still_clip()
  keep = clip.copy()
  for seed in range(5):
    out = ops.build(spec)({"video": clip}, np.random.default_rng(seed))["video"]
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert not np.array_equal(out, clip)
    np.testing.assert_array_equal(out, np.broadcast_to(out[:1], out.shape))  # No flicker.
    np.testing.assert_array_equal(out[..., 0], out[..., 2])  # Grey frames stay grey.
  np.testing.assert_array_equal(clip, keep)  # Pure: the input is untouched.


@pytest.mark.parametrize("spec", ["motion_blur(p=0.0)", "gaussian_noise(p=0.0)",
                                  "brightness(p=0.0)"])
def test_ops_with_p_0_change_nothing(spec):
  clip = _still_clip()
  np.testing.assert_array_equal(ops.build(spec)({"video": clip}, np.random.default_rng(0))
                                ["video"], clip)


def test_motion_blur_smears_along_one_direction_and_keeps_the_mean():
  from input_pipeline import augment
  kernel = augment.motion_kernel(7, 0.0)
  np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(kernel[3], 1 / 7, rtol=1e-5)  # Horizontal line through the centre.
  clip = np.zeros((2, 15, 15, 1), np.uint8)
  clip[:, 7, 7] = 210
  out = ops.build("motion_blur(p=1.0, kernel=(7, 7))")({"video": clip},
                                                       np.random.default_rng(3))["video"]
  assert np.count_nonzero(out[0]) >= 5  # A point becomes a streak …
  assert abs(int(out.sum()) - int(clip.sum())) <= 7 * 2  # … of the same total (rounding).


def test_noise_and_brightness_magnitudes():
  flat = np.full((T, H, W, 3), 128, np.uint8)
  out = ops.build("gaussian_noise(p=1.0, std=(0.04, 0.04))")({"video": flat},
                                                             np.random.default_rng(0))["video"]
  np.testing.assert_allclose(np.std(out[0, ..., 0].astype(float)) / 255, 0.04, rtol=0.25)
  for seed in range(10):
    out = ops.build("brightness(p=1.0, delta=0.2)")({"video": flat},
                                                    np.random.default_rng(seed))["video"]
    assert 0.8 * 128 - 1 <= int(out[0, 0, 0, 0]) <= 1.2 * 128 + 1


@pytest.mark.parametrize("spec, match", [("motion_blur(kernel=(4, 6))", "kernel"),
                                         ("gaussian_noise(std=(0.2, 0.1))", "std"),
                                         ("brightness(delta=2)", "delta"),
                                         ("brightness(p=1.5)", "p")])
def test_bad_arguments_fail_naming_them(spec, match):
  with pytest.raises(ValueError, match=match):
    ops.build(spec)


def test_float_video_is_refused():
  with pytest.raises(ValueError, match="uint8"):
    ops.build("brightness(p=1.0)")({"video": np.zeros((T, H, W, 3), np.float32)},
                                   np.random.default_rng(0))

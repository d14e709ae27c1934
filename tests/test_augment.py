"""Properties of the clip augmentation ops: geometry, consistency across frames/views, purity."""
import colorsys

import numpy as np
import pytest

from input_pipeline import audio, augment, ops  # noqa: F401  (registers the ops)

T, H, W = 25, 150, 150


def _rng(seed=0):
  return np.random.default_rng(seed)


def _coord_clip(num_frames=T, height=H, width=W):
  """uint8 [T, H, W, 3] with (R, G, B) = (y, x, t): every pixel says where it came from."""
  y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  frame = np.stack([y, x, np.zeros_like(y)], axis=-1)
  clip = np.repeat(frame[None], num_frames, axis=0)
  clip[..., 2] = np.arange(num_frames)[:, None, None]
  return clip.astype(np.uint8)


def _random_clip(seed=0, shape=(T, H, W, 3)):
  return _rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _apply(spec, example, seed=0):
  return ops.build(spec)(example, _rng(seed))


# ------------------------------------------------------------------------------ crops


def test_random_crop_same_window_in_every_frame():
  clip = _coord_clip()
  for seed in range(20):
    out = _apply("random_crop(size=100, resize=None)", {"video": clip}, seed)["video"]
    assert out.shape == (T, 100, 100, 3) and out.dtype == np.uint8
    top, left = int(out[0, 0, 0, 0]), int(out[0, 0, 0, 1])
    np.testing.assert_array_equal(out, clip[:, top:top + 100, left:left + 100])


def test_random_crop_resize_shape_and_consistency():
  clip = _coord_clip()
  out = _apply("random_crop(size=140, resize=112)", {"video": clip})["video"]
  assert out.shape == (T, 112, 112, 3) and out.dtype == np.uint8
  # R and G (the y, x code) are the same in every frame, B keeps the frame index.
  np.testing.assert_array_equal(out[..., :2], np.broadcast_to(out[:1, ..., :2], out[..., :2].shape))
  np.testing.assert_array_equal(out[:, 50, 50, 2], np.arange(T))
  # The 140 window is inside the frame and resampled monotonically.
  assert out[0, 0, 0, 0] <= 10 and out[0, -1, -1, 0] >= 139
  assert np.all(np.diff(out[0, :, 0, 0].astype(int)) > 0)


def test_random_crop_out_keys_are_independent_and_input_untouched():
  clip = _coord_clip()
  keep = clip.copy()
  spec = ("random_crop(size=100, resize=None, out_key='video_masked')"
          "|random_crop(size=100, resize=None)")
  offsets = []
  for seed in range(10):
    out = _apply(spec, {"video": clip}, seed)
    clean, masked = out["video"], out["video_masked"]
    offsets.append((tuple(clean[0, 0, 0, :2]), tuple(masked[0, 0, 0, :2])))
  np.testing.assert_array_equal(clip, keep)
  assert sum(a != b for a, b in offsets) >= 9  # A collision has probability 1/51**2 per seed.


def test_random_crop_whole_frame_and_too_small():
  clip = _coord_clip(3, 50, 60)
  out = _apply("random_crop(size=50, resize=None)", {"video": clip})["video"]
  np.testing.assert_array_equal(out[..., 0], clip[:, :, :50, 0])  # Only x offsets possible.
  with pytest.raises(ValueError, match="random_crop.*smaller than size=51"):
    _apply("random_crop(size=51)", {"video": clip})


def test_center_crop_is_centred_and_deterministic():
  clip = _coord_clip()
  out = _apply("center_crop(size=101, resize=None)", {"video": clip})["video"]
  np.testing.assert_array_equal(out, clip[:, 24:125, 24:125])
  a = _apply("center_crop", {"video": clip}, seed=1)["video"]
  b = _apply("center_crop", {"video": clip}, seed=2)["video"]
  assert a.shape == (T, 112, 112, 3)
  np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ flip / gray


def test_flip_twice_is_identity_and_mirrors_columns():
  clip = _random_clip()
  once = _apply("flip(p=1.0)", {"video": clip})["video"]
  np.testing.assert_array_equal(once, clip[:, :, ::-1])
  twice = _apply("flip(p=1.0)|flip(p=1.0)", {"video": clip})["video"]
  np.testing.assert_array_equal(twice, clip)
  np.testing.assert_array_equal(_apply("flip(p=0.0)", {"video": clip})["video"], clip)


def test_flip_listed_views_together_and_rate():
  clip = _random_clip(shape=(2, 8, 8, 3))
  fn = ops.build("flip(keys=('video', 'video_masked'))")
  flips = 0
  for seed in range(400):
    out = fn({"video": clip, "video_masked": clip, "audio": np.ones(3)}, _rng(seed))
    np.testing.assert_array_equal(out["video"], out["video_masked"])
    flips += not np.array_equal(out["video"], clip)
  assert 140 <= flips <= 260  # p = 0.5: mean 200, sd 10.


def test_flip_float_and_unlisted_keys():
  clip = _random_clip(shape=(2, 8, 8, 3))
  other = _random_clip(1, shape=(2, 8, 8, 3))
  out = _apply("flip(keys='video', p=1.0)", {"video": clip.astype(np.float64), "other": other})
  np.testing.assert_array_equal(out["video"], clip[:, :, ::-1].astype(np.float64))
  assert out["other"] is other


def test_grayscale_equal_channels_and_luma():
  clip = _random_clip(shape=(3, 20, 20, 3))
  out = _apply("grayscale(p=1.0)", {"video": clip})["video"]
  assert out.shape == clip.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(out[..., 0], out[..., 1])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])
  luma = clip.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  assert np.abs(out[..., 0] - luma).max() <= 0.51
  out_f = _apply("to_float|grayscale(p=1.0)", {"video": clip})["video"]
  np.testing.assert_allclose(out_f[..., 1], luma / 255, atol=1e-5)
  np.testing.assert_array_equal(_apply("grayscale(p=0.0)", {"video": clip})["video"], clip)


def test_grayscale_one_draw_for_all_keys():
  clip = _random_clip(shape=(1, 4, 4, 3))
  fn = ops.build("grayscale(keys=('video', 'video_masked'), p=0.5)")
  for seed in range(50):
    out = fn({"video": clip, "video_masked": clip}, _rng(seed))
    np.testing.assert_array_equal(out["video"], out["video_masked"])


# ------------------------------------------------------------------------------ erase / masks


def _erased_box(out):
  """Mask of zeroed pixels (the input is all 255), checked identical in every frame."""
  zero = np.all(out == 0, axis=-1)
  for t in range(1, zero.shape[0]):
    np.testing.assert_array_equal(zero[t], zero[0])
  return zero[0]


def test_random_erase_same_rectangle_and_area_fraction():
  clip = np.full((3, H, W, 3), 255, np.uint8)
  fn = ops.build("random_erase(p=1.0, scale=(0.02, 0.33), ratio=(0.3, 3.3))")
  fractions = []
  for seed in range(300):
    zero = _erased_box(fn({"video": clip}, _rng(seed))["video"])
    rows, cols = np.nonzero(zero.any(axis=1))[0], np.nonzero(zero.any(axis=0))[0]
    h, w = len(rows), len(cols)
    assert zero.sum() == h * w and np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
    # h and w are rounded from the drawn area, which moves the area by <= (h + w) / 2 + 1/4.
    slack = ((h + w) / 2 + 0.25) / (H * W)
    assert 0.02 - slack <= h * w / (H * W) <= 0.33 + slack
    assert 0.3 * 0.9 <= h / w <= 3.3 * 1.1
    fractions.append(h * w / (H * W))
  assert np.mean(fractions) == pytest.approx((0.02 + 0.33) / 2, abs=0.03)
  assert min(fractions) < 0.05 and max(fractions) > 0.28
  assert np.all(clip == 255)  # Input untouched.


def test_random_erase_rate_and_value():
  clip = np.full((2, 30, 30, 3), 255, np.uint8)
  fn = ops.build("random_erase(p=0.3, value=(1, 2, 3))")
  erased = 0
  for seed in range(1000):
    out = fn({"video": clip}, _rng(seed))["video"]
    if not np.array_equal(out, clip):
      erased += 1
      assert set(map(tuple, out[out[..., 0] != 255].reshape(-1, 3))) == {(1, 2, 3)}
  assert 240 <= erased <= 360  # Binomial(1000, 0.3): sd 14.5.


def test_time_mask_same_span_in_video_and_audio():
  video = np.full((T, 4, 4, 3), 7, np.uint8)
  mel = np.ones((4 * T, 80), np.float32)
  fn = ops.build("time_mask(max_frames=12, audio_ratio=4, p=1.0)")
  lengths = set()
  for seed in range(200):
    out = fn({"video": video, "audio": mel}, _rng(seed))
    v_zero = np.nonzero(np.all(out["video"] == 0, axis=(1, 2, 3)))[0]
    assert np.all((out["video"] == 0) | (out["video"] == 7))  # Nothing else changed.
    a_zero = np.nonzero(np.all(out["audio"] == 0, axis=1))[0]
    assert np.all((out["audio"] == 0) | (out["audio"] == 1))
    assert len(v_zero) <= 12 and np.all(np.diff(v_zero) == 1)
    expected = (4 * v_zero[:, None] + np.arange(4)).ravel()
    np.testing.assert_array_equal(a_zero, expected)
    lengths.add(len(v_zero))
  assert lengths == set(range(13))  # n ~ U{0, ..., 12}.
  assert np.all(video == 7) and np.all(mel == 1)


def test_time_mask_single_modality_and_mismatch():
  video = np.full((T, 2, 2, 3), 7, np.uint8)
  mel = np.ones((4 * T, 8), np.float32)
  out = _apply("time_mask(audio_key=None, max_frames=25, p=1.0)", {"video": video, "audio": mel}, 3)
  assert out["audio"] is mel and np.any(out["video"] == 0)
  out = _apply("time_mask(video_key=None, max_frames=25, p=1.0)", {"video": video, "audio": mel}, 3)
  assert out["video"] is video
  a_zero = np.nonzero(np.all(out["audio"] == 0, axis=1))[0]
  assert len(a_zero) % 4 == 0 and len(a_zero) > 0 and a_zero[0] % 4 == 0
  with pytest.raises(ValueError, match="time_mask"):
    _apply("time_mask(p=1.0)", {"video": video, "audio": mel[:-1]})
  assert _apply("time_mask(p=0.0)", {"video": video, "audio": mel})["video"] is video


def test_freq_mask_contiguous_run():
  mel = np.ones((100, 80), np.float32)
  fn = ops.build("freq_mask(max_bins=27, p=1.0)")
  lengths = set()
  for seed in range(300):
    out = fn({"audio": mel}, _rng(seed))["audio"]
    zero_cols = np.nonzero(np.all(out == 0, axis=0))[0]
    assert np.all((out == 0) | (out == 1))
    assert np.array_equal(out == 0, np.broadcast_to(np.isin(np.arange(80), zero_cols), out.shape))
    assert len(zero_cols) <= 27 and np.all(np.diff(zero_cols) == 1)
    lengths.add(len(zero_cols))
  assert lengths == set(range(28))
  assert np.all(mel == 1)


# ------------------------------------------------------------------------------ colour / dtype


def test_color_jitter_zero_is_identity():
  clip = _random_clip()
  out = _apply("color_jitter(hue=0.0, brightness=0.0)", {"video": clip})["video"]
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, clip)


def test_color_jitter_brightness_shifts_by_drawn_delta():
  clip = np.full((4, 10, 10, 3), 128, np.uint8)
  clip[..., 1] = 100
  deltas = []
  for seed in range(20):
    out = _apply("color_jitter(hue=0.0, brightness=0.1)", {"video": clip}, seed)["video"]
    replay = _rng(seed)
    replay.uniform(0.0, 0.0)  # Draw order: hue, then brightness.
    delta = replay.uniform(-0.1, 0.1) * 255
    shift = out.astype(int) - clip
    assert np.all(shift == shift.flat[0])  # Same shift for every pixel, channel and frame.
    assert abs(shift.flat[0] - delta) <= 0.5
    assert out.mean() - clip.mean() == pytest.approx(delta, abs=0.5)
    deltas.append(delta)
  assert min(deltas) < -10 and max(deltas) > 10


def test_color_jitter_matches_hsv_reference_and_clips():
  clip = _random_clip(shape=(2, 16, 16, 3))
  for seed in range(5):
    out = _apply("color_jitter(hue=0.5, brightness=0.3)", {"video": clip}, seed)["video"]
    replay = _rng(seed)
    dh, db = replay.uniform(-0.5, 0.5), replay.uniform(-0.3, 0.3)
    ref = [colorsys.hsv_to_rgb((h + dh) % 1.0, s, v)
           for h, s, v in (colorsys.rgb_to_hsv(*p) for p in clip.reshape(-1, 3) / 255.0)]
    ref = np.clip(np.array(ref) * 255 + db * 255, 0, 255).reshape(clip.shape)
    assert np.abs(out - ref).max() <= 0.51


def test_to_float_scale_and_per_channel_normalisation():
  clip = _random_clip(shape=(2, 5, 7, 3))
  out = _apply("to_float", {"video": clip})["video"]
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, clip / 255.0, rtol=1e-6)
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  out = _apply(f"to_float(keys=('video', 'v2'), mean={mean}, std={std})",
               {"video": clip, "v2": clip[:1]})
  expected = (clip / 255.0 - np.array(mean)) / np.array(std)
  np.testing.assert_allclose(out["video"], expected, atol=1e-5)
  np.testing.assert_allclose(out["v2"], expected[:1], atol=1e-5)
  out = _apply(f"to_float(mean={mean}, std={std})", {"video": np.asfortranarray(clip)})["video"]
  np.testing.assert_allclose(out, expected, atol=1e-5)  # Any memory layout.
  out = _apply("to_float(scale=1.0, mean=0.5, std=2.0)", {"video": clip})["video"]
  np.testing.assert_allclose(out, (clip - 0.5) / 2.0, atol=1e-4)
  assert clip.dtype == np.uint8


# ------------------------------------------------------------------------------ chains


_TRAIN_SPEC = (
    "random_crop(size=140, resize=112, out_key='video_masked')|random_crop(size=140, resize=112)"
    "|flip(keys=('video', 'video_masked'))|log_mel|color_jitter(key='video_masked')"
    "|grayscale(keys=('video_masked',), p=0.5)|random_erase(key='video_masked')"
    "|time_mask(video_key='video_masked', audio_key='audio')|freq_mask"
    "|to_float(keys=('video', 'video_masked'))")


def _train_example():
  t = np.arange(640 * T) / 16000
  return {"video": _random_clip(), "waveform": np.sin(2 * np.pi * 440 * t).astype(np.float32)}


def test_chain_from_spec_shapes_and_determinism():
  example = _train_example()
  keep = {k: v.copy() for k, v in example.items()}
  fn = ops.build(_TRAIN_SPEC)
  a, b, c = fn(example, _rng(5)), fn(example, _rng(5)), fn(example, _rng(6))
  assert a["video"].shape == a["video_masked"].shape == (T, 112, 112, 3)
  assert a["video"].dtype == np.float32 and a["audio"].shape == (4 * T, 80)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["video_masked"], c["video_masked"])
  for k in keep:  # Purity: the input example's arrays are untouched.
    np.testing.assert_array_equal(example[k], keep[k])


def test_ops_do_not_write_into_shared_buffers():
  video = _random_clip(shape=(4, 30, 30, 3))
  keep = video.copy()
  example = {"video": video, "video_masked": video, "audio": np.ones((16, 10), np.float32)}
  spec = ("flip(keys=('video', 'video_masked'), p=1.0)|grayscale(keys=('video_masked',), p=1.0)"
          "|random_erase(key='video_masked', p=1.0)|color_jitter(key='video_masked')"
          "|time_mask(video_key='video_masked', max_frames=4, p=1.0)|freq_mask(p=1.0)")
  out = _apply(spec, example)
  np.testing.assert_array_equal(video, keep)
  np.testing.assert_array_equal(out["video"], keep[:, :, ::-1])  # Clean view only flipped.


@pytest.mark.parametrize("spec,op", [
    ("random_crop(size=0)", "random_crop"),
    ("random_crop(resize=1.5)", "random_crop"),
    ("center_crop(size=-1)", "center_crop"),
    ("flip(p=1.5)", "flip"),
    ("flip(keys=())", "flip"),
    ("grayscale(p=-0.1)", "grayscale"),
    ("random_erase(scale=(0.5, 0.1))", "random_erase"),
    ("random_erase(ratio=(0.0, 1.0))", "random_erase"),
    ("random_erase(value='random')", "random_erase"),
    ("time_mask(video_key=None, audio_key=None)", "time_mask"),
    ("time_mask(max_frames=-1)", "time_mask"),
    ("time_mask(audio_ratio=0)", "time_mask"),
    ("freq_mask(max_bins=-2)", "freq_mask"),
    ("freq_mask(p=2)", "freq_mask"),
    ("color_jitter(hue=0.6)", "color_jitter"),
    ("color_jitter(brightness=-0.1)", "color_jitter"),
    ("to_float(std=(1.0, 0.0, 1.0))", "to_float"),
    ("to_float(mean=(0.1, 0.2), std=(1.0, 1.0, 1.0))", "to_float"),
])
def test_bad_arguments_raise_value_error_naming_the_op(spec, op):
  with pytest.raises(ValueError, match=f"^{op}: "):
    ops.build(spec)


def test_runtime_errors_name_the_op():
  with pytest.raises(ValueError, match="^color_jitter: "):
    _apply("color_jitter", {"video": np.zeros((1, 4, 4, 3), np.float32)})
  with pytest.raises(ValueError, match="^random_erase: "):
    _apply("random_erase(p=1.0, value=300)", {"video": np.zeros((1, 40, 40, 3), np.uint8)})
  with pytest.raises(KeyError, match="flip"):
    _apply("flip(keys=('video', 'nope'), p=1.0)", {"video": np.zeros((1, 4, 4, 3), np.uint8)})


def test_time_mask_fills_the_given_colour_and_checks_it():
  """RealForensics masks after normalisation (zeros = the mean colour): ``video_value``."""
  video = np.full((T, 2, 2, 3), 7, np.uint8)
  out = _apply("time_mask(audio_key=None, max_frames=25, p=1.0, video_value=(124, 116, 104))",
               {"video": video}, 3)["video"]
  masked = np.all(out != 7, axis=(1, 2, 3))
  assert masked.any() and np.all(out[masked] == np.array([124, 116, 104], np.uint8))
  with pytest.raises(ValueError, match=r"time_mask: video_value=300 does not fit"):
    _apply("time_mask(audio_key=None, p=1.0, video_value=300)", {"video": video}, 3)
  with pytest.raises(ValueError, match="video_value has 2 entries"):
    _apply("time_mask(audio_key=None, p=1.0, video_value=(1, 2))", {"video": video}, 3)


def test_color_jitter_applies_hue_and_brightness_each_with_its_own_probability():
  """FakeOut's code: brightness and hue each with p 0.5, independently."""
  clip = np.full((2, 4, 4, 3), (200, 60, 30), np.uint8)
  fn = ops.build("color_jitter(hue=0.2, brightness=0.2, hue_p=0.5, brightness_p=0.5)")
  kinds = {"none": 0, "some": 0}
  for seed in range(400):
    out = fn({"video": clip}, _rng(seed))["video"]
    kinds["none" if np.array_equal(out, clip) else "some"] += 1
  assert 60 < kinds["none"] < 140  # P(neither) = 1/4: 100 expected, sd 8.7.
  only_hue = ops.build("color_jitter(hue=0.2, brightness=0.2, hue_p=1.0, brightness_p=0.0)")
  out = only_hue({"video": clip}, _rng(3))["video"].astype(int)
  np.testing.assert_allclose(out.max(axis=-1) + out.min(axis=-1), 230, atol=2)  # HSL lightness.
  with pytest.raises(ValueError, match="color_jitter: hue_p=2"):
    ops.build("color_jitter(hue_p=2)")


def test_temporal_stride_takes_every_other_frame_and_the_first_frames_audio():
  """FakeOut: 63 frames → frames 0, 2, …, 62 and the audio of the first 32 frames (640 per
  frame at 16 kHz / 25 fps)."""
  clip = _coord_clip(num_frames=63)
  wave = np.arange(63 * 640, dtype=np.float32)
  out = _apply("temporal_stride(stride=2, audio_frames=32)", {"video": clip, "waveform": wave})
  np.testing.assert_array_equal(out["video"][:, 0, 0, 2], np.arange(0, 63, 2))
  np.testing.assert_array_equal(out["waveform"], wave[:32 * 640])
  kept = _apply("temporal_stride(stride=3)", {"video": clip, "waveform": wave})
  assert len(kept["video"]) == 21 and kept["waveform"] is wave
  with pytest.raises(ValueError, match="temporal_stride: audio_frames=64 exceeds"):
    _apply("temporal_stride(audio_frames=64)", {"video": clip, "waveform": wave})
  with pytest.raises(ValueError, match="'mask' has 2 frames"):
    _apply("temporal_stride(keys=('video', 'mask'))", {"video": clip, "mask": clip[:2]})


def test_fill_padding_colours_only_the_padded_frames():
  video = np.full((5, 2, 2, 3), 9, np.uint8)
  valid = np.array([True, True, True, False, False])
  out = _apply("fill_padding(value=(124, 116, 104))", {"video": video, "frame_valid": valid})
  assert np.all(out["video"][:3] == 9) and np.all(out["video"][3:] == (124, 116, 104))
  assert _apply("fill_padding(value=1)", {"video": video})["video"] is video
  with pytest.raises(ValueError, match="frame_valid has 4 entries"):
    _apply("fill_padding(value=1)", {"video": video, "frame_valid": valid[:4]})

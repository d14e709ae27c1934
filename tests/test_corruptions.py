"""DeeperForensics perturbations: the documented levels, monotone severity, determinism."""
import cv2
import numpy as np
import pytest

from input_pipeline import corruptions, ops


def _clip(t=6, h=48, w=40, seed=0):
  """A textured clip: smooth colour blobs plus fine detail, moving one pixel per frame."""
  rng = np.random.default_rng(seed)
  base = cv2.resize(rng.uniform(40, 215, (6, 5, 3)).astype(np.float32), (w + t, h),
                    interpolation=cv2.INTER_CUBIC)
  base += rng.normal(0, 12, base.shape).astype(np.float32)
  return np.stack([np.clip(base[:, i:i + w], 0, 255).astype(np.uint8) for i in range(t)])


def _apply(kind, severity, video, seed=0):
  chain = ops.build(f"corrupt(kind='{kind}', severity={severity})")
  return chain({"video": video}, np.random.default_rng(seed))["video"]


def _mse(a, b):
  return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


@pytest.mark.parametrize("kind", sorted(corruptions.LEVELS))
def test_shape_dtype_and_monotone_severity(kind):
  video = _clip()
  outs = [_apply(kind, s, video) for s in range(1, 6)]
  for out in outs:
    assert out.shape == video.shape and out.dtype == np.uint8
  errors = [_mse(o, video) for o in outs]
  assert errors[0] > 0
  assert all(b >= a * 0.98 for a, b in zip(errors, errors[1:])), errors
  assert errors[-1] > 1.25 * errors[0], errors
  np.testing.assert_array_equal(outs[2], _apply(kind, 3, video))  # Deterministic given rng.


def test_saturation_zero_is_grey_and_contrast_is_a_scale():
  video = _clip()
  grey = _apply("saturation", 5, video).astype(int)
  assert np.abs(grey[..., 0] - grey[..., 1]).max() <= 2
  assert np.abs(grey[..., 1] - grey[..., 2]).max() <= 2
  np.testing.assert_array_equal(_apply("contrast", 1, video),
                                np.clip(np.rint(video * np.float32(0.85)), 0, 255))


def test_blocks_are_grey_and_shared_by_all_frames():
  video = np.zeros((4, 64, 64, 3), np.uint8)
  out = _apply("block", 1, video)
  hit = np.all(out == 128, axis=-1)
  assert hit.any() and np.all(hit == hit[0])  # Same occluder positions in every frame.
  assert hit[0].sum() <= 16 * (64 // 16) ** 2
  assert not np.array_equal(_apply("block", 1, video, seed=1), out)  # Positions from the rng.


def test_noise_variance_matches_the_level():
  video = np.full((4, 64, 64, 3), 128, np.uint8)
  out = _apply("noise", 3, video)
  ycrcb = corruptions._ycrcb(out).astype(np.float64) / 255.0
  measured = ycrcb.reshape(-1, 3).var(axis=0)
  np.testing.assert_allclose(measured, 0.005, rtol=0.15)  # Rounding to uint8 adds ~1/12/255².


def test_blur_and_pixelation_structure():
  video = _clip(h=48, w=48)
  assert _apply("blur", 1, np.full_like(video, 77)).max() == 77  # A flat image stays flat.
  lap = lambda v: np.mean([np.abs(cv2.Laplacian(f, cv2.CV_32F)).mean() for f in v])
  assert lap(_apply("blur", 1, video)) < 0.5 * lap(video)
  pix = _apply("pixelation", 2, video)  # Factor 3 on 48 px: constant 3×3 cells.
  cells = pix.reshape(video.shape[0], 16, 3, 16, 3, 3)
  assert np.all(cells == cells[:, :, :1, :, :1])


def test_compression_is_a_real_codec_round_trip():
  video = _clip(t=10, h=49, w=37)  # Odd sizes: padded for yuv420p and cropped back.
  outs = [_apply("compression", s, video) for s in (1, 5)]
  psnr = [10 * np.log10(255 ** 2 / _mse(o, video)) for o in outs]
  assert outs[0].shape == video.shape
  assert 20 < psnr[0] < 60 and psnr[1] < psnr[0], psnr


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="kind='jpeg' is invalid; allowed"):
    ops.build("corrupt(kind='jpeg', severity=1)")
  with pytest.raises(ValueError, match="severity=6 is invalid"):
    ops.build("corrupt(kind='blur', severity=6)")
  with pytest.raises(ValueError, match="must be uint8"):
    _apply("blur", 1, np.zeros((2, 8, 8, 3), np.float32))

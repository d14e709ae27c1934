"""I2G (PCL + I2G §3.2, §4.2): determinism, mask faithfulness, mask geometry, donor bank, DSSIM.

Frames and 68-point landmarks come from the embedded synthetic dataset, so the hulls, alignments
and donor distances are those of face-like data rather than of random points.
"""
import pickle
import time

import cv2
import ml_collections
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from input_pipeline import i2g
from input_pipeline.synthetic import dataset

SIZE = 256  # The paper's crop size: σ and the blur kernel are in its pixels.
NO_AUG = i2g.I2GConfig(post_augment=False, augment_all=False)


def _rng(seed=0):
  return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def faces():
  """Real records of 4 identities × 2 videos × 4 frames at 256 px (~1 s to generate)."""
  config = dataset.preset("tiny", resolution=SIZE, families=(), identities=(4, 1, 1),
                          num_frames=4)
  return list(dataset.generate_split(config, "train"))


@pytest.fixture(scope="module")
def forgeries():
  """Reals and their fakes (every family, with ground-truth masks) at 96 px."""
  config = dataset.preset("tiny", identities=(2, 1, 1), videos_per_identity=1, num_frames=2,
                          resolution=96)
  return list(dataset.generate_split(config, "train"))


def _pair(faces, t=0, s=4):
  """(target frame, its landmarks, donor frame, its landmarks) of two different identities."""
  assert faces[t]["identity"] != faces[s]["identity"]
  return faces[t]["frames"][0], faces[t]["landmarks"][0], faces[s]["frames"][1], \
      faces[s]["landmarks"][1]


class _Records:
  """A picklable record(i) callable (pickles as a name, like a random-access source would)."""
  store = {}

  def __init__(self, name, records):
    _Records.store[name] = records
    self.name = name
    self.calls = []

  def __call__(self, i):
    self.calls.append(i)
    return _Records.store[self.name][i]

  def __getstate__(self):
    return {"name": self.name, "calls": []}


def _bank(faces, **config):
  records = _Records("faces", faces)
  bank = i2g.DonorBank(records, range(len(faces)), [r["identity"] for r in faces],
                       i2g.I2GConfig(**config))
  records.calls.clear()
  return bank, records


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("method", i2g.BLEND_METHODS)
def test_generate_same_seed_same_bytes_different_seed_different(faces, method):
  target, target_lms, source, source_lms = _pair(faces)
  config = i2g.I2GConfig(methods=(method,))
  threads = cv2.getNumThreads()
  try:
    for seed in range(2):
      cv2.setNumThreads(threads)
      a = i2g.generate(target, target_lms, source, source_lms, _rng(seed), config)
      cv2.setNumThreads(1)  # As in a grain worker: the thread count must not matter.
      b = i2g.generate(target, target_lms, source, source_lms, _rng(seed), config)
      assert a[0].dtype == np.uint8 and a[0].shape == target.shape
      assert a[1].dtype == np.float32 and a[1].shape == target.shape[:2]
      assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
      c = i2g.generate(target, target_lms, source, source_lms, _rng(seed + 100), config)
      assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])
  finally:
    cv2.setNumThreads(threads)


def test_generate_never_writes_into_its_inputs(faces):
  inputs = _pair(faces)
  keep = [np.array(x, copy=True) for x in inputs]
  for seed in range(5):
    i2g.generate(*inputs, _rng(seed))
  for x, k in zip(inputs, keep):
    np.testing.assert_array_equal(x, k)


# ----------------------------------------------------------------------------- align / hull


def test_similarity_transform_recovers_a_similarity(faces):
  pts = faces[0]["landmarks"][0].astype(np.float64)
  angle, scale, shift = 0.3, 1.7, np.array([12.5, -40.0])
  rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  m = i2g.similarity_transform(pts, pts @ rot.T + shift)
  np.testing.assert_allclose(m, np.c_[rot, shift], atol=1e-9)


def test_align_source_puts_the_donor_face_on_the_target(faces):
  target, target_lms, source, source_lms = _pair(faces)
  aligned = i2g.align_source(source, source_lms, target_lms, target.shape[:2])
  assert aligned.shape == target.shape and aligned.dtype == np.uint8
  m = i2g.similarity_transform(source_lms, target_lms)
  moved = source_lms @ m[:, :2].T + m[:, 2]
  # Residual of the fit (shape differences between identities) is a few px on a 256 crop.
  assert np.sqrt(np.mean(np.sum((moved - target_lms) ** 2, -1))) < 8.0
  # The warp is that transform: the donor's pixels land where its moved landmarks say.
  for (x, y), (u, v) in zip(source_lms[::7], moved[::7]):
    want = source[int(round(y)), int(round(x))].astype(int)
    got = aligned[int(round(v)), int(round(u))].astype(int)
    assert np.abs(want - got).max() < 60  # Within a pixel on textured skin.
  assert np.abs(aligned.astype(int) - target).mean() > 5  # And it is not the target.


def test_hull_mask_covers_the_landmark_polygon(faces):
  for rec in faces[::2]:
    lms = rec["landmarks"][0]
    mask = i2g.hull_mask(lms, (SIZE, SIZE))
    assert mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, 1.0}
    hull = cv2.convexHull(lms.astype(np.float32))
    # Every landmark (pulled 1 px towards the centre) is inside; area matches the polygon's.
    centre = lms.mean(0)
    inner = lms + (centre - lms) / np.linalg.norm(centre - lms, axis=1, keepdims=True)
    xi, yi = np.round(inner).astype(int).T
    assert np.all(mask[yi, xi] == 1.0)
    area = cv2.contourArea(hull)
    assert abs(mask.sum() - area) < 0.02 * area
    # Nothing outside the polygon grown by 1.5 px.
    ys, xs = np.nonzero(mask)
    dist = np.array([cv2.pointPolygonTest(hull, (float(x), float(y)), True)
                     for x, y in zip(xs[::17], ys[::17])])
    assert dist.min() > -1.5


# ----------------------------------------------------------------------------- deformation / blur


def _boundary(mask):
  inside = (mask >= 0.5).astype(np.uint8)
  return inside - cv2.erode(inside, np.ones((3, 3), np.uint8))


def test_displacement_field_matches_the_paper():
  """σ ~ U[6, 12] px, node displacements ~ N(0, σ²), smooth (bicubic) in between."""
  sigmas, nodes = [], []
  centres = (np.arange(4) * SIZE // 4 + SIZE // 8)  # The 4×4 nodes of cv2's INTER_CUBIC.
  for seed in range(200):
    field, sigma = i2g.sample_displacement((SIZE, SIZE), _rng(seed))
    assert field.shape == (SIZE, SIZE, 2) and field.dtype == np.float32
    sigmas.append(sigma)
    nodes.append(field[centres][:, centres] / sigma)
  assert 6.0 <= min(sigmas) and max(sigmas) <= 12.0 and np.std(sigmas) > 1.0
  assert abs(np.std(nodes) - 1.0) < 0.05  # Unit normal once divided by σ.
  # Smooth: neighbouring pixels differ by far less than σ.
  assert np.abs(np.diff(field, axis=0)).max() < 0.1 * sigma


def test_elastic_deform_keeps_area_and_moves_boundary_by_about_sigma(faces):
  hull = i2g.hull_mask(faces[0]["landmarks"][0], (SIZE, SIZE))
  to_old_boundary = cv2.distanceTransform(1 - _boundary(hull), cv2.DIST_L2, 5)
  ratios, shifts = [], []
  for seed in range(20):
    field, sigma = i2g.sample_displacement((SIZE, SIZE), _rng(seed))
    deformed = i2g.warp_mask(hull, field)
    assert deformed.dtype == np.float32 and 0 <= deformed.min() and deformed.max() <= 1
    ratios.append((deformed >= 0.5).sum() / hull.sum())
    moved = to_old_boundary[_boundary(deformed) > 0]
    shifts.append(moved.mean() / sigma)
    # No boundary pixel moves further than the largest displacement (+ rasterisation).
    assert moved.max() <= np.linalg.norm(field, axis=-1).max() + 1.5
  # Measured over 100 seeds: area ratio in [0.78, 1.17], mean shift 0.27σ–1.1σ (median 0.57σ).
  assert np.all(np.abs(np.array(ratios) - 1) < 0.3) and abs(np.median(ratios) - 1) < 0.05
  assert 0.3 < np.median(shifts) < 1.0
  # The same draws at σ = 4 and σ = 12 px move the boundary about 3x as far.
  small, large = [], []
  for seed in range(10):
    for sigma, out in ((4.0, small), (12.0, large)):
      deformed = i2g.elastic_deform(hull, _rng(seed), (sigma, sigma))
      out.append(to_old_boundary[_boundary(deformed) > 0].mean())
  assert 2.0 < np.mean(large) / np.mean(small) < 4.0


def test_elastic_deform_with_zero_sigma_is_the_identity(faces):
  hull = i2g.hull_mask(faces[0]["landmarks"][0], (SIZE, SIZE))
  np.testing.assert_array_equal(i2g.elastic_deform(hull, _rng(), (0.0, 0.0)), hull)


def test_blur_mask_even_kernel_is_centred_and_17_taps_wide():
  taps = i2g.gaussian_taps(16)
  assert taps.shape == (17,) and abs(taps.sum() - 1) < 1e-6
  np.testing.assert_allclose(taps, taps[::-1], atol=1e-7)  # Symmetric: no half-pixel shift.
  # = size-16 Gaussian (cv2's σ rule, 2.75 px) convolved with [½, ½].
  np.testing.assert_allclose(taps, np.convolve(cv2.getGaussianKernel(16, 0).ravel(), [.5, .5]),
                             atol=1e-6)
  np.testing.assert_allclose(i2g.gaussian_taps(15), cv2.getGaussianKernel(15, 0).ravel(),
                             atol=1e-7)
  impulse = np.zeros((41, 41), np.float32)
  impulse[20, 20] = 1
  out = i2g.blur_mask(impulse, 16)
  ys, xs = np.nonzero(out > 0)
  assert (ys.min(), ys.max(), xs.min(), xs.max()) == (12, 28, 12, 28)  # 17 px, centred.
  assert abs(out.sum() - 1) < 1e-5
  # A disc keeps its centre of mass, values stay in [0, 1], flat regions stay flat.
  disc = np.zeros((64, 64), np.float32)
  cv2.circle(disc, (30, 33), 12, 1.0, -1)
  blurred = i2g.blur_mask(disc, 16)
  y, x = np.mgrid[:64, :64]
  assert abs((blurred * x).sum() / blurred.sum() - (disc * x).sum() / disc.sum()) < 1e-3
  assert abs((blurred * y).sum() / blurred.sum() - (disc * y).sum() / disc.sum()) < 1e-3
  assert blurred.min() >= 0 and blurred.max() <= 1 and blurred[33, 30] == pytest.approx(1, 1e-6)
  assert 0 < blurred[33, 30 + 12] < 1  # The edge is soft.


# ----------------------------------------------------------------------------- blending


def _soft_mask(target_lms, seed=0):
  hull = i2g.hull_mask(target_lms, (SIZE, SIZE))
  return i2g.blur_mask(i2g.elastic_deform(hull, _rng(seed)), 16)


@pytest.mark.parametrize("method", ["alpha", "hard", "color_transfer"])
def test_blend_is_exactly_the_target_where_the_mask_is_zero(faces, method):
  target, target_lms, source, source_lms = _pair(faces)
  aligned = i2g.align_source(source, source_lms, target_lms, target.shape[:2])
  soft = _soft_mask(target_lms)
  fake, mask = i2g.blend(target, aligned, soft, method)
  assert mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
  np.testing.assert_array_equal(fake[mask == 0], target[mask == 0])
  assert (mask > 0).mean() > 0.2 and (mask == 1).mean() > 0.1  # The face is much of the crop.
  if method == "color_transfer":
    assert np.abs(fake.astype(int) - target)[mask == 1].mean() > 3
  else:
    np.testing.assert_array_equal(fake[mask == 1], aligned[mask == 1])
  if method == "hard":
    np.testing.assert_array_equal(mask, (soft >= 0.5).astype(np.float32))
  else:
    np.testing.assert_array_equal(mask, soft)


def _texture_shift(fake, source, inner):
  """The (dy, dx) in {-1, 0, 1}² by which the source's texture (Laplacian) best matches the
  fake's inside `inner` (bool [H, W]): (0, 0) when the paste landed in place."""
  lap_fake = cv2.Laplacian(fake.astype(np.float32), cv2.CV_32F)[inner]
  scores = {}
  for dy in (-1, 0, 1):
    for dx in (-1, 0, 1):
      shifted = np.roll(source, (dy, dx), axis=(0, 1)).astype(np.float32)
      lap = cv2.Laplacian(shifted, cv2.CV_32F)[inner]
      scores[dy, dx] = np.corrcoef(lap_fake.ravel(), lap.ravel())[0, 1]
  return max(scores, key=scores.get)


@pytest.mark.parametrize("method", ["poisson_normal", "poisson_mixed"])
def test_poisson_blend_spill_is_a_smooth_offset_inside_the_box(faces, method):
  """cv2 solves over the mask's bounding box, so pixels just outside the region move too; the
  move keeps the target's gradients (a smooth offset), i.e. no donor texture leaks out."""
  for t, s in ((0, 4), (2, 6), (6, 3)):
    target, target_lms, source, source_lms = _pair(faces, t, s)
    aligned = i2g.align_source(source, source_lms, target_lms, target.shape[:2])
    soft = _soft_mask(target_lms, seed=t)
    fake, mask = i2g.blend(target, aligned, soft, method)
    region = mask > 0
    assert set(np.unique(mask)) == {0.0, 1.0}
    np.testing.assert_array_equal(region[1:-1, 1:-1], (soft >= 0.5)[1:-1, 1:-1])
    diff = fake.astype(np.float32) - target
    ys, xs = np.nonzero(region)
    box = np.zeros_like(region)
    box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
    assert not np.any(diff[~box])  # Nothing changes outside the bounding box.
    outside = cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, 5) > 3
    texture = np.abs(cv2.Laplacian(diff, cv2.CV_32F)).max(-1)
    # Measured: 0.05–0.4 outside vs 6–20 inside.
    assert texture[outside].mean() < 0.1 * texture[region].mean()
    assert np.abs(diff).max(-1)[~region].mean() < 2.0  # Mean spill, in levels.
    assert np.abs(diff).max(-1)[region].mean() > 5.0
    # The donor's texture lands exactly where it was aligned (cv2's centre convention).
    inner = cv2.erode(region.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert _texture_shift(fake, aligned, inner) == (0, 0)


@pytest.mark.parametrize("method", ["poisson_normal", "poisson_mixed"])
def test_poisson_blend_region_touching_the_frame_edge_stays_in_place(method):
  textured = [cv2.GaussianBlur(_rng(k).integers(0, 256, (96, 96, 3), dtype=np.uint8), (5, 5), 0)
              for k in (1, 2)]
  target, source = textured
  mask = np.zeros((96, 96), np.float32)
  mask[:60, :61] = 1  # Touches the top and left edges.
  fake, out_mask = i2g.blend(target, source, mask, method)
  assert out_mask[0].sum() == 0 and out_mask[:, 0].sum() == 0 and out_mask[1:60, 1:61].all()
  inner = np.zeros(mask.shape, bool)
  inner[6:54, 6:55] = True
  assert _texture_shift(fake, source, inner) == (0, 0)


def test_blend_draws_every_method_and_rejects_unknown(faces):
  target, target_lms, source, source_lms = _pair(faces)
  aligned = i2g.align_source(source, source_lms, target_lms, target.shape[:2])
  soft = _soft_mask(target_lms)
  outputs = {i2g.blend(target, aligned, soft, None, _rng(seed))[0].tobytes()
             for seed in range(30)}
  assert len(outputs) == len(i2g.BLEND_METHODS)
  with pytest.raises(ValueError, match="unknown method 'laplacian'.*alpha"):
    i2g.blend(target, aligned, soft, "laplacian")


@pytest.mark.parametrize("method", ["alpha", "hard"])
def test_generate_without_augmentation_changes_only_masked_pixels(faces, method):
  target, target_lms, source, source_lms = _pair(faces)
  config = i2g.I2GConfig(methods=(method,), post_augment=False)
  for seed in range(4):
    fake, mask = i2g.generate(target, target_lms, source, source_lms, _rng(seed), config)
    np.testing.assert_array_equal(fake[mask == 0], target[mask == 0])
    assert np.any(fake[mask > 0] != target[mask > 0])


def test_post_augment_is_per_clip_and_keeps_shape(faces):
  clip = np.repeat(faces[0]["frames"][:1], 3, axis=0)
  changed = 0
  for seed in range(12):
    out = i2g.post_augment(clip, _rng(seed))
    assert out.shape == clip.shape and out.dtype == np.uint8
    changed += not np.array_equal(out, clip)
    # Same parameters for every frame: identical frames differ only by the (zero-mean, per
    # pixel) noise, never by a colour shift or another erased box.
    for frame in out[1:]:
      diff = frame.astype(int) - out[0]
      assert np.abs(diff.mean(axis=(0, 1))).max() < 1.0 and (np.abs(diff) > 60).mean() < 0.001
  assert changed >= 8  # P(no augmentation at all) = 0.5·0.5·0.7·0.5·0.8 = 7 %.


# ----------------------------------------------------------------------------- donor bank


def test_landmark_distance_ignores_translation_and_scale_not_rotation(faces):
  lms = faces[0]["landmarks"][0].astype(np.float64)
  assert i2g.landmark_distance(lms, 2.5 * lms + [30, -7]) < 1e-6
  c = lms.mean(0)
  rot = np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]])
  assert i2g.landmark_distance(lms, (lms - c) @ rot.T + c) > 0.15


def test_donor_bank_other_identity_within_epsilon(faces):
  bank, records = _bank(faces, epsilon=0.09)
  assert len(bank) == len(faces) * 4  # donor_frames=8 capped by the 4 frames per record.
  assert records.calls == []  # Built from landmarks; frames are fetched only when picked.
  chosen = set()
  for k, rec in enumerate(faces):
    for t in range(4):
      lms = rec["landmarks"][t]
      frame, donor_lms = bank.pick(lms, rec["identity"], _rng(10 * k + t))
      donor = faces[records.calls[-1]]
      assert donor["identity"] != rec["identity"]
      assert i2g.landmark_distance(lms, donor_lms) < 0.09
      f = int(np.flatnonzero(np.all(donor["landmarks"] == donor_lms, axis=(1, 2)))[0])
      np.testing.assert_array_equal(frame, donor["frames"][f])
      chosen.add((records.calls[-1], f))
  assert len(records.calls) == 4 * len(faces)  # One fetch per pick.
  assert bank.stats() == {"picks": 4 * len(faces), "misses": 0}
  assert len(chosen) > 8  # Random among the qualifying frames, not always the nearest.


def test_donor_bank_pick_is_deterministic_given_rng(faces):
  bank, _ = _bank(faces, epsilon=0.12)
  lms = faces[0]["landmarks"][2]
  a = [bank.pick(lms, "id000", _rng(s))[1] for s in range(5)]
  b = [bank.pick(lms, "id000", _rng(s))[1] for s in range(5)]
  assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_donor_bank_miss_serves_the_nearest_and_counts(faces):
  bank, records = _bank(faces, epsilon=1e-4)
  lms = faces[0]["landmarks"][0]
  _, donor_lms = bank.pick(lms, faces[0]["identity"], _rng())
  others = [r for r in faces if r["identity"] != faces[0]["identity"]]
  nearest = min(i2g.landmark_distance(lms, r["landmarks"]).min() for r in others)
  assert i2g.landmark_distance(lms, donor_lms) == pytest.approx(nearest, abs=1e-5)
  assert faces[records.calls[-1]]["identity"] != faces[0]["identity"]
  assert bank.stats() == {"picks": 1, "misses": 1}


def test_donor_bank_miss_raises_when_asked_and_single_identity_fails(faces):
  bank, _ = _bank(faces, epsilon=1e-4, on_miss="error")
  with pytest.raises(i2g.NoDonorError, match="no frame of another identity within epsilon"):
    bank.pick(faces[0]["landmarks"][0], faces[0]["identity"], _rng())
  alone = [r for r in faces if r["identity"] == "id000"]
  bank = i2g.DonorBank(lambda i: alone[i], range(len(alone)), ["id000"] * len(alone))
  with pytest.raises(i2g.NoDonorError, match="every candidate is identity 'id000'"):
    bank.pick(alone[0]["landmarks"][0], "id000", _rng())


def test_donor_bank_pickles_cheaply_and_picks_the_same(faces):
  bank, _ = _bank(faces, epsilon=0.12)
  bank.pick(faces[0]["landmarks"][0], "id000", _rng())
  blob = pickle.dumps(bank)
  # Landmarks (136 float32 per frame) plus small index arrays; no frames.
  assert len(blob) < len(bank) * (136 * 4 + 32) + 2048
  copy = pickle.loads(blob)
  assert copy.stats() == {"picks": 0, "misses": 0}  # Counters are per process.
  lms = faces[3]["landmarks"][1]
  for seed in range(3):
    a, b = bank.pick(lms, "id001", _rng(seed)), copy.pick(lms, "id001", _rng(seed))
    np.testing.assert_array_equal(a[0], b[0])


def test_donor_bank_reads_jpeg_frames(faces):
  """Parsed records keep frames as JPEG bytes (records.parse); the bank decodes only the donor."""
  def jpeg(frame):
    return cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()

  encoded = [dict(r, frames=[jpeg(f) for f in r["frames"]]) for r in faces]
  calls = []
  bank = i2g.DonorBank(lambda i: calls.append(i) or encoded[i], range(len(encoded)),
                       [r["identity"] for r in encoded], {"epsilon": 0.12})
  frame, donor_lms = bank.pick(faces[0]["landmarks"][0], "id000", _rng())
  donor = faces[calls[-1]]
  f = int(np.flatnonzero(np.all(donor["landmarks"] == donor_lms, axis=(1, 2)))[0])
  assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
  assert np.abs(frame.astype(int) - donor["frames"][f]).mean() < 3  # RGB order kept.


# ----------------------------------------------------------------------------- DSSIM masks


def test_ssim_map_matches_skimage(faces, forgeries):
  pairs = [(faces[0]["frames"][0], faces[4]["frames"][1]),
           (forgeries[1]["frames"][0], forgeries[0]["frames"][0]),  # A fake and its real.
           (_rng().integers(0, 256, (40, 56, 3), dtype=np.uint8),
            _rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8))]
  for x, y in pairs:
    _, want = structural_similarity(x, y, channel_axis=-1, data_range=255, full=True,
                                    gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    got = i2g.ssim_map(x, y)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_dssim_mask_of_an_identical_pair_is_zero(faces):
  frame = faces[0]["frames"][0]
  mask = i2g.dssim_mask(frame, frame.copy())
  assert mask.dtype == np.float32 and mask.shape == frame.shape[:2] and not mask.any()


def test_dssim_mask_finds_a_pasted_square(faces):
  real = faces[0]["frames"][0]
  fake = real.copy()
  fake[80:160, 90:170] = faces[4]["frames"][0][80:160, 90:170]
  mask = i2g.dssim_mask(fake, real)
  square = np.zeros(mask.shape, bool)
  square[80:160, 90:170] = True
  assert np.all(mask[square] == 1)
  # Beyond the square only within the reach of the 11 px SSIM window and the 11 px blur.
  near = cv2.dilate(square.astype(np.uint8), np.ones((17, 17), np.uint8)) > 0
  assert not mask[~near].any()
  assert square.sum() / (mask > 0).sum() > 0.75


def test_dssim_mask_recovers_the_synthetic_forgery_masks(forgeries):
  """Calibration of the defaults (blur 11, threshold 0.03) against ground truth."""
  reals = {r["video_id"]: r for r in forgeries if r["label"] == 0}
  ious, false_alarms = {}, []
  for fake in forgeries:
    if fake["label"] == 0:
      continue
    real = reals[fake["video_id"].rsplit("/", 1)[0]]
    for t in range(2):
      mask = i2g.dssim_mask(fake["frames"][t], real["frames"][t]) > 0
      truth = fake["mask"][t] >= 128
      ious.setdefault(fake["manipulation"], []).append((mask & truth).sum() / (mask | truth).sum())
      false_alarms.append(mask[fake["mask"][t] == 0].mean())  # Where nothing was touched.
  iou = {k: np.mean(v) for k, v in ious.items()}
  # Measured: swaps 0.75 / 0.85; the subtle families (small, low-contrast changes) 0.3–0.45.
  assert iou["graphics_swap"] > 0.75 and iou["autoencoder_swap"] > 0.65, iou
  assert iou["reenactment"] > 0.25 and iou["neural_texture"] > 0.2, iou
  assert np.mean(false_alarms) < 0.01


# ----------------------------------------------------------------------------- apply_i2g


def _example(rec, frames=slice(0, 3)):
  video = rec["frames"][frames]
  return {"video": video, "landmarks": rec["landmarks"][frames], "identity": rec["identity"],
          "label": np.int32(rec["label"]), "manipulation": rec["manipulation"],
          "mask": np.zeros(video.shape[:3], np.uint8)}


def test_apply_i2g_p1_makes_a_labelled_fake_clip(faces):
  bank, _ = _bank(faces)
  example = _example(faces[0])
  keep = {k: np.array(v, copy=True) for k, v in example.items()}
  out = i2g.apply_i2g(example, bank, _rng(), p=1.0, config=NO_AUG)
  assert out["label"] == 1 and out["label"].dtype == np.int32
  assert out["manipulation"] == "i2g"
  assert out["mask"].dtype == np.float32 and out["mask"].shape == (3, SIZE, SIZE)
  assert out["video"].shape == example["video"].shape and out["video"].dtype == np.uint8
  assert all((out["mask"][t] > 0).mean() > 0.2 for t in range(3))
  outside = out["mask"] == 0
  if not np.array_equal(out["video"][outside], example["video"][outside]):
    assert np.abs(out["video"].astype(int) - example["video"])[outside].mean() < 2  # Poisson.
  for k, v in keep.items():  # Pure.
    np.testing.assert_array_equal(example[k], v)


def test_apply_i2g_one_donor_field_and_method_per_clip(faces):
  """A static clip stays static: the same donor, deformation and blend in every frame."""
  bank, _ = _bank(faces)
  example = _example(faces[0], frames=[0, 0, 0])
  for seed in range(4):
    out = i2g.apply_i2g(example, bank, _rng(seed), p=1.0, config=NO_AUG)
    for t in (1, 2):
      np.testing.assert_array_equal(out["mask"][t], out["mask"][0])
      np.testing.assert_array_equal(out["video"][t], out["video"][0])


def test_apply_i2g_p0_and_unselected_reals_pass_through(faces):
  bank, _ = _bank(faces)
  example = _example(faces[0])
  out = i2g.apply_i2g(example, bank, _rng(), p=0.0, config=NO_AUG)
  assert out["label"] == 0 and out["manipulation"] == "real"
  assert out["mask"].dtype == np.float32 and not out["mask"].any()
  np.testing.assert_array_equal(out["video"], example["video"])
  # augment_all: the pass-through real gets the same augmentation distribution as fakes.
  outs = [i2g.apply_i2g(example, bank, _rng(s), p=0.0) for s in range(6)]
  assert all(o["label"] == 0 and not o["mask"].any() for o in outs)
  assert any(not np.array_equal(o["video"], example["video"]) for o in outs)


def test_apply_i2g_selects_about_p_of_reals(faces):
  small = [dict(r, frames=r["frames"][:, ::4, ::4], landmarks=r["landmarks"] / 4)
           for r in faces]  # 64 px: this test counts labels, not pixels.
  bank = i2g.DonorBank(lambda i: small[i], range(len(small)), [r["identity"] for r in small])
  config = NO_AUG.scaled(64)
  labels = [int(i2g.apply_i2g(_example(small[s % 8], slice(0, 1)), bank, _rng(s), 0.3,
                              config)["label"]) for s in range(200)]
  assert 0.2 < np.mean(labels) < 0.4  # Binomial(200, 0.3): sd 0.032.


def test_apply_i2g_masks_of_dataset_fakes(forgeries):
  bank = None  # Fakes never reach the bank.
  fake = next(r for r in forgeries if r["manipulation"] == "graphics_swap")
  real = next(r for r in forgeries if r["video_id"] == fake["video_id"].rsplit("/", 1)[0])
  example = _example(fake, slice(0, 2))
  example["mask"] = fake["mask"][:2]  # A record that carries its own mask (uint8 0..255).
  out = i2g.apply_i2g(example, bank, _rng(), p=1.0, config=NO_AUG)
  assert out["label"] == 1 and out["manipulation"] == "graphics_swap"
  np.testing.assert_allclose(out["mask"], fake["mask"][:2] / 255.0, atol=1e-7)
  np.testing.assert_array_equal(out["video"], example["video"])
  del example["mask"]  # No mask: DSSIM against the paired real clip.
  example["real_video"] = real["frames"][:2]
  out = i2g.apply_i2g(example, bank, _rng(), p=1.0, config=NO_AUG)
  expected = np.stack([i2g.dssim_mask(f, r) for f, r in zip(fake["frames"][:2],
                                                              real["frames"][:2])])
  np.testing.assert_array_equal(out["mask"], expected)
  del example["real_video"]
  with pytest.raises(KeyError, match="needs `mask` or its paired real clip"):
    i2g.apply_i2g(example, bank, _rng(), p=1.0, config=NO_AUG)


def test_apply_i2g_real_without_landmarks_fails_clearly(faces):
  bank, _ = _bank(faces)
  example = _example(faces[0])
  del example["landmarks"]
  with pytest.raises(KeyError, match="needs 'landmarks'"):
    i2g.apply_i2g(example, bank, _rng(), p=1.0)


# ----------------------------------------------------------------------------- config / speed


def test_config_rejects_unknown_keys_and_bad_values():
  with pytest.raises(KeyError, match=r"unknown I2G config key\(s\) \['sigma'\]; valid: .*"):
    i2g.as_config({"sigma": 3})
  with pytest.raises(ValueError, match="methods"):
    i2g.I2GConfig(methods=("alpha", "warp"))
  with pytest.raises(ValueError, match="on_miss"):
    i2g.I2GConfig(on_miss="skip")
  config = i2g.as_config(ml_collections.ConfigDict({"epsilon": 0.2, "methods": ["alpha"]}))
  assert config.epsilon == 0.2 and config.methods == ("alpha",)
  scaled = i2g.I2GConfig().scaled(128)
  assert scaled.sigma_range == (3.0, 6.0) and scaled.blur_kernel == 8


def test_throughput_256(faces, capsys):
  """Printed, not asserted (shared CI cores); benchmarks/i2g.py has the per-stage breakdown."""
  threads = cv2.getNumThreads()
  cv2.setNumThreads(1)
  try:
    target, target_lms, source, source_lms = _pair(faces)
    i2g.generate(target, target_lms, source, source_lms, _rng())
    n, t0 = 20, time.perf_counter()
    for seed in range(n):
      i2g.generate(target, target_lms, source, source_lms, _rng(seed))
    rate = n / (time.perf_counter() - t0)
  finally:
    cv2.setNumThreads(threads)
  with capsys.disabled():
    print(f"\nI2G generate, 256x256, all blend methods + post-augment: {rate:.1f} images/s "
          f"(one thread)")

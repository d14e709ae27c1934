"""Face detection, tracking, alignment and the framing presets.

MTCNN on a real photograph (skimage's astronaut, integration): the photo is moved, scaled and
rotated over the frames of an mp4; the aligned crops must hold the face still — MTCNN run again
on the crops finds the eyes at the same place in every frame.

The presets (fast, no detector): constructed 68-point landmark sequences and a synthetic mean
face; the authors' rules (RealForensics' extract_faces.py, FakeOut's FacePipe) computed by hand.
"""
import numpy as np
import pytest

from input_pipeline.preprocess import align, decode, encode, faces, presets, tracking, video

integration = pytest.mark.integration  # MTCNN (TensorFlow), mp4 round trips, the runner.

T, H, W = 40, 240, 320


@pytest.fixture(scope="module")
def detector():
  pytest.importorskip("mtcnn")
  faces.set_single_thread()
  return faces.MtcnnDetector(max_side=320)


def _moving(photo, centre, scale, angle, size=(W, H)):
  """Frame of the photo rotated by angle (deg), scaled and with its face centre at centre."""
  import cv2
  m = cv2.getRotationMatrix2D((225.0, 120.0), angle, scale)  # About the astronaut's face.
  m[:, 2] += np.asarray(centre) - (225.0, 120.0)
  return cv2.warpAffine(photo, m, size, borderMode=cv2.BORDER_CONSTANT)


# Face centre drifting right and bobbing, scale growing 30 %, in-plane rotation swinging ±5°.
_PATH = lambda t: ((130 + 2.0 * t, 110 + 12 * np.sin(t / 10)), 0.55 + 0.004 * t,
                   5 * np.sin(t / 12))


def _video(tmp_path, photo, paths):
  frames = np.stack([np.maximum.reduce([_moving(photo, *p(t)) for p in paths])
                     for t in range(T)])
  audio = (3000 * np.sin(np.arange(T * 640) * 0.2)).astype(np.int16)
  path = str(tmp_path / "astronaut.mp4")
  encode.write_video(path, frames, audio)
  return path


@pytest.fixture(scope="module")
def skdata():
  return pytest.importorskip("skimage.data")


@integration
def test_aligned_crops_hold_the_face_still(tmp_path, detector, skdata):
  photo = skdata.astronaut()
  path = _video(tmp_path, photo, [_PATH])
  config = video.PreprocessConfig(crop_size=128, mouth=True, detect_max_side=320)
  res = video.process_video(video.VideoItem(path=path, video_id="astronaut"), config, detector)
  assert res.skip is None
  assert len(res.face_records) == 1
  crops = res.face_records[0]["frames"]
  assert crops.shape == (T, 128, 128, 3)
  found = detector(crops)
  assert all(len(d) == 1 for d in found)
  eyes = np.stack([d.points[0, :2] for d in found])  # [T, 2 eyes, (x, y)]
  # The face moves 80 px, turns and grows 30 %, yet the eyes stay within a few px (the 12-frame
  # smoothing lags a little where the motion curves; without it MTCNN's own jitter is ~1.5 px).
  assert np.abs(eyes - np.median(eyes, 0)).max() < 3.0, eyes
  np.testing.assert_allclose(np.median(eyes, 0), align.MEAN_FACE[:2] * 128, atol=4.0)
  assert res.mouth_records[0]["frames"].shape == (T, 96, 96, 3)


@integration
def test_two_faces_give_two_tracks_and_a_blank_video_no_face(tmp_path, detector, skdata):
  photo = skdata.astronaut()
  path = _video(tmp_path, photo, [lambda t: ((90 + t, 110), 0.45, 0.0),
                                  lambda t: ((250 - t, 120), 0.45, 0.0)])
  config = video.PreprocessConfig(crop_size=64, detect_max_side=320, detect_every=2)
  res = video.process_video(video.VideoItem(path=path, video_id="two"), config, detector)
  assert res.skip is None
  assert [r["track_id"] for r in res.face_records] == [0, 1]
  assert res.stats["tracks"] == 2 and res.stats["interpolated"] > 0  # Odd frames interpolated.
  blank = str(tmp_path / "blank.mp4")
  encode.write_video(blank, np.full((T, 96, 96, 3), 90, np.uint8),
                     np.zeros(T * 640, np.int16))
  res = video.process_video(video.VideoItem(path=blank, video_id="blank"), config, detector)
  assert res.skip[0] == decode.NO_FACE and not res.face_records


@integration
def test_runner_with_mtcnn_counts_a_faceless_video_as_skipped(tmp_path, detector, skdata):
  del detector  # Only for its one-thread TF setup; the runner builds its own.
  from input_pipeline.preprocess import runner
  path = _video(tmp_path, skdata.astronaut(), [_PATH])
  blank = str(tmp_path / "blank.mp4")
  encode.write_video(blank, np.full((T, 96, 96, 3), 90, np.uint8), np.zeros(T * 640, np.int16))
  items = [video.VideoItem(path=path, video_id="astronaut"),
           video.VideoItem(path=blank, video_id="blank")]
  config = video.PreprocessConfig(crop_size=64, detect_max_side=320)
  report = runner.run(items, str(tmp_path / "out"), "photo", config, detector="mtcnn",
                      progress=False)
  assert (report["num_written"], report["num_tracks"]) == (1, 1)
  assert report["skipped_by_kind"] == {"no_face": 1}


# ----------------------------------------------------------------------------- framing presets
def _mean_face():
  """68 distinct points in iBUG order in a 256×256 frame (a stand-in for LRW's mean face): jaw,
  brows, nose ridge and base, eyes (36/39 and 42/45 the corners), mouth (48/54 the corners)."""
  ring = lambda c, rx, ry, n: np.stack(
      [c[0] - rx * np.cos(2 * np.pi * np.arange(n) / n),
       c[1] - ry * np.sin(2 * np.pi * np.arange(n) / n)], -1)
  t = np.linspace(0, np.pi, 17)
  jaw = np.stack([128 - 75 * np.cos(t), 105 + 100 * np.sin(t)], -1)
  brows = np.concatenate([np.stack([70 + 12 * np.arange(5), 92 - 4 * np.sin(np.arange(5))], -1),
                          np.stack([138 + 12 * np.arange(5), 92 - 4 * np.sin(np.arange(5))], -1)])
  ridge = np.stack([np.full(4, 128.0), 108 + 12 * np.arange(4)], -1)
  base = np.stack([112 + 8 * np.arange(5), 160 + 2 * np.abs(np.arange(5) - 2)], -1)
  lm = np.concatenate([jaw, brows, ridge, base, ring((96, 112), 14, 5, 6),
                       ring((160, 112), 14, 5, 6), ring((128, 192), 28, 12, 12),
                       ring((128, 192), 16, 4, 8)])
  assert lm.shape == (68, 2)
  return lm


def _similar(points, angle_deg, scale, shift):
  """points [..., K, 2] turned about (128, 128), scaled and moved: the same face elsewhere."""
  a = np.deg2rad(angle_deg)
  rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  return (np.asarray(points) - 128.0) @ rot.T + np.asarray(shift, np.float64)


def _track(lm68=None, points=None, boxes=None):
  n = len(lm68 if lm68 is not None else points)
  if points is None:
    points = faces.five_from_68(lm68)
  if boxes is None:
    boxes = faces.box_from_points(lm68 if lm68 is not None else points)
  return tracking.Track(0, np.asarray(boxes, np.float32), np.asarray(points, np.float32),
                        np.ones(n, bool), None if lm68 is None else np.asarray(lm68, np.float32))


@pytest.fixture
def mean_face_file(tmp_path):
  path = str(tmp_path / "mean_face.npy")
  np.save(path, _mean_face())
  return path


def test_realforensics_maps_the_stable_points_onto_the_mean_face(mean_face_file):
  ref = presets.load_mean_face(mean_face_file)
  # The mean face turned 12°, grown 1.6× and sliding across the frame: every frame is an exact
  # similarity of the mean face, so the re-centred smoothing keeps it (only shape is averaged)
  # and the warp must land the stable points — and all 68 — on the mean face.
  lm = np.stack([_similar(ref, 12, 1.6, (300 + 4 * t, 160 - 2 * t)) for t in range(20)])
  base, smoothed = presets.realforensics_align(lm, ref)
  np.testing.assert_allclose(smoothed, lm, atol=1e-9)
  stable = list(presets.RF_STABLE)
  assert stable == [28, 33, 36, 39, 42, 45, 48, 54]
  for m, frame_lm in zip(base, lm):
    np.testing.assert_allclose(align.apply(m, frame_lm[stable]), ref[stable], atol=1e-4)
    np.testing.assert_allclose(align.apply(m, frame_lm), ref, atol=1e-4)
  # The 150 crop is cut around the mean of landmarks 15..67, corner rounded as their cut_patch.
  mats = presets.realforensics_cut(base, smoothed, presets.RF_FACE, 150)
  centre = ref[15:68].mean(0)
  corner = np.round(centre) - 75
  for m, frame_lm in zip(mats, lm):
    np.testing.assert_allclose(align.apply(m, frame_lm[15:68]).mean(0), centre - corner,
                               atol=1e-4)


def test_fakeout_maps_its_key_points_onto_the_shifted_mean_face(mean_face_file):
  ref = presets.load_mean_face(mean_face_file)
  lm = np.repeat(_similar(ref, -8, 2.2, (400, 260))[None], 9, 0)
  src, dst = presets.fakeout_points(_track(lm), ref)
  np.testing.assert_allclose(dst, ref[[33, 36, 39, 42, 45]] + (-17.05, 5.0))
  np.testing.assert_array_equal(src, lm[:, [33, 36, 39, 42, 45]].astype(np.float32))
  framed = presets.frame_track(np.zeros((9, 540, 960, 3), np.uint8), _track(lm), "fakeout",
                               crop_size=224, smooth_window=5, mean_face=mean_face_file)
  for m, frame_lm in zip(framed.face_mats, lm):
    np.testing.assert_allclose(align.apply(m, frame_lm[[33, 36, 39, 42, 45]]), dst, atol=1e-3)
  # Without 68 points (MTCNN): its five points go to the mean face's eye centres, nose tip and
  # mouth corners, shifted the same way.
  src5, dst5 = presets.fakeout_points(_track(points=faces.five_from_68(lm)), ref)
  expect = np.stack([ref[36:42].mean(0), ref[42:48].mean(0), ref[30], ref[48], ref[54]])
  np.testing.assert_allclose(dst5, expect + (-17.05, 5.0))
  assert src5.shape == (9, 5, 2)


def test_realforensics_smoothing_averages_a_shape_step_over_13_frames():
  n, s = 30, 15
  a = _mean_face()
  b = (a - a.mean(0)) * 1.2 + a.mean(0)  # Same centroid, other shape (the face grows).
  lm = np.stack([a if t < s else b for t in range(n)])
  out = align.smooth_recentred(lm, 12)
  for t in range(n):
    m = min(6, t, n - 1 - t)  # Their window_margin // 2, shrinking at the ends.
    k = min(max(t + m - s + 1, 0), 2 * m + 1)  # Frames of b in [t - m, t + m].
    np.testing.assert_allclose(out[t], a + k / (2 * m + 1) * (b - a), atol=1e-9)
  mixed = [t for t in range(n)
           if not (np.allclose(out[t], a, atol=1e-9) or np.allclose(out[t], b, atol=1e-9))]
  assert mixed == list(range(s - 6, s + 6))  # 12 frames between: a 13-frame window.
  # A step in position alone is not smoothed: each frame keeps its own centroid.
  moved = np.stack([a if t < s else a + (40.0, -7.0) for t in range(n)])
  np.testing.assert_allclose(align.smooth_recentred(moved, 12), moved, atol=1e-9)


def test_fakeout_smoothing_is_a_five_frame_forward_mean():
  n, s = 20, 10
  a, b = np.zeros((5, 2)), np.ones((5, 2))
  out = align.smooth_forward(np.stack([a if t < s else b for t in range(n)]), 5)
  frac = out[:, 0, 0]
  # Frame t averages frames t..t+4: the step shows as 1/5 .. 4/5 on the four frames before it.
  np.testing.assert_allclose(frac, [0] * 6 + [0.2, 0.4, 0.6, 0.8] + [1] * 10, atol=1e-12)
  ramp = np.arange(n, dtype=np.float64)[:, None, None] * np.ones((1, 5, 2))
  got = align.smooth_forward(ramp, 5)[:, 0, 0]
  # The last four frames have no full window ahead: they reuse frame n - 5's mean (n - 3).
  np.testing.assert_allclose(got, [t + 2 for t in range(n - 4)] + [n - 3] * 4)
  short = align.smooth_forward(ramp[:3], 5)[:, 0, 0]
  np.testing.assert_allclose(short, [1, 1, 1])  # Fewer frames than the window: one mean.


def _frames(n, h=360, w=480, seed=0):
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (n, h // 8, w // 8, 3), np.uint8)
  return np.repeat(np.repeat(small, 8, 1), 8, 2)  # Blocky texture: warps are non-trivial.


def test_each_preset_crops_its_size_and_fakedet_is_unchanged(mean_face_file):
  ref = presets.load_mean_face(mean_face_file)
  lm = np.stack([_similar(ref, 3 * np.sin(t), 1.1, (240 + t, 180)) for t in range(6)])
  frames, tr = _frames(6), _track(lm)
  sizes = {"realforensics": (150, 96), "realforensics_mouth": (96, None), "fakeout": (224, None)}
  for name, (face, mouth) in sizes.items():
    p = presets.get(name)
    framed = presets.frame_track(frames, tr, name, crop_size=p.crop_size,
                                 mouth_size=p.mouth_size or 96, smooth_window=p.smooth_window,
                                 mouth=mouth is not None, mean_face=mean_face_file)
    assert framed.face.shape == (6, face, face, 3) and framed.face.dtype == np.uint8, name
    assert framed.face.std() > 10, name  # Texture, not a black crop.
    assert (framed.mouth is None) == (mouth is None), name
    if mouth:
      assert framed.mouth.shape == (6, mouth, mouth, 3)
  # The default preset is exactly the transform video.py has always applied.
  framed = presets.frame_track(frames, tr, crop_size=128, mouth_size=64, smooth_window=12,
                               mouth=True)
  points = align.smooth(tr.points, 12)
  np.testing.assert_array_equal(
      framed.face, align.warp(frames, align.face_matrices(points, 128), 128))
  np.testing.assert_array_equal(
      framed.mouth, align.warp(frames, align.mouth_matrices(points, 64), 64))
  with pytest.raises(ValueError, match="realforensics crops 150"):
    presets.frame_track(frames, tr, "realforensics", crop_size=224, smooth_window=12,
                        mean_face=mean_face_file)
  with pytest.raises(ValueError, match="needs 68-point landmarks"):
    presets.frame_track(frames, _track(points=tr.points), "realforensics", crop_size=150,
                        smooth_window=12, mean_face=mean_face_file)


def test_realforensics_cut_matches_their_warp_then_slice(mean_face_file):
  """Their order: warp the frame to 256×256, then slice the crop; ours: one composed warp."""
  import cv2  # Only to run their two steps literally.
  ref = presets.load_mean_face(mean_face_file)
  # The face near the frame's top-left corner: the crops show where the frame ends (black).
  lm = np.stack([_similar(ref, 7, 0.9, (40 + 2 * t, 50)) for t in range(5)])
  frames = _frames(5)
  base, smoothed = presets.realforensics_align(lm, ref)
  mats = presets.realforensics_cut(base, smoothed, presets.RF_FACE, 150)
  ours = align.warp(frames, mats, 150)
  for t in range(5):
    canvas = cv2.warpAffine(frames[t], base[t], (256, 256), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    c = align.apply(base[t], smoothed[t][15:68]).mean(0)
    c = np.clip(c, 75, 256 - 75)
    x0, y0 = int(round(c[0]) - 75), int(round(c[1]) - 75)
    theirs = canvas[y0:y0 + 150, x0:x0 + 150]
    diff = np.abs(ours[t].astype(int) - theirs.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99, (t, diff.max(), (diff == 0).mean())
  assert (ours == 0).mean() > 0.05  # The frame's edge is inside the crops.
  # Their cut_patch: the centre clamped so the crop stays in the canvas, rounded half to even.
  np.testing.assert_array_equal(align.cut_corner([[20.0, 250.0], [100.5, 101.5]], 150, 256),
                                [[0, 106], [25, 27]])


def test_mean_face_file_and_preset_flags_fail_clearly(tmp_path, mean_face_file):
  bad = str(tmp_path / "five_points.npy")
  np.save(bad, np.zeros((5, 2)))
  with pytest.raises(ValueError, match=r"five_points\.npy.*\(68, 2\).*\(5, 2\)"):
    presets.load_mean_face(bad)
  nan = str(tmp_path / "nan.npy")
  np.save(nan, np.where(np.arange(136).reshape(68, 2) == 3, np.nan, _mean_face()))
  with pytest.raises(ValueError, match=r"nan\.npy.*NaN"):
    presets.load_mean_face(nan)
  unit = str(tmp_path / "unit.npy")
  np.save(unit, _mean_face() / 256)
  with pytest.raises(ValueError, match=r"unit\.npy.*256x256"):
    presets.load_mean_face(unit)
  with pytest.raises(ValueError, match=r"missing\.npy: cannot read"):
    presets.load_mean_face(str(tmp_path / "missing.npy"))
  with pytest.raises(ValueError, match=r"face\.txt: expected a \.npy"):
    presets.load_mean_face(str(tmp_path / "face.txt"))
  with pytest.raises(ValueError, match="needs --mean_face"):
    presets.resolve("fakeout")
  with pytest.raises(ValueError, match="unknown face framing preset 'lrw'"):
    presets.resolve("lrw", mean_face_file)
  with pytest.raises(ValueError, match="--landmarks_dir=DIR --detector=none"):
    presets.resolve("realforensics", mean_face_file, detector="mtcnn")
  with pytest.raises(ValueError, match="not --crop_size=224"):
    presets.resolve("realforensics", mean_face_file, detector="none", crop_size=224)
  with pytest.raises(ValueError, match="no separate mouth crops"):
    presets.resolve("fakeout", mean_face_file, mouth=True)
  with pytest.raises(ValueError, match="used only by the presets"):
    presets.resolve("fakedet", mean_face_file)
  assert presets.resolve("fakedet") == {}
  assert presets.resolve("realforensics", mean_face_file, mouth=True, detector="none") == dict(
      preset="realforensics", mean_face=mean_face_file, crop_size=150, smooth_window=12,
      mouth_size=96)
  assert presets.resolve("fakeout", mean_face_file)["crop_size"] == 224


def test_fakeout_box_enlargement_and_window():
  # (x1, y1, x2, y2) = (100, 50, 160, 130): w 60, h 80 → centre (130, 90), half side 1.8·80/2.
  np.testing.assert_array_equal(faces.enlarge_box([[100, 50, 160, 130]]), [[58, 18, 202, 162]])
  # Centre and half side truncated like int(): centre (30.75, 45.45) → (30, 45); 1.8·50.5/2 → 45.
  np.testing.assert_array_equal(faces.enlarge_box([[10.6, 20.2, 50.9, 70.7]]),
                                [[-15, 0, 75, 90]])
  # One window per track: the union of its enlarged boxes, clipped to the 320×240 frame.
  boxes = np.array([[10.6, 20.2, 50.9, 70.7], [100, 50, 160, 130], [250, 150, 310, 230]])
  tr = _track(points=np.zeros((3, 5, 2)), boxes=boxes)
  assert tracking.crop_window(tr, 320, 240) == (0, 0, 320, 240)
  tr = _track(points=np.zeros((2, 5, 2)), boxes=boxes[1:2].repeat(2, 0))
  assert tracking.crop_window(tr, 320, 240) == (58, 18, 202, 162)
  # Pixels outside the window are black in the crop, inside they are the frame's.
  white = np.full((2, 240, 320, 3), 255, np.uint8)
  mats = np.array([[[0.5, 0, 0], [0, 0.5, 0]]] * 2)  # Crop pixel (u, v) shows frame (2u, 2v).
  crop = align.warp(white, mats, 160, window=(58, 18, 202, 162))
  u = np.arange(160) * 2.0
  inside = ((u > 58 + 1) & (u < 202 - 2))[None, :] & ((u > 18 + 1) & (u < 162 - 2))[:, None]
  outside = ~(((u >= 58 - 1) & (u <= 202))[None, :] & ((u >= 18 - 1) & (u <= 162))[:, None])
  assert (crop[0][inside] == 255).all() and (crop[0][outside] == 0).all()

"""MTCNN detection, tracking and alignment on a real photograph (skimage's astronaut).

The photo is moved, scaled and rotated over the frames of an mp4; the aligned crops must hold
the face still: MTCNN run again on the crops finds the eyes at the same place in every frame.
"""
import numpy as np
import pytest

from input_pipeline.preprocess import align, decode, encode, faces, video

pytestmark = pytest.mark.integration  # Trains, runs CLIs, Beam, MTCNN or several processes.

pytest.importorskip("mtcnn")
skdata = pytest.importorskip("skimage.data")

T, H, W = 40, 240, 320


@pytest.fixture(scope="module")
def detector():
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


def test_aligned_crops_hold_the_face_still(tmp_path, detector):
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


def test_two_faces_give_two_tracks_and_a_blank_video_no_face(tmp_path, detector):
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


def test_runner_with_mtcnn_counts_a_faceless_video_as_skipped(tmp_path, detector):
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

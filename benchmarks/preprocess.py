"""Preprocessing speed in seconds of video per second per core, by stage.

  python benchmarks/preprocess.py [--videos=3] [--seconds=4] [--height=360] [--every=1,5]

Writes synthetic talking-face videos as H.264/AAC mp4 at ``--height`` (16:9, the face about
half the frame height, like a VoxCeleb2 / FaceForensics++ frame), then runs the per-video
transform in ONE process with TensorFlow and OpenCV limited to one thread, i.e. per core:
decode (25 fps, 16 kHz) → faces (MTCNN on every n-th frame, or the generator's landmarks as a
user landmark file) → tracks, smoothing, alignment → JPEG-encoded 150 px records. The first
video is a warm-up (TF graph tracing) and not counted.
"""
import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from input_pipeline.preprocess import decode, encode, faces, tracking, video  # noqa: E402
from input_pipeline.synthetic import dataset as synthetic  # noqa: E402


def make_videos(out_dir, n, seconds, height):
  """Synthetic reals rendered at height/2 px and placed on a 16:9 canvas; returns items."""
  cfg = synthetic.preset("tiny", num_frames=int(seconds * 25), resolution=height // 2,
                         families=(), identities=(n, 1, 1), videos_per_identity=1)
  width = height * 16 // 9
  items = []
  for i, rec in enumerate(synthetic.generate_split(cfg, "train")):
    frames = np.full((len(rec["frames"]), height, width, 3), 60, np.uint8)
    y, x = height // 4, width // 3
    r = rec["frames"].shape[1]
    frames[:, y:y + r, x:x + r] = rec["frames"]
    path = os.path.join(out_dir, f"v{i}.mp4")
    encode.write_video(path, frames, rec["audio"])
    lm = os.path.join(out_dir, f"v{i}.npy")
    np.save(lm, rec["landmarks"] + [x, y])
    items.append(video.VideoItem(path=path, video_id=f"v{i}", landmarks=lm))
  return items


def time_stages(item, config, detector):
  """Seconds per stage for one video (same steps as video.process_video, timed apart)."""
  t = {}
  t0 = time.perf_counter()
  media = decode.read_video(item.path, config.fps, config.sample_rate, config.max_side)
  t["decode"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  if detector is None:
    dets = faces.detections_from_landmarks(faces.load_landmarks(item.landmarks),
                                           len(media.frames), media.scale)
  else:
    dets = detector(media.frames)
  t["faces"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  tracks = tracking.build_tracks(dets, 25, min_detected=0.5 / config.detect_every)
  recs = [video.track_records(item, media, tr, k, config)[0] for k, tr in enumerate(tracks)]
  t["align"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  res = video.VideoResult(item, recs, [], None, media.seconds)
  video.encode_result(res, config.jpeg_quality)
  t["jpeg"] = time.perf_counter() - t0
  assert len(tracks) == 1, f"expected one face track, got {len(tracks)}"
  return media.seconds, t


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--videos", type=int, default=3)
  parser.add_argument("--seconds", type=float, default=4.0)
  parser.add_argument("--height", type=int, default=360)
  parser.add_argument("--every", default="1,5", help="MTCNN detect_every values to time.")
  args = parser.parse_args()
  faces.set_single_thread()
  tmp = tempfile.mkdtemp(prefix="fakedet_bench_")
  t0 = time.perf_counter()
  items = make_videos(tmp, args.videos + 1, args.seconds, args.height)
  print(f"{len(items)} videos of {args.seconds:g} s at {args.height}p written in "
        f"{time.perf_counter() - t0:.1f} s ({tmp})")
  runs = [("landmark file", None, 1)] + [
      (f"MTCNN every {e}", "mtcnn", int(e)) for e in args.every.split(",")]
  for name, det_name, every in runs:
    config = dataclasses.replace(video.PreprocessConfig(), detect_every=every)
    detector = video.make_detector(config) if det_name else None
    time_stages(items[0], config, detector)  # Warm-up.
    total, stages = 0.0, {}
    for item in items[1:]:
      secs, t = time_stages(item, config, detector)
      total += secs
      for k, v in t.items():
        stages[k] = stages.get(k, 0.0) + v
    busy = sum(stages.values())
    per = ", ".join(f"{k} {v / total * 1000:.0f}" for k, v in stages.items())
    print(f"{name:>16}: {total / busy:5.2f} s of video per s per core "
          f"(ms per video second: {per})")
  shutil.rmtree(tmp)


if __name__ == "__main__":
  main()

"""The Apache Beam preprocessing pipeline (DirectRunner): the local runner's dataset, byte for byte."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from input_pipeline import records, sources
from input_pipeline.preprocess import beam_pipeline, decode, encode, runner, video
from input_pipeline.synthetic import dataset as synthetic

from apache_beam.io import filesystem, localfilesystem  # pylint: disable=wrong-import-order

pytestmark = pytest.mark.integration  # Trains, runs CLIs, Beam, MTCNN or several processes.

# Fields of preprocess.json that measure this run rather than describe the dataset.
_TIMING = ("last_run", "worker_seconds", "video_seconds_per_worker_second")


@pytest.fixture(scope="module")
def reals():
  cfg = synthetic.preset("tiny", num_frames=50, resolution=96, families=())
  return list(synthetic.generate_split(cfg, "train"))


def _items(tmp, reals):
  """Three usable videos over two splits, one without audio and one that is not a video."""
  items = []
  for i, rec in enumerate(reals[:3]):
    path = os.path.join(tmp, f"v{i}.mp4")
    encode.write_video(path, rec["frames"], rec["audio"])
    np.save(os.path.join(tmp, f"v{i}.npy"), rec["landmarks"])
    items.append(video.VideoItem(path=path, video_id=f"v{i}", landmarks=path[:-4] + ".npy",
                                 split="val" if i == 2 else "train", identity=rec["identity"],
                                 source="synth"))
  silent = os.path.join(tmp, "silent.mp4")
  encode.write_video(silent, reals[3]["frames"], None)
  np.save(os.path.join(tmp, "silent.npy"), reals[3]["landmarks"])
  items.insert(1, video.VideoItem(path=silent, video_id="silent",
                                  landmarks=silent[:-4] + ".npy", source="synth"))
  garbage = os.path.join(tmp, "garbage.mp4")
  with open(garbage, "wb") as f:
    f.write(b"\x00\x01 not a video " * 300)
  items.append(video.VideoItem(path=garbage, video_id="garbage", source="synth"))
  return items


def _files(root):
  out = {}
  for dirpath, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if d != runner.STATE_DIR]
    for fn in files:
      if fn != runner.REPORT:
        with open(os.path.join(dirpath, fn), "rb") as f:
          out[os.path.relpath(os.path.join(dirpath, fn), root)] = f.read()
  return out


def _report(root):
  with open(os.path.join(root, runner.REPORT)) as f:
    return json.load(f)


def test_beam_writes_the_local_runners_dataset_byte_for_byte(tmp_path, reals):
  tmp = str(tmp_path)
  items = _items(tmp, reals)
  config = video.PreprocessConfig(crop_size=48, mouth=True)
  shards = {"train": 2, "val": 1}
  local = runner.run(items, os.path.join(tmp, "local"), "synth", config, shards,
                     num_workers=2, detector="none", progress=False)  # Other processes.
  beam = beam_pipeline.run(items, os.path.join(tmp, "beam"), "synth", config, shards,
                           detector="none")
  assert beam == _report(os.path.join(tmp, "beam"))
  assert beam["last_run"]["runner"] == "beam/DirectRunner"
  assert beam["last_run"]["videos_processed"] == 5
  # Same report (skips in input order, counts, config) apart from this run's timings.
  strip = lambda r: {k: v for k, v in r.items() if k not in _TIMING}
  assert strip(beam) == strip(local)
  assert [s["video_id"] for s in beam["skipped"]] == ["silent", "garbage"]
  assert beam["skipped_by_kind"] == {decode.NO_AUDIO: 1, decode.DECODE_ERROR: 1}
  # Same shards, indexes and manifests (faces and mouths), byte for byte.
  want, got = _files(os.path.join(tmp, "local")), _files(os.path.join(tmp, "beam"))
  assert sorted(got) == sorted(want)
  # train: [v0, silent] and [v1, garbage] → 2 shards, val: [v2] → 1; faces and mouths.
  assert len([f for f in got if ".array_record-" in f]) == 6
  assert not [f for f in got if ".tfrecord-" in f]  # TFRecord is opt-in.
  for name, data in want.items():
    assert got[name] == data, name
  # And it reads like any dataset: train holds v0 then v1 (input order), val holds v2.
  src = sources.ClipSource(os.path.join(tmp, "beam"), "train")
  assert [src[i]["video_id"] for i in range(len(src))] == ["v0", "v1"]
  assert records.decode_frames(src[0], [0]).shape == (1, 48, 48, 3)
  mouth = sources.ClipSource(os.path.join(tmp, "beam", runner.MOUTH_DIR), "val")
  assert records.decode_frames(mouth[0], [0]).shape == (1, 96, 96, 3)


class _RemoteFS(localfilesystem.LocalFileSystem):
  """A non-local scheme (``remotefs://x`` = ``ROOT/x``) that reaches files only through Beam's
  ``FileSystems``, as ``gs://`` does on Dataflow: PyAV, NumPy and ``open`` cannot read it."""
  ROOT = ""
  PREFIX = "remotefs://"

  @classmethod
  def scheme(cls):
    return "remotefs"

  def _local(self, path):  # Idempotent: the base class calls the overrides with local paths.
    return os.path.join(self.ROOT, path[len(self.PREFIX):]) if path.startswith(self.PREFIX) else path

  def _remote(self, path):
    return self.PREFIX + os.path.relpath(path, self.ROOT)

  def join(self, base, *paths):
    return "/".join([base.rstrip("/"), *paths])

  def create(self, path, *args, **kwargs):
    return super().create(self._local(path), *args, **kwargs)

  def open(self, path, *args, **kwargs):
    return super().open(self._local(path), *args, **kwargs)

  def exists(self, path):
    return super().exists(self._local(path))

  def size(self, path):
    return super().size(self._local(path))

  def match(self, patterns, limits=None):
    results = super().match([self._local(p) for p in patterns], limits)
    for r in results:
      r.pattern = self._remote(r.pattern)
      r.metadata_list = [filesystem.FileMetadata(self._remote(m.path), m.size_in_bytes,
                                                 m.last_updated_in_seconds)
                         for m in r.metadata_list]
    return results


def test_remote_videos_lists_and_out_dir_go_through_beam_filesystems(tmp_path, reals,
                                                                      monkeypatch):
  tmp = str(tmp_path)
  monkeypatch.setattr(_RemoteFS, "ROOT", tmp)
  remote = lambda p: _RemoteFS.PREFIX + os.path.relpath(p, tmp) if p else p
  items = [video.VideoItem(**{**i.__dict__, "path": remote(i.path),
                              "landmarks": remote(i.landmarks)})
           for i in _items(tmp, reals)]
  items.append(video.VideoItem(path=remote(os.path.join(tmp, "missing.mp4")),
                               video_id="missing", source="synth"))
  with open(os.path.join(tmp, "list.jsonl"), "w") as f:
    f.writelines(json.dumps(i.__dict__) + "\n" for i in items)
  listed = beam_pipeline.read_list(remote(os.path.join(tmp, "list.jsonl")))
  assert listed == items
  config = video.PreprocessConfig(crop_size=32)
  report = beam_pipeline.run(listed, remote(os.path.join(tmp, "out")), "synth", config, 1,
                             detector="none")
  assert report["num_written"] == 3 and report["num_tracks"] == 3
  skipped = {s["video_id"]: s for s in report["skipped"]}
  assert skipped["missing"]["kind"] == decode.DECODE_ERROR
  # Messages name the user's files, not the worker's temporary copies.
  for vid in ("missing", "silent"):
    message = skipped[vid]["message"]
    assert f"remotefs://{vid}.mp4" in message and "fakedet_in_" not in message, message
  assert "No such file" in skipped["missing"]["message"]
  out = os.path.join(tmp, "out")
  assert len(sources.ClipSource(out, "train")) == 2 and len(sources.ClipSource(out, "val")) == 1


def test_reruns_resume_from_either_runners_committed_shards(tmp_path, reals):
  tmp = str(tmp_path)
  items = _items(tmp, reals)  # train: [v0, silent] [v1, garbage]; val: [v2]
  config = video.PreprocessConfig(crop_size=32)
  shards = {"train": 2, "val": 1}
  full = os.path.join(tmp, "full")
  runner.run(items, full, "synth", config, shards, detector="none", progress=False)
  # A local run killed after train shard 0 and val: shard 1's files, marker and the manifest
  # never got written. Beam finishes it, processing only shard 1's two videos.
  part = os.path.join(tmp, "part")
  shutil.copytree(full, part)
  os.remove(os.path.join(part, runner.STATE_DIR, runner.marker_name("train", 1)))
  os.remove(os.path.join(part, records.MANIFEST))
  for f in os.listdir(part):
    if "-00001-of-00002" in f:
      os.remove(os.path.join(part, f))
  kept = os.stat(os.path.join(part, records.shard_name("synth", "train", "array_record", 0, 2)))
  report = beam_pipeline.run(items, part, "synth", config, shards, detector="none")
  assert report["last_run"]["videos_processed"] == 2
  assert report["num_written"] == 3 and report["num_videos"] == 5
  assert os.stat(os.path.join(part, records.shard_name("synth", "train", "array_record", 0, 2))
                 ).st_mtime_ns == kept.st_mtime_ns
  assert _files(part) == _files(full)
  # Nothing left to do: a rerun processes no video and rewrites the same dataset.
  again = beam_pipeline.run(items, part, "synth", config, shards, detector="none")
  assert again["last_run"]["videos_processed"] == 0 and _files(part) == _files(full)
  # Another plan into the same directory is refused, as locally.
  with pytest.raises(ValueError, match="other videos"):
    beam_pipeline.run(items[:3], part, "synth", config, shards, detector="none")


def test_plan_matches_the_local_runners_contiguous_shard_blocks():
  items = [video.VideoItem(path=f"/v{i}.mp4", video_id=f"v{i}", split="train" if i < 5 else "val")
           for i in range(7)]
  planned = beam_pipeline.plan(runner.split_blocks(items, {"train": 2, "val": 3}))
  got = {(p["split"], p["shard"]): [q["item"]["video_id"] for q in planned
                                    if (q["split"], q["shard"]) == (p["split"], p["shard"])]
         for p in planned}
  want = {("train", k): [i.video_id for i in b]
          for k, b in enumerate(runner.shard_blocks(items[:5], 2))}
  want.update({("val", k): [i.video_id for i in b]
               for k, b in enumerate(runner.shard_blocks(items[5:], 3)) if b})
  assert got == want
  assert all(p["position"] == [q["item"]["video_id"] for q in planned
                               if (q["split"], q["shard"]) == (p["split"], p["shard"])
                               ].index(p["item"]["video_id"]) for p in planned)


def test_cli_runs_beam_with_pipeline_options_after_the_separator(tmp_path, reals):
  tmp = str(tmp_path)
  raw = os.path.join(tmp, "raw")
  os.makedirs(raw)
  encode.write_video(os.path.join(raw, "a.mp4"), reals[0]["frames"], reals[0]["audio"])
  np.save(os.path.join(tmp, "a.npy"), reals[0]["landmarks"])
  out = os.path.join(tmp, "out")
  cmd = [sys.executable, "-m", "input_pipeline.preprocess", f"--videos={raw}",
         f"--out_dir={out}", "--name=cli", "--detector=none", f"--landmarks_dir={tmp}",
         "--crop_size=32"]
  # Worker processes: the DoFns are pickled and run away from the driver, as on Dataflow.
  res = subprocess.run(cmd + ["--beam", "--", "--runner=DirectRunner",
                              "--direct_running_mode=multi_processing",
                              "--direct_num_workers=2"],
                       capture_output=True, text=True, timeout=180)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "1 videos -> 1 face tracks, 0 skipped" in res.stdout
  assert _report(out)["last_run"]["runner"] == "beam/DirectRunner"
  assert len(sources.ClipSource(out, "train")) == 1
  # Beam options without --beam are a usage error, not silently ignored.
  res = subprocess.run(cmd + ["--", "--runner=DirectRunner"], capture_output=True, text=True,
                       timeout=180)
  assert res.returncode != 0 and "need --beam" in res.stderr

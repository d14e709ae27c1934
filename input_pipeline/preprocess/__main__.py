"""CLI: preprocess a directory (or a JSON-lines list) of raw videos into clip records.

  python -m input_pipeline.preprocess --videos=/data/raw --out_dir=/data/ff_real \
      --name=ffpp --split=test --source=ffpp --label=0 --manipulation=real \
      --num_shards=16 --num_workers=8 [--mouth] [--landmarks_dir=/data/landmarks] \
      [--preset=realforensics|realforensics_mouth|fakeout --mean_face=20words_mean_face.npy]

Rerunning the same command resumes (committed shards are kept). Exits 0 when the dataset is
complete, even if some videos were skipped; the summary line and OUT/preprocess.json list them.

``--beam`` runs the same transform as an Apache Beam pipeline (``pip install -e ".[beam]"``);
arguments after ``--`` are Beam pipeline options (default: the DirectRunner here), e.g.

  python -m input_pipeline.preprocess --beam --videos=gs://b/vox2.jsonl --out_dir=gs://b/vox2 \
      --name=vox2 --num_shards=2048 -- --runner=DataflowRunner --project=P --region=R \
      --temp_location=gs://b/tmp --sdk_container_image=IMAGE
"""
from __future__ import annotations

import dataclasses
import os

from absl import app, flags

from input_pipeline import records
from input_pipeline.preprocess import presets, runner, video

_VIDEOS = flags.DEFINE_string("videos", None, "Directory scanned recursively for "
                              f"{'/'.join(runner.VIDEO_EXTENSIONS)} files, or a .jsonl list "
                              "with one VideoItem object per line.", required=True)
_OUT = flags.DEFINE_string("out_dir", None, "Output dataset directory, local or gs:// (with "
                           "--beam any Beam filesystem).", required=True)
_TFRECORD = flags.DEFINE_bool("tfrecord", False, "Also write a TFRecord copy of every shard "
                              "(for tf.data streaming); training reads only ArrayRecord.")
_BEAM = flags.DEFINE_bool("beam", False, "Run as an Apache Beam pipeline; options after '--' go "
                          "to Beam. --num_workers is then ignored (e.g. -- "
                          "--direct_num_workers=8 --direct_running_mode=multi_processing).")
_NAME = flags.DEFINE_string("name", "videos", "Dataset name (shard file prefix).")
_SPLIT = flags.DEFINE_string("split", "train", "Split of scanned videos (list rows may override).")
_SOURCE = flags.DEFINE_string("source", "videos", "Source dataset name stored in the records.")
_LABEL = flags.DEFINE_integer("label", 0, "0 real, 1 fake (list rows may override).")
_MANIP = flags.DEFINE_string("manipulation", "real", "Forgery family ('real' for real videos).")
_LANDMARKS = flags.DEFINE_string("landmarks_dir", None, "Directory of <video_id>.npy/.json "
                                 "landmark files used instead of the detector where present.")
_DETECTOR = flags.DEFINE_enum("detector", "mtcnn", ["mtcnn", "none"],
                              "'none' when every video has a landmark file.")
_SHARDS = flags.DEFINE_integer("num_shards", 1, "Shards per split.")
_WORKERS = flags.DEFINE_integer("num_workers", max(1, (os.cpu_count() or 1)),
                                "Worker processes (one core each).")
_CROP = flags.DEFINE_integer("crop_size", 150, "Aligned face crop size (px).")
_MOUTH = flags.DEFINE_bool("mouth", False, "Also write 96x96 mouth crops to OUT/mouth.")
_PRESET = flags.DEFINE_enum("preset", presets.DEFAULT, list(presets.PRESETS),
                            "Face framing: fakedet's own, or as the authors of RealForensics / "
                            "FakeOut framed their training faces (docs/preprocessing.md). The "
                            "authors' presets fix crop_size and smoothing.")
_MEAN_FACE = flags.DEFINE_string("mean_face", None, "The authors' presets: the LRW mean face "
                                 ".npy you supply (68 (x, y) points of a 256x256 frame, "
                                 "20words_mean_face.npy).")
_EVERY = flags.DEFINE_integer("detect_every", 1, "Detect on every n-th frame (faster).")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", None, "Only the first seconds of each video.")
_REQUIRE_AUDIO = flags.DEFINE_bool("require_audio", True,
                                   "Skip videos without audio (else: silent audio).")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", 16000, "Audio rate of the records (Hz): "
                                    "16000 for RealForensics / AVCL, 44100 for FakeOut's "
                                    "front end (configs/fakeout.py reads 44.1 kHz records).")


def main(argv):
  pipeline_args = argv[1:]
  if pipeline_args and not _BEAM.value:
    raise app.UsageError(f"unexpected arguments {pipeline_args} (Beam options need --beam)")
  meta = dict(split=_SPLIT.value, source=_SOURCE.value, label=_LABEL.value,
              manipulation=_MANIP.value)
  if _BEAM.value:
    from input_pipeline.preprocess import beam_pipeline  # Needs the optional [beam] extra.
  if _VIDEOS.value.endswith(".jsonl"):
    read = beam_pipeline.read_list if _BEAM.value else runner.read_list
    items = read(_VIDEOS.value, **meta)
  elif "://" in _VIDEOS.value:
    raise app.UsageError(f"--videos={_VIDEOS.value}: only local directories are scanned; give "
                         "a .jsonl list for remote videos")
  else:
    items = runner.scan(_VIDEOS.value, _LANDMARKS.value, **meta)
  if not items:
    raise app.UsageError(f"no videos found in {_VIDEOS.value}")
  try:
    framing = presets.resolve(_PRESET.value, _MEAN_FACE.value or "", _MOUTH.value,
                              _DETECTOR.value,
                              _CROP.value if flags.FLAGS["crop_size"].present else None)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  settings = dict(crop_size=_CROP.value, mouth=_MOUTH.value, detect_every=_EVERY.value,
                  max_seconds=_MAX_SECONDS.value, require_audio=_REQUIRE_AUDIO.value,
                  sample_rate=_SAMPLE_RATE.value)
  config = dataclasses.replace(video.PreprocessConfig(), **{**settings, **framing})
  formats = records.FORMATS if _TFRECORD.value else records.DEFAULT_FORMATS
  if _BEAM.value:
    report = beam_pipeline.run(items, _OUT.value, _NAME.value, config, _SHARDS.value,
                               _DETECTOR.value, formats, pipeline_args=pipeline_args)
  else:
    report = runner.run(items, _OUT.value, _NAME.value, config, _SHARDS.value,
                        _WORKERS.value, _DETECTOR.value, formats)
  print(f"{report['num_written']} videos -> {report['num_tracks']} face tracks, "
        f"{report['num_skipped']} skipped {report['skipped_by_kind']}; "
        f"details in {records.join(_OUT.value, runner.REPORT)}")
  for s in report["skipped"]:
    print(f"  skipped {s['kind']}: {s['message']}")


if __name__ == "__main__":
  app.run(main)

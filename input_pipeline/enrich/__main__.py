"""CLI: attach the YouTube originals' audio to FF++ / DeeperForensics / FaceShifter records.

  python -m input_pipeline.enrich --records=/data/records/ffpp_c23 \
      --out_dir=/data/records/ffpp_c23_audio --originals=/data/FF++/downloaded_videos \
      --conversion_dict=/data/FF++/conversion_dict.json \
      [--sequences_dir=DIR] [--verified=proper_audio_files.json] [--assume_whole_video]

Rerunning the same command resumes (committed shards are kept). Exits 0 when the dataset is
complete, whatever was left silent; the summary line and OUT/enrich.json say which and why.
A malformed mapping file is an error naming the file and the key (exit status 1).
"""
from __future__ import annotations

import sys

from absl import app, flags

from input_pipeline import enrich

_RECORDS = flags.DEFINE_string("records", None, "Input record directory (FF++, DeeperForensics "
                               "or FaceShifter records, e.g. from input_pipeline.preprocess).",
                               required=True)
_OUT = flags.DEFINE_string("out_dir", None, "Output record directory (new, or a run to resume).",
                           required=True)
_ORIGINALS = flags.DEFINE_string("originals", None, "The YouTube originals, named by YouTube id: "
                                 "<id>.<ext> or <id>/<id>.<ext> (video, or audio with an "
                                 "<id>.info.json giving fps).", required=True)
_CONVERSION = flags.DEFINE_string("conversion_dict", None, "FF++'s conversion_dict.json "
                                  "(\"000\" -> \"<youtube id> <k>\").", required=True)
_SEQUENCES = flags.DEFINE_string("sequences_dir", None, "Folder with <youtube id>/"
                                 "extracted_sequences/<k>.json (default: --originals).")
_VERIFIED = flags.DEFINE_string("verified", None, "JSON list of the FF++ ids whose audio was "
                                "checked (FakeOut's proper_audio_files.json); others stay silent.")
_ASSUME = flags.DEFINE_bool("assume_whole_video", False, "Without preprocessing state in "
                            "--records: take a video's only face track to span the whole video.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    report = enrich.run(_RECORDS.value, _OUT.value, _ORIGINALS.value, _CONVERSION.value,
                        _SEQUENCES.value, _VERIFIED.value, _ASSUME.value)
  except (ValueError, FileNotFoundError) as e:  # MappingError is a ValueError.
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(enrich.summary_line(report, _OUT.value))
  for s in report["silent"]:
    print(f"  silent {s['reason']}: {s['video_id']} track {s['track_id']}: {s['message']}")
  return 0


if __name__ == "__main__":
  app.run(main)

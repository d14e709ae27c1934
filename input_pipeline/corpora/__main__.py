"""CLI: write the video list of a corpus' local copy for ``python -m input_pipeline.preprocess``.

  python -m input_pipeline.corpora --corpus=ffpp --root=/data/FaceForensics++ \
      --out=/data/lists/ffpp_c23.jsonl [--split=train,val,test] [--compression=c23] \
      [--manipulations=Deepfakes,Face2Face,FaceSwap,NeuralTextures] [--splits_dir=DIR] \
      [--landmarks_dir=DIR] [--allow_missing]
  python -m input_pipeline.preprocess --videos=/data/lists/ffpp_c23.jsonl --out_dir=... --name=ffpp

Corpus options (each corpus accepts only its own; a misplaced one is an error): see
``--helpfull`` and docs/corpora.md. Exits 1 with a message naming the missing folder or file when
the root does not look like the corpus.
"""
from __future__ import annotations

import sys

from absl import app, flags

from input_pipeline import corpora

_CORPUS = flags.DEFINE_enum("corpus", None, list(corpora.CORPORA), "Which corpus ROOT holds.",
                            required=True)
_ROOT = flags.DEFINE_string("root", None, "The corpus' local copy, in the layout it ships in.",
                            required=True)
_OUT = flags.DEFINE_string("out", None, "Output list (.jsonl); extras go to LIST.extras.jsonl.",
                           required=True)
_SPLIT = flags.DEFINE_list("split", None, "Splits to list (default: all of the corpus).")
_LANDMARKS = flags.DEFINE_string("landmarks_dir", None, "Attach <dir>/<video_id>.npy|.json "
                                 "landmark files where present (preprocess --detector=none).")
_ALLOW_MISSING = flags.DEFINE_bool("allow_missing", False, "List only the videos present when "
                                   "the corpus metadata lists files that are not on disk.")

# Corpus options: passed only when given, so each reader's own defaults apply.
flags.DEFINE_enum("compression", None, list(corpora.ffpp.COMPRESSIONS),
                  "ffpp, deeperforensics: FF++ compression (default c23).")
flags.DEFINE_list("manipulations", None, "ffpp: methods among "
                  f"{','.join(corpora.ffpp.METHODS)} (default the four FF++ ones).")
flags.DEFINE_string("splits_dir", None, "ffpp, deeperforensics: folder with FF++'s train.json, "
                    "val.json, test.json (default ROOT/splits or ROOT).")
flags.DEFINE_bool("reals", None, "ffpp, deeperforensics: include the real videos (default true).")
flags.DEFINE_string("ffpp_root", None, "deeperforensics: the FaceForensics++ root (its reals).")
flags.DEFINE_string("variant", None, "deeperforensics: manipulated_videos subfolder "
                    "(default end_to_end).")
flags.DEFINE_enum("protocol", None, list(corpora.deeperforensics.PROTOCOLS),
                  "deeperforensics: split by FF++'s split files (default) or its own lists.")
flags.DEFINE_string("subset", None, "dfdc: file of video names to keep (e.g. LipForensics' "
                    "dfdc_all_vids.txt).")
flags.DEFINE_enum("label_file_split", None, list(corpora.dfdc.SPLITS),
                  "dfdc: split of videos whose label file has no split field (default test).")
flags.DEFINE_string("test_identities", None, "fakeavceleb: file of idXXXXX test identities (the "
                    "rest become train; default: everything is test).")
flags.DEFINE_enum("manipulation_key", None, list(corpora.fakeavceleb.KEYS),
                  "fakeavceleb: manipulation name from the category (default) or the method.")
_OPTION_FLAGS = ("compression", "manipulations", "splits_dir", "reals", "ffpp_root", "variant",
                 "protocol", "subset", "label_file_split", "test_identities", "manipulation_key")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  corpus = corpora.get(_CORPUS.value)
  given = {name: flags.FLAGS[name].value for name in _OPTION_FLAGS if flags.FLAGS[name].present}
  misplaced = sorted(set(given) - set(corpus.options))
  if misplaced:
    sys.exit(f"error: --{', --'.join(misplaced)} does not apply to --corpus={corpus.name} "
             f"(its options: {', '.join('--' + o for o in corpus.options) or 'none'})")
  try:
    listing = corpora.read(corpus.name, _ROOT.value, splits=_SPLIT.value,
                           landmarks_dir=_LANDMARKS.value, allow_missing=_ALLOW_MISSING.value,
                           **given)
    if not listing.entries:
      raise corpora.CorpusError(f"{corpus.name}: no videos in {_ROOT.value} for splits "
                                f"{_SPLIT.value or list(corpus.splits)}")
    extras = corpora.write_list(listing.entries, _OUT.value)
  except corpora.CorpusError as e:
    sys.exit(f"error: {e}")
  print(f"{corpus.title}: {len(listing.entries)} videos -> {_OUT.value}"
        + (f" (extras: {extras})" if extras else ""))
  for line in corpora.summary(listing.entries):
    print(line)
  for note in listing.notes:
    print(f"  note: {note}")
  print(f"next: python -m input_pipeline.preprocess --videos={_OUT.value} --out_dir=OUT "
        f"--name={corpus.name}"
        + (" --detector=none" if _LANDMARKS.value and all(e.landmarks for e in listing.entries)
           else ""))


if __name__ == "__main__":
  app.run(main)

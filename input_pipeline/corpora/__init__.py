"""Readers for the public corpora: a local copy (as the corpus ships it) → the video list that
``python -m input_pipeline.preprocess --videos=LIST.jsonl`` turns into clip records.

  python -m input_pipeline.corpora --corpus=ffpp --root=/data/FaceForensics++ \
      --out=/data/lists/ffpp_c23.jsonl [--split=train,val] [--compression=c23]

  entries = corpora.read("celebdf", "/data/Celeb-DF-v2", splits=["test"]).entries
  corpora.write_list(entries, "/data/lists/celebdf_test.jsonl")

One module per corpus (``ffpp``, ``deeperforensics``, ``celebdf``, ``dfdc``, ``fakeavceleb``,
``voxceleb`` for VoxCeleb2 and LRW); ``CORPORA`` is the registry the CLI reads. What each reader
expects and what could not be verified: docs/corpora.md.
"""
from __future__ import annotations

import collections
import dataclasses
import inspect
import json
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from input_pipeline.corpora import (base, celebdf, deeperforensics, dfdc, fakeavceleb, ffpp,
                                    voxceleb)
from input_pipeline.corpora.base import REAL, CorpusError, Entry, Listing

__all__ = ["CORPORA", "Corpus", "CorpusError", "Entry", "Listing", "get", "read", "summary",
           "write_list"]


@dataclasses.dataclass(frozen=True)
class Corpus:
  name: str
  reader: Callable[..., Listing]  # reader(root, **options) -> Listing
  splits: Tuple[str, ...]  # Every split the reader can assign.
  title: str

  @property
  def options(self) -> Dict[str, object]:
    """The reader's keyword options and their defaults."""
    return {p.name: p.default for p in inspect.signature(self.reader).parameters.values()
            if p.kind == p.KEYWORD_ONLY}


CORPORA: Dict[str, Corpus] = {c.name: c for c in (
    Corpus("ffpp", ffpp.read, ffpp.SPLITS, "FaceForensics++ (+ FaceShifter, DeepFakeDetection)"),
    Corpus("deeperforensics", deeperforensics.read, deeperforensics.SPLITS,
           "DeeperForensics-1.0 (+ the FF++ reals)"),
    Corpus("celebdf", celebdf.read, celebdf.SPLITS, "Celeb-DF (v2)"),
    Corpus("dfdc", dfdc.read, dfdc.SPLITS, "Deepfake Detection Challenge (full)"),
    Corpus("fakeavceleb", fakeavceleb.read, fakeavceleb.SPLITS, "FakeAVCeleb v1.2"),
    Corpus("voxceleb2", voxceleb.read_voxceleb2, tuple(voxceleb.VOX_SPLITS.values()),
           "VoxCeleb2 (reals)"),
    Corpus("lrw", voxceleb.read_lrw, voxceleb.LRW_SPLITS, "LRW (reals)"),
)}


def get(name: str) -> Corpus:
  if name not in CORPORA:
    raise CorpusError(f"unknown corpus {name!r}; choose from {', '.join(CORPORA)}")
  return CORPORA[name]


def read(name: str, root: str, *, splits: Optional[Iterable[str]] = None,
         landmarks_dir: Optional[str] = None, allow_missing: bool = False,
         **options) -> Listing:
  """The entries of corpus ``name`` at ``root`` in ``splits`` (default: all), checked.

  Raises ``CorpusError`` for an option the corpus does not take, a root that does not look like
  the corpus, duplicate video ids, and videos its metadata lists that are not on disk (unless
  ``allow_missing``: then they are left out and counted in the notes). ``landmarks_dir``
  attaches ``<landmarks_dir>/<video_id>.npy`` (or ``.json``) where it exists.
  """
  corpus = get(name)
  unknown = sorted(set(options) - set(corpus.options))
  if unknown:
    raise CorpusError(f"corpus {name!r} takes no option {', '.join(unknown)}; its options: "
                      f"{', '.join(corpus.options) or 'none'}")
  keep = _splits(splits, corpus)
  listing = corpus.reader(root, **options)
  entries = [e for e in listing.entries if e.split in keep]
  notes = list(listing.notes)
  counts = collections.Counter(e.video_id for e in entries)
  dups = sorted(v for v, n in counts.items() if n > 1)
  if dups:
    raise CorpusError(f"{name}: duplicate video ids {dups[:5]} (two files map to one id)")
  missing = [e for e in entries if not os.path.isfile(e.path)]
  if missing:
    shown = "\n  ".join(e.path for e in missing[:5])
    if not allow_missing:
      raise CorpusError(
          f"{name}: {len(missing)} of the {len(entries)} videos that the corpus metadata lists "
          f"are not on disk, e.g.\n  {shown}\n(an incomplete download? --allow_missing lists only "
          f"the videos present)")
    gone = {id(e) for e in missing}
    entries = [e for e in entries if id(e) not in gone]
    notes.append(f"{len(missing)} listed videos are not on disk and were left out, e.g. "
                 f"{missing[0].path}")
  if landmarks_dir:
    if not os.path.isdir(landmarks_dir):
      raise CorpusError(f"landmarks_dir {landmarks_dir}: not a directory")
    entries = [dataclasses.replace(e, landmarks=_landmark_file(landmarks_dir, e.video_id))
               for e in entries]
    notes.append(f"landmark files for {sum(bool(e.landmarks) for e in entries)} of "
                 f"{len(entries)} videos in {landmarks_dir}")
  return Listing(entries, notes)


def _splits(splits: Optional[Iterable[str]], corpus: Corpus) -> Sequence[str]:
  return base.split_list(splits, corpus.splits, f"--split of {corpus.name}")


def _landmark_file(landmarks_dir: str, video_id: str) -> str:
  for ext in (".npy", ".json"):
    p = os.path.join(landmarks_dir, *video_id.split("/")) + ext
    if os.path.isfile(p):
      return p
  return ""


def extras_path(list_path: str) -> str:
  """Where ``write_list`` puts the extras of ``LIST.jsonl``: ``LIST.extras.jsonl``."""
  return list_path[:-len(".jsonl")] + ".extras.jsonl"


def write_list(entries: Sequence[Entry], path: str) -> Optional[str]:
  """Writes the preprocessing list (``VideoItem`` fields only: the preprocessor rejects unknown
  keys) and, if any entry has extras, ``extras_path(path)`` with one ``{"video_id": ..., **extras}``
  line per entry in the same order. Both are written atomically. Returns the extras path or None.
  """
  if not path.endswith(".jsonl"):
    raise CorpusError(f"{path}: the list must end in .jsonl (the preprocessor reads a --videos "
                      f"path ending in .jsonl as a list, anything else as a directory)")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  _write_jsonl(path, (e.item() for e in entries))
  xpath = extras_path(path)
  if any(e.extras for e in entries):
    _write_jsonl(xpath, ({"video_id": e.video_id, **e.extras} for e in entries))
    return xpath
  if os.path.exists(xpath):  # A stale sidecar of an earlier run would now be wrong.
    os.remove(xpath)
  return None


def _write_jsonl(path: str, rows: Iterable[dict]) -> None:
  with open(path + ".tmp", "w") as f:
    for row in rows:
      f.write(json.dumps(row, sort_keys=False) + "\n")
  os.replace(path + ".tmp", path)


def summary(entries: Sequence[Entry]) -> List[str]:
  """One line per split: video count, reals, and fakes per manipulation."""
  lines = []
  by_split = collections.defaultdict(collections.Counter)
  for e in entries:
    by_split[e.split][e.manipulation] += 1
  for split in sorted(by_split):
    c = by_split[split]
    fakes = ", ".join(f"{m} {n}" for m, n in sorted(c.items()) if m != REAL)
    lines.append(f"  {split}: {sum(c.values())} videos = {c.get(REAL, 0)} real"
                 + (f" + fake ({fakes})" if fakes else ""))
  return lines

"""What every corpus reader shares: the list entry, the error type and directory helpers.

A reader turns a user's local copy of a corpus (the layout it ships in) into ``Entry`` objects,
one per video. Readers list what the corpus' own metadata says should be there (split files,
label files); whether each file exists is checked once, in ``corpora.read``, so a partial
download is reported the same way for every corpus.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence

REAL = "real"  # The `manipulation` of real videos (records.REAL; a test checks they agree).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v")  # As the preprocessor.


class CorpusError(ValueError):
  """The root does not look like the corpus, or its metadata is inconsistent."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One video of a corpus: exactly the fields ``input_pipeline.preprocess`` reads from a list
  row (``VideoItem``), plus ``extras`` the corpus knows but the records do not store (FF++
  compression, DFDC's original video, FakeAVCeleb's method, ...)."""
  path: str
  video_id: str  # Stable and unique: "<corpus>/<path-like id>", no extension.
  split: str
  label: int  # 0 real, 1 fake.
  manipulation: str  # REAL for real videos, else the forgery family.
  source: str  # Corpus the file comes from ("ffpp" for the FF++ reals DeeperForensics uses).
  identity: str = ""  # Subject id where the corpus has one.
  landmarks: str = ""  # Landmark file (set by corpora.read from --landmarks_dir).
  # Fakes: the video_id of the real video the fake was made from, exactly as this corpus' reader
  # names that real, so the records pair up by id (input_pipeline.pairing); "" when unknown.
  original: str = ""
  extras: Dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

  def __post_init__(self):
    if self.label not in (0, 1):
      raise ValueError(f"{self.video_id}: label must be 0 or 1, got {self.label!r}")
    if (self.label == 0) != (self.manipulation == REAL):
      raise ValueError(f"{self.video_id}: label {self.label} with manipulation "
                       f"{self.manipulation!r} (reals, and only reals, are {REAL!r})")
    if self.original and not self.label:
      raise ValueError(f"{self.video_id}: a real video with original {self.original!r} (only "
                       f"fakes name the real they were made from)")

  def item(self) -> Dict[str, Any]:
    """The JSON-lines row ``python -m input_pipeline.preprocess --videos=LIST.jsonl`` reads."""
    row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extras"}
    for optional in ("landmarks", "original"):
      if not row[optional]:
        del row[optional]
    return row


@dataclasses.dataclass
class Listing:
  """A reader's output: the entries and human-readable notes (files on disk that the corpus'
  metadata does not mention, duplicates dropped, ...)."""
  entries: List[Entry]
  notes: List[str] = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------------------- directories
def require_dir(path: str, what: str) -> str:
  if not os.path.isdir(path):
    raise CorpusError(f"{path}: not a directory ({what})")
  return path


def find(parent: str, *names: str) -> Optional[str]:
  """``parent/<name>`` for the first of ``names`` that exists, compared case-insensitively
  (copies differ: Celeb-DF's ``YouTube-real`` is ``Youtube-real`` in some); None if none."""
  try:
    children = os.listdir(parent)
  except OSError:
    return None
  lower = {c.lower(): c for c in sorted(children)}
  for name in names:
    if name.lower() in lower:
      return os.path.join(parent, lower[name.lower()])
  return None


def child(parent: str, name: str, what: str, *aliases: str, corpus: str = "") -> str:
  """Like ``find`` but raises a ``CorpusError`` that names the missing entry, what it should
  hold and what the folder does contain."""
  found = find(parent, name, *aliases)
  if found is None:
    try:
      have = sorted(os.listdir(parent))
    except OSError:
      have = None
    if have is None:
      shown = "it does not exist"
    elif have:
      shown = f"it has {', '.join(have[:12])}{' ...' if len(have) > 12 else ''}"
    else:
      shown = "it is empty"
    prefix = f"{corpus}: " if corpus else ""
    raise CorpusError(f"{prefix}expected '{name}' ({what}) in {parent}, but {shown}")
  return found


def videos_in(folder: str) -> List[str]:
  """Video file names (sorted) directly in ``folder``."""
  return sorted(f for f in os.listdir(folder) if f.lower().endswith(VIDEO_EXTENSIONS)
                and not f.startswith("."))


def walk_videos(folder: str) -> List[str]:
  """Paths of every video file under ``folder`` (sorted, recursive)."""
  out = []
  for dirpath, dirnames, files in os.walk(folder):
    dirnames.sort()
    out.extend(os.path.join(dirpath, f) for f in files
               if f.lower().endswith(VIDEO_EXTENSIONS) and not f.startswith("."))
  return sorted(out)


def stem(name: str) -> str:
  """File name without directory and extension."""
  return os.path.splitext(os.path.basename(name))[0]


def rel_id(path: str, start: str) -> str:
  """``path`` relative to ``start``, '/'-separated, without extension."""
  return os.path.splitext(os.path.relpath(path, start))[0].replace(os.sep, "/")


def read_json(path: str, kind: type, expected: str, error: type = None):
  """A JSON file whose top level must be ``kind``; anything else is an ``error`` (CorpusError
  by default) saying what was ``expected``."""
  error = error or CorpusError
  try:
    with open(path) as f:
      value = json.load(f)
  except json.JSONDecodeError as e:
    raise error(f"{path}: not JSON ({e})") from None
  if not isinstance(value, kind):
    raise error(f"{path}: expected {expected}, got {type(value).__name__}")
  return value


def read_lines(path: str) -> List[str]:
  """Non-empty, stripped lines (a trailing ``\\r`` from Windows copies included)."""
  with open(path, encoding="utf-8-sig") as f:
    return [line.strip() for line in f if line.strip()]


def line_name(line: str) -> str:
  """A list line's video name: its last token that is not a bare integer, as a stem. Lists
  come as ``name`` (LipForensics' ``dfdc_all_vids.txt``) or ``name.avi 1`` (a label column,
  RealForensics' DFDC list)."""
  tokens = [t for t in line.split() if not t.isdigit()] or line.split()
  return stem(tokens[-1].replace("\\", "/"))


def id_list(path: str, what: str) -> List[str]:
  """A one-name-per-line file (names with or without directory/extension, an optional label
  column) → stems."""
  if not os.path.isfile(path):
    raise CorpusError(f"{path}: no such file ({what})")
  return [line_name(line) for line in read_lines(path)]


def split_list(value: Optional[Iterable[str]], allowed: Sequence[str], what: str) -> List[str]:
  """A comma-separated string or sequence → list, each checked against ``allowed``."""
  if value is None:
    return list(allowed)
  items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value)]
  items = [v for v in items if v]
  bad = [v for v in items if v not in allowed]
  if bad or not items:
    raise CorpusError(f"{what}: {bad or 'none given'} not allowed; choose from "
                      f"{', '.join(allowed)}")
  return items


_NUMBERED = re.compile(r"^id\d+$")


def is_identity_folder(name: str) -> bool:
  """VoxCeleb-style identity folder names (``id00012``)."""
  return bool(_NUMBERED.match(name))

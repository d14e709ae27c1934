"""FaceForensics++'s mapping files: which stretch of which YouTube original a record's audio is.

FF++ renamed its 1,000 sequences to ``000``-``999``; ``conversion_dict.json`` (FaceForensics
repository, ``dataset/conversion_dict.json``) maps each back to ``"<youtube id> <k>"``: the k-th
sequence extracted from that YouTube video. The download script's ``downloaded_videos`` folder
holds ``<youtube id>/extracted_sequences/<k>.json``, the list of the YouTube video's frame
numbers (0-based, in display order) that became the sequence. FakeOut (§4.2, App. G) attaches
the original audio from the first of those frames on; its ``proper_audio_files.json`` lists the
ids whose enrichment the authors checked by hand (701 of 1,000).

Which id's audio a record carries (FakeOut §4.2, Fig. 3): a real carries its own; a face swap
keeps the target's lip movement, so it carries the target's audio (``000_003`` → ``000``); a
reenactment drives the target's face with the source's expressions, so its lips move with the
source (``000_003`` → ``003``). DeeperForensics and FaceShifter are face swaps on FF++ targets.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Dict, FrozenSet, List, Optional, Tuple

from input_pipeline.corpora import base as corpora_base

SWAPS = ("Deepfakes", "FaceSwap", "FaceShifter", "DeeperForensics")  # Target lips: target audio.
REENACTMENTS = ("Face2Face", "NeuralTextures")  # Source's lips, source's audio.
_ID = re.compile(r"^\d{3}$")
_YOUTUBE = re.compile(r"^[A-Za-z0-9_-]{11}$")  # YouTube ids are 11 characters of this alphabet.


class MappingError(ValueError):
  """A mapping file is malformed; the message names the file and the key or entry."""


# ----------------------------------------------------------------------------- which id
@dataclasses.dataclass(frozen=True)
class AudioSource:
  """The FF++ id whose original audio a record carries; ``role``: self | target | source."""
  ff_id: str
  role: str


def audio_source(video_id: str, manipulation: str) -> Tuple[Optional[AudioSource], str]:
  """(the id whose audio the record carries, "") or (None, reason) for records it cannot have.

  ``video_id`` as the corpus readers write it: ``ffpp/<comp>/youtube/000`` (a real),
  ``ffpp/<comp>/<Method>/000_003`` (a fake, target 000, source 003),
  ``deeperforensics/<variant>/000_M101`` (target 000, a DeeperForensics actor's face).
  Reasons: ``not_ffpp`` (another corpus: the record is passed through as it is), ``not_youtube``
  (FF++'s DeepFakeDetection actors: not from YouTube), ``unknown_manipulation``.
  """
  parts = video_id.split("/")
  if parts[0] == "ffpp" and len(parts) == 4:
    kind, name = parts[2], parts[3]
    if kind == "youtube" and _ID.match(name):
      return AudioSource(name, "self"), ""
    pair = name.split("_")
    if len(pair) == 2 and all(_ID.match(p) for p in pair):
      return _fake_source(pair[0], pair[1], manipulation or kind)
    return None, "not_youtube"
  if parts[0] == "deeperforensics" and len(parts) == 3:
    target = parts[2].split("_")[0]
    if _ID.match(target):
      return AudioSource(target, "target"), ""
  return None, "not_ffpp"


def _fake_source(target: str, source: str, manipulation: str):
  if manipulation in SWAPS:
    return AudioSource(target, "target"), ""
  if manipulation in REENACTMENTS:
    return AudioSource(source, "source"), ""
  return None, "unknown_manipulation"


# ----------------------------------------------------------------------------- mapping files
@dataclasses.dataclass(frozen=True)
class Sequence:
  """Where FF++ sequence ``ff_id`` sits in its YouTube original: frames [first, first + count)."""
  ff_id: str
  youtube_id: str
  first: int
  count: int


def load_conversion(path: str) -> Dict[str, Tuple[str, int]]:
  """``conversion_dict.json`` → {"000": ("--b1Ua-kWJE", 0), ...}, every entry validated."""
  value = _read_json(path, dict, 'an object like {"000": "--b1Ua-kWJE 0"}')
  out = {}
  for key, v in value.items():
    if not _ID.match(str(key)):
      raise MappingError(f"{path}: key {key!r} is not a 3-digit FF++ id like \"000\"")
    fields = v.split(" ") if isinstance(v, str) else []
    if len(fields) != 2 or not _YOUTUBE.match(fields[0]) or not fields[1].isdigit():
      raise MappingError(f"{path}: key {key!r}: value {v!r} is not \"<11-character youtube id> "
                         "<sequence number>\" (e.g. \"--b1Ua-kWJE 0\")")
    out[key] = (fields[0], int(fields[1]))
  return out


def load_verified(path: str) -> FrozenSet[str]:
  """A JSON list of the FF++ ids whose enrichment was checked (FakeOut's
  ``proper_audio_files.json``)."""
  value = _read_json(path, list, 'a list of 3-digit ids like ["000", "003"]')
  for n, v in enumerate(value):
    if not isinstance(v, str) or not _ID.match(v):
      raise MappingError(f"{path}: entry {n} is {v!r}; expected a 3-digit FF++ id like \"000\"")
  return frozenset(value)


def frame_list_path(sequences_dir: str, youtube_id: str, k: int) -> str:
  """Where the FF++ download script puts a sequence's frame list."""
  return os.path.join(sequences_dir, youtube_id, "extracted_sequences", f"{k}.json")


def load_frame_list(path: str) -> List[int]:
  """A frame list: strictly increasing non-negative frame numbers."""
  value = _read_json(path, list, "a list of frame numbers")
  for n, v in enumerate(value):
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
      raise MappingError(f"{path}: entry {n} is {v!r}; expected a non-negative frame number")
    if n and v <= value[n - 1]:
      raise MappingError(f"{path}: entry {n} ({v}) does not follow entry {n - 1} "
                         f"({value[n - 1]}); frame numbers must increase")
  if not value:
    raise MappingError(f"{path}: empty frame list")
  return value


class Mapping:
  """The mapping files together: ``sequence(ff_id)`` says where an id's frames are, or why not."""

  def __init__(self, conversion_dict: str, sequences_dir: str, verified: Optional[str] = None):
    self.conversion = load_conversion(conversion_dict)
    self.sequences_dir = sequences_dir
    self.verified = load_verified(verified) if verified else None
    self._known: Dict[str, Tuple[Optional[Sequence], str, str]] = {}

  def sequence(self, ff_id: str) -> Tuple[Optional[Sequence], str, str]:
    """(sequence, "", "") or (None, reason, message). A frame list with gaps is not one
    stretch of the original, so it cannot be given one stretch of audio (``frame_list_gaps``)."""
    if ff_id not in self._known:  # A real and its fakes ask for the same id up to 7 times.
      self._known[ff_id] = self._sequence(ff_id)
    return self._known[ff_id]

  def _sequence(self, ff_id: str) -> Tuple[Optional[Sequence], str, str]:
    if ff_id not in self.conversion:
      return None, "no_mapping", f"{ff_id} is not in the conversion dict"
    if self.verified is not None and ff_id not in self.verified:
      return None, "unverified", f"{ff_id} is not in the list of verified ids"
    youtube_id, k = self.conversion[ff_id]
    path = frame_list_path(self.sequences_dir, youtube_id, k)
    if not os.path.isfile(path):
      return None, "no_frame_list", f"{ff_id}: frame list {path} not found"
    frames = load_frame_list(path)
    if frames[-1] - frames[0] + 1 != len(frames):
      return None, "frame_list_gaps", (f"{ff_id}: {path} skips frames ({len(frames)} frames "
                                       f"span {frames[0]}..{frames[-1]})")
    return Sequence(ff_id, youtube_id, frames[0], len(frames)), "", ""


def _read_json(path: str, kind: type, expected: str):
  if not os.path.isfile(path):
    raise MappingError(f"{path}: file not found (expected {expected})")
  return corpora_base.read_json(path, kind, expected, error=MappingError)

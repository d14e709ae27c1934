"""FaceForensics++ (Rössler et al., ICCV 2019) from the layout its download script writes.

  ROOT/original_sequences/youtube/<raw|c23|c40>/videos/000.mp4 ... 999.mp4
  ROOT/original_sequences/actors/<comp>/videos/01__exit_phone_room.mp4        (DeepFakeDetection)
  ROOT/manipulated_sequences/<Method>/<comp>/videos/000_003.mp4   (target 000, source 003)
  SPLITS/train.json, val.json, test.json   (github.com/ondyari/FaceForensics dataset/splits)

A split file is a list of ``[a, b]`` pairs of original ids: the reals ``a`` and ``b`` and the
fakes ``a_b`` and ``b_a`` of every method belong to that split (360/70/70 pairs: 720/140/140
videos per method). Every method keeps the target's frames (the swaps put b's face into a's
video, the reenactments drive a's face), so a fake's ``original`` is the youtube real ``a``.
FaceShifter (and DeeperForensics, its own reader) reuse the youtube reals and follow the same
split; DeepFakeDetection has no official split (see ``read``).
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from input_pipeline.corpora import base

SOURCE = "ffpp"
SPLITS = ("train", "val", "test")
COMPRESSIONS = ("raw", "c23", "c40")
FOUR = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")  # The FF++ benchmark methods.
METHODS = FOUR + ("FaceShifter", "DeepFakeDetection")
DFD = "DeepFakeDetection"
SPLITS_URL = "https://github.com/ondyari/FaceForensics/tree/master/dataset/splits"
_ID = re.compile(r"^\d{3}$")


# ----------------------------------------------------------------------------- split files
def find_splits_dir(root: str, splits_dir: Optional[str]) -> str:
  """``splits_dir`` if given, else ``ROOT/splits`` or ``ROOT`` when they hold train.json."""
  if splits_dir:
    return base.require_dir(splits_dir, "FaceForensics++ split files train/val/test.json")
  for cand in (os.path.join(root, "splits"), root):
    if os.path.isfile(os.path.join(cand, "train.json")):
      return cand
  raise base.CorpusError(
      f"FaceForensics++ split files (train.json, val.json, test.json) not found in "
      f"{os.path.join(root, 'splits')} or {root}; pass --splits_dir=DIR with the official files "
      f"from {SPLITS_URL}")


def load_splits(splits_dir: str) -> Dict[str, List[Tuple[str, str]]]:
  """split → its ``(a, b)`` pairs, validated: 3-digit ids, no id in two splits."""
  pairs: Dict[str, List[Tuple[str, str]]] = {}
  owner: Dict[str, str] = {}
  for split in SPLITS:
    path = os.path.join(splits_dir, f"{split}.json")
    if not os.path.isfile(path):
      raise base.CorpusError(f"FaceForensics++ split file {path} is missing (expected "
                             f"train.json, val.json and test.json from {SPLITS_URL})")
    rows = base.read_json(path, list, "a list of [target, source] id pairs")
    pairs[split] = []
    for n, row in enumerate(rows):
      if (not isinstance(row, list) or len(row) != 2
          or not all(isinstance(v, str) and _ID.match(v) for v in row)):
        raise base.CorpusError(f"{path}: entry {n} is {row!r}; expected a pair of 3-digit ids "
                               f"like [\"000\", \"003\"]")
      for v in row:
        if owner.setdefault(v, split) != split:
          raise base.CorpusError(f"{path}: video {v} is also in {owner[v]}.json (splits overlap)")
      pairs[split].append((row[0], row[1]))
  return pairs


def id_splits(pairs: Dict[str, List[Tuple[str, str]]]) -> Dict[str, str]:
  """Original video id → split."""
  return {v: split for split, ps in pairs.items() for p in ps for v in p}


def fake_splits(pairs: Dict[str, List[Tuple[str, str]]]) -> Dict[str, str]:
  """Manipulated video name (``a_b`` and ``b_a``) → split."""
  return {name: split for split, ps in pairs.items() for a, b in ps
          for name in (f"{a}_{b}", f"{b}_{a}")}


# ----------------------------------------------------------------------------- folders
def videos_dir(seq_dir: str, compression: str, what: str) -> str:
  """``seq_dir/<compression>/videos``, with an error naming the compressions present."""
  if compression not in COMPRESSIONS:
    raise base.CorpusError(f"compression {compression!r}: choose from {', '.join(COMPRESSIONS)}")
  comp = base.find(seq_dir, compression)
  if comp is None:
    have = [c for c in COMPRESSIONS if base.find(seq_dir, c)]
    raise base.CorpusError(
        f"FaceForensics++: no '{compression}' folder in {seq_dir} ({what}); compressions present: "
        f"{', '.join(have) or 'none'} (download with -c {compression} -t videos, or pass "
        f"--compression)")
  return base.child(comp, "videos", f"{what} at {compression}", corpus="FaceForensics++")


def original_videos(root: str, compression: str, kind: str = "youtube") -> str:
  orig = base.child(root, "original_sequences", "the real videos", corpus="FaceForensics++")
  seq = base.child(orig, kind, f"the {kind} real videos", corpus="FaceForensics++")
  return videos_dir(seq, compression, f"{kind} real videos")


def real_id(vid: str, compression: str) -> str:
  """The ``video_id`` of youtube original ``vid`` (what fakes made on it name as ``original``)."""
  return f"{SOURCE}/{compression}/youtube/{vid}"


def real_entry(videos: str, vid: str, split: str, compression: str) -> base.Entry:
  """The youtube original ``vid`` (shared by the FaceShifter and DeeperForensics readers)."""
  return base.Entry(path=os.path.join(videos, f"{vid}.mp4"),
                    video_id=real_id(vid, compression), split=split, label=0,
                    manipulation=base.REAL, source=SOURCE, identity=vid,
                    extras={"compression": compression})


def read(root: str, *, compression: str = "c23", manipulations: Sequence[str] = FOUR,
         splits_dir: Optional[str] = None, reals: bool = True) -> base.Listing:
  """Reals of the youtube originals plus the fakes of ``manipulations``, at one compression.

  Splits come from the official pair lists. DeepFakeDetection (Google/Jigsaw actors; reals in
  ``original_sequences/actors``) has no official split: its fakes and actor reals are all
  ``test`` (a cross-dataset test set). ``reals=False`` lists fakes only.
  """
  base.require_dir(root, "FaceForensics++ root")
  manipulations = base.split_list(manipulations, METHODS, "FaceForensics++ manipulations")
  ff_methods = [m for m in manipulations if m != DFD]
  entries: List[base.Entry] = []
  notes: List[str] = []
  if ff_methods or (reals and DFD not in manipulations):
    # Folders first: a wrong root should be reported as such, not as missing split files.
    real_videos = original_videos(root, compression) if reals else ""
    method_videos = {}
    if ff_methods:
      manip_root = base.child(root, "manipulated_sequences", "the manipulated videos",
                              corpus="FaceForensics++")
      for method in ff_methods:
        folder = base.child(manip_root, method, f"the {method} videos", corpus="FaceForensics++")
        method_videos[method] = videos_dir(folder, compression, f"{method} videos")
    pairs = load_splits(find_splits_dir(root, splits_dir))
    if reals:
      for vid, split in sorted(id_splits(pairs).items()):
        entries.append(real_entry(real_videos, vid, split, compression))
    by_name = fake_splits(pairs)
    for method, videos in method_videos.items():
      for name, split in sorted(by_name.items()):
        target, src = name.split("_")
        entries.append(base.Entry(
            path=os.path.join(videos, f"{name}.mp4"),
            video_id=f"{SOURCE}/{compression}/{method}/{name}", split=split, label=1,
            manipulation=method, source=SOURCE, identity=target,
            original=real_id(target, compression),
            extras={"compression": compression, "target_video": target, "source_video": src}))
      unlisted = [n for n in map(base.stem, base.videos_in(videos)) if n not in by_name]
      if unlisted:
        notes.append(f"{method}: {len(unlisted)} videos on disk are in no split file and were "
                     f"left out (e.g. {', '.join(unlisted[:3])})")
  if DFD in manipulations:
    entries += _deepfakedetection(root, compression, reals)
  return base.Listing(entries, notes)


def _deepfakedetection(root: str, compression: str, reals: bool) -> List[base.Entry]:
  """Walks the DeepFakeDetection folders (there is no list file). Names:
  ``01_02__exit_phone_room__YVGY8LOK.mp4`` (target actor 01 with actor 02's face, scene, tag)
  and the reals ``01__exit_phone_room.mp4``: a fake's ``original`` is the target actor's real
  of the same scene."""
  manip = base.child(root, "manipulated_sequences", "the manipulated videos",
                     corpus="FaceForensics++")
  videos = videos_dir(base.child(manip, DFD, "the DeepFakeDetection videos",
                                 corpus="FaceForensics++"), compression, "DeepFakeDetection videos")
  out = []
  for fn in base.videos_in(videos):
    name = base.stem(fn)
    parts = name.split("__")
    actors = parts[0].split("_")
    original = (f"{SOURCE}/{compression}/actors/{actors[0]}__{parts[1]}" if len(parts) > 1
                else "")
    out.append(base.Entry(
        path=os.path.join(videos, fn), video_id=f"{SOURCE}/{compression}/{DFD}/{name}",
        split="test", label=1, manipulation=DFD, source=SOURCE, identity=actors[0],
        original=original, extras={"compression": compression, "target_video": actors[0],
                                   "source_video": actors[-1]}))
  if reals:
    actor_videos = original_videos(root, compression, "actors")
    for fn in base.videos_in(actor_videos):
      name = base.stem(fn)
      out.append(base.Entry(
          path=os.path.join(actor_videos, fn), video_id=f"{SOURCE}/{compression}/actors/{name}",
          split="test", label=0, manipulation=base.REAL, source=SOURCE,
          identity=name.split("__")[0], extras={"compression": compression}))
  return out

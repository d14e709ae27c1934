"""Celeb-DF (v2) (Li et al., CVPR 2020), as its README lays it out:

  ROOT/Celeb-real/id0_0000.mp4            590 celebrity videos (identity id0, video 0000)
  ROOT/YouTube-real/00000.mp4             300 more YouTube videos (no identity)
  ROOT/Celeb-synthesis/id0_id16_0000.mp4  5,639 fakes: id16's face on Celeb-real/id0_0000
  ROOT/List_of_testing_videos.txt         518 lines "<1|0> <folder>/<file>.mp4"

In the test list **1 means real and 0 means fake** (the reverse of our labels); the reader checks
each line's flag against its folder. Listed videos are ``test``; every other video is ``train``
(the corpus has no validation split). Folder names are matched case-insensitively because some
copies spell ``Youtube-real``.
"""
from __future__ import annotations

import os
from typing import Dict, List

from input_pipeline.corpora import base

SOURCE = "celebdf"
MANIPULATION = "Celeb-synthesis"
SPLITS = ("train", "test")
TEST_LIST = "List_of_testing_videos.txt"
FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}  # Canonical name → label.


def read(root: str) -> base.Listing:
  base.require_dir(root, "Celeb-DF-v2 root")
  folders = {name: base.child(root, name, f"the {name} videos", corpus="Celeb-DF-v2")
             for name in FOLDERS}
  test_list = base.child(root, TEST_LIST, "the official test list", corpus="Celeb-DF-v2")
  canonical = {name.lower(): name for name in FOLDERS}
  test: Dict[str, int] = {}  # "<Folder>/<stem>" → label from the list.
  for n, line in enumerate(base.read_lines(test_list), 1):
    parts = line.split()
    if len(parts) != 2 or parts[0] not in ("0", "1") or "/" not in parts[1]:
      raise base.CorpusError(f"{test_list}:{n}: {line!r}; expected '<1 real | 0 fake> "
                             f"<folder>/<file>.mp4'")
    folder, fn = parts[1].split("/", 1)
    name = canonical.get(folder.lower())
    if name is None:
      raise base.CorpusError(f"{test_list}:{n}: unknown folder {folder!r} (have {list(FOLDERS)})")
    label = 1 - int(parts[0])  # The list's 1 = real.
    if label != FOLDERS[name]:
      raise base.CorpusError(f"{test_list}:{n}: {parts[1]} is flagged {parts[0]} "
                             f"({'fake' if label else 'real'}) but lives in {name}")
    test[f"{name}/{base.stem(fn)}"] = label

  entries: List[base.Entry] = []
  seen = set()
  for name, label in FOLDERS.items():
    for fn in base.videos_in(folders[name]):
      key = f"{name}/{base.stem(fn)}"
      seen.add(key)
      entries.append(_entry(name, os.path.join(folders[name], fn), label,
                            "test" if key in test else "train"))
  for key in sorted(set(test) - seen):  # Listed but absent: corpora.read reports it as missing.
    name, vid = key.split("/")
    entries.append(_entry(name, os.path.join(folders[name], vid + ".mp4"), test[key], "test"))
  return base.Listing(entries)


def _entry(folder: str, path: str, label: int, split: str) -> base.Entry:
  vid = base.stem(path)
  parts = vid.split("_")
  extras, original = {}, ""
  identity = parts[0] if folder != "YouTube-real" else ""
  if label:  # id0_id16_0000: target id0, source id16, target video id0_0000.
    extras = {"source_identity": parts[1] if len(parts) > 2 else "",
              "original": f"Celeb-real/{parts[0]}_{parts[-1]}"}
    original = f"{SOURCE}/{extras['original']}"  # The real's video_id.
  return base.Entry(path=path, video_id=f"{SOURCE}/{folder}/{vid}", split=split, label=label,
                    manipulation=MANIPULATION if label else base.REAL, source=SOURCE,
                    identity=identity, original=original, extras=extras)

"""Real talking faces for self-supervised pretraining: VoxCeleb2 and LRW (every video is real).

VoxCeleb2 (Chung et al., 2018), the ``vox2_dev_mp4`` / ``vox2_test_mp4`` archives:

  ROOT/dev/mp4/id00012/21Uxsk56VDQ/00001.mp4     5,994 identities, 1,092,009 clips  → train
  ROOT/test/mp4/id00017/01dfn2spqyE/00001.mp4      118 identities,    36,273 clips  → test

(``dev/`` and ``test/`` may also hold the identity folders directly, without ``mp4/``.)
``identity`` is the speaker id; the YouTube video id is an extra.

LRW (Chung & Zisserman, ACCV 2016), the ``lipread_mp4`` archive:

  ROOT/ABOUT/train/ABOUT_00001.mp4 (+ .txt)   500 words × train/val/test, 29-frame (1.16 s) clips

ROOT may be ``lipread_mp4`` or the folder that contains it. The word is an extra (labels are not
needed: RealForensics uses LRW without them); LRW names no speakers, so ``identity`` is empty.
"""
from __future__ import annotations

import os
from typing import List

from input_pipeline.corpora import base

VOX_SPLITS = {"dev": "train", "test": "test"}
LRW_SPLITS = ("train", "val", "test")


def read_voxceleb2(root: str) -> base.Listing:
  base.require_dir(root, "VoxCeleb2 root")
  entries: List[base.Entry] = []
  found = []
  for part, split in VOX_SPLITS.items():
    folder = base.find(root, part)
    if folder is None:
      continue
    folder = base.find(folder, "mp4") or folder
    found.append(part)
    for path in base.walk_videos(folder):
      rel = base.rel_id(path, folder)
      parts = rel.split("/")
      if len(parts) != 3 or not base.is_identity_folder(parts[0]):
        raise base.CorpusError(f"VoxCeleb2: {path} is not <idXXXXX>/<youtube id>/<NNNNN>.mp4 "
                               f"under {folder}")
      entries.append(base.Entry(
          path=path, video_id=f"voxceleb2/{part}/{rel}", split=split, label=0,
          manipulation=base.REAL, source="voxceleb2", identity=parts[0],
          extras={"youtube_id": parts[1]}))
  if not found:
    raise base.CorpusError(f"VoxCeleb2: expected 'dev' and/or 'test' (each with mp4/<idXXXXX>/"
                           f"<youtube id>/NNNNN.mp4) in {root}, but it has "
                           f"{', '.join(sorted(os.listdir(root))[:12]) or 'nothing'}")
  return base.Listing(entries)


def read_lrw(root: str) -> base.Listing:
  base.require_dir(root, "LRW root")
  root = base.find(root, "lipread_mp4") or root
  entries: List[base.Entry] = []
  for word in sorted(os.listdir(root)):
    word_dir = os.path.join(root, word)
    if not os.path.isdir(word_dir):
      continue
    splits = [s for s in LRW_SPLITS if os.path.isdir(os.path.join(word_dir, s))]
    if not splits:
      raise base.CorpusError(f"LRW: {word_dir} has no train/val/test folder; expected "
                             f"lipread_mp4/<WORD>/<train|val|test>/<WORD>_NNNNN.mp4")
    for split in splits:
      folder = os.path.join(word_dir, split)
      for fn in base.videos_in(folder):
        entries.append(base.Entry(
            path=os.path.join(folder, fn), video_id=f"lrw/{word}/{split}/{base.stem(fn)}",
            split=split, label=0, manipulation=base.REAL, source="lrw", extras={"word": word}))
  if not entries:
    raise base.CorpusError(f"LRW: no <WORD>/<train|val|test>/*.mp4 under {root} (expected the "
                           f"lipread_mp4 folder or its parent)")
  return base.Listing(entries)

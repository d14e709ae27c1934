"""FakeAVCeleb (Khalid et al., NeurIPS 2021 datasets track), v1.2 layout:

  ROOT/meta_data.csv
  ROOT/FakeAVCeleb/<category>/<race>/<gender>/<idXXXXX>/<file>.mp4

``<category>`` is one of ``CATEGORIES`` (A RealVideo-RealAudio: the 500 VoxCeleb2 reals; B
RealVideo-FakeAudio; C FakeVideo-RealAudio; D FakeVideo-FakeAudio). ``meta_data.csv`` has the
header ``source,target1,target2,method,category,type,race,gender,path,`` where ``path`` is the
file name and the unnamed last column the folder (``FakeAVCeleb/RealVideo-RealAudio/African/men/
id00076``); ``method`` is real, rtvc, faceswap, fsgan, wav2lip, faceswap-wav2lip or
fsgan-wav2lip. A few files appear on two rows (relabelled with another method): the first row
wins. Without ``meta_data.csv`` the category folders are walked (directly under ROOT or under
ROOT/FakeAVCeleb) and the method is unknown.

Labels: only RealVideo-RealAudio is real (0); a real face with a cloned voice is a forgery (1),
as FakeOut scores it. ``manipulation`` is the category name (``manipulation_key='method'`` gives
the method instead). The corpus has no official split: every video is ``test`` unless
``test_identities`` names the test identities (one ``idXXXXX`` a line; FakeOut's split is 120
source identities), in which case the others are ``train``.
"""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Optional

from input_pipeline.corpora import base

SOURCE = "fakeavceleb"
SPLITS = ("train", "test")
CATEGORIES = {"A": "RealVideo-RealAudio", "B": "RealVideo-FakeAudio",
              "C": "FakeVideo-RealAudio", "D": "FakeVideo-FakeAudio"}
REAL_CATEGORY = "RealVideo-RealAudio"
META = "meta_data.csv"
KEYS = ("type", "method")


def read(root: str, *, test_identities: Optional[str] = None,
         manipulation_key: str = "type") -> base.Listing:
  base.require_dir(root, "FakeAVCeleb root")
  if manipulation_key not in KEYS:
    raise base.CorpusError(f"manipulation_key {manipulation_key!r}: choose from {KEYS}")
  test_ids = set(base.id_list(test_identities, "test identities")) if test_identities else None
  meta = base.find(root, META)
  rows = _meta_rows(root, meta) if meta else _walk(root)
  notes: List[str] = []
  if not meta:
    notes.append(f"no {META} in {root}: categories from folders, methods unknown")
  entries, seen = [], {}
  for row in rows:
    if row["rel"] in seen:
      continue
    seen[row["rel"]] = True
    category = row["type"]
    label = int(category != REAL_CATEGORY)
    identity = row["source"]
    if label and manipulation_key == "method":
      manipulation = row["method"] or category
    else:
      manipulation = category if label else base.REAL
    split = "test" if test_ids is None or identity in test_ids else "train"
    extras = {k: row[k] for k in ("method", "category", "race", "gender", "target1", "target2")
              if row.get(k) not in (None, "", "-")}
    extras["type"] = category
    entries.append(base.Entry(
        path=row["path"], video_id=f"{SOURCE}/{row['rel']}", split=split, label=label,
        manipulation=manipulation, source=SOURCE, identity=identity, extras=extras))
  if len(seen) < len(rows):
    notes.append(f"{len(rows) - len(seen)} duplicate rows (same file, other method) ignored")
  if test_ids is not None:
    unknown = sorted(test_ids - {e.identity for e in entries})
    if unknown:
      raise base.CorpusError(f"{test_identities}: identities not in the corpus: "
                             f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
  return base.Listing(entries, notes)


def _category_parent(root: str) -> str:
  """The folder holding the category folders: ROOT/FakeAVCeleb or ROOT itself."""
  for cand in (base.find(root, "FakeAVCeleb"), root):
    if cand and any(base.find(cand, c) for c in CATEGORIES.values()):
      return cand
  raise base.CorpusError(
      f"FakeAVCeleb: no category folder ({', '.join(CATEGORIES.values())}) in {root} or "
      f"{os.path.join(root, 'FakeAVCeleb')}")


def _meta_rows(root: str, meta: str) -> List[Dict[str, str]]:
  parent = _category_parent(root)
  out = []
  with open(meta, newline="", encoding="utf-8-sig") as f:
    reader = csv.reader(f)
    header = [h.strip() for h in next(reader, [])]
    need = ["source", "target1", "target2", "method", "category", "type", "race", "gender",
            "path"]
    if header[:len(need)] != need:
      raise base.CorpusError(f"{meta}: header {header}; expected {','.join(need)},<folder>")
    for n, values in enumerate(reader, 2):
      if not any(v.strip() for v in values):
        continue
      if len(values) < len(need) + 1:
        raise base.CorpusError(f"{meta}:{n}: {len(values)} columns; expected {len(need) + 1} "
                               f"(the last one the video's folder)")
      row = dict(zip(need, (v.strip() for v in values)))
      folder = values[len(need)].strip().strip("/")
      if row["type"] not in CATEGORIES.values():
        raise base.CorpusError(f"{meta}:{n}: type {row['type']!r} is not one of "
                               f"{', '.join(CATEGORIES.values())}")
      # The folder starts with "FakeAVCeleb/" in the CSV; the files live under `parent`.
      rel_folder = folder.split("/", 1)[1] if folder.split("/")[0] == "FakeAVCeleb" else folder
      rel = f"{rel_folder}/{base.stem(row['path'])}"
      out.append(dict(row, rel=rel, path=os.path.join(parent, *rel_folder.split("/"),
                                                          row["path"])))
  return out


def _walk(root: str) -> List[Dict[str, str]]:
  parent = _category_parent(root)
  out = []
  for category in CATEGORIES.values():
    folder = base.find(parent, category)
    if folder is None:
      continue
    for path in base.walk_videos(folder):
      rel = f"{category}/{base.rel_id(path, folder)}"
      ids = [p for p in rel.split("/") if base.is_identity_folder(p)]
      parts = rel.split("/")
      out.append({"type": category, "source": ids[-1] if ids else "", "method": "",
                  "race": parts[1] if len(parts) > 4 else "",
                  "gender": parts[2] if len(parts) > 4 else "", "rel": rel, "path": path})
  return out

"""DFDC, the full Deepfake Detection Challenge dataset (Dolhansky et al., 2020).

Every folder under ROOT that has a label file is read:

* ``metadata.json`` of a training part (``dfdc_train_part_N/``), one object per video:
  ``{"x.mp4": {"label": "FAKE"|"REAL", "split": "train", "original": "y.mp4"|null}}``;
* ``metadata.json`` of the test set: ``{"x.mp4": {"is_fake": 0|1, "augmentations": {...}}}``
  (the format of the copy LipForensics ships with its DFDC subset);
* ``labels.csv`` of the test set: header ``filename,label``, label 0/1 (or REAL/FAKE).

Videos sit next to their label file or in its ``videos/`` subfolder. The split is the entry's own
``split`` field where it has one (training parts: ``train``) and ``label_file_split`` (default
``test``) for label files without it. ``subset`` restricts the listing to the names in a file, e.g.
the 3,215 single-subject test videos of LipForensics' ``dfdc_all_vids.txt`` (RealForensics'
"DFDC") or FakeOut's ``dfdc_filtered_test.txt``. DFDC names no forgery method per video: every
fake has manipulation ``DFDC``.
"""
from __future__ import annotations

import csv
import os
from typing import Any, Dict, List, Optional, Tuple

from input_pipeline.corpora import base

SOURCE = "dfdc"
MANIPULATION = "DFDC"
SPLITS = ("train", "val", "test")
LABEL_FILES = ("metadata.json", "labels.csv")
_LABELS = {"REAL": 0, "FAKE": 1, "0": 0, "1": 1}


def read(root: str, *, subset: Optional[str] = None,
         label_file_split: str = "test") -> base.Listing:
  base.require_dir(root, "DFDC root")
  if label_file_split not in SPLITS:
    raise base.CorpusError(f"label_file_split {label_file_split!r}: choose from {SPLITS}")
  found: Dict[str, Tuple[str, Dict[str, Any]]] = {}  # stem → (label file, row)
  label_files = []
  for dirpath, dirnames, files in os.walk(root):
    dirnames.sort()
    for fn in LABEL_FILES:
      if fn in files:
        path = os.path.join(dirpath, fn)
        label_files.append(path)
        for name, row in _rows(path, label_file_split):
          prev = found.get(base.stem(name))
          if prev and prev[1]["label"] != row["label"]:
            raise base.CorpusError(f"{name}: label {row['label']} in {path} but "
                                   f"{prev[1]['label']} in {prev[0]}")
          if prev:
            prev[1].update({k: v for k, v in row.items() if k not in prev[1]})
          else:
            found[base.stem(name)] = (path, dict(row, file=name))
  if not label_files:
    raise base.CorpusError(
        f"DFDC: no metadata.json or labels.csv anywhere under {root} (expected the training "
        f"parts dfdc_train_part_N/metadata.json and/or the test set's metadata.json/labels.csv)")

  notes: List[str] = []
  names = sorted(found)
  if subset:
    wanted = base.id_list(subset, "DFDC subset list")
    unknown = sorted(set(wanted) - set(found))
    if unknown:
      raise base.CorpusError(f"{subset}: {len(unknown)} names are in no DFDC label file under "
                             f"{root} (e.g. {', '.join(unknown[:5])})")
    names = sorted(set(wanted))
    notes.append(f"subset {subset}: {len(names)} of {len(found)} labelled videos")
  entries = []
  for name in names:
    label_file, row = found[name]
    folder = os.path.dirname(label_file)
    path = os.path.join(folder, row["file"])
    if not os.path.exists(path) and os.path.exists(os.path.join(folder, "videos", row["file"])):
      path = os.path.join(folder, "videos", row["file"])
    extras = {k: row[k] for k in ("original", "augmentations") if row.get(k) is not None}
    extras["part"] = os.path.relpath(folder, root).replace(os.sep, "/")
    original = row.get("original")
    entries.append(base.Entry(
        path=path, video_id=f"{SOURCE}/{name}", split=row["split"], label=row["label"],
        manipulation=MANIPULATION if row["label"] else base.REAL, source=SOURCE,
        identity=base.stem(original) if original else (name if row.get("has_original") else ""),
        original=f"{SOURCE}/{base.stem(original)}" if original and row["label"] else "",
        extras=extras))
  return base.Listing(entries, notes)


def _rows(path: str, default_split: str):
  """(file name, {label, split, original?, augmentations?}) of one label file."""
  if path.endswith(".json"):
    meta = base.read_json(path, dict, "an object keyed by video file name")
    for name, info in sorted(meta.items()):
      if not isinstance(info, dict) or not ("label" in info or "is_fake" in info):
        raise base.CorpusError(f"{path}: entry {name!r} has neither 'label' (REAL/FAKE) nor "
                               f"'is_fake' (0/1)")
      label = _label(info.get("label", info.get("is_fake")), f"{path}: {name}")
      split = info.get("split", default_split)
      if split not in SPLITS:
        raise base.CorpusError(f"{path}: {name} has split {split!r}; expected one of {SPLITS}")
      row = {"label": label, "split": split, "augmentations": info.get("augmentations"),
             "original": info.get("original")}
      if "label" in info:  # Training parts: reals are their own originals.
        row["has_original"] = True
      yield name, row
  else:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      if not reader.fieldnames or not {"filename", "label"} <= set(reader.fieldnames):
        raise base.CorpusError(f"{path}: expected a header 'filename,label', got "
                               f"{reader.fieldnames}")
      for n, row in enumerate(reader, 2):
        yield row["filename"].strip(), {
            "label": _label(row["label"], f"{path}:{n}"), "split": default_split}


def _label(value: Any, where: str) -> int:
  key = str(value).strip().upper()
  if key.endswith(".0"):
    key = key[:-2]
  if key not in _LABELS:
    raise base.CorpusError(f"{where}: label {value!r}; expected REAL/FAKE or 0/1")
  return _LABELS[key]

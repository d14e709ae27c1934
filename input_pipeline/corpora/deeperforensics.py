"""DeeperForensics-1.0 (Jiang et al., CVPR 2020): DF-VAE face swaps onto the FF++ youtube videos.

  ROOT/manipulated_videos/<variant>/<target>_<actor>.mp4   e.g. end_to_end/000_M101.mp4
  ROOT/lists/splits/train.txt, val.txt, test.txt            (one manipulated video name a line)
  FFPP_ROOT/original_sequences/youtube/c23/videos/000.mp4   (the reals: DeeperForensics does not
                                                              ship them; its README says to use
                                                              FF++ c23)

``<target>`` is the three-digit FF++ id of the video the face was swapped onto, ``<actor>`` the
DeeperForensics actor whose face it now shows; a fake's ``original`` is that FF++ real (at
``compression``, as the reals are listed). Variants: ``end_to_end`` (the 1,000 raw fakes of
the paper), ``reenact_postprocess``, ``end_to_end_level_<1-5>``, ``end_to_end_random_level``,
``end_to_end_mix_<2-4>_distortions``.

Two split protocols:
* ``ffpp`` (default): a fake takes the FF++ split of its target video, and the reals are the FF++
  originals of each split — how RealForensics, LipForensics and FakeOut evaluate ("the test
  videos, according to the FF++ split"; FakeOut's published DeeperForensics list is exactly the
  FF++ test ids).
* ``deeperforensics``: the dataset's own ``lists/splits`` files (703/96/201 fakes); the reals of a
  split are the targets of its fakes.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from input_pipeline.corpora import base, ffpp

SOURCE = "deeperforensics"
MANIPULATION = "DeeperForensics"
SPLITS = ("train", "val", "test")
PROTOCOLS = ("ffpp", "deeperforensics")


def read(root: str, *, ffpp_root: Optional[str] = None, variant: str = "end_to_end",
         protocol: str = "ffpp", splits_dir: Optional[str] = None, compression: str = "c23",
         reals: bool = True) -> base.Listing:
  """Fakes of one ``variant`` and, unless ``reals=False``, the FF++ reals (``ffpp_root``) at
  ``compression``. ``splits_dir`` holds FF++'s split files (protocol ``ffpp``)."""
  base.require_dir(root, "DeeperForensics-1.0 root")
  if protocol not in PROTOCOLS:
    raise base.CorpusError(f"protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
  manip = base.child(root, "manipulated_videos", "the 11 folders of manipulated videos",
                     corpus="DeeperForensics-1.0")
  folder = base.child(manip, variant, "the manipulated videos of this --variant",
                      corpus="DeeperForensics-1.0")
  on_disk = {base.stem(f): f for f in base.videos_in(folder)}
  if reals and not ffpp_root:
    raise base.CorpusError(
        "DeeperForensics-1.0 ships no real videos (its reals are the FF++ c23 youtube "
        "originals): pass --ffpp_root=DIR (the FaceForensics++ root), or --noreals")
  if protocol == "ffpp" and not (ffpp_root or splits_dir):
    raise base.CorpusError(
        "DeeperForensics-1.0 with --protocol=ffpp needs FF++'s split files: pass --ffpp_root=DIR "
        "(split files in DIR/splits or DIR) or --splits_dir=DIR")

  notes: List[str] = []
  if protocol == "ffpp":
    pairs = ffpp.load_splits(ffpp.find_splits_dir(ffpp_root or "", splits_dir))
    target_split = ffpp.id_splits(pairs)
    fake_split: Dict[str, str] = {}
    for name in on_disk:
      split = target_split.get(name.split("_")[0])
      if split is None:
        notes.append(f"{name}: target id not in the FF++ split files, left out")
      else:
        fake_split[name] = split
    real_split = target_split
  else:
    lists = base.child(base.child(root, "lists", "the list files", corpus="DeeperForensics-1.0"),
                       "splits", "train.txt, val.txt and test.txt", corpus="DeeperForensics-1.0")
    fake_split = {}
    for split in SPLITS:
      path = os.path.join(lists, f"{split}.txt")
      if not os.path.isfile(path):
        raise base.CorpusError(f"DeeperForensics-1.0 split file {path} is missing")
      for name in base.id_list(path, f"DeeperForensics {split} split"):
        if fake_split.setdefault(name, split) != split:
          raise base.CorpusError(f"{path}: {name} is also in the {fake_split[name]} split")
    real_split = {}
    for name, split in fake_split.items():
      target = name.split("_")[0]
      if real_split.setdefault(target, split) != split:
        raise base.CorpusError(f"DeeperForensics splits: target video {target} has fakes in both "
                               f"{real_split[target]} and {split}")
    unlisted = sorted(set(on_disk) - set(fake_split))
    if unlisted:
      notes.append(f"{len(unlisted)} videos of {variant} are in no split file and were left out "
                   f"(e.g. {', '.join(unlisted[:3])})")

  entries = []
  if reals:
    videos = ffpp.original_videos(ffpp_root, compression)
    entries += [ffpp.real_entry(videos, vid, split, compression)
                for vid, split in sorted(real_split.items())]
  for name, split in sorted(fake_split.items()):
    target, actor = (name.split("_") + [""])[:2]
    entries.append(base.Entry(
        path=os.path.join(folder, on_disk.get(name, f"{name}.mp4")),
        video_id=f"{SOURCE}/{variant}/{name}", split=split, label=1, manipulation=MANIPULATION,
        source=SOURCE, identity=target, original=ffpp.real_id(target, compression),
        extras={"variant": variant, "target_video": target, "source_actor": actor}))
  return base.Listing(entries, notes)

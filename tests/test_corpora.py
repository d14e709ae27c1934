"""Corpus readers on tiny directory trees that mimic each corpus' layout and metadata files.

The media are real mp4 files (H.264/AAC through ``preprocess.encode``) of synthetic talking faces;
each tree links a handful of them under the corpus' file names. FF++ goes end to end: reader CLI
→ preprocessing CLI (landmark files, no detector) → records read back with ``ClipSource``.
"""
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from input_pipeline import corpora, records
from input_pipeline.corpora import base
from input_pipeline.preprocess import encode, runner, video
from input_pipeline.synthetic import dataset as synthetic

FOUR = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
PAIRS = {"train": [["000", "001"]], "val": [["002", "003"]], "test": [["004", "005"]]}


# ----------------------------------------------------------------------------- media
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
  """Six mp4 files (1.2 s, 64 px, with audio) of synthetic faces: four reals then two fakes,
  with their 68-point landmark arrays."""
  cfg = synthetic.preset("tiny", num_frames=30, resolution=64, families=("graphics_swap",))
  recs = list(synthetic.generate_split(cfg, "train"))
  recs = [r for r in recs if r["label"] == 0] + [r for r in recs if r["label"] == 1][:2]
  out = tmp_path_factory.mktemp("clips")
  made = []
  for i, rec in enumerate(recs):
    path = str(out / f"clip{i}.mp4")
    encode.write_video(path, rec["frames"], rec["audio"], 25.0, 16000)
    made.append((path, rec["landmarks"]))
  return made


class Tree:
  """Builds a corpus layout under ``root``: ``video(rel)`` links the next clip there."""

  def __init__(self, root, clips):
    self.root, self.clips, self.n, self.clip_of = str(root), clips, 0, {}

  def video(self, rel):
    path = os.path.join(self.root, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    src = self.clips[self.n % len(self.clips)][0]
    try:
      os.link(src, path)
    except OSError:
      shutil.copy(src, path)
    self.clip_of[path] = self.n % len(self.clips)
    self.n += 1
    return path

  def file(self, rel, text):
    path = os.path.join(self.root, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)
    return path


def _by_id(listing):
  return {e.video_id: e for e in listing.entries}


def _originals(got):
  """Fake video_id → its `original`, after checking that every named original is a real of the
  listing (the ids must match the reals' own, or input_pipeline.pairing finds nothing)."""
  out = {}
  for vid, e in got.items():
    if e.label == 0:
      assert e.original == "", vid
      continue
    out[vid] = e.original
    if e.original:
      assert e.original in got and got[e.original].label == 0, (vid, e.original)
  return out


def _round_trip(entries, tmp_path):
  """The written list is what the preprocessor reads: same items, extras in the sidecar."""
  path = str(tmp_path / "list.jsonl")
  xpath = corpora.write_list(entries, path)
  items = runner.read_list(path)
  assert [dataclasses.asdict(i) for i in items] == [
      dict(e.item(), landmarks=e.landmarks, original=e.original) for e in entries]
  if xpath:
    with open(xpath) as f:
      rows = [json.loads(line) for line in f]
    assert [r.pop("video_id") for r in rows] == [e.video_id for e in entries]
    assert rows == [e.extras for e in entries]
  return items


def test_entry_fields_are_the_preprocessor_list_fields():
  assert base.REAL == records.REAL
  item_fields = {f.name for f in dataclasses.fields(video.VideoItem)}
  e = base.Entry(path="/x.mp4", video_id="c/x", split="test", label=1, manipulation="m",
                 source="c", landmarks="/x.npy", original="c/y", extras={"k": 1})
  assert set(e.item()) == item_fields
  assert "original" not in dataclasses.replace(e, original="").item()  # Reals' rows stay short.
  with pytest.raises(ValueError, match="reals, and only reals"):
    base.Entry(path="/x.mp4", video_id="c/x", split="test", label=0, manipulation="m", source="c")
  with pytest.raises(ValueError, match="c/x: a real video with original 'c/y'"):
    base.Entry(path="/x.mp4", video_id="c/x", split="test", label=0, manipulation=base.REAL,
               source="c", original="c/y")


# ----------------------------------------------------------------------------- FaceForensics++
def _ffpp(root, clips, methods=FOUR + ("FaceShifter",), comp="c23", pairs=PAIRS):
  t = Tree(root, clips)
  for split_pairs in pairs.values():
    for a, b in split_pairs:
      for v in (a, b):
        t.video(f"original_sequences/youtube/{comp}/videos/{v}.mp4")
      for m in methods:
        for name in (f"{a}_{b}", f"{b}_{a}"):
          t.video(f"manipulated_sequences/{m}/{comp}/videos/{name}.mp4")
  for split, p in pairs.items():
    t.file(f"splits/{split}.json", json.dumps(p))
  return t


def test_ffpp_lists_reals_and_the_four_methods_by_official_pairs(tmp_path, clips):
  t = _ffpp(tmp_path / "ff", clips)
  t.video("manipulated_sequences/Deepfakes/c23/videos/998_999.mp4")  # In no split file.
  listing = corpora.read("ffpp", t.root)
  got = _by_id(listing)
  assert len(got) == 6 + 6 * 4  # FaceShifter is not one of the four.
  real = got["ffpp/c23/youtube/002"]
  assert (real.split, real.label, real.manipulation, real.identity, real.source) == (
      "val", 0, "real", "002", "ffpp")
  assert real.path == os.path.join(t.root, "original_sequences", "youtube", "c23", "videos",
                                   "002.mp4")
  for m in FOUR:  # Both directions of a pair, in the pair's split.
    for name, split in (("000_001", "train"), ("001_000", "train"), ("005_004", "test")):
      e = got[f"ffpp/c23/{m}/{name}"]
      assert (e.split, e.label, e.manipulation, e.identity) == (split, 1, m, name[:3])
      assert e.extras == {"compression": "c23", "target_video": name[:3],
                          "source_video": name[4:]}
      assert e.original == f"ffpp/c23/youtube/{name[:3]}"  # Every method keeps the target's frames.
  assert set(_originals(got).values()) == {f"ffpp/c23/youtube/{v:03d}" for v in range(6)}
  assert not any("FaceShifter" in v for v in got)
  assert any("998_999" in n for n in listing.notes)
  _round_trip(listing.entries, tmp_path)

  fsh = corpora.read("ffpp", t.root, manipulations=["FaceShifter"], splits=["test"]).entries
  assert sorted(e.video_id for e in fsh) == [
      "ffpp/c23/FaceShifter/004_005", "ffpp/c23/FaceShifter/005_004",
      "ffpp/c23/youtube/004", "ffpp/c23/youtube/005"]
  assert _originals(_by_id(base.Listing(fsh))) == {
      "ffpp/c23/FaceShifter/004_005": "ffpp/c23/youtube/004",
      "ffpp/c23/FaceShifter/005_004": "ffpp/c23/youtube/005"}
  fakes_only = corpora.read("ffpp", t.root, manipulations="Face2Face", reals=False).entries
  assert {e.manipulation for e in fakes_only} == {"Face2Face"} and len(fakes_only) == 6


def test_ffpp_compression_and_deepfakedetection(tmp_path, clips):
  t = _ffpp(tmp_path / "ff", clips, methods=("Deepfakes",), comp="c40")
  t.video("manipulated_sequences/DeepFakeDetection/c40/videos/01_02__walk__ABCD1234.mp4")
  t.video("original_sequences/actors/c40/videos/01__walk.mp4")
  with pytest.raises(corpora.CorpusError, match=r"no 'c23' folder.*compressions present: c40"):
    corpora.read("ffpp", t.root)
  got = _by_id(corpora.read("ffpp", t.root, compression="c40",
                            manipulations=["Deepfakes", "DeepFakeDetection"]))
  assert got["ffpp/c40/Deepfakes/003_002"].extras["compression"] == "c40"
  dfd = got["ffpp/c40/DeepFakeDetection/01_02__walk__ABCD1234"]
  actor = got["ffpp/c40/actors/01__walk"]
  assert (dfd.split, dfd.label, dfd.identity) == ("test", 1, "01")
  assert (actor.split, actor.label, actor.identity) == ("test", 0, "01")
  assert dfd.original == "ffpp/c40/actors/01__walk"  # The target actor in the same scene.
  assert _originals(got)["ffpp/c40/Deepfakes/003_002"] == "ffpp/c40/youtube/003"


def test_ffpp_errors_name_what_is_missing(tmp_path, clips):
  t = _ffpp(tmp_path / "ff", clips, methods=FOUR)
  wrong = tmp_path / "not_ff"
  (wrong / "Celeb-real").mkdir(parents=True)
  with pytest.raises(corpora.CorpusError, match=r"expected 'original_sequences'.*has Celeb-real"):
    corpora.read("ffpp", str(wrong))
  with pytest.raises(corpora.CorpusError, match=r"expected 'FaceShifter'"):
    corpora.read("ffpp", t.root, manipulations=["FaceShifter"])
  with pytest.raises(corpora.CorpusError, match="Celeb-synthesis.*not allowed"):
    corpora.read("ffpp", t.root, manipulations=["Celeb-synthesis"])
  with pytest.raises(corpora.CorpusError, match="takes no option subset"):
    corpora.read("ffpp", t.root, subset="x.txt")
  with pytest.raises(corpora.CorpusError, match="unknown corpus 'ff'"):
    corpora.read("ff", t.root)
  # A removed video is reported (a partial download), or left out with allow_missing.
  gone = os.path.join(t.root, "manipulated_sequences", "FaceSwap", "c23", "videos", "002_003.mp4")
  os.remove(gone)
  with pytest.raises(corpora.CorpusError, match=r"1 of the 30 videos.*not on disk"):
    corpora.read("ffpp", t.root)
  listing = corpora.read("ffpp", t.root, allow_missing=True)
  assert len(listing.entries) == 29 and any("not on disk" in n for n in listing.notes)
  assert len(corpora.read("ffpp", t.root, splits="train,test").entries) == 20  # val not needed.
  # Split files: missing, malformed, overlapping.
  os.rename(os.path.join(t.root, "splits", "val.json"), os.path.join(t.root, "val.json.bak"))
  with pytest.raises(corpora.CorpusError, match=r"splits/val\.json is missing"):
    corpora.read("ffpp", t.root, allow_missing=True)
  shutil.rmtree(os.path.join(t.root, "splits"))
  with pytest.raises(corpora.CorpusError, match="split files.*not found.*--splits_dir"):
    corpora.read("ffpp", t.root)
  bad = tmp_path / "bad_splits"
  bad.mkdir()
  for split, p in PAIRS.items():
    (bad / f"{split}.json").write_text(json.dumps(p))
  (bad / "test.json").write_text(json.dumps([["004", "005"], ["001", "006"]]))
  with pytest.raises(corpora.CorpusError, match="video 001 is also in train.json"):
    corpora.read("ffpp", t.root, splits_dir=str(bad))
  (bad / "test.json").write_text(json.dumps([["4", "5"]]))
  with pytest.raises(corpora.CorpusError, match="entry 0 is.*3-digit"):
    corpora.read("ffpp", t.root, splits_dir=str(bad))


@pytest.mark.integration
def test_ffpp_end_to_end_through_preprocessing_into_records(tmp_path, clips):
  """Reader CLI → JSON-lines list → preprocessing CLI (landmark files) → ClipSource."""
  from input_pipeline import sources  # pylint: disable=import-outside-toplevel
  t = _ffpp(tmp_path / "ff", clips, methods=("Deepfakes", "FaceShifter"))
  lm_dir = tmp_path / "landmarks"
  for path, k in t.clip_of.items():  # Landmarks keyed by video id, as --landmarks_dir wants.
    rel = os.path.relpath(path, t.root).split(os.sep)
    vid = (f"ffpp/c23/youtube/{rel[-1][:-4]}" if rel[0] == "original_sequences"
           else f"ffpp/c23/{rel[1]}/{rel[-1][:-4]}")
    os.makedirs(lm_dir / os.path.dirname(vid), exist_ok=True)
    np.save(lm_dir / f"{vid}.npy", clips[k][1])
  lst = str(tmp_path / "lists" / "ffpp_test.jsonl")
  res = subprocess.run(
      [sys.executable, "-m", "input_pipeline.corpora", "--corpus=ffpp", f"--root={t.root}",
       f"--out={lst}", "--split=test", "--manipulations=Deepfakes,FaceShifter",
       f"--landmarks_dir={lm_dir}"], capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "6 videos" in res.stdout and "test: 6 videos = 2 real" in res.stdout
  assert "--detector=none" in res.stdout
  with open(corpora.extras_path(lst)) as f:
    assert json.loads(f.readline())["compression"] == "c23"

  out = str(tmp_path / "records")
  res = subprocess.run(
      [sys.executable, "-m", "input_pipeline.preprocess", f"--videos={lst}", f"--out_dir={out}",
       "--name=ffpp", "--detector=none", "--num_workers=1", "--crop_size=32"],
      capture_output=True, text=True, timeout=180)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "6 videos -> 6 face tracks, 0 skipped" in res.stdout
  src = sources.ClipSource(out, "test")
  got = {}
  for i in range(len(src)):
    raw = src[i]
    got[raw["video_id"]] = raw
  assert sorted(got) == ["ffpp/c23/Deepfakes/004_005", "ffpp/c23/Deepfakes/005_004",
                         "ffpp/c23/FaceShifter/004_005", "ffpp/c23/FaceShifter/005_004",
                         "ffpp/c23/youtube/004", "ffpp/c23/youtube/005"]
  for vid, raw in got.items():
    manip = vid.split("/")[2]
    assert raw["label"] == (manip != "youtube") and raw["source"] == "ffpp"
    assert raw["manipulation"] == ("real" if manip == "youtube" else manip)
    assert raw["identity"] == vid.split("/")[-1][:3]
    assert raw.get("original") == (None if manip == "youtube" else
                                   f"ffpp/c23/youtube/{vid.split('/')[-1][:3]}")
    assert src.index["original"][list(got).index(vid)] == raw.get("original", "")
    assert records.decode_frames(raw, [0]).shape == (1, 32, 32, 3)
    assert len(raw["audio"]) == 30 * 640  # 1.2 s at 16 kHz.


# ----------------------------------------------------------------------------- DeeperForensics
def test_deeperforensics_fakes_follow_the_ffpp_split_or_its_own_lists(tmp_path, clips):
  ff = _ffpp(tmp_path / "ff", clips, methods=("Deepfakes",))
  t = Tree(tmp_path / "DeeperForensics-1.0", clips)
  for name in ("000_M101", "002_W102", "005_M103"):
    t.video(f"manipulated_videos/end_to_end/{name}.mp4")
  t.video("manipulated_videos/end_to_end_level_3/000_M101.mp4")
  t.file("lists/splits/train.txt", "000_M101.mp4\n")
  t.file("lists/splits/val.txt", "005_M103.mp4\n")
  t.file("lists/splits/test.txt", "002_W102.mp4\n")
  listing = corpora.read("deeperforensics", t.root, ffpp_root=ff.root)
  got = _by_id(listing)
  fake = got["deeperforensics/end_to_end/005_M103"]
  assert (fake.split, fake.label, fake.manipulation, fake.identity, fake.source) == (
      "test", 1, "DeeperForensics", "005", "deeperforensics")
  assert fake.extras == {"variant": "end_to_end", "target_video": "005", "source_actor": "M103"}
  assert _originals(got) == {"deeperforensics/end_to_end/000_M101": "ffpp/c23/youtube/000",
                             "deeperforensics/end_to_end/002_W102": "ffpp/c23/youtube/002",
                             "deeperforensics/end_to_end/005_M103": "ffpp/c23/youtube/005"}
  assert got["ffpp/c23/youtube/005"].split == "test" and got["ffpp/c23/youtube/005"].label == 0
  assert len(got) == 3 + 6
  _round_trip(listing.entries, tmp_path)
  test_only = corpora.read("deeperforensics", t.root, ffpp_root=ff.root, splits=["test"])
  assert sorted(e.video_id for e in test_only.entries) == [
      "deeperforensics/end_to_end/005_M103", "ffpp/c23/youtube/004", "ffpp/c23/youtube/005"]

  own = _by_id(corpora.read("deeperforensics", t.root, ffpp_root=ff.root,
                            protocol="deeperforensics", variant="end_to_end_level_3",
                            allow_missing=True))
  assert own["deeperforensics/end_to_end_level_3/000_M101"].split == "train"
  assert {v: e.split for v, e in own.items() if e.label == 0} == {
      "ffpp/c23/youtube/000": "train", "ffpp/c23/youtube/002": "test",
      "ffpp/c23/youtube/005": "val"}

  with pytest.raises(corpora.CorpusError, match="ships no real videos.*--ffpp_root"):
    corpora.read("deeperforensics", t.root)
  with pytest.raises(corpora.CorpusError, match="expected 'manipulated_videos'"):
    corpora.read("deeperforensics", ff.root, ffpp_root=ff.root)
  with pytest.raises(corpora.CorpusError, match="expected 'end_to_end_mix_2_distortions'"):
    corpora.read("deeperforensics", t.root, ffpp_root=ff.root,
                 variant="end_to_end_mix_2_distortions")


# ----------------------------------------------------------------------------- Celeb-DF
def test_celebdf_test_list_uses_1_for_real(tmp_path, clips):
  t = Tree(tmp_path / "Celeb-DF-v2", clips)
  for rel in ("Celeb-real/id0_0000", "Celeb-real/id1_0003", "Youtube-real/00000",
              "Youtube-real/00001", "Celeb-synthesis/id0_id1_0000",
              "Celeb-synthesis/id1_id0_0003"):
    t.video(rel + ".mp4")
  t.file("List_of_testing_videos.txt",
         "1 YouTube-real/00001.mp4\r\n1 Celeb-real/id1_0003.mp4\r\n"
         "0 Celeb-synthesis/id0_id1_0000.mp4\r\n")
  listing = corpora.read("celebdf", t.root)
  got = _by_id(listing)
  assert {v: (e.split, e.label, e.manipulation) for v, e in got.items()} == {
      "celebdf/Celeb-real/id0_0000": ("train", 0, "real"),
      "celebdf/Celeb-real/id1_0003": ("test", 0, "real"),
      "celebdf/YouTube-real/00000": ("train", 0, "real"),
      "celebdf/YouTube-real/00001": ("test", 0, "real"),
      "celebdf/Celeb-synthesis/id0_id1_0000": ("test", 1, "Celeb-synthesis"),
      "celebdf/Celeb-synthesis/id1_id0_0003": ("train", 1, "Celeb-synthesis")}
  fake = got["celebdf/Celeb-synthesis/id1_id0_0003"]
  assert fake.identity == "id1" and fake.extras == {"source_identity": "id0",
                                                    "original": "Celeb-real/id1_0003"}
  assert got["celebdf/YouTube-real/00000"].identity == ""
  assert _originals(got) == {
      "celebdf/Celeb-synthesis/id0_id1_0000": "celebdf/Celeb-real/id0_0000",
      "celebdf/Celeb-synthesis/id1_id0_0003": "celebdf/Celeb-real/id1_0003"}
  _round_trip(listing.entries, tmp_path)
  with pytest.raises(corpora.CorpusError, match="--split of celebdf.*'val'"):
    corpora.read("celebdf", t.root, splits=["val"])
  t.file("List_of_testing_videos.txt", "1 Celeb-synthesis/id0_id1_0000.mp4\n")
  with pytest.raises(corpora.CorpusError, match=r":1: .*flagged 1 \(real\) but lives in "
                                                r"Celeb-synthesis"):
    corpora.read("celebdf", t.root)
  os.remove(os.path.join(t.root, "List_of_testing_videos.txt"))
  with pytest.raises(corpora.CorpusError, match="expected 'List_of_testing_videos.txt'"):
    corpora.read("celebdf", t.root)


# ----------------------------------------------------------------------------- DFDC
def test_dfdc_training_parts_and_test_set(tmp_path, clips):
  t = Tree(tmp_path / "dfdc", clips)
  for name in ("aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"):
    t.video(f"dfdc_train_part_0/{name}.mp4")
  t.file("dfdc_train_part_0/metadata.json", json.dumps({
      "aaaaaaaaaa.mp4": {"label": "REAL", "split": "train", "original": None},
      "bbbbbbbbbb.mp4": {"label": "FAKE", "split": "train", "original": "aaaaaaaaaa.mp4"},
      "cccccccccc.mp4": {"label": "FAKE", "split": "train", "original": "aaaaaaaaaa.mp4"}}))
  for name in ("tttttttttt", "uuuuuuuuuu", "vvvvvvvvvv"):
    t.video(f"test/videos/{name}.mp4")
  t.file("test/metadata.json", json.dumps({
      "tttttttttt.mp4": {"is_fake": 0, "augmentations": {}},
      "uuuuuuuuuu.mp4": {"is_fake": 1, "augmentations": {"augmenter": {"blur": {"sigma": 2}}}},
      "vvvvvvvvvv.mp4": {"is_fake": 1, "augmentations": {}}}))
  t.file("test/labels.csv", "filename,label\ntttttttttt.mp4,0\nuuuuuuuuuu.mp4,1\n"
         "vvvvvvvvvv.mp4,1\n")
  listing = corpora.read("dfdc", t.root)
  got = _by_id(listing)
  assert {v: (e.split, e.label, e.manipulation, e.identity) for v, e in got.items()} == {
      "dfdc/aaaaaaaaaa": ("train", 0, "real", "aaaaaaaaaa"),
      "dfdc/bbbbbbbbbb": ("train", 1, "DFDC", "aaaaaaaaaa"),
      "dfdc/cccccccccc": ("train", 1, "DFDC", "aaaaaaaaaa"),
      "dfdc/tttttttttt": ("test", 0, "real", ""),
      "dfdc/uuuuuuuuuu": ("test", 1, "DFDC", ""),
      "dfdc/vvvvvvvvvv": ("test", 1, "DFDC", "")}
  assert got["dfdc/uuuuuuuuuu"].path == os.path.join(t.root, "test", "videos", "uuuuuuuuuu.mp4")
  assert got["dfdc/uuuuuuuuuu"].extras["augmentations"] == {"augmenter": {"blur": {"sigma": 2}}}
  assert got["dfdc/bbbbbbbbbb"].extras == {"original": "aaaaaaaaaa.mp4",
                                            "part": "dfdc_train_part_0"}
  assert _originals(got) == {"dfdc/bbbbbbbbbb": "dfdc/aaaaaaaaaa",
                             "dfdc/cccccccccc": "dfdc/aaaaaaaaaa",
                             "dfdc/uuuuuuuuuu": "", "dfdc/vvvvvvvvvv": ""}  # The test set's
  # label files name no originals.
  _round_trip(listing.entries, tmp_path)
  subset = t.file("subset.txt", "uuuuuuuuuu\ntttttttttt\n")
  assert sorted(_by_id(corpora.read("dfdc", t.root, subset=subset))) == [
      "dfdc/tttttttttt", "dfdc/uuuuuuuuuu"]
  t.file("subset.txt", "zzzzzzzzzz\n")
  with pytest.raises(corpora.CorpusError, match="1 names are in no DFDC label file"):
    corpora.read("dfdc", t.root, subset=subset)
  t.file("test/labels.csv", "filename,label\nuuuuuuuuuu.mp4,0\n")
  with pytest.raises(corpora.CorpusError, match="uuuuuuuuuu.mp4: label 0 in .*labels.csv but 1"):
    corpora.read("dfdc", t.root)
  with pytest.raises(corpora.CorpusError, match="no metadata.json or labels.csv"):
    corpora.read("dfdc", str(tmp_path / "dfdc" / "test" / "videos"))


# ----------------------------------------------------------------------------- FakeAVCeleb
_FAVC_ROWS = [  # source,target1,target2,method,category,type,race,gender,path,<folder>
    ("id00001", "-", "-", "real", "A", "RealVideo-RealAudio", "African", "men", "00001.mp4"),
    ("id00001", "-", "-", "rtvc", "B", "RealVideo-FakeAudio", "African", "men", "00001_fake.mp4"),
    ("id00001", "id00002", "-", "fsgan", "C", "FakeVideo-RealAudio", "African", "men",
     "00001_id00002_fsgan.mp4"),
    ("id00003", "id00004", "7", "wav2lip", "D", "FakeVideo-FakeAudio", "Asian (East)", "women",
     "00003_7_id00004_wavtolip.mp4"),
    ("id00003", "id00004", "7", "faceswap-wav2lip", "D", "FakeVideo-FakeAudio", "Asian (East)",
     "women", "00003_7_id00004_wavtolip.mp4"),  # The same file relabelled, as the corpus has.
    ("id00003", "-", "-", "real", "A", "RealVideo-RealAudio", "Asian (East)", "women",
     "00009.mp4"),
]


def _favc(root, clips, with_meta=True):
  t = Tree(root, clips)
  rows = []
  for r in _FAVC_ROWS:
    folder = f"FakeAVCeleb/{r[5]}/{r[6]}/{r[7]}/{r[0]}"
    if not os.path.exists(os.path.join(t.root, *folder.split("/"), r[8])):
      t.video(f"{folder}/{r[8]}")
    rows.append(list(r) + [folder])
  if with_meta:
    with open(os.path.join(t.root, "meta_data.csv"), "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["source", "target1", "target2", "method", "category", "type", "race", "gender",
                  "path", ""])
      w.writerows(rows)
  return t


def test_fakeavceleb_categories_methods_and_test_identities(tmp_path, clips):
  t = _favc(tmp_path / "FakeAVCeleb_v1.2", clips)
  listing = corpora.read("fakeavceleb", t.root)
  got = _by_id(listing)
  pre = "fakeavceleb/RealVideo-RealAudio/African/men/id00001/00001"
  assert got[pre].label == 0 and got[pre].manipulation == "real" and got[pre].split == "test"
  voice = got["fakeavceleb/RealVideo-FakeAudio/African/men/id00001/00001_fake"]
  assert (voice.label, voice.manipulation, voice.identity) == (1, "RealVideo-FakeAudio", "id00001")
  assert voice.extras == {"method": "rtvc", "category": "B", "race": "African", "gender": "men",
                          "type": "RealVideo-FakeAudio"}
  lip = got["fakeavceleb/FakeVideo-FakeAudio/Asian (East)/women/id00003/00003_7_id00004_wavtolip"]
  assert lip.extras["method"] == "wav2lip" and lip.extras["target1"] == "id00004"
  assert len(got) == 5 and any("1 duplicate rows" in n for n in listing.notes)
  assert set(_originals(got).values()) == {""}  # The metadata names no source video.
  _round_trip(listing.entries, tmp_path)
  by_method = _by_id(corpora.read("fakeavceleb", t.root, manipulation_key="method"))
  assert by_method[lip.video_id].manipulation == "wav2lip"
  assert by_method[pre].manipulation == "real"
  ids = t.file("test_ids.txt", "id00003\n")
  split = {e.video_id: e.split for e in corpora.read("fakeavceleb", t.root,
                                                      test_identities=ids).entries}
  assert split[pre] == "train" and split[lip.video_id] == "test"
  t.file("test_ids.txt", "id09999\n")
  with pytest.raises(corpora.CorpusError, match="identities not in the corpus: id09999"):
    corpora.read("fakeavceleb", t.root, test_identities=ids)
  # Without meta_data.csv: the category folders are walked.
  walked = _by_id(corpora.read("fakeavceleb", _favc(tmp_path / "bare", clips, False).root))
  assert sorted(walked) == sorted(got)
  assert walked[voice.video_id].identity == "id00001"
  assert walked[voice.video_id].extras == {"race": "African", "gender": "men",
                                           "type": "RealVideo-FakeAudio"}
  with pytest.raises(corpora.CorpusError, match="no category folder"):
    corpora.read("fakeavceleb", str(tmp_path / "bare" / "FakeAVCeleb" / "RealVideo-RealAudio"))


# ----------------------------------------------------------------------------- reals
def test_voxceleb2_and_lrw_are_all_real(tmp_path, clips):
  t = Tree(tmp_path / "vox2", clips)
  for rel in ("dev/mp4/id00012/21Uxsk56VDQ/00001", "dev/mp4/id00012/21Uxsk56VDQ/00002",
              "dev/mp4/id00015/0fijmz4vTVU/00001", "test/mp4/id00017/01dfn2spqyE/00001"):
    t.video(rel + ".mp4")
  listing = corpora.read("voxceleb2", t.root)
  got = _by_id(listing)
  e = got["voxceleb2/dev/id00012/21Uxsk56VDQ/00002"]
  assert (e.split, e.label, e.manipulation, e.identity, e.source) == (
      "train", 0, "real", "id00012", "voxceleb2")
  assert e.extras == {"youtube_id": "21Uxsk56VDQ"}
  assert got["voxceleb2/test/id00017/01dfn2spqyE/00001"].split == "test" and len(got) == 4
  assert _originals(got) == {}
  _round_trip(listing.entries, tmp_path)
  with pytest.raises(corpora.CorpusError, match="expected 'dev' and/or 'test'"):
    corpora.read("voxceleb2", os.path.join(t.root, "dev", "mp4"))

  t = Tree(tmp_path / "lrw", clips)
  for rel in ("ABOUT/train/ABOUT_00001", "ABOUT/val/ABOUT_00001", "ABOUT/test/ABOUT_00001",
              "ZONES/train/ZONES_00007"):
    t.video(f"lipread_mp4/{rel}.mp4")
    t.file(f"lipread_mp4/{rel}.txt", "Text: ABOUT\nDuration: 0.3 seconds\n")
  got = _by_id(corpora.read("lrw", t.root))  # The parent of lipread_mp4 works too.
  assert sorted(got) == ["lrw/ABOUT/test/ABOUT_00001", "lrw/ABOUT/train/ABOUT_00001",
                         "lrw/ABOUT/val/ABOUT_00001", "lrw/ZONES/train/ZONES_00007"]
  z = got["lrw/ZONES/train/ZONES_00007"]
  assert (z.split, z.label, z.identity, z.extras) == ("train", 0, "", {"word": "ZONES"})
  assert len(corpora.read("lrw", os.path.join(t.root, "lipread_mp4"), splits="val").entries) == 1
  with pytest.raises(corpora.CorpusError, match="has no train/val/test folder"):
    corpora.read("lrw", os.path.join(t.root, "lipread_mp4", "ABOUT"))


# ----------------------------------------------------------------------------- CLI
@pytest.mark.integration
def test_cli_errors_are_one_clear_line(tmp_path, clips):
  t = _ffpp(tmp_path / "ff", clips, methods=FOUR)

  def cli(*args):
    return subprocess.run([sys.executable, "-m", "input_pipeline.corpora", *args],
                          capture_output=True, text=True, timeout=60)
  out = str(tmp_path / "l.jsonl")
  res = cli("--corpus=celebdf", f"--root={t.root}", f"--out={out}")
  assert res.returncode == 1 and "expected 'Celeb-real'" in res.stderr
  res = cli("--corpus=ffpp", f"--root={t.root}", f"--out={out}", "--subset=x.txt")
  assert res.returncode == 1 and "--subset does not apply to --corpus=ffpp" in res.stderr
  res = cli("--corpus=ffpp", f"--root={t.root}", f"--out={tmp_path / 'l.json'}")
  assert res.returncode == 1 and "must end in .jsonl" in res.stderr
  res = cli("--corpus=ffpp", f"--root={t.root}", f"--out={out}", "--compression=c40")
  assert res.returncode == 1 and "no 'c40' folder" in res.stderr
  res = cli("--corpus=ffpp", f"--root={t.root}", f"--out={out}", "--noreals", "--split=val")
  assert res.returncode == 0, res.stderr
  assert "val: 8 videos = 0 real + fake (Deepfakes 2, Face2Face 2, FaceSwap 2, " \
         "NeuralTextures 2)" in res.stdout
  assert len(runner.read_list(out)) == 8 and not os.path.exists(out + ".tmp")

"""FakeOut's audio enrichment on a tiny constructed FF++ tree.

The originals are real mp4 files (H.264 + AAC at 44.1 kHz, written with PyAV) whose audio is a
chirp, so the sound at any instant says the time: a record's attached audio is cross-correlated
against the analytic chirp of each original to find both *which* original it came from and at
*what* offset, to the sample.
"""
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
from array_record.python import array_record_module

from input_pipeline import enrich, records
from input_pipeline.enrich import mapping as mapping_lib

FPS, SR, ORIG_FPS = 25.0, 16000, 30
NUM_FRAMES = 40  # 1.6 s records.
# Original youtube id → chirp base frequency (Hz): each original sounds different at any instant.
BASE = {"AAAAAAAAAAA": 300.0, "BBBBBBBBBBB": 2000.0, "DDDDDDDDDDD": 1000.0}


def chirp(youtube_id, t):
  """The original's audio at time t (s from its first video frame): 300 + 200 t Hz for A."""
  return 0.5 * np.sin(2 * np.pi * (BASE[youtube_id] * t + 100.0 * t * t))


def write_original(path, youtube_id, seconds=4.0, audio_seconds=None, rate=44100, video=True):
  """An original as YouTube would give it: 30 fps H.264 video and AAC audio (or, video=False,
  a WAV of the audio alone)."""
  audio_seconds = seconds if audio_seconds is None else audio_seconds
  with av.open(path, "w") as c:
    if video:
      v = c.add_stream("libx264", rate=ORIG_FPS)
      v.width = v.height = 32
      v.pix_fmt = "yuv420p"
    a = c.add_stream("aac" if video else "pcm_s16le", rate=rate)
    a.layout = "mono"
    if video:
      for i in range(int(seconds * ORIG_FPS)):
        f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i % 256, np.uint8), format="rgb24")
        f.pts = i
        for p in v.encode(f):
          c.mux(p)
      for p in v.encode():
        c.mux(p)
    s = chirp(youtube_id, np.arange(int(audio_seconds * rate)) / rate).astype(np.float32)
    fmt = "flt" if video else "s16"
    s = s if video else (s * 32767).astype(np.int16)
    for k in range(0, len(s), 1024):
      f = av.AudioFrame.from_ndarray(s[None, k:k + 1024], format=fmt, layout="mono")
      f.sample_rate, f.pts = rate, k
      for p in a.encode(f):
        c.mux(p)
    for p in a.encode():
      c.mux(p)


def frame_list(root, youtube_id, k, frames):
  d = os.path.join(root, youtube_id, "extracted_sequences")
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, f"{k}.json"), "w") as f:
    json.dump([int(x) for x in frames], f)


CONVERSION = {"000": "AAAAAAAAAAA 0", "003": "BBBBBBBBBBB 1", "005": "CCCCCCCCCCC 0",
              "009": "AAAAAAAAAAA 1", "011": "BBBBBBBBBBB 0", "013": "BBBBBBBBBBB 2",
              "015": "DDDDDDDDDDD 0", "017": "AAAAAAAAAAA 2",
              "019": "DDDDDDDDDDD 1"}
SEQUENCES = {("AAAAAAAAAAA", 0): range(30, 90),  # 000: 2 s from 1.0 s.
             ("BBBBBBBBBBB", 1): range(15, 90),  # 003: from 0.5 s.
             ("AAAAAAAAAAA", 1): [0, 1, 2, 5, 6],  # 009: gaps.
             ("BBBBBBBBBBB", 0): range(0, 60),  # 011: fine, but not in the verified list.
             ("BBBBBBBBBBB", 2): range(0, 20),  # 013: 0.67 s, shorter than the 1.6 s record.
             ("DDDDDDDDDDD", 0): range(30, 90),  # 015: the file's audio ends at 1.5 s.
             ("AAAAAAAAAAA", 2): range(0, 60),  # 017: a video with two face tracks.
             ("DDDDDDDDDDD", 1): range(100, 160)}  # 019: D has only 120 frames.
VERIFIED = ["000", "003", "005", "009", "013", "015", "017", "019"]  # Not 011.

# video_id, manipulation, split → (whose audio: youtube id and start in s) or the silent reason.
EXPECTED = {
    "ffpp/c23/youtube/000": ("real", ("AAAAAAAAAAA", 1.0)),
    "ffpp/c23/youtube/003": ("real", ("BBBBBBBBBBB", 0.5)),
    "ffpp/c23/Deepfakes/000_003": ("Deepfakes", ("AAAAAAAAAAA", 1.0)),  # Swap: target 000.
    "ffpp/c23/FaceSwap/003_000": ("FaceSwap", ("BBBBBBBBBBB", 0.5)),  # Swap: target 003.
    "ffpp/c23/FaceShifter/000_003": ("FaceShifter", ("AAAAAAAAAAA", 1.0)),
    "ffpp/c23/Face2Face/000_003": ("Face2Face", ("BBBBBBBBBBB", 0.5)),  # Reenactment: source 003.
    "ffpp/c23/NeuralTextures/003_000": ("NeuralTextures", ("AAAAAAAAAAA", 1.0)),  # Source 000.
    "deeperforensics/end_to_end/000_M101": ("DeeperForensics", ("AAAAAAAAAAA", 1.0)),
    "ffpp/c23/youtube/005": ("real", "no_audio_file"),
    "ffpp/c23/youtube/007": ("real", "no_mapping"),
    "ffpp/c23/youtube/009": ("real", "frame_list_gaps"),
    "ffpp/c23/youtube/011": ("real", "unverified"),
    "ffpp/c23/youtube/013": ("real", "sequence_shorter_than_record"),
    "ffpp/c23/youtube/015": ("real", "audio_too_short"),
    "ffpp/c23/youtube/017": ("real", "track_start_unknown"),
    "ffpp/c23/youtube/019": ("real", "frames_beyond_video"),  # Two tracks: 017 appears twice.
    "ffpp/c23/DeepFakeDetection/01_02__walk__ABCD1234": ("DeepFakeDetection", "not_youtube"),
}
PASSED = "celebdf/Celeb-real/id0_0000"


def record(video_id, manipulation, track_id=0, audio=None):
  frames = np.zeros((NUM_FRAMES, 8, 8, 3), np.uint8)
  frames[..., 0] = (5 * np.arange(NUM_FRAMES))[:, None, None]
  n = records.audio_samples(NUM_FRAMES, FPS, SR)
  rec = dict(frames=frames, audio=np.zeros(n, np.int16) if audio is None else audio, fps=FPS,
             sample_rate=SR, video_id=video_id, track_id=track_id, source=video_id.split("/")[0],
             label=int(manipulation != "real"), manipulation=manipulation)
  if rec["label"]:
    rec["original"] = "ffpp/c23/youtube/" + video_id.split("/")[-1][:3]
  return rec


def build_tree(root):
  """records/ (2 splits, 3 shards), originals/ (FF++'s downloaded_videos layout), mapping files."""
  originals = os.path.join(root, "originals")
  for yid in ("AAAAAAAAAAA", "BBBBBBBBBBB"):
    os.makedirs(os.path.join(originals, yid))
    write_original(os.path.join(originals, yid, yid + ".mp4"), yid)
  write_original(os.path.join(originals, "DDDDDDDDDDD.mp4"), "DDDDDDDDDDD", audio_seconds=1.5)
  for (yid, k), frames in SEQUENCES.items():
    frame_list(originals, yid, k, frames)
  frame_list(originals, "CCCCCCCCCCC", 0, range(0, 60))  # A frame list but no file.
  paths = {"originals": originals, "conversion": os.path.join(root, "conversion_dict.json"),
           "verified": os.path.join(root, "proper_audio_files.json"),
           "records": os.path.join(root, "records"), "out": os.path.join(root, "out")}
  with open(paths["conversion"], "w") as f:
    json.dump(CONVERSION, f)
  with open(paths["verified"], "w") as f:
    json.dump(VERIFIED, f)
  recs = [record(v, m) for v, (m, _) in EXPECTED.items()]
  recs.append(record("ffpp/c23/youtube/017", "real", track_id=1))
  noise = np.random.default_rng(0).integers(-3000, 3000, records.audio_samples(
      NUM_FRAMES, FPS, SR)).astype(np.int16)
  recs.append(record(PASSED, "real", audio=noise))
  records.write_dataset(paths["records"], "ffpp", {"test": recs[:10], "train": recs[10:]},
                        num_shards={"test": 2, "train": 1})
  return paths


def run(paths, **kw):
  args = dict(verified=paths["verified"], assume_whole_video=True, progress=False)
  args.update(kw)
  return enrich.run(paths["records"], paths["out"], paths["originals"], paths["conversion"],
                    **args)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  paths = build_tree(str(tmp_path_factory.mktemp("enrich")))
  report = run(paths)
  return paths, report


def read_all(data_dir):
  """video_id, track_id → (raw record, serialised bytes) of every record, all splits."""
  manifest = records.read_manifest(data_dir)
  out = {}
  for split in manifest["splits"]:
    for path in records.split_files(data_dir, manifest, split, "array_record"):
      reader = array_record_module.ArrayRecordReader(path)
      for i in range(reader.num_records()):
        data = reader.read([i])[0]
        raw = records.parse(data)
        out[(raw["video_id"], raw["track_id"])] = (raw, data)
      reader.close()
  return out


def lag_and_match(audio, youtube_id, start, search=400):
  """(lag in samples of the best alignment with the original's chirp around ``start``, the
  normalised correlation there)."""
  x = audio.astype(np.float64) / 32767
  ref = chirp(youtube_id, start + np.arange(-search, len(x) + search) / SR)
  size = 1 << int(np.ceil(np.log2(len(ref) + len(x))))  # FFT: np.correlate takes 10x longer.
  corr = np.fft.irfft(np.fft.rfft(ref, size) * np.conj(np.fft.rfft(x, size)), size)
  corr = corr[:2 * search + 1]  # corr[k] = sum_j ref[k + j] x[j]: lag k - search.
  k = int(np.argmax(corr))
  window = ref[k:k + len(x)]
  return k - search, corr[k] / np.sqrt((x ** 2).sum() * (window ** 2).sum())


def dominant_hz(audio):
  spec = np.abs(np.fft.rfft(audio.astype(np.float64) * np.hanning(len(audio))))
  return np.fft.rfftfreq(len(audio), 1 / SR)[np.argmax(spec)]


def test_each_record_gets_exactly_its_original_segment(tree):
  """Swaps carry the target's audio, reenactments the source's, reals their own, from the time
  of the frame list's first frame, sample-exact, for the record's whole length."""
  paths, _ = tree
  out = read_all(paths["out"])
  for video_id, (_, expected) in EXPECTED.items():
    if isinstance(expected, str):
      continue
    yid, start = expected
    audio = out[(video_id, 0)][0]["audio"]
    assert len(audio) == records.audio_samples(NUM_FRAMES, FPS, SR)
    lag, match = lag_and_match(audio, yid, start)
    assert lag == 0 and match > 0.98, (video_id, lag, match)
    other = "BBBBBBBBBBB" if yid == "AAAAAAAAAAA" else "AAAAAAAAAAA"
    assert lag_and_match(audio, other, start)[1] < 0.2, video_id
    # The tone itself tells the time: first 0.1 s ≈ base + 200·(start + 0.05) Hz.
    assert abs(dominant_hz(audio[:1600]) - (BASE[yid] + 200 * (start + 0.05))) < 15, video_id


def test_unverifiable_videos_stay_silent_and_are_reported(tree):
  paths, report = tree
  out, inp = read_all(paths["out"]), read_all(paths["records"])
  silent = {(e["video_id"], e["track_id"]): e["reason"] for e in report["silent"]}
  want = {(v, 0): r for v, (_, r) in EXPECTED.items() if isinstance(r, str)}
  want[("ffpp/c23/youtube/017", 1)] = "track_start_unknown"
  assert silent == want
  for key in want:
    assert out[key][1] == inp[key][1]  # Byte-identical: still the silent record.
  assert report["num_enriched"] == 8 and report["num_silent"] == len(want)
  assert report["num_passed_through"] == 1
  assert out[(PASSED, 0)][1] == inp[(PASSED, 0)][1]  # Another corpus' audio is left alone.
  assert report["silent_by_reason"]["track_start_unknown"] == 2
  on_disk = json.load(open(os.path.join(paths["out"], enrich.REPORT)))
  assert on_disk["silent"] == report["silent"]
  line = enrich.summary_line(report, paths["out"])
  assert line.startswith("8 records enriched, 10 left silent") and "1 passed through" in line


def test_only_audio_changes(tree):
  """Frames keep their exact JPEG bytes; index and counts are the input's; same shard layout."""
  paths, _ = tree
  out, inp = read_all(paths["out"]), read_all(paths["records"])
  assert out.keys() == inp.keys()
  for key in inp:
    a, b = inp[key][0], out[key][0]
    assert a["frames"] == b["frames"]
    assert {k: v for k, v in a.items() if k not in ("audio", "frames")} == \
        {k: v for k, v in b.items() if k not in ("audio", "frames")}
  m_in, m_out = records.read_manifest(paths["records"]), records.read_manifest(paths["out"])
  for split in m_in["splits"]:
    assert [f["file"] for f in m_in["splits"][split]["files"]] == \
        [f["file"] for f in m_out["splits"][split]["files"]]
    assert m_in["splits"][split]["counts"] == m_out["splits"][split]["counts"]
    assert records.read_index(paths["records"], m_in, split) == \
        records.read_index(paths["out"], m_out, split)


def test_rerun_is_idempotent_and_resumes(tree):
  paths, first = tree
  before = records.read_manifest(paths["out"])
  again = run(paths)
  assert again["last_run"]["shards_processed"] == 0
  assert records.read_manifest(paths["out"]) == before
  assert {k: v for k, v in again.items() if k != "last_run"} == \
      {k: v for k, v in first.items() if k != "last_run"}
  # A run killed after its first shard: the marker and files of the others are gone.
  shards = [f["file"] for s in before["splits"].values() for f in s["files"]]
  for name in shards[1:]:
    os.remove(os.path.join(paths["out"], ".enrich", name + ".json"))
    os.remove(os.path.join(paths["out"], name))
  os.remove(os.path.join(paths["out"], records.MANIFEST))
  resumed = run(paths)
  assert resumed["last_run"]["shards_processed"] == len(shards) - 1
  assert records.read_manifest(paths["out"]) == before


def test_other_inputs_refuse_to_resume(tree, tmp_path):
  paths, _ = tree
  with pytest.raises(ValueError, match="other records, mapping files or settings"):
    run(paths, verified=None)
  with pytest.raises(ValueError, match="is the input directory"):
    enrich.run(paths["records"], paths["records"], paths["originals"], paths["conversion"])


def test_audio_only_original_needs_its_info_file(tmp_path):
  """A WAV of the audio alone works when <id>.info.json gives the video's fps."""
  d = str(tmp_path)
  path = os.path.join(d, "AAAAAAAAAAA.wav")
  write_original(path, "AAAAAAAAAAA", video=False)
  with pytest.raises(enrich.OriginalError, match="no_frame_clock"):
    enrich.read_span(path, 30, 60, SR)
  with open(os.path.join(d, "AAAAAAAAAAA.info.json"), "w") as f:
    json.dump({"id": "AAAAAAAAAAA", "fps": ORIG_FPS}, f)
  assert enrich.find(d, "AAAAAAAAAAA") == path
  span = enrich.read_span(path, 30, 60, SR)
  assert span.start == pytest.approx(1.0) and span.fps == ORIG_FPS
  lag, match = lag_and_match(span.audio[:SR], "AAAAAAAAAAA", 1.0)
  assert lag == 0 and match > 0.99


def test_track_start_comes_from_the_preprocessing_state(tmp_path):
  """A track with fewer frames than its video may start anywhere: silent; one with all of them
  starts at frame 0. Without any state the run asks for --assume_whole_video."""
  paths = build_tree(str(tmp_path))
  with pytest.raises(ValueError, match="assume_whole_video"):
    run(paths, assume_whole_video=False)
  assert not os.path.exists(paths["out"])  # Refused before writing anything.
  state = os.path.join(paths["records"], ".preprocess")
  os.makedirs(state)
  videos = [{"video_id": "ffpp/c23/youtube/000", "frames": NUM_FRAMES, "tracks": 1},
            {"video_id": "ffpp/c23/youtube/003", "frames": NUM_FRAMES + 10, "tracks": 1},
            {"video_id": "ffpp/c23/youtube/017", "frames": NUM_FRAMES, "tracks": 2}]
  records.write_json(os.path.join(state, "test-00000.json"), {"videos": videos})
  records.write_json(os.path.join(state, "plan.json"), {"fingerprint": "x"})
  report = run(paths, assume_whole_video=False)
  status = {(e["video_id"], e["track_id"]): (e["status"], e.get("reason"))
            for e in report["silent"] + report["enriched"]}
  assert status[("ffpp/c23/youtube/000", 0)] == ("enriched", None)
  assert status[("ffpp/c23/youtube/003", 0)] == ("silent", "track_start_unknown")
  # Both of 017's tracks span the whole video, so both start at its first frame.
  assert status[("ffpp/c23/youtube/017", 1)] == ("enriched", None)
  assert status[("ffpp/c23/Deepfakes/000_003", 0)] == ("silent", "track_start_unknown")


def test_whose_audio_each_manipulation_carries():
  src = mapping_lib.audio_source
  assert src("ffpp/raw/youtube/042", "real")[0] == mapping_lib.AudioSource("042", "self")
  assert src("ffpp/c40/Deepfakes/042_007", "Deepfakes")[0].ff_id == "042"
  assert src("ffpp/c40/Face2Face/042_007", "Face2Face")[0].ff_id == "007"
  assert src("ffpp/c40/NeuralTextures/042_007", "NeuralTextures")[0] == \
      mapping_lib.AudioSource("007", "source")
  assert src("ffpp/c23/Magic/042_007", "Magic") == (None, "unknown_manipulation")
  assert src("ffpp/c23/actors/01__walk", "real") == (None, "not_youtube")
  assert src("dfdc/aalscayrfi", "DFDC") == (None, "not_ffpp")


@pytest.mark.parametrize("content, message", [
    ({"000": "AAAAAAAAAAA"}, "key '000': value 'AAAAAAAAAAA' is not"),
    ({"000": "short 0"}, "key '000': value 'short 0' is not"),
    ({"0a0": "AAAAAAAAAAA 0"}, "key '0a0' is not a 3-digit FF\\+\\+ id"),
    (["000"], "expected an object"),
])
def test_malformed_conversion_dict_names_file_and_key(tmp_path, content, message):
  path = tmp_path / "conversion_dict.json"
  path.write_text(json.dumps(content))
  with pytest.raises(enrich.MappingError, match=f"{path}: {message}"):
    mapping_lib.load_conversion(str(path))


def test_malformed_frame_list_and_verified_list_name_file_and_entry(tmp_path):
  path = tmp_path / "0.json"
  path.write_text("[3, 4, 4]")
  with pytest.raises(enrich.MappingError, match=r"0.json: entry 2 \(4\) does not follow"):
    mapping_lib.load_frame_list(str(path))
  path.write_text('[1, "2"]')
  with pytest.raises(enrich.MappingError, match="entry 1 is '2'; expected a non-negative"):
    mapping_lib.load_frame_list(str(path))
  verified = tmp_path / "proper_audio_files.json"
  verified.write_text('["000", 3]')
  with pytest.raises(enrich.MappingError, match="proper_audio_files.json: entry 1 is 3"):
    mapping_lib.load_verified(str(verified))


@pytest.mark.integration  # A subprocess CLI run.
def test_cli(tree, tmp_path):
  paths, _ = tree
  cmd = [sys.executable, "-m", "input_pipeline.enrich", f"--records={paths['records']}",
         f"--out_dir={tmp_path / 'out'}", f"--originals={paths['originals']}",
         f"--conversion_dict={paths['conversion']}", f"--verified={paths['verified']}",
         "--assume_whole_video"]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "8 records enriched, 10 left silent" in out.stdout
  assert "silent unverified: ffpp/c23/youtube/011 track 0" in out.stdout
  bad = tmp_path / "bad.json"
  bad.write_text('{"000": 7}')
  cmd[6] = f"--conversion_dict={bad}"
  out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1 and f"error: {bad}: key '000'" in out.stderr

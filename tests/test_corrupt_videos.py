"""The raw-video robustness protocol: DeeperForensics' full-frame perturbations, real codecs.

Frame-level definitions are checked against hand computations (saturation, contrast, noise
scale, block geometry, bilinear pixelation); the CLI's videos against the frames they must hold
(the lossless intermediate returns exactly the corrupted RGB), their audio packets, timestamps
and rate against the source, and the run against reruns, resumes and unreadable inputs.
"""
import json
import os
import subprocess
import sys
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from input_pipeline import corrupt_videos, corruptions
from input_pipeline.preprocess import decode, encode, runner

FPS = Fraction(30)


def _frames(t=5, h=256, w=320, seed=0, high=255):
  """Smooth colour blobs plus fine detail, shifting one pixel per frame; values <= ``high``."""
  rng = np.random.default_rng(seed)
  base = cv2.resize(rng.uniform(20, high - 15, (5, 6, 3)).astype(np.float32), (w + t, h),
                    interpolation=cv2.INTER_CUBIC)
  base += rng.normal(0, 10, base.shape).astype(np.float32)
  return np.stack([np.clip(base[:, i:i + w], 0, high).astype(np.uint8) for i in range(t)])


def _write_video(path, frames, audio=True, video=True):
  """An H.264 yuv420p mp4 at 30 fps with a 16 kHz mono AAC track (both optional)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(str(path), "w") as out:
    if video:
      v = out.add_stream("libx264", rate=FPS)
      v.height, v.width = frames.shape[1:3]
      v.pix_fmt = "yuv420p"
    if audio:
      a = out.add_stream("aac", rate=16000)
      a.layout = "mono"
    if video:
      for f in frames:
        out.mux(v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
      out.mux(v.encode())
    if audio:
      n = int(len(frames) / FPS * 16000)
      wave = (np.sin(np.arange(n) * 0.07) * 9000).astype(np.int16)[None]
      chunk = av.AudioFrame.from_ndarray(wave, format="s16", layout="mono")
      chunk.sample_rate = 16000
      out.mux(a.encode(chunk))
      out.mux(a.encode())


def _read(path):
  """(RGB frames, video pts, average rate, codec name, audio packets as (bytes, pts))."""
  with av.open(str(path)) as c:
    v = c.streams.video[0]
    rate, codec = v.average_rate, v.codec_context.name
    decoded = list(c.decode(video=0))
  with av.open(str(path)) as c:
    audio = [(bytes(p), p.pts) for p in c.demux(audio=0) if p.size] if c.streams.audio else []
  return (np.stack([f.to_ndarray(format="rgb24") for f in decoded]), [f.pts for f in decoded],
          rate, codec, audio)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """raw/clip.mp4 and raw/sub/clip.mp4 (identical files at two relative paths)."""
  root = tmp_path_factory.mktemp("raw")
  frames = _frames()
  _write_video(root / "clip.mp4", frames)
  _write_video(root / "sub" / "clip.mp4", frames)
  return root


def _corrupt(source, out, kind, severity, seed=0):
  pairs, rows = corrupt_videos.list_videos(str(source))
  return corrupt_videos.corrupt_folder(pairs, rows, str(out), kind, severity, seed, 1)


# ----------------------------------------------------------------------------- whole videos
@pytest.mark.parametrize("kind", corruptions.FRAME_KINDS)
def test_lossless_kinds_hold_exactly_the_corrupted_frames_with_audio_and_timing(
    kind, source, tmp_path):
  report = _corrupt(source, tmp_path, kind, 3)
  assert (report["written"], report["failed"]) == (2, 0) and report["complete"]
  frames, pts, rate, _, audio = _read(source / "sub" / "clip.mp4")
  got, got_pts, got_rate, codec, got_audio = _read(tmp_path / "sub" / "clip.mp4")
  # The reference: the decoded source frames, corrupted in order with the per-video generator.
  rng = np.random.default_rng(corrupt_videos.video_seed(0, "sub/clip.mp4"))
  want = np.stack([corruptions.corrupt_frame(f, kind, 3, rng) for f in frames])
  np.testing.assert_array_equal(got, want)
  assert codec == "h264" and got_rate == rate == FPS and got_pts == pts
  assert got_audio == audio and len(audio) > 3  # Packets copied byte for byte, same times.


def test_compression_is_x264_at_the_tables_crf_with_audio_and_timing(source, tmp_path):
  frames, pts, rate, _, audio = _read(source / "clip.mp4")
  psnr = []
  for severity in (1, 5):
    out = tmp_path / str(severity)
    assert _corrupt(source, out, "compression", severity)["written"] == 2
    got, got_pts, got_rate, codec, got_audio = _read(out / "clip.mp4")
    with open(out / "clip.mp4", "rb") as f:
      # x264 writes its settings into the stream: the CRF and preset medium's subme=7.
      settings = f.read()
    crf = corruptions.LEVELS["compression"][severity - 1]
    assert f"crf={crf:.1f}".encode() in settings and b"subme=7" in settings
    assert codec == "h264" and got_rate == rate and got_pts == pts and got_audio == audio
    mse = np.mean((got.astype(np.float64) - frames) ** 2)
    psnr.append(10 * np.log10(255 ** 2 / mse))
  assert 20 < psnr[1] < psnr[0] < 50, psnr


def test_compression_keeps_the_sources_colour_tags(tmp_path):
  frames = _frames(t=3, h=64, w=80)
  (tmp_path / "raw").mkdir()
  with av.open(str(tmp_path / "raw" / "hd.mp4"), "w") as out:  # A BT.709-tagged source.
    v = out.add_stream("libx264", rate=25)
    v.width, v.height, v.pix_fmt = 80, 64, "yuv420p"
    for tag in ("colorspace", "color_primaries", "color_trc"):
      setattr(v.codec_context, tag, 1)
    for f in frames:
      yuv = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p",
                                                                   dst_colorspace=1)
      out.mux(v.encode(yuv))
    out.mux(v.encode())
  _corrupt(tmp_path / "raw", tmp_path / "out", "compression", 1)
  with av.open(str(tmp_path / "out" / "hd.mp4")) as c:
    first = next(c.decode(video=0))
  # BT.709, limited range: decoders (PyAV's to_ndarray included) pick the matrix by this tag;
  # untagged (2, 0) the same planes would be read with BT.601's.
  assert (first.colorspace, first.color_range) == (1, 1)


@pytest.mark.parametrize("name, rotation", [("portrait.mp4", 90), ("old.avi", 0)])
def test_display_rotation_and_avi_timing_survive(name, rotation, tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  frames = _frames(t=4, h=48, w=64)
  encode.write_video(str(raw / name), frames, np.zeros(6400, np.int16), rotation=rotation)
  assert _corrupt(raw, tmp_path / "out", "blur", 2)["written"] == 1

  def timing(path):
    with av.open(str(path)) as c:
      return [(f.pts, f.rotation) for f in c.decode(video=0)], c.streams.video[0].average_rate

  want = timing(raw / name)
  assert timing(tmp_path / "out" / name) == want
  assert [r for _, r in want[0]] == [rotation] * 4 and want[1] == 25
  # What preprocess reads: upright frames, and the audio of the source.
  got, want = (decode.read_video(str(p), min_seconds=0.1) for p in (tmp_path / "out" / name,
                                                                     raw / name))
  assert got.frames.shape == want.frames.shape and np.array_equal(got.audio, want.audio)
  blurred = np.stack([corruptions.corrupt_frame(f, "blur", 2, None) for f in want.frames])
  assert np.abs(got.frames.astype(int) - blurred).max() <= 1  # Blur commutes with turning.


def test_seeded_by_seed_and_path_so_reruns_are_identical(source, tmp_path):
  _corrupt(source, tmp_path / "a", "noise", 2)
  pairs, _ = corrupt_videos.list_videos(str(source))  # Worker processes draw the same.
  corrupt_videos.corrupt_folder(pairs, None, str(tmp_path / "b"), "noise", 2, 0, num_workers=2)
  _corrupt(source, tmp_path / "c", "noise", 2, seed=1)
  first = _read(tmp_path / "a" / "clip.mp4")[0]
  np.testing.assert_array_equal(first, _read(tmp_path / "b" / "clip.mp4")[0])
  assert not np.array_equal(first, _read(tmp_path / "c" / "clip.mp4")[0])
  # Same source bytes at another relative path: another draw.
  assert not np.array_equal(first, _read(tmp_path / "a" / "sub" / "clip.mp4")[0])
  # Fresh noise every frame: frame-to-frame differences exceed the source's one-pixel motion.
  clean = _read(source / "clip.mp4")[0].astype(np.float64)
  noise = first - clean
  assert np.abs(noise[1] - noise[0]).mean() > 10


def test_resume_keeps_finished_files_and_unreadable_inputs_are_named(source, tmp_path):
  raw = tmp_path / "raw"
  _write_video(raw / "good.mp4", _frames(t=3, h=64, w=80))
  _write_video(raw / "silent_audio_only.mp4", _frames(t=3, h=64, w=80), video=False)
  (raw / "notes.mp4").write_text("not a video")
  out = tmp_path / "out"
  report = _corrupt(raw, out, "blur", 1)
  assert (report["written"], report["done"], report["failed"]) == (1, 0, 2)
  messages = " | ".join(f["message"] for f in report["failures"])
  assert str(raw / "notes.mp4") in messages and "Invalid data" in messages
  assert f"{raw / 'silent_audio_only.mp4'}: ValueError: no video stream" in messages
  assert json.loads((out / corrupt_videos.REPORT).read_text())["complete"] is False
  assert not list(out.glob("*.partial")) and not (out / "notes.mp4").exists()
  stamp = os.stat(out / "good.mp4").st_mtime_ns
  report = _corrupt(raw, out, "blur", 1)
  assert (report["written"], report["done"]) == (0, 1)
  assert os.stat(out / "good.mp4").st_mtime_ns == stamp  # Not rewritten.
  # A partial file from a killed run is not a finished output: it is redone.
  os.remove(out / "good.mp4")
  (out / "good.mp4.partial").write_bytes(b"half")
  assert _corrupt(raw, out, "blur", 1)["written"] == 1 and _read(out / "good.mp4")[0].shape[0] == 3
  with pytest.raises(ValueError, match=r"corruption\.json: the folder was made with other .*"
                                       r"'kind': \"'blur' there, 'noise' asked\""):
    _corrupt(raw, out, "noise", 1)


def test_jsonl_list_maps_video_ids_and_writes_a_repointed_list(source, tmp_path):
  rows = [{"path": str(source / "clip.mp4"), "video_id": "ff/Deepfakes/000", "label": 1,
           "manipulation": "Deepfakes"},
          {"path": str(source / "sub" / "clip.mp4"), "split": "test"}]
  listing = tmp_path / "ff.jsonl"
  listing.write_text("".join(json.dumps(r) + "\n" for r in rows))
  pairs, got_rows = corrupt_videos.list_videos(str(listing))
  assert [rel for _, rel in pairs] == ["ff/Deepfakes/000.mp4", "clip.mp4"]
  out = tmp_path / "out"
  corrupt_videos.corrupt_folder(pairs, got_rows, str(out), "contrast", 1, 0, 1, "ff.jsonl")
  items = runner.read_list(str(out / "ff.jsonl"))  # What the preprocess CLI will read.
  assert [(i.path, i.video_id, i.label, i.manipulation, i.split) for i in items] == [
      (str(out / "ff/Deepfakes/000.mp4"), "ff/Deepfakes/000", 1, "Deepfakes", "train"),
      (str(out / "clip.mp4"), "clip", 0, "real", "test")]
  assert all(os.path.exists(i.path) for i in items)
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"path": "/x/a.mp4", "video_id": "../a"}) + "\n")
  with pytest.raises(ValueError, match="video_id='../a' must be a relative path"):
    corrupt_videos.list_videos(str(bad))


# ----------------------------------------------------------------------------- frame definitions
def _block_squares(mask, side=8):
  """Top-left corners of every all-True side x side window, and the union of those windows."""
  windows = np.lib.stride_tricks.sliding_window_view(mask, (side, side)).all(axis=(-1, -2))
  cover = np.zeros_like(mask)
  for y, x in zip(*np.nonzero(windows)):
    cover[y:y + side, x:x + side] = True
  return list(zip(*np.nonzero(windows))), cover


def test_blocks_are_8px_squares_anywhere_redrawn_every_frame():
  rng = np.random.default_rng(3)
  frame = _frames(t=1, h=520, w=600, high=120)[0]  # No pixel is grey 128 before.
  count = 520 // 256 * 80  # Severity 5: 2 x 80 blocks.
  masks, corners = [], []
  for _ in range(4):
    out = corruptions.corrupt_frame(frame, "block", 5, rng)
    mask = np.all(out == 128, axis=-1)
    tops, cover = _block_squares(mask)
    np.testing.assert_array_equal(cover, mask)  # A union of whole 8x8 squares...
    np.testing.assert_array_equal(out[~mask], frame[~mask])  # ...and nothing else changed.
    assert 0.8 * count * 64 < mask.sum() <= count * 64
    assert not mask[-1].any() and not mask[:, -1].any()  # Top-left <= size - 9.
    masks.append(mask)
    corners += tops
  assert not np.array_equal(masks[0], masks[1])  # Redrawn per frame.
  assert np.mean([y % 8 == 0 and x % 8 == 0 for y, x in corners]) < 0.2  # Not an 8-px grid.
  one = np.all(corruptions.corrupt_frame(frame[:256, :300], "block", 1, rng) == 128, -1)
  assert 12 * 64 < one.sum() <= 16 * 64  # 256 px, severity 1: 1 x 16 blocks.
  small = frame[:255]  # Under 256 px: none, as DeeperForensics' integer division gives.
  np.testing.assert_array_equal(corruptions.corrupt_frame(small, "block", 5, rng), small)


def _bilinear(img, out_h, out_w):
  """Bilinear resampling with pixel centres at +0.5 and clamped edges (no antialiasing)."""
  h, w = img.shape[:2]
  def taps(n_out, n_in):
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    return lo, np.minimum(lo + 1, n_in - 1), (pos - lo)[:, None]
  y0, y1, fy = taps(out_h, h)
  x0, x1, fx = taps(out_w, w)
  img = img.astype(np.float64)
  rows = img[y0] * (1 - fy[..., None]) + img[y1] * fy[..., None]
  return rows[:, x0] * (1 - fx) + rows[:, x1] * fx


@pytest.mark.parametrize("severity", [1, 2, 5])
def test_pixelation_is_bilinear_down_and_up_sampling_of_the_full_frame(severity):
  frame = _frames(t=1, h=131, w=100)[0]  # Sizes not divisible by the factors: floored.
  factor = corruptions.LEVELS["pixelation"][severity - 1]
  want = _bilinear(_bilinear(frame, 131 // factor, 100 // factor), 131, 100)
  got = corruptions.corrupt_frame(frame, "pixelation", severity, np.random.default_rng(0))
  # Each uint8 pass is within 0.76 of exact (rounding, OpenCV's 11-bit fixed-point weights).
  diff = np.abs(got - want)
  assert diff.max() <= 1.55 and diff.mean() < 0.5, (diff.max(), diff.mean())
  crop_level = corruptions.corrupt(kind="pixelation", severity=severity)(
      {"video": frame[None]}, np.random.default_rng(0))["video"][0]
  assert np.abs(crop_level.astype(int) - got).max() > 8  # The quick op (area/nearest) differs.


def test_saturation_and_contrast_match_a_hand_computation():
  frame = _frames(t=1, h=40, w=48)[0]
  rgb = frame.astype(np.float64)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  y = 0.299 * r + 0.587 * g + 0.114 * b  # BT.601, full range, chroma centred on 128.
  cr, cb = (r - y) * 0.713 * 0.3, (b - y) * 0.564 * 0.3  # Severity 2: chroma x 0.3.
  want = np.stack([y + 1.403 * cr, y - 0.714 * cr - 0.344 * cb, y + 1.773 * cb], -1)
  got = corruptions.corrupt_frame(frame, "saturation", 2, np.random.default_rng(0))
  diff = np.abs(got - np.clip(want, 0, 255))
  assert diff.max() <= 2.5 and diff.mean() < 0.6, (diff.max(), diff.mean())
  scaled = corruptions.corrupt_frame(frame, "contrast", 4, np.random.default_rng(0))
  assert np.abs(scaled - rgb * 0.475).max() <= 0.5 + 1e-6  # Severity 4: x 0.475, rounded.


def test_noise_has_deeperforensics_studio_range_scale():
  frame = np.full((256, 256, 3), 128, np.uint8)
  out = corruptions.corrupt_frame(frame, "noise", 3, np.random.default_rng(0))
  ycrcb = cv2.cvtColor(out, cv2.COLOR_RGB2YCrCb).reshape(-1, 3).astype(np.float64)
  # DeeperForensics: 8-bit std = sqrt(var) * 255 * 255/219 (Y), * 255/224 (Cr, Cb).
  want = np.sqrt(0.005) * 255 * np.array([255 / 219, 255 / 224, 255 / 224])
  np.testing.assert_allclose(ycrcb.std(axis=0), want, rtol=0.05)
  np.testing.assert_allclose(ycrcb.mean(axis=0), 128, atol=1.0)


def test_frame_level_errors_are_named():
  with pytest.raises(ValueError, match="whole-video corruption"):
    corruptions.corrupt_frame(np.zeros((8, 8, 3), np.uint8), "compression", 1, None)
  with pytest.raises(ValueError, match="corrupt_frame: severity=0 is invalid"):
    corruptions.corrupt_frame(np.zeros((8, 8, 3), np.uint8), "blur", 0, None)
  with pytest.raises(ValueError, match=r"must be uint8 \[H, W, 3\]"):
    corruptions.corrupt_frame(np.zeros((2, 8, 8, 3), np.uint8), "blur", 1, None)


# ----------------------------------------------------------------------------- command line
def test_cli_all_writes_every_kind_and_severity_and_exits_1_naming_bad_files(tmp_path):
  raw = tmp_path / "raw"
  _write_video(raw / "v.mp4", _frames(t=2, h=32, w=48), audio=False)
  (raw / "broken.avi").write_bytes(b"\x00" * 100)
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "input_pipeline.corrupt_videos", f"--videos={raw}",
         f"--out_dir={out}", "--all", "--num_workers=1"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 1, proc.stderr
  lines = proc.stdout.splitlines()
  assert f"blur severity 3 (level 13): 1 written, 0 already done, 1 failed -> {out}/blur/3" in lines
  assert sum(f"failed {raw / 'broken.avi'}: " in line for line in lines) == 35
  for kind in corruptions.LEVELS:
    for severity in range(1, 6):
      assert (out / kind / str(severity) / "v.mp4").exists()
  proc = subprocess.run(cmd[:-2] + ["--corruption=blur", "--severity=6"], capture_output=True,
                        text=True, timeout=60, check=False)
  assert proc.returncode != 0 and "--severity=6: expected 1, 2, 3, 4 or 5" in proc.stderr

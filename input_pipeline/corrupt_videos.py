"""CLI: the authors' robustness protocol on RAW videos (RealForensics §4.2, App. A.3).

  python -m input_pipeline.corrupt_videos --videos=DIR_OR_LIST.jsonl --out_dir=OUT \
      --corruption=KIND --severity=1..5 [--seed=0] [--num_workers=N]
  python -m input_pipeline.corrupt_videos --videos=DIR_OR_LIST.jsonl --out_dir=OUT --all

RealForensics (following LipForensics) corrupts the FULL frames of each raw video with one of
DeeperForensics-1.0's seven perturbations before any face is found or cropped; the corrupted
videos are then preprocessed and scored like clean ones (docs/robustness.md). This writes every
input video, corrupted, to ``OUT/<same relative path>`` (``--all``: ``OUT/KIND/SEVERITY/...``
for all 7 x 5), keeping the container, the frame timestamps (so the fps), the display rotation
and every audio stream (packets copied, not re-encoded); other streams are dropped.

Video encoding:
- compression: libx264 at the table's CRF, yuv420p, preset ``medium`` — what DeeperForensics'
  ``ffmpeg -i IN -crf X OUT`` gets by default; yuv420p input frames are passed as they were
  decoded, without a round trip through RGB.
- every other kind: lossless H.264 RGB (libx264rgb, qp 0, rgb24, preset ``ultrafast``): a later
  decode returns exactly the corrupted RGB frames, so the evaluation measures the corruption and
  no extra coding loss. Near-lossless is no option: x264 at CRF 10 (yuv444p) removes so much of
  the Gaussian noise that the result is 32 dB from the noisy frames, i.e. it denoises. The price
  is disk (measured on a 720p clip: noise 3.4 MB per frame, a little over raw RGB; blur and
  pixelation 0.6 MB); ``ultrafast`` is ~5x faster than ``veryfast`` for 10-15 % larger files.
  (DeeperForensics itself re-encoded with the source's lossy codec.) In .avi files FFV1 (bgr0,
  lossless too): FFmpeg reads H.264-in-AVI frames one frame late, which would shift the video
  40 ms against the audio. The compression kind has that shift in .avi outputs.

Random kinds (block, noise) draw from a generator seeded by ``--seed`` and the video's relative
path, frame after frame, so a rerun writes identical frames and two videos never share a draw.
Rerunning the same command resumes: finished outputs are kept (each is written to a temporary
name, then renamed). A video that cannot be read or written is reported by name (summary line,
``OUT/corruption.json``) and the others go on; the exit status is then 1.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import av
import numpy as np
from absl import app, flags

from input_pipeline import corruptions
from input_pipeline.preprocess import runner

REPORT = "corruption.json"
# Lossless intermediate for the per-frame kinds (see the module docstring).
LOSSLESS = {"codec": "libx264rgb", "pix_fmt": "rgb24",
            "options": {"qp": "0", "preset": "ultrafast"}}
# In AVI, FFmpeg reads H.264 frames one frame late (no B-frames needed): FFV1 there, also exact.
LOSSLESS_AVI = {"codec": "ffv1", "pix_fmt": "bgr0", "options": {}}
# The compression kind: FFmpeg's defaults for libx264 plus the CRF from corruptions.LEVELS.
COMPRESSION = {"codec": "libx264", "pix_fmt": "yuv420p", "options": {"preset": "medium"}}
# The output keeps the input's container (muxer by extension); H.264 does not fit in WebM.
MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}


@dataclasses.dataclass(frozen=True)
class Job:
  """One video to corrupt: ``rel`` is its path relative to the output folder (POSIX)."""
  src: str
  dst: str
  rel: str
  kind: str
  severity: int
  seed: int


def video_seed(seed: int, rel: str) -> int:
  """The per-video generator seed: a hash, so it does not depend on order or worker count."""
  digest = hashlib.sha256(f"{int(seed)}:{rel}".encode()).digest()
  return int.from_bytes(digest[:8], "little")


# ----------------------------------------------------------------------------- inputs
def list_videos(videos: str) -> Tuple[List[Tuple[str, str]], Optional[List[Dict[str, Any]]]]:
  """``([(source path, relative output path)], rows)``: a directory is scanned recursively (the
  preprocess CLI's extensions, relative paths kept); a ``.jsonl`` list (preprocess's format) maps
  each row to ``<video_id><extension>`` and returns its rows, to be written back re-pointed."""
  if videos.endswith(".jsonl"):
    with open(videos) as f:
      lines = f.read().splitlines()
    items = runner.items_from_lines(lines, videos)
    rows = [json.loads(line) for line in lines if line.strip()]
    pairs = []
    for n, item in enumerate(items, 1):
      rel = item.video_id + os.path.splitext(item.path)[1].lower()
      if os.path.isabs(rel) or os.path.normpath(rel).split(os.sep)[0] == "..":
        raise ValueError(f"{videos}: row {n}: video_id={item.video_id!r} must be a relative "
                         "path inside the output folder")
      pairs.append((item.path, os.path.normpath(rel).replace(os.sep, "/")))
  elif os.path.isdir(videos):
    pairs, rows = [], None
    for dirpath, _, files in os.walk(videos):
      for fn in files:
        if fn.lower().endswith(runner.VIDEO_EXTENSIONS):
          path = os.path.join(dirpath, fn)
          pairs.append((path, os.path.relpath(path, videos).replace(os.sep, "/")))
    pairs.sort(key=lambda p: p[1])
  else:
    raise ValueError(f"--videos={videos}: expected a directory or a .jsonl list; not found")
  seen: Dict[str, str] = {}
  for src, rel in pairs:
    if rel in seen:
      raise ValueError(f"{videos}: {seen[rel]} and {src} would both be written to {rel}")
    seen[rel] = src
  return pairs, rows


def plan(pairs: Sequence[Tuple[str, str]], out_dir: str, kind: str, severity: int,
         seed: int) -> List[Job]:
  """The jobs of one corruption x severity into ``out_dir``."""
  corruptions.level(kind, severity, where="corrupt_videos")
  return [Job(src, os.path.join(out_dir, rel), rel, kind, severity, seed) for src, rel in pairs]


def settings(kind: str, severity: int, seed: int) -> Dict[str, Any]:
  """What an output folder was made with (``corruption.json``); a rerun must match it."""
  encoder = (COMPRESSION if kind == "compression" else {"default": LOSSLESS, ".avi": LOSSLESS_AVI})
  return {"kind": kind, "severity": severity, "level": corruptions.LEVELS[kind][severity - 1],
          "seed": seed, "encoder": encoder}


def _encoder(kind: str, ext: str) -> Dict[str, Any]:
  if kind == "compression":
    return COMPRESSION
  return LOSSLESS_AVI if ext == ".avi" else LOSSLESS


def check_settings(out_dir: str, wanted: Dict[str, Any]) -> None:
  """Refuses to resume into a folder made with another corruption, severity or seed (its
  finished files would be kept and silently mixed in)."""
  path = os.path.join(out_dir, REPORT)
  if os.path.exists(path):
    with open(path) as f:
      have = json.load(f)["settings"]
    if have != wanted:
      diff = {k: f"{have.get(k)!r} there, {wanted[k]!r} asked" for k in wanted
              if have.get(k) != wanted[k]}
      raise ValueError(f"{path}: the folder was made with other settings ({diff}); use "
                       "another --out_dir")
  else:
    os.makedirs(out_dir, exist_ok=True)
    _write_json(path, {"settings": wanted, "complete": False})


def _write_json(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


# ----------------------------------------------------------------------------- one video
def _frame_rate(stream) -> Fraction:
  rate = stream.average_rate or stream.guessed_rate
  if not rate:
    raise ValueError("the video stream has no frame rate")
  return rate


def _display_rotation(src: str) -> float:
  """The display rotation (degrees) of ``src``'s first frame: phones store portrait video as
  landscape frames plus a display matrix, which the output must keep (the preprocess decoder
  turns frames upright by it). A separate open: the output header is written before the first
  frame may come out of the decoder."""
  with av.open(src) as inp:
    for frame in inp.decode(video=0):
      return frame.rotation
  return 0.0


def _encoder_frames(inp, kind: str, severity: int, seed: int) -> Iterator[Tuple[Any, Any]]:
  """Yields ``(packet, None)`` for audio packets to copy and ``(None, frame)`` for the video
  frames to encode, in the container's order (so the output interleaves as the input did)."""
  video = inp.streams.video[0]
  rng = np.random.default_rng(seed)
  rate, index = _frame_rate(video), 0
  for packet in inp.demux(video, *inp.streams.audio):
    if packet.stream.type == "audio":
      if packet.dts is not None:  # The demuxer's empty flush packets carry no data.
        yield packet, None
      continue
    for frame in packet.decode():
      if kind == "compression":
        # Same planes, fresh frame: the decoder's picture type must not force x264's.
        same = frame.format.name in ("yuv420p", "yuvj420p")  # yuvj: full range, tagged below.
        yuv = frame if same else frame.reformat(format="yuv420p")
        out = av.VideoFrame.from_ndarray(yuv.to_ndarray(), format="yuv420p")
      else:
        rgb = corruptions.corrupt_frame(frame.to_ndarray(format="rgb24"), kind, severity, rng)
        out = av.VideoFrame.from_ndarray(rgb, format="rgb24")
      if frame.pts is None:  # Containers without timestamps (some AVI): constant rate.
        out.pts, out.time_base = index, 1 / rate
      else:
        out.pts, out.time_base = frame.pts, frame.time_base
      index += 1
      yield None, out


def corrupt_video(src: str, dst: str, kind: str, severity: int, seed: int) -> int:
  """Writes ``src`` with ``kind`` at ``severity`` to ``dst`` (via ``dst``'s temporary name);
  returns the number of frames. Raises ``ValueError`` / ``av.FFmpegError`` naming the problem."""
  ext = os.path.splitext(dst)[1].lower()
  if ext not in MUXERS:
    raise ValueError(f"cannot write H.264 into a {ext} file; allowed containers: "
                     f"{sorted(MUXERS)} (convert the input first)")
  encoder = _encoder(kind, ext)
  options = dict(encoder["options"])
  if kind == "compression":
    options["crf"] = str(corruptions.level(kind, severity, where="corrupt_videos"))
  os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
  # Same folder: an atomic rename. Not a video extension: a folder scan never picks it up.
  tmp = dst + ".partial"
  frames = 0
  try:
    with av.open(src) as inp:
      if not inp.streams.video:
        raise ValueError("no video stream")
      vin = inp.streams.video[0]
      vin.thread_type = "AUTO"
      width, height = vin.codec_context.width, vin.codec_context.height
      if kind == "compression" and (width % 2 or height % 2):
        raise ValueError(f"H.264 4:2:0 (compression) needs an even frame size; got "
                         f"{width}x{height}")
      rotation = _display_rotation(src)
      with av.open(tmp, mode="w", format=MUXERS[ext]) as out:
        vout = out.add_stream(encoder["codec"], rate=_frame_rate(vin))
        vout.width, vout.height, vout.pix_fmt = width, height, encoder["pix_fmt"]
        vout.time_base = vin.time_base
        vout.options = options
        if rotation:  # Frames are corrupted as coded; the player (and preprocess) turns them.
          vout.set_display_rotation(rotation)
        if kind == "compression":
          # The same YUV planes must keep their colour tags (a BT.709 source decoded as BT.601
          # would shift colours); lossless outputs are RGB, converted with the source's tags.
          for tag in ("colorspace", "color_primaries", "color_trc", "color_range"):
            setattr(vout.codec_context, tag, getattr(vin.codec_context, tag))
        audio = {s.index: out.add_stream_from_template(s) for s in inp.streams.audio}
        for packet, frame in _encoder_frames(inp, kind, severity, seed):
          if packet is not None:
            packet.stream = audio[packet.stream.index]
            out.mux(packet)
          else:
            out.mux(vout.encode(frame))
            frames += 1
        out.mux(vout.encode())
    if frames == 0:
      raise ValueError("no decodable video frames")
    os.replace(tmp, dst)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return frames


def run_job(job: Job) -> Dict[str, Any]:
  """One job in a worker: ``status`` is ``written``, ``done`` (kept from an earlier run) or
  ``failed`` (``message`` names the file and the reason)."""
  if os.path.exists(job.dst):
    return {"rel": job.rel, "status": "done"}
  try:
    frames = corrupt_video(job.src, job.dst, job.kind, job.severity, video_seed(job.seed, job.rel))
  except Exception as e:  # pylint: disable=broad-except — any failure is this file's, reported.
    return {"rel": job.rel, "status": "failed", "path": job.src,
            "message": f"{job.src}: {type(e).__name__}: {e}"}
  return {"rel": job.rel, "status": "written", "frames": frames}


def run(jobs: Sequence[Job], num_workers: int) -> List[Dict[str, Any]]:
  """Every job, in ``num_workers`` processes (1: in this process); results in job order."""
  if num_workers <= 1 or len(jobs) <= 1:
    return [run_job(j) for j in jobs]
  # spawn: a forked child would inherit FFmpeg's and OpenCV's thread pools mid-state.
  with ProcessPoolExecutor(num_workers, multiprocessing.get_context("spawn")) as pool:
    return list(pool.map(run_job, jobs))


def corrupt_folder(pairs: Sequence[Tuple[str, str]], rows: Optional[List[Dict[str, Any]]],
                   out_dir: str, kind: str, severity: int, seed: int, num_workers: int,
                   list_name: str = "videos.jsonl") -> Dict[str, Any]:
  """One corruption x severity into ``out_dir``; writes and returns ``corruption.json``'s
  content. With ``rows`` (a .jsonl input) also writes ``out_dir/list_name`` pointing at the
  corrupted files (every other field kept, ``video_id`` made explicit)."""
  wanted = settings(kind, severity, seed)
  check_settings(out_dir, wanted)
  jobs = plan(pairs, out_dir, kind, severity, seed)
  start = time.time()
  results = run(jobs, num_workers)
  failed = [{"path": r["path"], "message": r["message"]} for r in results
            if r["status"] == "failed"]
  counts = {s: sum(r["status"] == s for r in results) for s in ("written", "done", "failed")}
  if rows is not None:
    with open(os.path.join(out_dir, list_name), "w") as f:
      for row, job in zip(rows, jobs):
        video_id = os.path.splitext(job.rel)[0]
        f.write(json.dumps({**row, "path": os.path.abspath(job.dst), "video_id": video_id}) + "\n")
  report = {"settings": wanted, "complete": not failed, "num_videos": len(jobs), **counts,
            "wall_seconds": round(time.time() - start, 1), "failures": failed}
  _write_json(os.path.join(out_dir, REPORT), report)
  return report


def summary(out_dir: str, report: Dict[str, Any]) -> str:
  s = report["settings"]
  lines = [f"{s['kind']} severity {s['severity']} (level {s['level']}): {report['written']} "
           f"written, {report['done']} already done, {report['failed']} failed -> {out_dir}"]
  lines += [f"  failed {f['message']}" for f in report["failures"]]
  return "\n".join(lines)


# ----------------------------------------------------------------------------- command line
_VIDEOS = flags.DEFINE_string("videos", None, "Directory scanned recursively for "
                              f"{'/'.join(runner.VIDEO_EXTENSIONS)} files, or a .jsonl list "
                              "(input_pipeline.preprocess's format).", required=True)
_OUT = flags.DEFINE_string("out_dir", None, "Output folder (local).", required=True)
_KIND = flags.DEFINE_enum("corruption", None, list(corruptions.LEVELS),
                          "DeeperForensics perturbation.")
_SEVERITY = flags.DEFINE_integer("severity", None, "1 (mild) .. 5 (strong).")
_ALL = flags.DEFINE_bool("all", False, "Every corruption x severity into OUT/KIND/SEVERITY/.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the block and noise draws (with each path).")
_WORKERS = flags.DEFINE_integer("num_workers", max(1, (os.cpu_count() or 1)),
                                "Worker processes (one video each at a time).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if _ALL.value == (_KIND.value is not None):
    raise app.UsageError("give either --corruption=KIND --severity=N or --all")
  if _ALL.value:
    if _SEVERITY.value is not None:
      raise app.UsageError("--all makes every severity; drop --severity")
    targets = [(k, s) for k in corruptions.LEVELS for s in range(1, 6)]
  else:
    if _SEVERITY.value not in (1, 2, 3, 4, 5):
      raise app.UsageError(f"--severity={_SEVERITY.value}: expected 1, 2, 3, 4 or 5")
    targets = [(_KIND.value, _SEVERITY.value)]
  try:
    pairs, rows = list_videos(_VIDEOS.value)
  except (OSError, ValueError) as e:
    raise app.UsageError(str(e)) from None
  if not pairs:
    raise app.UsageError(f"no videos found in {_VIDEOS.value}")
  list_name = os.path.basename(_VIDEOS.value) if rows is not None else "videos.jsonl"
  out_dirs = [os.path.join(_OUT.value, kind, str(severity)) if _ALL.value else _OUT.value
              for kind, severity in targets]
  for (kind, severity), out_dir in zip(targets, out_dirs):  # All checked before any work.
    try:
      check_settings(out_dir, settings(kind, severity, _SEED.value))
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  any_failed = False
  for (kind, severity), out_dir in zip(targets, out_dirs):
    report = corrupt_folder(pairs, rows, out_dir, kind, severity, _SEED.value, _WORKERS.value,
                            list_name)
    print(summary(out_dir, report), flush=True)
    any_failed |= bool(report["failures"])
  if any_failed:
    print("some videos failed (listed above, and in corruption.json); fix or remove them and "
          "rerun the same command: finished videos are kept", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)

"""A restored detector that scores raw video files: tracks → clips → eval ops → jitted predict.

Clips are laid out, cut and transformed exactly as the evaluator does on records
(``input.eval.clip_layout`` / ``frame_window``, ``sampling.clip`` or ``padded_clip``, then
``config.input.eval.ops``, deterministic), scored by the evaluator's own restored detector
(``evaluation.detector``: ``objective.predict`` with the trainer's parameter shardings), and
aggregated as the evaluator aggregates: clip probability = σ(logit), track = mean over its clips,
video = max over tracks (``report.track_mean``, by ``input.eval.video_score``).

Batches are padded to a power-of-two multiple of the mesh's batch devices (at most
``batch_size``), so a run compiles a handful of shapes however many clips each file gives.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import traceback
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import ml_collections
import numpy as np
from etils import epath

from fakedet import objectives as objectives_lib
from fakedet import sharding as sharding_lib
from fakedet.evaluation import detector as detector_lib
from fakedet.evaluation import maps as maps_lib
from fakedet.evaluation import report
from fakedet.prediction import occlusion, tracks as tracks_lib
from input_pipeline import ops, pipeline, records, sources
from input_pipeline.preprocess import decode, video

THRESHOLD = 0.5  # Verdict "fake" at p >= 0.5, the evaluator's accuracy threshold.
OK = "ok"
ERROR_KINDS = decode.SKIP_KINDS  # Per-file failure kinds (docs/preprocessing.md's skip kinds).


@dataclasses.dataclass(frozen=True)
class Options:
  """Per-run choices of the predict CLI (``fakedet/predict.py`` flags)."""
  clips_per_track: int = 0  # 0 = every clip of the track's layout.
  frame_window: int = -1  # Clips within a track's first N frames; -1 = input.eval.frame_window.
  aligned: bool = False  # Input is already an aligned face-crop video.
  landmarks_dir: str = ""  # <dir>/<file stem>.npy|.json replaces face detection.
  heatmap_dir: str = ""  # Write one occlusion-sensitivity PNG per track here.
  heatmap_patch: float = occlusion.PATCH_FRACTION  # Patch side / model input side.
  heatmap_stride: float = 0.5  # Patch step / patch side.
  max_seconds: Optional[float] = None  # Only the start of long videos.
  detect_every: int = 1  # MTCNN on every n-th frame (tracks interpolate between).


def sigmoid(logits) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


# ----------------------------------------------------------------------------- crop size
def records_crop_size(icfg: Mapping[str, Any]) -> int:
  """The side of the aligned crops in the records the detector was evaluated on
  (``config.input.eval.data_dir``): the preprocessing's ``crop_size`` (``preprocess.json``),
  else the first record's frame size — read from the data, whatever made it."""
  ecfg = icfg["eval"]
  hint = "pass --crop_size (the crop size the training records were made with)"
  if not ecfg["data_dir"]:
    raise ValueError(f"config.input.eval.data_dir is empty, so the records' crop size is "
                     f"unknown: {hint}")
  try:
    data_dir = sources.resolve_data_dir(ecfg["data_dir"])
    report = epath.Path(data_dir) / "preprocess.json"
    if report.exists():
      return int(json.loads(report.read_text())["config"]["crop_size"])
    source = sources.ClipSource(data_dir, ecfg["split"])
    return int(records.decode_frames(source[0], [0]).shape[1])
  except Exception as e:  # Missing bucket, no manifest, unreadable record: all say the same.
    raise ValueError(f"cannot read the records' crop size from config.input.eval.data_dir="
                     f"{ecfg['data_dir']} ({type(e).__name__}: {e}); {hint}") from None


# ----------------------------------------------------------------------------- clips
def track_clip_starts(icfg: Mapping[str, Any], num_frames: int, clips_per_track: int,
                      frame_window: int = -1) -> List[int]:
  """A face track's clip starts, laid out as the evaluator lays out a record's
  (``input.eval.clip_layout`` within ``input.eval.frame_window``): a file's prediction is then the
  score its record would get from ``fakedet.evaluate``. ``frame_window`` >= 0 replaces the
  config's window (0: the whole track)."""
  ecfg = icfg["eval"]
  window = ecfg["frame_window"] if frame_window < 0 else frame_window
  return pipeline.clip_starts(num_frames, icfg["clip_frames"], clips_per_track,
                              ecfg["clip_layout"], window)


def track_clip(icfg: Mapping[str, Any], chain, raw: Mapping[str, Any],
               start: int) -> Dict[str, Any]:
  """The model inputs of one clip, exactly as ``pipeline.eval_dataset`` makes them (a
  consecutive layout's last clip zero-padded past the track's end, with ``frame_valid``)."""
  return pipeline.eval_clip(raw, start, clip_frames=icfg["clip_frames"],
                            sample_rate=icfg["sample_rate"], with_mask=icfg["with_mask"],
                            with_words=icfg["with_words"], chain=chain,
                            pad=pipeline.pads_past_end(icfg["eval"]))


# ----------------------------------------------------------------------------- batching
def bucket(n: int, cap: int, multiple: int) -> int:
  """Rows of the padded batch holding ``n <= cap`` clips: ``multiple`` × a power of two."""
  size = multiple
  while size < n:
    size *= 2
  return min(size, cap)


def _round_up(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)


def _dummy_raw(icfg: Mapping[str, Any], crop_size: int) -> Dict[str, Any]:
  """A blank record one clip long (shapes only: builds the abstract state before any file)."""
  t, sr, fps = icfg["clip_frames"], icfg["sample_rate"], 25.0
  rec = {"frames": np.zeros((t, crop_size, crop_size, 3), np.uint8),
         "audio": np.zeros(records.audio_samples(t, fps, sr), np.int16), "fps": fps,
         "sample_rate": sr, "video_id": "shape", "track_id": 0, "source": tracks_lib.SOURCE,
         "label": 0, "manipulation": records.REAL}
  return records.parse(records.encode(rec), "shape example")


# ----------------------------------------------------------------------------- predictor
class Predictor:
  """A restored detector plus everything needed to score clips of raw files with it."""

  def __init__(self, detector: detector_lib.Detector, crop_size: int, batch_size: int = 0):
    self.detector = detector
    self.config, self.objective = detector.config, detector.objective
    self.icfg = self.config.input
    self.crop_size = int(crop_size)
    self.chain = ops.build(self.icfg.eval.ops)
    self.needs_audio = "audio" in self.objective.eval_keys
    self.multiple = sharding_lib.batch_devices(detector.mesh)  # Batch rows split over these.
    self.cap = _round_up(batch_size or self.icfg.eval.batch_size, self.multiple)
    self.directory, self.step = detector.directory, detector.step
    self._faces = None  # MTCNN, built on first use.

  @classmethod
  def from_checkpoint(cls, config: ml_collections.ConfigDict, checkpoint: str,
                      step: Optional[int] = None, crop_size: int = 0, batch_size: int = 0,
                      mesh=None) -> "Predictor":
    """Restores the detector as the evaluator does (never the optimizer state)."""
    detector_lib.find(config, checkpoint, step)  # Cheap checks before reading any data.
    crop_size = crop_size or records_crop_size(config.input)
    example = example_batch(config.input, crop_size, ops.build(config.input.eval.ops))
    return cls(detector_lib.load(config, checkpoint, step, example, mesh), crop_size, batch_size)

  # --------------------------------------------------------------------------- clips
  def clip_example(self, raw: Mapping[str, Any], start: int) -> Dict[str, Any]:
    return track_clip(self.icfg, self.chain, raw, start)

  def logits(self, examples: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """float32 [N] fake logits of ``examples`` (model-input dicts), in order."""
    out = np.full(len(examples), np.nan, np.float32)
    for i0 in range(0, len(examples), self.cap):
      chunk = list(examples[i0:i0 + self.cap])
      size = bucket(len(chunk), self.cap, self.multiple)
      rows = chunk + [chunk[-1]] * (size - len(chunk))
      batch = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in self.objective.eval_keys}
      valid = np.arange(size) < len(chunk)
      batch["valid"] = valid
      batch[detector_lib.INDEX_KEY] = np.where(valid, np.arange(size) + i0, -1).astype(np.int32)
      result = self.detector.score(batch)
      index = np.asarray(result["index"])
      keep = index >= 0
      out[index[keep]] = np.asarray(result["logit"], np.float32)[keep]
    if np.isnan(out).any():
      raise RuntimeError(f"{int(np.isnan(out).sum())} of {len(out)} clips came back unscored")
    return out

  # --------------------------------------------------------------------------- files
  def face_detector(self, options: Options):
    """MTCNN, built on first use (a landmark-file or aligned run never imports TensorFlow)."""
    if self._faces is None:
      cfg = tracks_lib.preprocess_config(self.crop_size, self.icfg.clip_frames, self.needs_audio,
                                         options.max_seconds, options.detect_every)
      self._faces = video.make_detector(cfg)
    return self._faces

  def video_tracks(self, path: str, video_id: str, options: Options) -> tracks_lib.VideoTracks:
    cfg = tracks_lib.preprocess_config(self.crop_size, self.icfg.clip_frames, self.needs_audio,
                                       options.max_seconds, options.detect_every)
    if options.aligned:
      return tracks_lib.aligned_tracks(path, video_id, cfg)
    landmarks = tracks_lib.landmark_file(options.landmarks_dir, path)
    return tracks_lib.face_tracks(path, video_id, cfg, landmarks, lambda: self.face_detector(options))

  def predict_file(self, path: str, video_id: str, options: Options) -> Dict[str, Any]:
    """One file's JSON entry; never raises: a failure becomes ``status`` + ``error``."""
    start = time.perf_counter()
    entry: Dict[str, Any] = {"path": path, "video_id": video_id}
    try:
      entry.update(self._predict(path, video_id, options))
    except decode.MediaError as e:
      entry.update(status=e.kind, error=e.message)
    except ImportError as e:  # No face detector installed and no landmark file for this video.
      entry.update(status=decode.INTERNAL_ERROR,
                   error=f"{path}: no landmark file in --landmarks_dir and {e}")
    except Exception as e:  # pylint: disable=broad-except
      logging.error("%s failed:\n%s", path, traceback.format_exc())
      entry.update(status=decode.INTERNAL_ERROR, error=f"{path}: {type(e).__name__}: {e}")
    entry["elapsed_seconds"] = round(time.perf_counter() - start, 3)
    return entry

  def _predict(self, path: str, video_id: str, options: Options) -> Dict[str, Any]:
    found = self.video_tracks(path, video_id, options)
    per_track, examples = [], []
    for tr in found.tracks:
      starts = track_clip_starts(self.icfg, tr.num_frames, options.clips_per_track,
                                 options.frame_window)
      per_track.append(starts)
      examples.extend(self.clip_example(tr.raw, s) for s in starts)
    logits = self.logits(examples)
    probs = sigmoid(logits)
    track_ids = [tr.track_id for tr, starts in zip(found.tracks, per_track) for _ in starts]
    # Clips → tracks → video as the evaluator aggregates (input.eval.video_score).
    rule = self.icfg.eval.video_score
    video_prob = report.track_mean(logits, [video_id] * len(probs), track_ids, rule)[video_id]
    out_tracks, k = [], 0
    for tr, starts in zip(found.tracks, per_track):
      n, fps = len(starts), float(tr.raw["fps"])
      clips = [{"start_frame": tr.start + s, "start_seconds": round((tr.start + s) / fps, 3),
                "logit": float(logits[k + j]), "fake_probability": float(probs[k + j])}
               for j, s in enumerate(starts)]
      entry = {"track_id": tr.track_id, "start_frame": tr.start, "num_frames": tr.num_frames,
               "start_seconds": round(tr.start / fps, 3), "box": tr.box,
               "fake_probability": report.track_mean(logits[k:k + n], [video_id] * n,
                                                     [tr.track_id] * n, rule)[video_id],
               "clips": clips}
      if options.heatmap_dir:
        best = int(np.argmax(probs[k:k + n]))
        entry["heatmap"] = self.heatmap(tr, starts[best], float(probs[k + best]), video_id,
                                        options)
      out_tracks.append(entry)
      k += n
    return {"status": OK, "fake_probability": float(video_prob),
            "verdict": "fake" if video_prob >= THRESHOLD else "real",
            "seconds": round(found.seconds, 3), "faces_from": found.faces_from,
            "frame_size": found.frame_size, "num_tracks": len(out_tracks),
            "num_clips": len(probs), "tracks": out_tracks}

  # --------------------------------------------------------------------------- heatmaps
  def occlusion_map(self, example: Mapping[str, Any], clean_prob: float, options: Options,
                    key: str = "video") -> Tuple[np.ndarray, int, int]:
    """(drop map float32 [H, W] over the model input, patch px, stride px) of one clip."""
    h, w = np.shape(example[key])[1:3]
    patch = occlusion.patch_size(min(h, w), options.heatmap_patch)
    stride = max(1, int(round(options.heatmap_stride * patch)))
    covered, corners = occlusion.occluded(dict(example), key, patch, stride)
    probs = sigmoid(self.logits(covered))
    return occlusion.drop_map(clean_prob, probs, corners, patch, (h, w)), patch, stride

  def heatmap(self, tr: tracks_lib.FaceTrack, start: int, prob: float, video_id: str,
              options: Options) -> Dict[str, Any]:
    """A PNG of where the track's most fake-looking clip looks fake: the method's own maps
    (``objective.maps``: PCL's consistency heatmap, RFFR's residual) where it has them, else
    occlusion sensitivity (the drop in fake probability when a patch is covered)."""
    example = self.clip_example(tr.raw, start)
    stem = f"{video_id.replace('/', '_')}_track{tr.track_id}"
    frame = np.asarray(example["video"])[0]
    if objectives_lib.has_maps(self.objective):
      images = maps_lib.compute(self.detector, {k: np.asarray(example[k])[None]
                                                for k in self.objective.eval_keys})
      out = {"start_frame": tr.start + start, "kind": "maps", "png": {}}
      for name, values in sorted(images.items()):
        path = records.join(options.heatmap_dir, f"{stem}_{name}.png")
        maps_lib.write_png(path, maps_lib.overlay(frame, values[0]))
        out["png"][name] = path
        out[f"max_{name}"] = float(np.max(values[0]))
      return out
    drop, patch, stride = self.occlusion_map(example, prob, options)
    path = records.join(options.heatmap_dir, f"{stem}.png")
    maps_lib.write_png(path, occlusion.overlay(frame, drop))
    return {"png": path, "start_frame": tr.start + start, "kind": "occlusion", "patch": patch,
            "stride": stride, "max_drop": float(drop.max()), "min_drop": float(drop.min())}


def example_batch(icfg: Mapping[str, Any], crop_size: int, chain) -> Dict[str, np.ndarray]:
  """A one-clip batch of blank frames through the eval ops (for shape-first restore)."""
  example = track_clip(icfg, chain, _dummy_raw(icfg, crop_size), 0)
  return {k: np.asarray(v)[None] for k, v in example.items()
          if np.asarray(v).dtype.kind in "biuf"}


# ----------------------------------------------------------------------------- many files
def video_ids(paths: Sequence[str]) -> List[str]:
  """File names without extension, made unique (``a``, ``a_2``, ...) for same-named files in
  different folders."""
  seen: Dict[str, int] = {}
  out = []
  for p in paths:
    stem = os.path.splitext(os.path.basename(p))[0] or "video"
    seen[stem] = seen.get(stem, 0) + 1
    out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
  return out


def predict_files(predictor: Predictor, paths: Sequence[str], options: Options,
                  progress: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
  """The whole JSON document for ``paths``; one file's failure never stops the others."""
  start = time.perf_counter()
  if options.heatmap_dir:
    epath.Path(options.heatmap_dir).mkdir(parents=True, exist_ok=True)
  videos = []
  for path, vid in zip(paths, video_ids(paths)):
    videos.append(predictor.predict_file(path, vid, options))
    if progress is not None:
      progress(videos[-1])
  failed = [v for v in videos if v["status"] != OK]
  by_kind: Dict[str, int] = {}
  for v in failed:
    by_kind[v["status"]] = by_kind.get(v["status"], 0) + 1
  icfg = predictor.icfg
  return {
      "checkpoint": predictor.directory, "step": predictor.step,
      "objective": predictor.config.objective.name,
      "clip_frames": int(icfg.clip_frames), "clips_per_track": int(options.clips_per_track),
      "eval_ops": str(icfg.eval.ops), "crop_size": predictor.crop_size,
      "aligned": bool(options.aligned), "needs_audio": predictor.needs_audio,
      "threshold": THRESHOLD,
      "num_files": len(videos), "num_ok": len(videos) - len(failed), "num_failed": len(failed),
      "failed_by_kind": by_kind, "videos": videos,
      "seconds": round(time.perf_counter() - start, 3)}


def summary(result: Mapping[str, Any]) -> str:
  """A short table: one row per file, then the counts."""
  rows = [("file", "status", "p(fake)", "verdict", "tracks", "clips")]
  for v in result["videos"]:
    if v["status"] == OK:
      rows.append((v["path"], OK, f"{v['fake_probability']:.3f}", v["verdict"],
                   str(v["num_tracks"]), str(v["num_clips"])))
    else:
      rows.append((v["path"], v["status"], "-", "-", "-", "-"))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                     enumerate(zip(r, widths))).rstrip() for r in rows]
  for v in result["videos"]:
    if v["status"] != OK:
      lines.append(f"  {v['status']}: {v['error']}")
  kinds = ", ".join(f"{k}: {n}" for k, n in sorted(result["failed_by_kind"].items()))
  lines.append(f"{result['num_ok']} of {result['num_files']} files scored, "
               f"{result['num_failed']} failed" + (f" ({kinds})" if kinds else ""))
  return "\n".join(lines)

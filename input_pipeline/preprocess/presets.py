"""Face framing presets: the crops each method's authors trained on, selected by one name.

A detector's released weights only reproduce its published numbers on faces framed as in its
training: the same landmarks, the same mean face, the same smoothing, the same crop. fakedet's
own framing (``fakedet``, the default) suits models trained here; to evaluate or fine-tune
imported weights, preprocess with their authors' framing:

  fakedet              MTCNN or user landmarks → five points → 12-frame line fit → eyes and nose
                       onto ``align.MEAN_FACE`` → ``crop_size`` (150) [+ 96×96 mouth crops].
  realforensics        68-point landmarks (user files: no offline 68-point detector ships) →
                       13-frame re-centred mean (``align.smooth_recentred``) → LMedS similarity
                       of the 8 stable points onto the user's LRW mean face in a 256×256 frame →
                       150×150 cut centred on landmarks 15–67 [+ 96×96 cut on 48–67 (``--mouth``)].
  realforensics_mouth  the same alignment, only the 96×96 mouth cut (their mouth-crop runs).
  fakeout              boxes grown ×1.8 (one window per track; outside it is black) → five key
                       points → 5-frame forward mean → least-squares similarity onto the same
                       mean face shifted by (−17.05, +5) → 224×224.

Facts from the authors' code: ahaliassos/RealForensics ``preprocessing/extract_faces.py``
(stable points, window margin, 256 canvas, crop centres and sizes; the mouth run is the same
script with ``--crop-width/--crop-height 96 --start-idx 48 --stop-idx 68``), gilikn/FacePipe
(FakeOut's face tracking: ``facepipe/config/pre_processing_config.py``,
``facepipe/core/mediapipe_funcs.py``, ``core/run_face_detection.py``). Both align to the mean
face LRW's lipreading baseline publishes as ``20words_mean_face.npy``; fakedet never downloads
it: the user supplies it (``--mean_face``). See docs/preprocessing.md.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Optional

import numpy as np
from etils import epath

from input_pipeline.preprocess import align, tracking

DEFAULT = "fakedet"
MEAN_FACE_SHAPE = (68, 2)  # iBUG 300-W points, (x, y) px of a 256×256 frame.

# RealForensics, preprocessing/extract_faces.py.
RF_STABLE = (28, 33, 36, 39, 42, 45, 48, 54)  # Nose ridge and base, eye corners, mouth corners.
RF_CANVAS = 256  # Their warp's reference_size = target_size: the mean face's own frame.
RF_WINDOW_MARGIN = 12  # --window-margin: 6 frames either side.
RF_FACE = (15, 68)  # --start-idx/--stop-idx: the face crop is centred on these landmarks' mean.
RF_MOUTH = (48, 68)  # Their mouth runs: the mouth landmarks.

# FakeOut, gilikn/FacePipe. Their landmarks are MediaPipe FaceMesh points 2, 130, 243, 463, 359
# (nose base, the four eye corners), matched to these iBUG points of the mean face.
FO_KEY_POINTS = (33, 36, 39, 42, 45)
FO_MEAN_FACE_SHIFT = (-17.05, 5.0)  # HORIZONTAL/VERTICAL_MEAN_FACE_INDENT (px).
FO_BOX_SCALE = 1.8  # ENLARGE_SCALAR.


@dataclasses.dataclass(frozen=True)
class Preset:
  """What a framing fixes. None: the config's own value applies (``fakedet`` only)."""
  name: str
  crop_size: Optional[int]
  smooth_window: Optional[int]
  mouth_size: Optional[int]  # Size of the crops ``--mouth`` adds; 0: this preset has none.
  needs_mean_face: bool
  needs_landmarks68: bool  # Every track must carry 68-point landmarks (user files).


PRESETS: Dict[str, Preset] = {p.name: p for p in (
    Preset(DEFAULT, None, None, None, False, False),
    Preset("realforensics", 150, RF_WINDOW_MARGIN, 96, True, True),
    Preset("realforensics_mouth", 96, RF_WINDOW_MARGIN, 0, True, True),
    Preset("fakeout", 224, 5, 0, True, False),
)}


def get(name: str) -> Preset:
  if name not in PRESETS:
    raise ValueError(f"unknown face framing preset {name!r}; expected one of {sorted(PRESETS)}")
  return PRESETS[name]


@functools.lru_cache(maxsize=8)
def load_mean_face(path: str) -> np.ndarray:
  """The user's mean face (.npy, local or ``gs://``) → read-only float64 [68, 2].

  Cached: every track of every video in a worker uses the same file.
  """
  if not str(path).endswith(".npy"):
    raise ValueError(f"mean face {path}: expected a .npy file holding a {MEAN_FACE_SHAPE} array")
  try:
    with epath.Path(path).open("rb") as f:
      arr = np.load(f, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f"mean face {path}: cannot read it as .npy ({e})") from None
  if arr.shape != MEAN_FACE_SHAPE or not np.issubdtype(arr.dtype, np.number):
    raise ValueError(f"mean face {path}: expected a numeric array of shape {MEAN_FACE_SHAPE} "
                     f"(68 iBUG points, x then y), got {arr.dtype} {arr.shape}")
  arr = arr.astype(np.float64)
  if not np.isfinite(arr).all():
    raise ValueError(f"mean face {path}: holds NaN or infinite coordinates")
  if (arr.max(0) - arr.min(0)).min() < 16:
    # The presets place it in a 256×256 frame; a face normalised to [0, 1] would be a dot.
    raise ValueError(f"mean face {path}: spans {np.ptp(arr, 0).round(2).tolist()} px; expected "
                     f"pixel coordinates of a {RF_CANVAS}x{RF_CANVAS} frame")
  arr.flags.writeable = False
  return arr


def resolve(name: str, mean_face: str = "", mouth: bool = False, detector: str = "mtcnn",
            crop_size: Optional[int] = None) -> Dict[str, Any]:
  """Checks a preset's command-line settings; returns the ``PreprocessConfig`` fields it sets.

  Fails before any video is read: a missing or malformed mean face (named), a ``crop_size``
  (given explicitly) or ``--mouth`` the preset does not produce, or a 68-point preset run with a
  detector (MTCNN gives five points). ``{}`` for the default: the config stays as it is.
  """
  preset = get(name)
  if not preset.needs_mean_face:
    if mean_face:
      raise ValueError(f"--mean_face={mean_face} is used only by the presets "
                       f"{sorted(n for n, p in PRESETS.items() if p.needs_mean_face)}; "
                       f"{name} aligns to align.MEAN_FACE")
    return {}
  if not mean_face:
    raise ValueError(f"preset {name} needs --mean_face=FILE: the LRW mean face "
                     f"(20words_mean_face.npy, {MEAN_FACE_SHAPE} px of a 256x256 frame), "
                     "which you supply; nothing is downloaded")
  load_mean_face(mean_face)
  if crop_size is not None and crop_size != preset.crop_size:
    raise ValueError(f"preset {name} crops {preset.crop_size} px, not --crop_size={crop_size}")
  if mouth and not preset.mouth_size:
    raise ValueError(f"preset {name} has no separate mouth crops (--mouth)")
  if preset.needs_landmarks68 and detector != "none":
    raise ValueError(f"preset {name} needs 68-point landmark files for every video "
                     "(--landmarks_dir=DIR --detector=none): MTCNN gives five points and no "
                     "offline 68-point detector ships (the authors used RetinaFace + 2-D FAN)")
  out = dict(preset=name, mean_face=mean_face, crop_size=preset.crop_size,
             smooth_window=preset.smooth_window)
  if preset.mouth_size:
    out["mouth_size"] = preset.mouth_size
  return out


@dataclasses.dataclass
class Framed:
  """One track's crops. face: uint8 [T, S, S, 3]; face_mats: [T, 2, 3] frame → face crop (for
  ``align.transform_landmarks``); mouth: uint8 [T, M, M, 3] or None."""
  face: np.ndarray
  face_mats: np.ndarray
  mouth: Optional[np.ndarray] = None


def frame_track(frames: np.ndarray, track: tracking.Track, preset: str = DEFAULT, *,
                crop_size: int = 150, mouth_size: int = 96, smooth_window: int = 12,
                mouth: bool = False, mean_face: str = "") -> Framed:
  """Crops one track's frames (uint8 [T, H, W, 3], the track's span) as ``preset`` frames them.

  The size arguments are the config's; an author's preset checks they are its own (``resolve``
  sets them) so that ``preprocess.json`` states the crop size the records really have.
  """
  p = get(preset)
  if p.name == DEFAULT:
    return _fakedet(frames, track, crop_size, mouth_size, smooth_window, mouth)
  if (crop_size, smooth_window) != (p.crop_size, p.smooth_window) or (
      mouth and (not p.mouth_size or mouth_size != p.mouth_size)):
    raise ValueError(f"preset {preset} crops {p.crop_size} px (mouth {p.mouth_size or 'none'}) "
                     f"smoothed over {p.smooth_window}; got crop_size={crop_size}, "
                     f"mouth={mouth}, mouth_size={mouth_size}, smooth_window={smooth_window}")
  ref = load_mean_face(mean_face)
  if p.name == "fakeout":
    return _fakeout(frames, track, ref)
  if track.landmarks68 is None:
    raise ValueError(f"preset {preset} needs 68-point landmarks; the track starting at frame "
                     f"{track.start} has only five points (supply a landmark file)")
  base, smoothed = realforensics_align(track.landmarks68, ref)
  face_range = RF_MOUTH if p.name == "realforensics_mouth" else RF_FACE
  mats = realforensics_cut(base, smoothed, face_range, p.crop_size)
  out = Framed(align.warp(frames, mats, p.crop_size), mats)
  if mouth:
    mouth_mats = realforensics_cut(base, smoothed, RF_MOUTH, p.mouth_size)
    out.mouth = align.warp(frames, mouth_mats, p.mouth_size)
  return out


def _fakedet(frames, track, crop_size, mouth_size, smooth_window, mouth) -> Framed:
  """fakedet's own framing (``align``'s module docstring)."""
  points = align.smooth(track.points, smooth_window)
  mats = align.face_matrices(points, crop_size)
  out = Framed(align.warp(frames, mats, crop_size), mats)
  if mouth:
    out.mouth = align.warp(frames, align.mouth_matrices(points, mouth_size), mouth_size)
  return out


def realforensics_align(landmarks68: np.ndarray, mean_face: np.ndarray):
  """[T, 68, 2] frame landmarks → (warps [T, 2, 3] onto the 256×256 mean-face frame, smoothed
  landmarks [T, 68, 2]): per frame, the LMedS similarity of the smoothed stable points onto
  the mean face's."""
  smoothed = align.smooth_recentred(landmarks68, RF_WINDOW_MARGIN)
  dst = np.asarray(mean_face, np.float64)[list(RF_STABLE)]
  return np.stack([align.similarity_lmeds(s[list(RF_STABLE)], dst) for s in smoothed]), smoothed


def realforensics_cut(base: np.ndarray, smoothed: np.ndarray, points: tuple,
                      size: int) -> np.ndarray:
  """The ``size`` crop of the 256×256 aligned frames that RealForensics cuts around the mean of
  the smoothed landmarks ``points[0]:points[1]`` once aligned, folded into the warps ``base``."""
  centres = np.stack([align.apply(m, s[points[0]:points[1]]).mean(0)
                      for m, s in zip(base, smoothed)])
  mats = np.array(base, np.float64)
  mats[:, :, 2] -= align.cut_corner(centres, size, RF_CANVAS)
  return mats


def fakeout_points(track: tracking.Track, mean_face: np.ndarray):
  """(src [T, 5, 2] frame points, dst [5, 2] crop points) of FakeOut's 5-point similarity.

  With 68-point landmarks, the iBUG points matching FakeOut's MediaPipe ones (nose base, eye
  corners) — their framing. Without (MTCNN), MTCNN's five points onto the mean face's eye
  centres, nose tip and mouth corners: the same face size and place, but not their exact
  points (docs/preprocessing.md).
  """
  ref = np.asarray(mean_face, np.float64) + np.asarray(FO_MEAN_FACE_SHIFT)
  if track.landmarks68 is not None:
    return track.landmarks68[:, list(FO_KEY_POINTS)], ref[list(FO_KEY_POINTS)]
  dst = np.stack([ref[36:42].mean(0), ref[42:48].mean(0), ref[30], ref[48], ref[54]])
  return track.points, dst


def _fakeout(frames, track, mean_face) -> Framed:
  """FakeOut's framing: window of the enlarged boxes, forward-smoothed points, 224 px."""
  p = PRESETS["fakeout"]
  src, dst = fakeout_points(track, mean_face)
  mats = np.stack([align.similarity(s, dst)
                   for s in align.smooth_forward(src, p.smooth_window)])
  window = tracking.crop_window(track, frames.shape[2], frames.shape[1], FO_BOX_SCALE)
  return Framed(align.warp(frames, mats, p.crop_size, window), mats)

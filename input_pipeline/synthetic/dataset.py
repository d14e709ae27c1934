"""The embedded synthetic talking-face dataset: config, presets, generation, cached build.

Identities are numbered globally and each split owns a disjoint range of them, so no identity is
in two splits. Every random choice is drawn from `np.random.default_rng([seed, stream, ...])`
keyed by the identity and video number, so any video (and any donor a forgery needs) can be made
alone, in any process, with byte-identical results; parallel generation keeps the order.

Per split the records come real first, then its fakes in `families` order, for each video of
each identity in turn. A fake's `original` is its real's `video_id` (same split, same frames).
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from input_pipeline import records
from input_pipeline.preprocess import align
from input_pipeline.preprocess import faces as landmark_points
from input_pipeline.synthetic import faces, forgeries, speech
from input_pipeline.synthetic.forgeries import FAMILIES

GENERATOR_VERSION = 3  # Bump when a code change alters the generated data (invalidates caches).
# 3: fakes carry `original` (their real's video_id).
# Random streams: the first key after the seed says what is being drawn.
_IDENTITY, _VOICE, _UTTERANCE, _AUDIO, _SCENE, _FAKE, _DONOR, _TOPIC = range(8)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """What to generate. Per-split tuples are aligned with `splits`."""
  name: str = "demo"  # Preset name; the cache directory is named after it.
  source: str = "synthetic"  # Dataset name in the records and the manifest.
  identity_prefix: str = "id"  # Identity names are prefix + number, e.g. "id007".
  seed: int = 0
  splits: Tuple[str, ...] = ("train", "val", "test")
  identities: Tuple[int, ...] = (24, 6, 6)  # Identities per split.
  videos_per_identity: int = 6
  num_frames: int = 64  # Frames per video.
  fps: float = 25.0
  sample_rate: int = 16000
  resolution: int = 96  # Frame height and width (px).
  families: Tuple[str, ...] = FAMILIES  # Fakes made from every real video; () = reals only.
  num_shards: Tuple[int, ...] = (4, 1, 1)
  jpeg_quality: int = 95
  # 0: words drawn from the whole vocabulary. K > 0: each video is about one of K topics, talks
  # with that topic's words only and shows the topic's badge (a watermark), so narrations are
  # grounded in something visible, as HowTo100M speech is in the scene (MMV's video→text).
  topics: int = 0
  # 0: full frames. N > 0: every record's frames become N×N greyscale mouth crops (stored as 3
  # equal channels), cut as preprocessing cuts them (``align.mouth_matrices`` on the record's
  # own smoothed landmarks), with masks and landmarks warped alike (AV contrastive transformer).
  mouth_size: int = 0

  def __post_init__(self):
    if not len(self.splits) == len(self.identities) == len(self.num_shards):
      raise ValueError(f"splits {self.splits}, identities {self.identities} and num_shards "
                       f"{self.num_shards} must have the same length")
    unknown = sorted(set(self.families) - set(FAMILIES))
    if unknown:
      raise ValueError(f"unknown forgery families {unknown}; known: {FAMILIES}")
    if not 0 <= self.topics <= len(speech.VOCABULARY):
      raise ValueError(f"topics must be in [0, {len(speech.VOCABULARY)}], got {self.topics}")
    if self.num_frames < 1 or self.resolution < 16:
      raise ValueError("num_frames must be >= 1 and resolution >= 16")
    if self.mouth_size and self.mouth_size < 16:
      raise ValueError(f"mouth_size must be 0 (full frames) or >= 16, got {self.mouth_size}")


PRESETS: Dict[str, SyntheticConfig] = {
    # A few hundred 2.56 s real videos at 96 px, each with one fake per family.
    "demo": SyntheticConfig(),
    # A handful of small videos for unit tests.
    "tiny": SyntheticConfig(name="tiny", identities=(2, 1, 1), videos_per_identity=2,
                            num_frames=24, resolution=40, num_shards=(1, 1, 1)),
    # Reals only, other people (like VoxCeleb2 / LRW for self-supervised pretraining).
    "extra": SyntheticConfig(name="extra", source="synthetic_extra", identity_prefix="xid",
                             seed=1, splits=("train",), identities=(60,), videos_per_identity=4,
                             families=(), num_shards=(4,)),
    # Reals only, narrated: each video's words come from one of 10 topics shown by a badge
    # (like HowTo100M for MMV's video-text pretraining).
    "narrated": SyntheticConfig(name="narrated", source="synthetic_narrated",
                                identity_prefix="nid", seed=2, splits=("train", "val"),
                                identities=(84, 9), videos_per_identity=4, families=(),
                                num_shards=(4, 1), topics=10),
}
# Mouth-crop twins (AV contrastive transformer §3.3): the same rendered videos, fakes and audio as
# their full-face preset, each frame cut to the 96×96 greyscale window on the lips.
PRESETS["demo_mouth"] = dataclasses.replace(PRESETS["demo"], name="demo_mouth", mouth_size=96)
PRESETS["extra_mouth"] = dataclasses.replace(PRESETS["extra"], name="extra_mouth",
                                             mouth_size=96)


def preset(name: str, **overrides: Any) -> SyntheticConfig:
  """A preset config ("demo", "tiny", "extra"), optionally with fields replaced."""
  if name not in PRESETS:
    raise KeyError(f"unknown synthetic preset {name!r}; presets: {', '.join(sorted(PRESETS))}")
  return dataclasses.replace(PRESETS[name], **overrides)


def fingerprint(config: SyntheticConfig) -> str:
  """Short hash of the config and generator version (names the cache directory)."""
  fields = dataclasses.asdict(config)
  for key in ("topics", "mouth_size"):  # Keeps the caches of presets made before these fields.
    if not fields[key]:
      del fields[key]
  blob = json.dumps([GENERATOR_VERSION, fields], sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:10]


def num_reals(config: SyntheticConfig, split: str) -> int:
  return config.identities[config.splits.index(split)] * config.videos_per_identity


def num_records(config: SyntheticConfig, split: str) -> int:
  return num_reals(config, split) * (1 + len(config.families))


def _rng(config: SyntheticConfig, *keys: int) -> np.random.Generator:
  return np.random.default_rng([config.seed, *keys])


def _split_identities(config: SyntheticConfig, split: str) -> range:
  """Global identity numbers owned by `split`."""
  k = config.splits.index(split)
  start = sum(config.identities[:k])
  return range(start, start + config.identities[k])


@functools.lru_cache(maxsize=64)
def _identity(seed: int, stream: int, number: int) -> Tuple[faces.FaceIdentity, speech.Voice]:
  face = faces.sample_identity(np.random.default_rng([seed, stream, number]))
  return face, speech.sample_voice(np.random.default_rng([seed, _VOICE, stream, number]))


def _topic(config: SyntheticConfig, stream: int, ident: int, video: int) -> int:
  """The video's topic (-1 when the config has none)."""
  if not config.topics:
    return -1
  return int(_rng(config, _TOPIC, stream, ident, video).integers(config.topics))


def _utterance(config: SyntheticConfig, stream: int, ident: int, video: int) -> speech.Utterance:
  topic = _topic(config, stream, ident, video)
  words = speech.topic_words(topic, config.topics) if topic >= 0 else speech.VOCABULARY
  return speech.sample_utterance(_rng(config, _UTTERANCE, stream, ident, video),
                                 config.num_frames / config.fps, words)


def _donor(config: SyntheticConfig, split: str, ident: int, rng) -> forgeries.Donor:
  """Another identity of the same split and one of its videos' speech.

  A split with a single identity borrows a donor generated outside every split.
  """
  others = [i for i in _split_identities(config, split) if i != ident]
  video = int(rng.integers(config.videos_per_identity))
  if others:
    donor, stream = others[rng.integers(len(others))], _IDENTITY
  else:
    donor, stream = ident, _DONOR
  face, _ = _identity(config.seed, stream, donor)
  utt = _utterance(config, stream, donor, video)
  return forgeries.Donor(face, speech.articulate(utt, config.num_frames, config.fps))


def _video_group(config: SyntheticConfig, split: str, index: int) -> List[Dict[str, Any]]:
  """Real video `index` of `split` followed by its fakes (one per family)."""
  idents = _split_identities(config, split)
  ident, video = idents[index // config.videos_per_identity], index % config.videos_per_identity
  face, voice = _identity(config.seed, _IDENTITY, ident)
  utt = _utterance(config, _IDENTITY, ident, video)
  t, fps, sr = config.num_frames, config.fps, config.sample_rate
  art = speech.articulate(utt, t, fps)
  audio = speech.synthesize(utt, voice, int(round(t / fps * sr)), sr,
                            _rng(config, _AUDIO, ident, video))
  rng = _rng(config, _SCENE, ident, video)
  scene = faces.sample_scene(rng)
  motion = faces.sample_motion(rng, art, fps)
  frames, lms = faces.render(face, scene, motion, config.resolution)
  topic = _topic(config, _IDENTITY, ident, video)
  if topic >= 0:
    frames = faces.draw_badge(frames, faces.badge_codes(config.topics)[topic])
  name = f"{config.identity_prefix}{ident:03d}"
  real = {
      "frames": frames, "audio": audio, "fps": float(fps), "sample_rate": int(sr),
      "video_id": f"{split}/{name}/v{video:03d}", "track_id": 0, "source": config.source,
      "label": 0, "manipulation": "real", "identity": name, "landmarks": lms,
      "mask": np.zeros(frames.shape[:3], np.uint8), "words": list(utt.words),
      "word_start": utt.word_start.astype(np.float32),
      "word_end": utt.word_end.astype(np.float32),
  }
  out = [real]
  src = forgeries.Source(face, scene, motion, frames, lms)
  for family in config.families:
    frng = _rng(config, _FAKE, ident, video, FAMILIES.index(family))
    fake = forgeries.make(family, src, _donor(config, split, ident, frng), frng)
    out.append(dict(real, frames=fake.frames, landmarks=fake.landmarks, mask=fake.mask, label=1,
                    manipulation=family, video_id=f"{real['video_id']}/{family}",
                    original=real["video_id"]))
  if config.mouth_size:
    out = [mouth_record(r, config.mouth_size) for r in out]
  return out


MOUTH_SMOOTH_WINDOW = 12  # As ``PreprocessConfig.smooth_window`` (RealForensics B.1).


def mouth_record(record: Dict[str, Any], size: int) -> Dict[str, Any]:
  """A rendered record → its mouth-crop twin: frames [T, size, size, 3] greyscale (ITU-R 601
  luma in 3 equal channels: the record format is RGB), mask and landmarks in crop coordinates.

  The warp is preprocessing's own (``align.mouth_matrices`` of the five points of the record's
  68 landmarks, smoothed over ``MOUTH_SMOOTH_WINDOW`` frames), so the embedded data is cut as a
  real corpus is; a fake is cut from its own landmarks, as a detector would find them.
  """
  points = align.smooth(landmark_points.five_from_68(record["landmarks"]), MOUTH_SMOOTH_WINDOW)
  mats = align.mouth_matrices(points, size)
  frames = align.warp(record["frames"], mats, size)
  t = len(frames)
  grey = cv2.cvtColor(frames.reshape(t * size, size, 3), cv2.COLOR_RGB2GRAY)
  frames = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB).reshape(t, size, size, 3)
  mask = align.warp(np.repeat(record["mask"][..., None], 3, axis=-1), mats, size)[..., 0]
  return dict(record, frames=frames, mask=np.ascontiguousarray(mask),
              landmarks=align.transform_landmarks(record["landmarks"], mats))


def _group_task(args) -> List[Dict[str, Any]]:
  return _video_group(*args)


def _init_worker():
  cv2.setNumThreads(1)


@contextlib.contextmanager
def _pool(num_workers: int):
  """A spawn pool (safe after jax/TF started threads), or None for in-process generation."""
  if num_workers <= 1:
    yield None
    return
  with multiprocessing.get_context("spawn").Pool(num_workers, _init_worker) as pool:
    yield pool


def _ordered_map(pool, fn, args, ahead: int) -> Iterator[Any]:
  """Like pool.imap (same order) but with at most `ahead` results pending (bounded memory)."""
  it = iter(args)
  pending = collections.deque(pool.apply_async(fn, (a,)) for a in itertools.islice(it, ahead))
  while pending:
    result = pending.popleft().get()
    for a in itertools.islice(it, 1):
      pending.append(pool.apply_async(fn, (a,)))
    yield result


def _generate(config: SyntheticConfig, split: str, pool,
              ahead: int) -> Iterator[Dict[str, Any]]:
  tasks = ((config, split, i) for i in range(num_reals(config, split)))
  groups = map(_group_task, tasks) if pool is None else _ordered_map(pool, _group_task, tasks,
                                                                     ahead)
  for group in groups:
    yield from group


def generate_split(config: SyntheticConfig, split: str,
                   num_workers: int = 0) -> Iterator[Dict[str, Any]]:
  """Yields the records of `split` in a deterministic order (see the module docstring).

  num_workers > 1 generates in that many spawned processes; the output is identical.
  """
  if split not in config.splits:
    raise ValueError(f"unknown split {split!r}; config has {config.splits}")
  with _pool(num_workers) as pool:
    yield from _generate(config, split, pool, 2 * num_workers)


def default_workers() -> int:
  """CPUs this process may use (at most 8)."""
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return max(1, min(8, cpus or 1))


def _progress(recs: Iterator[Dict[str, Any]], total: int, desc: str):
  """Shows a progress bar from the first record on (splits are written one after another)."""
  with tqdm(total=total, desc=desc, unit="video") as bar:
    for record in recs:
      yield record
      bar.update()


def build(config: SyntheticConfig, out_dir: str,
          num_workers: Optional[int] = None) -> Dict[str, Any]:
  """Generates every split and writes it with `records.write_dataset`; returns the manifest.

  num_workers defaults to the available CPUs (at most 8, and fewer for small configs, where
  starting processes costs more than it saves).
  """
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "synthetic_config.json"), "w") as f:
    json.dump({"generator_version": GENERATOR_VERSION, **dataclasses.asdict(config)}, f, indent=1)
  write_vocabulary(out_dir)
  if num_workers is None:
    groups = sum(num_reals(config, s) for s in config.splits)
    num_workers = min(default_workers(), max(1, groups // 16))
  with _pool(num_workers) as pool:
    splits = {s: _progress(_generate(config, s, pool, 2 * num_workers),
                           num_records(config, s), f"synthetic:{config.name} {s}")
              for s in config.splits}
    return records.write_dataset(out_dir, name=config.source, splits=splits,
                                 num_shards=dict(zip(config.splits, config.num_shards)),
                                 jpeg_quality=config.jpeg_quality)


VOCABULARY_FILE = "vocabulary.txt"


def write_vocabulary(out_dir: str) -> str:
  """The generator's word list as the dataset's ``vocabulary.txt`` (one word per line), so text
  models read the vocabulary from the data like any corpus's, never from this module."""
  path = os.path.join(out_dir, VOCABULARY_FILE)
  with open(path + ".tmp", "w") as f:
    f.write("".join(w + "\n" for w in speech.VOCABULARY))
  os.replace(path + ".tmp", path)
  return path


def default_cache_dir() -> str:
  return os.environ.get("FAKEDET_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                         "fakedet")


def ensure(config: Union[SyntheticConfig, str], cache_dir: Optional[str] = None,
           num_workers: Optional[int] = None) -> str:
  """The directory of the dataset for `config`, building it first if it is not complete.

  Cached under `cache_dir` (default `$FAKEDET_CACHE` or ~/.cache/fakedet) in
  `<name>-<fingerprint>`, so a changed config or generator version builds anew. Concurrent
  callers wait on a file lock instead of building twice.
  """
  if isinstance(config, str):
    config = preset(config)
  root = cache_dir or default_cache_dir()
  path = os.path.join(root, f"{config.name}-{fingerprint(config)}")
  manifest = os.path.join(path, "manifest.json")
  if os.path.exists(manifest):
    if not os.path.exists(os.path.join(path, VOCABULARY_FILE)):
      write_vocabulary(path)  # Caches built before datasets shipped their word list.
    return path
  os.makedirs(root, exist_ok=True)
  with open(path + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not os.path.exists(manifest):
        shutil.rmtree(path, ignore_errors=True)  # Leftovers of an interrupted build.
        build(config, path, num_workers)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return path

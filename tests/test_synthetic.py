"""Tests of the embedded synthetic talking-face generator (input_pipeline/synthetic)."""
import dataclasses
import os

import cv2
import numpy as np
import pytest

from input_pipeline.synthetic import dataset, faces, forgeries, speech

TINY = dataset.preset("tiny")
# Longer clips for audio-visual statistics (3 identities x 2 videos, 3 s, 40 px).
AV = dataset.preset("tiny", num_frames=75, identities=(3, 1, 1))
KEYS = {"frames", "audio", "fps", "sample_rate", "video_id", "track_id", "source", "label",
        "manipulation", "identity", "landmarks", "mask", "words", "word_start", "word_end"}


def _generate(config, split="train", **kw):
  return list(dataset.generate_split(config, split, **kw))


@pytest.fixture(scope="module")
def tiny():
  return {s: _generate(TINY, s) for s in TINY.splits}


@pytest.fixture(scope="module")
def av():
  return _generate(AV)


def _reals(recs):
  return [r for r in recs if r["label"] == 0]


def _source_of(fake, recs):
  real_id = fake["video_id"].rsplit("/", 1)[0]
  return next(r for r in recs if r["video_id"] == real_id)


def mouth_opening(rec):
  """Inner-lip gap (points 61-63 to 67-65) over the inter-ocular distance, [T]."""
  lm = rec["landmarks"]
  gap = np.linalg.norm(lm[:, [61, 62, 63]] - lm[:, [67, 66, 65]], axis=-1).mean(1)
  return gap / np.linalg.norm(lm[:, 45] - lm[:, 36], axis=-1)


def audio_energy(rec, audio=None):
  """RMS of the audio samples under each video frame, [T]."""
  a = (rec["audio"] if audio is None else audio).astype(np.float64)
  t = len(rec["frames"])
  per = len(a) // t
  return np.sqrt((a[:per * t].reshape(t, per) ** 2).mean(1))


def pearson(x, y):
  return float(np.corrcoef(x, y)[0, 1])


def test_records_have_the_interface(tiny):
  ids = set()
  for split, recs in tiny.items():
    assert len(recs) == dataset.num_records(TINY, split)
    for r in recs:
      assert set(r) == (KEYS | {"original"} if r["label"] else KEYS)
      t, size = TINY.num_frames, TINY.resolution
      assert r["frames"].dtype == np.uint8 and r["frames"].shape == (t, size, size, 3)
      assert r["audio"].dtype == np.int16
      assert r["audio"].shape == (round(t / TINY.fps * TINY.sample_rate),)
      assert r["audio"].std() > 100  # Not silence.
      assert r["fps"] == 25.0 and isinstance(r["fps"], float)
      assert r["sample_rate"] == 16000 and isinstance(r["sample_rate"], int)
      assert r["track_id"] == 0 and r["source"] == "synthetic"
      assert r["landmarks"].dtype == np.float32 and r["landmarks"].shape == (t, 68, 2)
      assert np.isfinite(r["landmarks"]).all()
      assert (r["landmarks"] > -1).all() and (r["landmarks"] < size).all()
      assert r["mask"].dtype == np.uint8 and r["mask"].shape == (t, size, size)
      assert r["video_id"] not in ids
      ids.add(r["video_id"])
      assert r["video_id"].startswith(f"{split}/{r['identity']}/")
      words, start, end = r["words"], r["word_start"], r["word_end"]
      assert isinstance(words, list) and words and all(w in speech.VOCABULARY for w in words)
      assert start.dtype == end.dtype == np.float32 and len(start) == len(end) == len(words)
      assert (start >= 0).all() and (start < end).all() and (end <= t / TINY.fps).all()
      assert (end[:-1] <= start[1:]).all()


def test_manipulation_names_labels_and_masks(tiny):
  for recs in tiny.values():
    assert {r["manipulation"] for r in recs} == {"real", *forgeries.FAMILIES}
    for r in recs:
      if r["manipulation"] == "real":
        assert r["label"] == 0 and not r["mask"].any()
      else:
        assert r["label"] == 1
        assert r["video_id"] == f"{_source_of(r, recs)['video_id']}/{r['manipulation']}"
        assert r["original"] == _source_of(r, recs)["video_id"]  # input_pipeline.pairing's key.
        assert (r["mask"].reshape(len(r["mask"]), -1).max(1) > 0).all()  # Every frame.


def test_fakes_differ_from_their_source_only_inside_the_mask(tiny):
  for recs in tiny.values():
    for fake in (r for r in recs if r["label"]):
      src = _source_of(fake, recs)
      outside = fake["mask"] == 0
      np.testing.assert_array_equal(fake["frames"][outside], src["frames"][outside])
      changed = (fake["frames"] != src["frames"]).any(-1)
      assert changed[~outside].mean() > 0.2, fake["video_id"]
      # A fake keeps the audio and words of the real video it was made from.
      np.testing.assert_array_equal(fake["audio"], src["audio"])
      assert fake["words"] == src["words"] and fake["identity"] == src["identity"]


def _same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    if isinstance(a[k], np.ndarray):
      np.testing.assert_array_equal(a[k], b[k], err_msg=f"{a['video_id']} {k}")
    else:
      assert a[k] == b[k], (a["video_id"], k)


@pytest.mark.integration  # > 5 s on 2 cores: kept out of the fast subset.
def test_deterministic_by_seed_also_in_parallel(tiny):
  again = _generate(TINY)
  parallel = _generate(TINY, num_workers=2)
  assert len(again) == len(parallel) == len(tiny["train"])
  for a, b, c in zip(tiny["train"], again, parallel):
    _same(a, b)
    _same(a, c)
  other = _generate(dataclasses.replace(TINY, seed=1))
  assert not np.array_equal(other[0]["frames"], tiny["train"][0]["frames"])
  assert not np.array_equal(other[0]["audio"], tiny["train"][0]["audio"])


def test_splits_are_disjoint_by_identity(tiny):
  ids = {s: {r["identity"] for r in recs} for s, recs in tiny.items()}
  assert all(len(v) == n for v, n in zip(ids.values(), TINY.identities))
  assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
  assert not ids["val"] & ids["test"]


def test_words_are_where_the_speech_is(av):
  for r in _reals(av):
    t = np.arange(len(r["audio"])) / r["sample_rate"]
    inside = ((t[:, None] >= r["word_start"]) & (t[:, None] < r["word_end"])).any(1)
    a = r["audio"].astype(np.float64)
    assert np.sqrt((a[inside] ** 2).mean()) > 5 * np.sqrt((a[~inside] ** 2).mean())


def test_mouth_motion_follows_the_audio(av):
  reals = _reals(av)
  sync = np.mean([pearson(mouth_opening(r), audio_energy(r)) for r in reals])
  shifted = np.mean([pearson(mouth_opening(r)[10:], audio_energy(r)[:-10]) for r in reals])
  swapped = np.mean([pearson(mouth_opening(r), audio_energy(r, reals[i - 1]["audio"]))
                     for i, r in enumerate(reals)])
  assert sync > 0.5
  assert shifted < sync - 0.4 and swapped < sync - 0.4, (sync, shifted, swapped)


def test_reenactments_break_the_audio_visual_sync(av):
  for family in ("reenactment", "neural_texture"):
    fakes = [r for r in av if r["manipulation"] == family]
    fake = np.mean([pearson(mouth_opening(f), audio_energy(f)) for f in fakes])
    real = np.mean([pearson(mouth_opening(s), audio_energy(s))
                    for s in (_source_of(f, av) for f in fakes)])
    assert fake < real - 0.4, (family, real, fake)


def test_landmarks_match_the_rendered_mouth(av):
  """Mouth landmarks opening ⇒ the rendered mouth between them gets dark (open mouth)."""
  for r in _reals(av):
    lm, grey = r["landmarks"], r["frames"].astype(np.float32).mean(-1)
    width = np.linalg.norm(lm[:, 54] - lm[:, 48], axis=-1)
    centre = 0.5 * (lm[:, 62] + lm[:, 66])
    lum = [cv2.getRectSubPix(g, (max(1, int(0.5 * w)), max(1, int(0.3 * w))),
                             tuple(map(float, c))).mean() for g, w, c in zip(grey, width, centre)]
    assert pearson(mouth_opening(r), lum) < -0.5, r["video_id"]


def test_identities_persist_across_videos():
  config = dataset.preset("tiny", num_frames=6, identities=(6, 1, 1), videos_per_identity=3,
                          families=())
  recs = _generate(config)

  def cheek_colour(r):
    lm, f = r["landmarks"], r["frames"].astype(np.float32)
    return np.mean([cv2.getRectSubPix(f[t], (3, 3), tuple(map(float, 0.5 * (lm[t, 30] + lm[t, k]))))
                    .mean((0, 1)) for t in range(len(f)) for k in (3, 13)], axis=0)

  colour = np.array([cheek_colour(r) for r in recs])
  ident = np.array([r["identity"] for r in recs])
  dist = np.linalg.norm(colour[:, None] - colour[None], axis=-1)
  same = ident[:, None] == ident[None]
  off_diag = ~np.eye(len(recs), dtype=bool)
  assert dist[same & off_diag].mean() < 0.6 * dist[~same].mean()


def test_families_are_configurable():
  reals_only = _generate(dataclasses.replace(TINY, families=()), "val")
  assert len(reals_only) == dataset.num_reals(TINY, "val")
  assert all(r["label"] == 0 and r["manipulation"] == "real" for r in reals_only)
  one = _generate(dataclasses.replace(TINY, families=("graphics_swap",)), "val")
  assert [r["manipulation"] for r in one] == ["real", "graphics_swap"] * len(reals_only)
  assert dataset.preset("extra").families == ()
  with pytest.raises(ValueError, match="unknown forgery families"):
    dataset.SyntheticConfig(families=("face_morph",))
  with pytest.raises(ValueError, match="same length"):
    dataset.SyntheticConfig(identities=(1, 1))
  with pytest.raises(KeyError, match="demo"):
    dataset.preset("nope")


def test_build_and_ensure_cache(tmp_path):
  from input_pipeline import records, sources  # pylint: disable=import-outside-toplevel
  config = dataset.preset("tiny", identities=(1, 1, 1), videos_per_identity=1, num_frames=8)
  path = dataset.ensure(config, cache_dir=str(tmp_path), num_workers=1)
  assert os.path.basename(path).startswith("tiny-")
  manifest = records.read_manifest(path)
  assert {s: v["num_records"] for s, v in manifest["splits"].items()} == {
      "train": 5, "val": 5, "test": 5}
  assert manifest["splits"]["test"]["counts"]["label"] == {"0": 1, "1": 4}
  stamp = os.path.getmtime(os.path.join(path, records.MANIFEST))
  assert dataset.ensure(config, cache_dir=str(tmp_path)) == path  # Cached: not rebuilt.
  assert os.path.getmtime(os.path.join(path, records.MANIFEST)) == stamp
  changed = dataclasses.replace(config, seed=3)
  assert dataset.fingerprint(changed) != dataset.fingerprint(config)

  stored = sources.ClipSource(path, "val")
  generated = _generate(config, "val")
  for i, rec in enumerate(generated):
    raw = stored[i]
    assert raw["video_id"] == rec["video_id"] and raw["manipulation"] == rec["manipulation"]
    assert raw.get("original", "") == stored.index["original"][i] == rec.get("original", "")
    np.testing.assert_array_equal(records.decode_frames(raw, key="mask"), rec["mask"])
    np.testing.assert_array_equal(raw["audio"], rec["audio"])
    np.testing.assert_allclose(raw["landmarks"], rec["landmarks"])
    mse = ((records.decode_frames(raw).astype(float) - rec["frames"]) ** 2).mean()
    assert 10 * np.log10(255 ** 2 / mse) > 28  # JPEG (4:2:0 chroma on 40 px frames).


def test_topics_deal_the_vocabulary_and_badges_stay_apart():
  dealt = [speech.topic_words(k, 10) for k in range(10)]
  assert sorted(w for words in dealt for w in words) == sorted(speech.VOCABULARY)
  assert all(len(words) == 5 for words in dealt)
  codes = faces.badge_codes(10)
  assert min(bin(a ^ b).count("1") for a in codes for b in codes if a != b) >= 3
  with pytest.raises(ValueError, match="topics must be in"):
    dataset.SyntheticConfig(topics=51)


def test_narrated_videos_speak_their_topic_and_show_its_badge():
  config = dataset.preset("tiny", topics=3, families=(), identities=(3, 1, 1),
                          resolution=64)
  recs = _generate(config)
  plain = _generate(dataclasses.replace(config, topics=0))
  lo, hi = (int(round(f * config.resolution)) for f in faces.BADGE_BOX)
  badges = {}
  for i, rec in enumerate(recs):
    ident = i // config.videos_per_identity + dataset._split_identities(config, "train")[0]
    topic = dataset._topic(config, dataset._IDENTITY, ident, i % config.videos_per_identity)
    assert rec["words"] and set(rec["words"]) <= set(speech.topic_words(topic, 3))
    badge = rec["frames"][:, lo:hi, lo:hi].astype(int)
    assert (badge == badge[0]).all()  # A static watermark, the same in every frame.
    badges.setdefault(topic, badge[0])
    np.testing.assert_array_equal(badge[0], badges[topic])
    # The scene is drawn as without topics (its own random stream): the backdrop's corner
    # matches; the words, hence the mouth and the audio, differ.
    assert plain[i]["video_id"] == rec["video_id"] and plain[i]["identity"] == rec["identity"]
    np.testing.assert_array_equal(rec["frames"][:, :3, -3:], plain[i]["frames"][:, :3, -3:])
  assert len(badges) > 1
  assert dataset.fingerprint(dataclasses.replace(config, topics=0)) != dataset.fingerprint(config)

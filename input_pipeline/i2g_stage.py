"""The I2G stage of a training source: where ``input_pipeline.i2g`` meets records and sources.

``i2g.apply_i2g`` works on one example; it needs a donor bank of other identities' real frames,
the clip's landmarks, and for a dataset fake without its own mask the paired real clip. This
stage builds those once per source and host (``I2GStage.build``) and runs between the sampler
and the data ops (``pipeline._train_example``), on the frames as stored (before any crop, so
landmarks and pixels agree). What leaves it is what the ops and the objective expect:

  mask       float32 [T, H, W, 1] in [0, 1] (a one-channel image, so the geometric ops crop,
             resize, flip and rotate it with the frames' draw);
  video, label, manipulation   I2G's fake for the selected reals ("i2g"), else unchanged;
  landmarks, identity          removed (only I2G needed them; strings do not batch).

Donor candidates are the source's selected *real* records on this host (``max_donor_records``
evenly spaced), so hosts never read each other's data and a run's donors do not depend on the
process count more than its shards do.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import numpy as np

from input_pipeline import i2g, pairing, records, sources

_CONFIG_ONLY = ("p", "scale_to_frames", "max_donor_records")  # Not I2GConfig fields.


def generator_config(cfg: Mapping[str, Any], frame_size: int) -> i2g.I2GConfig:
  """``config.input.i2g`` → ``i2g.I2GConfig`` (pixel sizes scaled to the frames if asked)."""
  values = {k: v for k, v in dict(cfg).items() if k not in _CONFIG_ONLY}
  out = i2g.as_config(values)
  return out.scaled(frame_size) if cfg["scale_to_frames"] else out


def donor_candidates(index: Mapping[str, list], selected: np.ndarray, limit: int) -> np.ndarray:
  """The selected real records, at most ``limit`` of them evenly spaced (0 = all)."""
  reals = selected[np.asarray(index["label"])[selected] == 0]
  if limit and len(reals) > limit:
    reals = reals[np.round(np.linspace(0, len(reals) - 1, limit)).astype(int)]
  return reals


def identity_of(index: Mapping[str, list], i: int) -> str:
  """The record's identity, or its video id where the corpus names none (distinct videos are
  the best available proxy for distinct people; I2G needs the donor to be someone else)."""
  identity = index["identity"][i] if "identity" in index else ""
  return str(identity or index["video_id"][i])


class I2GStage:
  """``apply_i2g`` with this source's donor bank and paired reals (module docstring)."""

  def __init__(self, p: float, config: i2g.I2GConfig, bank: i2g.DonorBank,
               pairs: Optional[pairing.PairedReals]):
    self.p, self.config, self.bank, self.pairs = p, config, bank, pairs

  @classmethod
  def build(cls, source: sources.ClipSource, selected: np.ndarray, cfg: Mapping[str, Any],
            what: str) -> "I2GStage":
    """Reads the candidates' landmarks once (frames are fetched when a donor is picked)."""
    candidates = donor_candidates(source.index, selected, cfg["max_donor_records"])
    if not len(candidates):
      raise ValueError(f"{what}: input.i2g.p={cfg['p']} but the source has no real records on "
                       "this process to take I2G donors from")
    identities = [identity_of(source.index, int(i)) for i in candidates]
    if len(set(identities)) < 2:
      raise ValueError(f"{what}: I2G needs real records of at least 2 identities (donors must "
                       f"be someone else); found only {identities[0]!r}")
    first = source[int(candidates[0])]
    size = records.decode_frames(first, [0]).shape[1]
    config = generator_config(cfg, size)
    bank = i2g.DonorBank(source.__getitem__, candidates, identities, config)
    return cls(float(cfg["p"]), config, bank, pairing.PairedReals(source))

  def __call__(self, example: Dict[str, Any], raw: Mapping[str, Any], index: int,
               rng: np.random.Generator) -> Dict[str, Any]:
    start, frames = int(example["clip_start"]), len(example["video"])
    if "mask" in raw:  # The record's own mask wins (I2G's fake_mask reads `mask`).
      example["mask"] = records.decode_frames(raw, range(start, start + frames), key="mask")
    elif int(example["label"]) != 0 and self.pairs is not None:
      real = self.pairs.real_clip(index, start, frames, fake=raw)
      if real is None:
        raise records.RecordError(
            f"{raw['where']}: a fake with no mask and no paired real clip in this split, so PCL "
            f"has no mask for it (write masks into the records, or keep its original real "
            f"{raw.get('original') or '(unknown)'!r} in the split)")
      example["real_video"] = real
    out = i2g.apply_i2g(example, self.bank, rng, p=self.p, config=self.config)
    for key in ("landmarks", "identity", "real_video"):
      out.pop(key, None)
    out["mask"] = np.asarray(out["mask"], np.float32)[..., None]
    return out

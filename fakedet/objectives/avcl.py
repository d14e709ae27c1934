"""The audio-visual contrastive transformer: pre-training (§3.2) and fine-tuning (§3.3).

``avcl`` — symmetric InfoNCE between the clip embeddings of the mouth video and of the
synchronised raw audio (Eq. 1–3):

    L_va = −log exp(z_v·z_a⁺/τ) / Σ_a exp(z_v·z_a/τ)     (video as query, Eq. 1)
    L_av = −log exp(z_a·z_v⁺/τ) / Σ_v exp(z_a·z_v/τ)     (audio as query, Eq. 2)
    L = ½ L_av + ½ L_va,  τ = 0.1                        (Eq. 3)

with z the l2-normalised projections (the paper writes dot products with a temperature, the
usual cosine form of InfoNCE; our reading). The sums run over every clip of the GLOBAL batch:
the train step is jitted on global arrays, so XLA gathers the other devices' (and hosts')
embeddings and every clip anywhere is a negative (tested on 8 simulated devices against one).
The positive pair is a clip's frames and the waveform of the same instants: the sampler draws
each window at a random offset in its video and slices the audio from the same frame range
(``input_pipeline.sampling``), which is the paper's "segments of synchronized frames and waves
with random offset for each video clip".

``avcl_detector`` — the pre-trained video encoder with its frontend frozen, a new MLP head and
binary cross-entropy on the clip logit (Eq. 4); ``predict`` gives the logits the evaluator and
``fakedet.predict`` score. ``finetune_groups`` builds §3.3's per-layer learning rates.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fakedet import models
from fakedet.models import avcl as avcl_models
from fakedet.models.wav2vec2 import normalize_waveform
from fakedet.objectives import OBJECTIVES, Objective, normalize_video
from fakedet.objectives.losses import collapse_std, l2_normalize, masked_mean
from fakedet.objectives.mmv_nce import nce_loss, retrieval_stats

# config.init.rules that start the detector from an ``avcl`` pre-training run: the video encoder
# (its contrastive head is not in the detector, so it is left behind).
PRETRAIN_INIT_RULES = (
    ("params/video", "params/video"),
    ("batch_stats/video", "batch_stats/video"),
)
# config.init.rules that put an imported wav2vec2 (``python -m fakedet.import_weights
# --format=wav2vec2``: the backbone at the top of its state) under the pre-training model's audio
# encoder; the pooling head stays freshly initialised.
WAV2VEC2_INIT_RULES = tuple((f"params/{part}", f"params/audio/{part}")
                            for part in ("feature_encoder", "feature_projection", "encoder"))


def info_nce(z_video: jax.Array, z_audio: jax.Array, valid: jax.Array,
             temperature: float) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Eq. 1–3 on projections [B, D] (row i of each = one clip; l2-normalised here): returns
  (L = ½ L_av + ½ L_va averaged over valid clips, {"va": L_va, "av": L_av}). Invalid (padded)
  rows are neither queries nor keys."""
  loss, parts = nce_loss(z_video, z_audio, valid, temperature)
  return loss, {"va": parts["x_to_y"], "av": parts["y_to_x"]}


def _check_keys(config: ml_collections.ConfigDict, name: str, objective_keys,
                model_keys) -> None:
  for key in objective_keys:
    if key not in config.objective:
      raise KeyError(f"objective {name!r} needs config.objective.{key}; has "
                     f"{sorted(config.objective)}")
  for key in model_keys:
    if key not in config.model:
      raise KeyError(f"objective {name!r} needs config.model.{key}; has {sorted(config.model)}")


@OBJECTIVES.register("avcl")
class AVContrastive(Objective):
  """§3.2 pre-training: model ``avcl`` (``config.model.video`` / ``.audio`` are the encoders'
  keyword arguments), video normalised to one luma channel, audio per clip (wav2vec2's
  feature-extractor normalisation), both on device."""

  input_keys = ("video", "waveform")
  eval_keys = ("video", "waveform")
  # Held-out clip-level retrieval within each evaluation batch (top-1 / top-5 and their chance
  # levels, both directions), the loss, and a collapse monitor per modality (≈1 spread, 0
  # collapsed).
  eval_metric_patterns = (r"eval/(loss|nce_(va|av)|collapse_std_(video|audio)"
                          r"|retrieval_(va|av)_(chance_)?top(1|5))",)

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> None:
    _check_keys(config, "avcl", ("temperature",), ("video", "audio", "pixel_mean", "pixel_std"))
    if not config.objective.temperature > 0:
      raise ValueError(f"objective.temperature must be > 0, got {config.objective.temperature}")
    if config.model.video.get("with_head", True) is False:
      raise ValueError("model.video.with_head=False: pre-training needs the contrastive head")

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m = config.model
    self.model = models.get("avcl")(video=m.video.to_dict(), audio=m.audio.to_dict())
    self.mean, self.std = tuple(m.pixel_mean), tuple(m.pixel_std)
    self.temperature = float(config.objective.temperature)

  def _inputs(self, batch):
    return (normalize_video(batch["video"], self.mean, self.std),
            normalize_waveform(batch["waveform"].astype(jnp.float32)))

  def init(self, rng, batch):
    return dict(self.model.init(rng, *self._inputs(batch), train=False))

  def loss(self, params, state, batch, rng) -> Tuple[jax.Array, Tuple[Dict[str, Any],
                                                                       Dict[str, Any]]]:
    out, new_vars = self.apply(self.model, {"params": params, "batch_stats": state.batch_stats},
                               *self._inputs(batch), train=True, mutable=["batch_stats"],
                               rngs={"dropout": rng})
    valid = jnp.ones(batch["video"].shape[:1], bool)
    loss, parts = info_nce(out["video"]["proj"], out["audio"]["proj"], valid, self.temperature)
    metrics = {"nce_va": parts["va"], "nce_av": parts["av"]}
    return loss, (metrics, {"batch_stats": new_vars["batch_stats"]})

  def eval_step(self, state, batch):
    out = self.apply(self.model, {"params": state.params, "batch_stats": state.batch_stats},
                     *self._inputs(batch), train=False)
    zv, za = out["video"]["proj"], out["audio"]["proj"]
    valid = batch["valid"]
    count = jnp.sum(valid.astype(jnp.float32))
    loss, parts = info_nce(zv, za, valid, self.temperature)
    stats = {"count": count, "loss": loss * count, "nce_va": parts["va"] * count,
             "nce_av": parts["av"] * count,
             "collapse_std_video": collapse_std(l2_normalize(zv), valid) * count,
             "collapse_std_audio": collapse_std(l2_normalize(za), valid) * count}
    stats.update(retrieval_stats(zv, za, valid, "retrieval_va"))
    stats.update(retrieval_stats(za, zv, valid, "retrieval_av"))
    return stats


@OBJECTIVES.register("avcl_detector")
class AVCLDetection(Objective):
  """§3.3 fine-tuning: model ``avcl_detector`` (``config.model.video``: the pre-trained
  encoder's arguments; ``config.model.hidden`` / ``pool_tokens``: the new head), BCE (Eq. 4).
  Classes are balanced by the sampler (extra real clips from the pre-training data), so the
  loss is plain BCE."""

  input_keys = ("video", "label")
  eval_keys = ("video", "label")

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> None:
    _check_keys(config, "avcl_detector", (), ("video", "hidden", "pool_tokens", "pixel_mean",
                                              "pixel_std"))

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m = config.model
    self.model = models.get("avcl_detector")(video=m.video.to_dict(), hidden=m.hidden,
                                             pool_tokens=m.pool_tokens)
    self.mean, self.std = tuple(m.pixel_mean), tuple(m.pixel_std)

  def _video(self, batch):
    return normalize_video(batch["video"], self.mean, self.std)

  def init(self, rng, batch):
    return dict(self.model.init(rng, self._video(batch), train=False))

  def loss(self, params, state, batch, rng) -> Tuple[jax.Array, Tuple[Dict[str, Any],
                                                                       Dict[str, Any]]]:
    out, new_vars = self.apply(self.model, {"params": params, "batch_stats": state.batch_stats},
                               self._video(batch), train=True, mutable=["batch_stats"],
                               rngs={"dropout": rng})
    labels = batch["label"]
    logits = out["logit"]
    bce = masked_mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32)),
                      jnp.ones(labels.shape, jnp.float32))
    metrics = {"bce": bce, "fake_fraction": jnp.mean((labels == 1).astype(jnp.float32)),
               "accuracy": jnp.mean(((logits > 0) == (labels == 1)).astype(jnp.float32))}
    return bce, (metrics, {"batch_stats": new_vars["batch_stats"]})

  def predict(self, state, batch):
    return self.apply(self.model, {"params": state.params, "batch_stats": state.batch_stats},
                      self._video(batch), train=False)["logit"]


def finetune_groups(num_layers: int, head_lr: float = 0.01, last_lr: float = 0.005,
                    decay: float = 0.9) -> Tuple[float, ml_collections.ConfigDict]:
  """§3.3's learning rates as (``optim.lr``, ``optim.groups``) for the detector's parameters:

    classifier/...             head_lr (the new MLP, 0.01)
    video/layer_{L−1}/...      last_lr (0.005), and × decay per layer towards the input
    video/final_norm/...       last_lr (it closes the last layer; the paper is silent)
    video/frontend/...         frozen (no update, no weight decay)
    the rest (optim.lr)        the input projection and position table, one more step of the
                               decay below layer 0 (our choice; the paper is silent)

  Group names sort in the order they must match (``optim`` takes the first group, in name
  order, whose pattern fully matches): layer groups are zero-padded.
  """
  groups = {"classifier": dict(pattern=r"(?:.*/)?classifier/.*", lr=head_lr),
            "final_norm": dict(pattern=r"(?:.*/)?final_norm/.*", lr=last_lr),
            "frontend": dict(pattern=rf"(?:.*/)?{avcl_models.FRONTEND}/.*", lr=0.0,
                             weight_decay=0.0, freeze=True)}
  for i in range(num_layers):
    groups[f"layer_{i:02d}"] = dict(pattern=avcl_models.layer_pattern(i),
                                    lr=avcl_models.layer_lr(i, num_layers, last_lr, decay))
  return last_lr * decay ** num_layers, ml_collections.ConfigDict(groups)

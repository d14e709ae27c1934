"""RealForensics stage 1: cross-modal, temporally dense BYOL (paper §3.1, Eq. 1–2).

The video student predicts the audio teacher's per-frame targets and vice versa:
    L = ½‖sg(z̄ᵥᵗ) − p̄ₐ‖² + ½‖sg(z̄ₐᵗ) − p̄ᵥ‖²
with l2-normalised frames (bars), averaged over samples AND frames (so the value lies in [0, 4]
whatever the clip length; Adam-type optimisers are insensitive to that constant). Students see
the masked views (``video_masked``, ``audio_masked``), teachers the clean ones; teachers are the
EMA of the students (updated by the trainer) and use batch statistics in BatchNorm.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from fakedet import models
from fakedet.objectives import OBJECTIVES, Objective, normalize_video
from fakedet.objectives.losses import byol_term, collapse_std, l2_normalize


def representation_stats(pred_v: jax.Array, target_a: jax.Array, valid: jax.Array) -> Dict[str, jax.Array]:
  """Sums over valid clips of: collapse std, clip retrieval hits, frame sync hits, chances.

  Clip-level retrieval scores a (video clip, audio clip) pair by the mean over frames of the
  cosine between time-aligned frame embeddings — the clip score of a temporally dense model and
  what the loss trains. Mean-pooling over time first (``retrieval_pooled_top1``, also logged)
  keeps only what is constant over the clip (speaker, face), which cannot match an unseen
  speaker's voice to their face unless the two are related.

  Args:
    pred_v: video-side embeddings [B, T, D] (student predictions of the audio targets).
    target_a: audio-side embeddings [B, T, D] (teacher targets).
    valid: [B] bool; padded rows count for nothing (neither as queries nor as candidates).
  """
  v, a = l2_normalize(pred_v), l2_normalize(target_a)
  b, t, d = v.shape
  w = valid.astype(jnp.float32)
  n = jnp.maximum(jnp.sum(w), 1.0)
  clip_v = l2_normalize(jnp.mean(v, axis=1))
  collapse = collapse_std(clip_v, valid)

  def hits(sims):  # video→audio top-1 within the batch, padded candidates excluded
    sims = jnp.where(valid[None, :], sims, -jnp.inf)
    return jnp.sum(((jnp.argmax(sims, axis=1) == jnp.arange(b)) & valid).astype(jnp.float32))

  aligned = jnp.einsum("itd,jtd->ij", v, a) / t
  pooled = clip_v @ l2_normalize(jnp.mean(a, axis=1)).T
  # Frame-level sync: each video frame's nearest audio frame of the same clip within ±1.
  frame_sims = jnp.einsum("btd,bsd->bts", v, a)
  offset = jnp.abs(jnp.argmax(frame_sims, axis=-1) - jnp.arange(t)[None, :])
  sync = jnp.mean((offset <= 1).astype(jnp.float32), axis=1)
  sync_chance = (3 * t - 2) / t ** 2
  return {"count": jnp.sum(w), "collapse_std": collapse * jnp.sum(w),
          "retrieval_top1": hits(aligned), "retrieval_pooled_top1": hits(pooled),
          "retrieval_chance": jnp.sum(w) / n,  # Σ over valid rows of 1/n
          "sync_acc": jnp.sum(sync * w), "sync_chance": sync_chance * jnp.sum(w)}


@OBJECTIVES.register("byol_av")
class ByolAV(Objective):
  uses_ema = True
  input_keys = ("video", "video_masked", "audio", "audio_masked")
  eval_keys = ("video", "audio")
  eval_metric_patterns = (r"eval/(collapse_std|retrieval_(pooled_)?top1|retrieval_chance"
                          r"|sync_acc|sync_chance)",)

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> None:
    for key in ("video_backbone", "audio_backbone", "projector", "predictor", "pixel_mean",
                "pixel_std"):
      if key not in config.model:
        raise KeyError(f"objective 'byol_av' needs config.model.{key}; has {sorted(config.model)}")

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m = config.model
    self.model = models.get("av_byol")(
        video_backbone=m.video_backbone.to_dict(), audio_backbone=m.audio_backbone.to_dict(),
        projector=m.projector.to_dict(), predictor=m.predictor.to_dict())
    self.mean, self.std = tuple(m.pixel_mean), tuple(m.pixel_std)

  def _video(self, x):
    return normalize_video(x, self.mean, self.std)

  def init(self, rng, batch):
    return dict(self.model.init(rng, self._video(batch["video"]), batch["audio"], train=False))

  def loss(self, params, state, batch, rng) -> Tuple[jax.Array, Tuple[Dict[str, Any], Dict[str, Any]]]:
    del rng
    student, s_vars = self.apply(self.model,
        {"params": params, "batch_stats": state.batch_stats},
        self._video(batch["video_masked"]), batch["audio_masked"], train=True,
        mutable=["batch_stats"])
    teacher, t_vars = self.apply(self.model,
        {"params": state.ema_params, "batch_stats": state.ema_batch_stats},
        self._video(batch["video"]), batch["audio"], train=True, method="targets",
        mutable=["batch_stats"])
    teacher = jax.lax.stop_gradient(teacher)
    loss_a = byol_term(teacher["video_z"], student["audio_p"])  # audio student → video target
    loss_v = byol_term(teacher["audio_z"], student["video_p"])  # video student → audio target
    metrics = {"byol_loss_audio_student": loss_a, "byol_loss_video_student": loss_v}
    return loss_a + loss_v, (metrics, {"batch_stats": s_vars["batch_stats"],
                                       "ema_batch_stats": t_vars["batch_stats"]})

  def eval_step(self, state, batch):
    student = self.apply(self.model, {"params": state.params, "batch_stats": state.batch_stats},
                         self._video(batch["video"]), batch["audio"], train=False)
    teacher = self.apply(self.model,
                         {"params": state.ema_params, "batch_stats": state.ema_batch_stats},
                         self._video(batch["video"]), batch["audio"], train=False,
                         method="targets")
    return representation_stats(student["video_p"], teacher["audio_z"], batch["valid"])

"""MMV pretraining (FakeOut §3.1, App. C.2; Alayrac et al. 2020): NCE_va + MIL-NCE_vt.

    L = λ_va · NCE_va + λ_vt · MIL-NCE_vt                                       (FakeOut Eq. 1)

on l2-normalised embeddings with temperature τ (0.07, λ_va = λ_vt = 1 by default, as in MMV and
VATT). Both terms are symmetric: the mean of the video→other and other→video directions, each a
softmax over the GLOBAL batch (the train step runs under jit on global arrays, so every other
clip on every device and host is a negative; tested on 8 simulated devices = 1 device).

  NCE (Eq. 2–3), for clip i:  −log  exp(s_ii) / Σ_j exp(s_ij),   s_ij = v_i·a_j / τ
  MIL-NCE (Eq. 5–6):          −log  Σ_{k∈P(i)} exp(s_iik) / Σ_j Σ_{k∈P(j)} exp(s_ijk),
                              s_ijk = v_i·t_jk / τ, P(j) = clip j's K nearest narrations
and the reverse directions with the roles of the modalities swapped (audio→video; for text,
clip i's narrations against every clip's video). Padded / invalid rows count neither as anchors
nor as candidates. Everything is computed with logsumexp.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from fakedet import models
from fakedet.objectives import OBJECTIVES, Objective, normalize_video
from fakedet.objectives.losses import collapse_std, l2_normalize, masked_mean
from input_pipeline import op_registry

_NEG = -1e9  # Masked logits: finite, so masked rows give zero (not NaN) gradients.


def nce_loss(x: jax.Array, y: jax.Array, valid: jax.Array,
             temperature: float) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Symmetric NCE between paired embeddings x [B, D] and y [B, D] (row i of each = one clip).

  Returns (½(L_x→y + L_y→x) averaged over valid rows, {"x_to_y", "y_to_x"}).
  """
  x, y = l2_normalize(x), l2_normalize(y)
  w = valid.astype(jnp.float32)
  s = (x @ y.T) / temperature
  s = jnp.where(valid[None, :] & valid[:, None], s, _NEG)
  pos = jnp.diagonal(s)
  x_to_y = jax.nn.logsumexp(s, axis=1) - pos
  y_to_x = jax.nn.logsumexp(s, axis=0) - pos
  a, b = masked_mean(x_to_y, w), masked_mean(y_to_x, w)
  return 0.5 * (a + b), {"x_to_y": a, "y_to_x": b}


def mil_nce_loss(v: jax.Array, t: jax.Array, t_valid: jax.Array, valid: jax.Array,
                 temperature: float) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Symmetric MIL-NCE between clip embeddings v [B, D] and K narrations per clip t [B, K, D].

  ``t_valid`` [B, K] marks real narrations; clips with none are not anchors. Returns
  (½(L_v→t + L_t→v) averaged over anchor clips, {"v_to_t", "t_to_v"}).
  """
  v, t = l2_normalize(v), l2_normalize(t)
  cand = t_valid & valid[:, None]  # [B, K] usable narrations
  anchor = jnp.any(cand, axis=1)
  s = jnp.einsum("id,jkd->ijk", v, t) / temperature  # [B_video, B_text, K]
  b = v.shape[0]
  eye = jnp.eye(b, dtype=bool)
  pos_mask = eye[:, :, None] & cand[None, :, :]
  pos = jax.nn.logsumexp(jnp.where(pos_mask, s, _NEG), axis=(1, 2))
  # video i against every clip's narrations
  v_to_t = jax.nn.logsumexp(jnp.where(cand[None, :, :] & valid[:, None, None], s, _NEG),
                            axis=(1, 2)) - pos
  # clip i's narrations against every clip's video: s[j, i, k] over j and k
  st = jnp.transpose(s, (1, 0, 2))  # [B_text, B_video, K]
  t_to_v = jax.nn.logsumexp(jnp.where(cand[:, None, :] & valid[None, :, None], st, _NEG),
                            axis=(1, 2)) - pos
  w = anchor.astype(jnp.float32)
  a, c = masked_mean(v_to_t, w), masked_mean(t_to_v, w)
  return 0.5 * (a + c), {"v_to_t": a, "t_to_v": c}


def retrieval_stats(query: jax.Array, keys: jax.Array, valid: jax.Array,
                    prefix: str) -> Dict[str, jax.Array]:
  """Within-batch retrieval of row i's key from query i: sums over valid queries of top-1 /
  top-5 hits and of their chance levels (1/n, min(5, n)/n; n = valid keys in the batch)."""
  q, k = l2_normalize(query), l2_normalize(keys)
  s = q @ k.T
  true = jnp.diagonal(s)
  rank = jnp.sum((s > true[:, None]) & valid[None, :], axis=1)  # better-scoring valid keys
  w = valid.astype(jnp.float32)
  n = jnp.maximum(jnp.sum(w), 1.0)
  return {f"{prefix}_top1": jnp.sum((rank < 1) * w), f"{prefix}_top5": jnp.sum((rank < 5) * w),
          f"{prefix}_chance_top1": jnp.sum(w) / n,
          f"{prefix}_chance_top5": jnp.sum(w) * jnp.minimum(5.0, n) / n}


@OBJECTIVES.register("mmv")
class MMVObjective(Objective):
  input_keys = ("video", "audio", "text", "text_valid")
  eval_keys = ("video", "audio", "text", "text_valid")
  eval_metric_patterns = (r"eval/(loss|nce_va|mil_nce_vt|collapse_std"
                          r"|retrieval_(va|vt)_(chance_)?top(1|5))",)

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> None:
    for key in ("temperature", "lambda_va", "lambda_vt", "train_parts"):
      if key not in config.objective:
        raise KeyError(f"objective 'mmv' needs config.objective.{key}; has "
                       f"{sorted(config.objective)}")
    if not config.objective.temperature > 0:
      raise ValueError(f"objective.temperature must be > 0, got {config.objective.temperature}")
    for key in ("video_backbone", "audio_backbone", "text_backbone", "va_dim", "vat_dim",
                "va_hidden", "pixel_mean", "pixel_std"):
      if key not in config.model:
        raise KeyError(f"objective 'mmv' needs config.model.{key}; has {sorted(config.model)}")
    if not config.input.with_words:
      raise ValueError("objective 'mmv' needs narrations: set config.input.with_words=True and "
                       "a `narrations(...)` op in input.train_ops and input.eval.ops")
    parts = config.objective.train_parts
    if not isinstance(parts, int) or parts < 1:
      raise ValueError(f"objective.train_parts must be an int >= 1, got {parts!r}")
    vocab = config.model.text_backbone.vocab_path
    for where, spec, want in (("input.train_ops", config.input.train_ops, parts),
                              ("input.eval.ops", config.input.eval.ops, 1)):
      parsed = op_registry.parse_spec(spec)
      # The op's own defaults: split_time(parts=2), narrations(parts=1).
      split = [kw.get("parts", 2) for name, kw in parsed if name == "split_time"]
      if split != ([want] if want > 1 else []):
        raise ValueError(f"objective 'mmv' with train_parts={parts}: {where} must have "
                         + (f"one split_time(parts={want})" if want > 1 else "no split_time op")
                         + f"; found split_time parts {split}")
      found = [kw for name, kw in parsed if name == "narrations"]
      if len(found) != 1:
        raise ValueError(f"objective 'mmv': {where} needs exactly one `narrations(...)` op")
      if found[0].get("parts", 1) != want:
        raise ValueError(f"{where}: narrations(parts={found[0].get('parts', 1)}) must match "
                         f"the {want} sub-clip(s) per sample there")
      if found[0].get("vocab_path", "") != vocab:
        raise ValueError(f"{where}: narrations(vocab_path={found[0].get('vocab_path', '')!r}) "
                         f"differs from model.text_backbone.vocab_path={vocab!r}; token ids "
                         f"would not match the embedding table")

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m = config.model
    self.model = models.get("mmv")(
        video_backbone=m.video_backbone.to_dict(), audio_backbone=m.audio_backbone.to_dict(),
        text_backbone=m.text_backbone.to_dict(), va_dim=m.va_dim, vat_dim=m.vat_dim,
        va_hidden=m.va_hidden)
    self.mean, self.std = tuple(m.pixel_mean), tuple(m.pixel_std)
    o = config.objective
    self.temperature, self.lambda_va, self.lambda_vt = (float(o.temperature), float(o.lambda_va),
                                                        float(o.lambda_vt))
    self.train_parts = int(o.train_parts)

  def _apply(self, variables, batch, train: bool, **kwargs):
    video = normalize_video(batch["video"], self.mean, self.std)
    return self.apply(self.model, variables, video, batch["audio"], batch["text"], train=train,
                      **kwargs)

  def _flatten(self, batch):
    """Training batches [B, P, ...] → [B·P, ...]: with ``objective.train_parts`` = P > 1 each
    sample holds P adjacent sub-clips (``split_time``), and each is a clip of its own (its
    siblings are its hardest negatives). Evaluation batches are never split."""
    p = self.train_parts
    if p == 1:
      return batch
    if batch["video"].ndim != 6 or batch["video"].shape[1] != p:
      raise ValueError(f"objective.train_parts={p}: expected training video [B, {p}, T, H, W, "
                       f"C] from split_time(parts={p}), got {batch['video'].shape}")
    return {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}

  def init(self, rng, batch):
    batch = self._flatten(batch)
    video = normalize_video(batch["video"], self.mean, self.std)
    return dict(self.model.init(rng, video, batch["audio"], batch["text"], train=False))

  def losses(self, out, batch, valid) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    nce, nce_aux = nce_loss(out["video_va"], out["audio_va"], valid, self.temperature)
    mil, mil_aux = mil_nce_loss(out["video_vat"], out["text_vat"], batch["text_valid"], valid,
                                self.temperature)
    metrics = {"nce_va": nce, "nce_va_v_to_a": nce_aux["x_to_y"],
               "nce_va_a_to_v": nce_aux["y_to_x"], "mil_nce_vt": mil,
               "mil_nce_vt_v_to_t": mil_aux["v_to_t"], "mil_nce_vt_t_to_v": mil_aux["t_to_v"]}
    return self.lambda_va * nce + self.lambda_vt * mil, metrics

  def loss(self, params, state, batch, rng) -> Tuple[jax.Array, Tuple[Dict[str, Any],
                                                                       Dict[str, Any]]]:
    del rng
    batch = self._flatten(batch)
    out, new_vars = self._apply({"params": params, "batch_stats": state.batch_stats}, batch,
                                True, mutable=["batch_stats"])
    valid = jnp.ones(batch["video"].shape[:1], bool)
    loss, metrics = self.losses(out, batch, valid)
    return loss, (metrics, {"batch_stats": new_vars["batch_stats"]})

  def eval_step(self, state, batch):
    out = self._apply({"params": state.params, "batch_stats": state.batch_stats}, batch, False)
    valid = batch["valid"]
    w = valid.astype(jnp.float32)
    count = jnp.sum(w)
    loss, metrics = self.losses(out, batch, valid)
    stats = {"count": count, "loss": loss * count,
             "nce_va": metrics["nce_va"] * count, "mil_nce_vt": metrics["mil_nce_vt"] * count}
    stats.update(retrieval_stats(out["video_va"], out["audio_va"], valid, "retrieval_va"))
    # Video → text with each clip's nearest narration; clips without one never match.
    has_text = valid & batch["text_valid"][:, 0]
    vt = retrieval_stats(out["video_vat"], out["text_vat"][:, 0], has_text, "retrieval_vt")
    stats.update(vt)
    # Collapse monitor on the fine space (≈1 spread out, 0 collapsed), as in stage 1.
    stats["collapse_std"] = collapse_std(l2_normalize(out["video_va"]), valid) * count
    return stats

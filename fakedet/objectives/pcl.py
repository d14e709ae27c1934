"""PCL + I2G (Zhao et al., ICCV 2021): the frame-level detector on the shared trainer.

A frame is a clip of T = 1 from the same records, pipeline and evaluator as the video methods:
the batch's ``video`` is uint8 [B, 1, H, W, 3] and ``mask`` float32 [B, 1, H, W, 1] (the I2G
stage of the input pipeline: I2G's blend mask, a dataset fake's own / DSSIM mask, zeros for
reals). The loss is Eq. 4, L = λ·L_pcl + L_cls (``pcl_losses.pcl_total_loss``), λ =
``objective.pcl_weight`` (10; Table 7's 0 / 1 / 100 as variants). The detector's score is the
classification branch's logit; ``maps`` gives the consistency heatmap (1 − mean consistency of
each patch with all others, upsampled to the input) that the evaluator and ``fakedet.predict``
overlay on the frame.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import jax
import ml_collections

from fakedet import models
from fakedet.models import pcl as pcl_model
from fakedet.objectives import OBJECTIVES, Objective, normalize_video, pcl_losses


def frames(video: jax.Array) -> jax.Array:
  """[B, 1, H, W, C] clips of one frame → [B, H, W, C] images (a frame-level model's input)."""
  if video.ndim != 5 or video.shape[1] != 1:
    raise ValueError(f"a frame-level objective needs clips of one frame [B, 1, H, W, C] "
                     f"(config.input.clip_frames=1); got {video.shape}")
  return video[:, 0]


@OBJECTIVES.register("pcl")
class PCLDetection(Objective):
  input_keys = ("video", "mask", "label")
  eval_keys = ("video", "label")

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> None:
    if config.input.clip_frames != 1:
      raise ValueError(f"objective 'pcl' is frame-level: config.input.clip_frames must be 1, "
                       f"got {config.input.clip_frames}")
    if config.input.i2g.p <= 0 and not config.input.with_mask:
      raise ValueError("objective 'pcl' needs a mask per frame: set config.input.i2g.p > 0 "
                       "(the I2G stage makes every clip's mask), got i2g.p=0 and no with_mask")
    if "pcl_weight" not in config.objective or config.objective.pcl_weight < 0:
      raise ValueError(f"objective 'pcl' needs config.objective.pcl_weight >= 0 (λ of Eq. 4); "
                       f"has {sorted(config.objective)}")
    for key in ("backbone", "pixel_mean", "pixel_std"):
      if key not in config.model:
        raise KeyError(f"objective 'pcl' needs config.model.{key}; has {sorted(config.model)}")

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m = config.model.to_dict()
    self.mean, self.std = tuple(m.pop("pixel_mean")), tuple(m.pop("pixel_std"))
    self.model = models.get("pcl")(**m)
    self.pcl_weight = float(config.objective.pcl_weight)

  def _image(self, batch):
    return normalize_video(frames(batch["video"]), self.mean, self.std)

  def _apply(self, state, batch, **kwargs):
    return self.apply(self.model, {"params": state.params, "batch_stats": state.batch_stats},
                      self._image(batch), train=False, **kwargs)

  def init(self, rng, batch):
    return dict(self.model.init(rng, self._image(batch), train=False))

  def loss(self, params, state, batch, rng) -> Tuple[jax.Array, Tuple[Dict[str, Any],
                                                                       Dict[str, Any]]]:
    del rng
    out, new_vars = self.apply(self.model, {"params": params, "batch_stats": state.batch_stats},
                               self._image(batch), train=True, mutable=["batch_stats"])
    mask = frames(batch["mask"])[..., 0]
    valid = jax.numpy.ones(batch["label"].shape, bool)
    loss, metrics = pcl_losses.pcl_total_loss(out["volume_logits"], out["logit"], mask,
                                              batch["label"], valid, out["heatmap"].shape[1:],
                                              self.pcl_weight)
    del metrics["loss"]  # The trainer reports the total as train/loss.
    return loss, (metrics, {"batch_stats": new_vars["batch_stats"]})

  def predict(self, state, batch):
    """The classification branch's clip (frame) logit [B]."""
    return self._apply(state, batch)["logit"]

  def maps(self, state, batch):
    """``inconsistency``: [B, H, W] in [0, 1], each patch's mean inconsistency with the others
    (``models.pcl.inconsistency_heatmap``) bilinearly upsampled to the input frame."""
    heatmap = self._apply(state, batch)["heatmap"]
    size = batch["video"].shape[2:4]
    return {"inconsistency": pcl_model.upsample_heatmap(heatmap, size).clip(0.0, 1.0)}

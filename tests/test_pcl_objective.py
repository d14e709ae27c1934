"""PCL objective on the shared trainer: Eq. 4 from the model's outputs, λ's effect on the
gradients, the frame-level checks, and (integration) a tiny run scored by the evaluator with its
consistency maps and by the predict CLI's Predictor with map heatmaps instead of occlusion."""
import os

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import pcl_i2g
from fakedet import objectives
from fakedet.evaluation import protocols
from fakedet.objectives import pcl_losses
from fakedet.prediction import predictor as predictor_lib
from fakedet.trainers import train
from input_pipeline.preprocess import encode
from input_pipeline.synthetic import dataset as synthetic

SIZE = 32


def _config(pcl_weight=10.0):
  """configs/pcl_i2g.py:demo shrunk to synthetic:tiny (40-px frames → 32-px, a 2×2 grid)."""
  config = pcl_i2g.get_config(f"demo,lambda={pcl_weight}")
  config.model.backbone.width_multiplier = 0.125
  config.model.embed_dim = 8
  config.model.cls_features = 16
  config.input.train_ops = pcl_i2g.TRAIN_OPS.format(crop=36, size=SIZE)
  config.input.eval.ops = pcl_i2g.EVAL_OPS.format(crop=36, size=SIZE)
  for section in (config.input.sources.forgery, config.input.eval):
    section.data_dir = "synthetic:tiny"
  config.input.sources.forgery.batch_size = 8
  config.input.eval.batch_size = 8
  config.input.eval.clips_per_video = 1
  config.total_steps = 2
  config.optim.warmup_steps = 1
  config.checkpoint.every_steps = 2
  config.checkpoint.async_save = False
  config.eval_every = 0
  config.log_every = 1
  config.selection = train.selection_config()
  return config


def _batch(b=4, seed=0):
  rng = np.random.default_rng(seed)
  mask = np.zeros((b, 1, SIZE, SIZE, 1), np.float32)
  mask[1:, :, 8:24, 4:20] = 1.0
  return {"video": rng.integers(0, 256, (b, 1, SIZE, SIZE, 3), dtype=np.uint8),
          "mask": mask, "label": np.array([0] + [1] * (b - 1), np.int32)}


class _State:
  def __init__(self, variables):
    self.params, self.batch_stats = variables["params"], variables["batch_stats"]


def _objective(pcl_weight=10.0):
  obj = objectives.get("pcl")(_config(pcl_weight))
  variables = obj.init(jax.random.PRNGKey(0), _batch())
  return obj, _State(variables)


def test_loss_is_lambda_times_volume_bce_plus_classification_bce():
  obj, state = _objective(10.0)
  batch = _batch()
  loss, (metrics, updated) = obj.loss(state.params, state, batch, jax.random.PRNGKey(1))
  image = objectives.normalize_video(batch["video"][:, 0], pcl_i2g.IMAGENET_MEAN,
                                     pcl_i2g.IMAGENET_STD)
  out, _ = obj.model.apply({"params": state.params, "batch_stats": state.batch_stats}, image,
                           train=True, mutable=["batch_stats"])
  assert out["volume"].shape == (4, 4, 4)  # 32 px / 16 = a 2×2 patch grid.
  valid = jnp.ones(4, bool)
  target = pcl_losses.consistency_target(
      pcl_losses.downsample_mask(jnp.asarray(batch["mask"][:, 0, ..., 0]), (2, 2)))
  l_pcl, _ = pcl_losses.volume_bce(out["volume_logits"], target, valid)
  l_cls, _ = pcl_losses.classification_bce(out["logit"], batch["label"], valid)
  np.testing.assert_allclose(loss, 10.0 * l_pcl + l_cls, rtol=1e-5)
  assert {"pcl_loss", "volume_mae", "cls_loss", "cls_accuracy"} <= set(metrics)
  assert "batch_stats" in updated


def test_lambda_zero_leaves_the_consistency_branch_without_gradient():
  for weight, branch_moves in ((0.0, False), (1.0, True)):
    obj, state = _objective(weight)
    grads = jax.grad(lambda p: obj.loss(p, state, _batch(), jax.random.PRNGKey(0))[0])(
        state.params)
    theta = float(jnp.abs(grads["theta"]["kernel"]).sum())
    assert (theta > 0) == branch_moves, (weight, theta)
    assert float(jnp.abs(grads["classifier"]["kernel"]).sum()) > 0


def test_predict_and_maps_shapes():
  obj, state = _objective()
  batch = _batch(3)
  assert obj.predict(state, batch).shape == (3,)
  maps = obj.maps(state, batch)
  assert set(maps) == {"inconsistency"}
  m = np.asarray(maps["inconsistency"])
  assert m.shape == (3, SIZE, SIZE) and m.min() >= 0.0 and m.max() <= 1.0
  assert objectives.has_maps(obj) and not objectives.has_maps(objectives.get("video_detector"))


def test_frame_level_checks_name_the_key():
  config = _config()
  config.input.clip_frames = 4
  with pytest.raises(ValueError, match="clip_frames must be 1"):
    objectives.get("pcl").check(config)
  config = _config()
  config.input.i2g.p = 0.0
  with pytest.raises(ValueError, match="i2g.p"):
    objectives.get("pcl").check(config)
  with pytest.raises(ValueError, match="frame-level"):
    from fakedet.objectives import pcl
    pcl.frames(jnp.zeros((2, 3, 8, 8, 3)))


@pytest.mark.integration
def test_tiny_run_evaluated_with_maps_and_predicted_with_map_heatmaps(tmp_path):
  workdir = str(tmp_path / "run")
  config = _config()
  train.run(config, workdir)
  out = str(tmp_path / "eval")
  result = protocols.evaluate_checkpoint(config, workdir, out, maps_per_class=1)
  assert result["step"] == 2 and 0.0 <= result["video"]["overall"]["auc"] <= 1.0
  assert result["maps"] and all(n.endswith("_inconsistency.png") for n in result["maps"])
  assert {n.split("_")[0] for n in result["maps"]} >= {"real"}
  png = cv2.imread(os.path.join(out, "maps", result["maps"][0]))
  assert png.shape == (224, 448, 3)  # 32 px shown ×7, frame | overlay.

  rec = list(synthetic.generate_split(synthetic.preset("tiny", num_frames=8, families=()),
                                      "val"))[0]
  video = str(tmp_path / "a.mp4")
  encode.write_video(video, rec["frames"], rec["audio"], 25.0, 16000)
  predictor = predictor_lib.Predictor.from_checkpoint(config, workdir, crop_size=40)
  entry = predictor.predict_file(video, "a", predictor_lib.Options(
      clips_per_track=2, aligned=True, heatmap_dir=str(tmp_path / "heat")))
  assert entry["status"] == "ok", entry
  heat = entry["tracks"][0]["heatmap"]
  assert heat["kind"] == "maps" and os.path.exists(heat["png"]["inconsistency"])
  assert 0.0 <= heat["max_inconsistency"] <= 1.0


@pytest.mark.integration
def test_imagenet_resnet34_import_grafts_into_the_pcl_backbone(tmp_path):
  """configs/pcl_i2g.py's init rules put a `--format=torchvision_resnet` workdir (the paper's
  ImageNet ResNet-34, here random weights in torchvision's file layout) into the backbone."""
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  from fakedet import checkpointing, import_weights, warm_start
  torch.manual_seed(0)
  reference = torchvision.models.resnet34()
  with torch.no_grad():
    reference.layer4[2].bn2.running_mean.uniform_()
  path = str(tmp_path / "resnet34.pth")
  torch.save(reference.state_dict(), path)
  record = import_weights.run("torchvision_resnet34", path, str(tmp_path / "imagenet"))
  assert record["stage_blocks"] == [3, 4, 6, 3]

  config = pcl_i2g.get_config()
  variables = objectives.get("pcl")(config).init(jax.random.PRNGKey(0), _batch(2))
  state = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
  grafted = warm_start.graft(state, checkpointing.load_tree(str(tmp_path / "imagenet"), -1),
                             pcl_i2g.IMAGENET_INIT_RULES)
  backbone = grafted["params"]["backbone"]
  np.testing.assert_allclose(backbone["conv1"]["kernel"],
                             reference.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_allclose(
      grafted["batch_stats"]["backbone"]["layer4_2"]["bn2"]["mean"],
      reference.layer4[2].bn2.running_mean.numpy())
  # The PCL heads stay as initialised (nothing of theirs is in an ImageNet file).
  np.testing.assert_array_equal(grafted["params"]["theta"]["kernel"],
                                variables["params"]["theta"]["kernel"])

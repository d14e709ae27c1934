"""RFFR objectives (``rffr_mim``, ``rffr_detector``): block masking, inpainting residuals against a
hand computation, the random-input probability, full-image positions per patch, gradient flow,
predict / maps outputs, and the experiment configs. Tiny models (32-px images, 8-px patches, a
4×4 patch grid) keep every test at seconds on CPU."""
import os

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fakedet import objectives, trainers
from fakedet.models import rffr, vit
from fakedet.objectives import rffr as rffr_obj
from fakedet.trainers import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, PATCH = 32, 8  # a 4×4 patch grid
TINY_MAE = dict(image_size=SIZE, patch_size=PATCH, width=32, depth=1, num_heads=4, mlp_dim=64,
                decoder_width=32, decoder_depth=1, decoder_num_heads=4, decoder_mlp_dim=64)
TINY_VIT = dict(image_size=SIZE, patch_size=PATCH, width=32, depth=1, num_heads=4, mlp_dim=64)


def _mim_config(k=2, masking="grid_block"):
  config = train.reference_config()
  config.input.clip_frames = 1
  config.objective = ml_collections.ConfigDict(dict(
      name="rffr_mim", k=k, masking=masking, mask_ratio=0.75))
  config.model = ml_collections.ConfigDict(dict(mae=dict(TINY_MAE)))
  return config


def _detector_config(k=2, selection="batch", readout="first_patch", clip=1.0):
  config = train.reference_config()
  config.input.clip_frames = 1
  config.objective = ml_collections.ConfigDict(dict(
      name="rffr_detector", k=k, p=0.25, alpha=4.0, residual_clip=clip, selection=selection))
  config.model = ml_collections.ConfigDict(dict(
      mae=dict(TINY_MAE), detector=dict(TINY_VIT, readout=readout),
      pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225)))
  return config


def _objective(config):
  cls = objectives.get(config.objective.name)
  cls.check(config)
  return cls(config)


def _video(batch=4, seed=0):
  """uint8 [B, 1, 32, 32, 3] smooth random images (so an MAE has something to predict)."""
  rng = np.random.default_rng(seed)
  base = rng.uniform(0, 255, (batch, 1, 4, 4, 3))
  return jnp.asarray(np.repeat(np.repeat(base, 8, axis=2), 8, axis=3).astype(np.uint8))


@flax.struct.dataclass
class _State:
  """What eval_step / predict / maps read from a train state (a pytree: they jit)."""
  params: dict


def _init(obj, video):
  """The objective's params, initialised under jit (eager flax init dispatches op by op)."""
  return jax.jit(obj.init)(jax.random.key(0), {"video": video})["params"]


# ----------------------------------------------------------------------------- stage 1
@pytest.mark.parametrize("k", [2, 3])
def test_mim_masks_exactly_one_block_of_the_grid(k):
  """Each image loses exactly the s² patches of ONE grid block (Eq. 3), blocks drawn over all
  k², and the encoder then sees exactly the other patches."""
  obj = _objective(_mim_config(k=k))
  masked = np.asarray(obj.masked_patches(jax.random.key(0), 256))
  blocks = rffr.block_patches(k, SIZE, PATCH)
  seen = set()
  for row in masked:
    ids = np.flatnonzero(row)
    match = [j for j, b in enumerate(blocks) if sorted(b) == list(ids)]
    assert len(match) == 1, ids
    seen.add(match[0])
  assert seen == set(range(k * k))
  ids_keep = np.asarray(vit.keep_to_ids(jnp.logical_not(masked), obj._num_keep()))
  for row, keep in zip(masked, ids_keep):
    assert sorted(keep) == list(np.flatnonzero(~row))


def test_mim_loss_is_the_mse_of_the_hidden_block_alone():
  """The loss is the MSE over the masked block's pixels, and the prediction does not see them:
  changing the hidden block's pixels changes the target, never the prediction."""
  obj = _objective(_mim_config(k=2))
  video = _video()
  params = _init(obj, video)
  rng = jax.random.key(3)
  loss, (metrics, _) = jax.jit(obj.loss)(params, None, {"video": video}, rng)
  masked = obj.masked_patches(rng, video.shape[0])
  images = video[:, 0].astype(jnp.float32) / 255.0
  ids_keep = vit.keep_to_ids(jnp.logical_not(masked), obj._num_keep())
  apply = jax.jit(lambda x: obj.mae.apply({"params": params}, x, train=False,
                                          ids_keep=ids_keep)["pred"])
  pred = apply(images)
  err = np.mean((np.asarray(pred) - np.asarray(vit.patchify(images, PATCH))) ** 2, axis=-1)
  np.testing.assert_allclose(loss, err[np.asarray(masked)].mean(), rtol=1e-5)
  assert metrics["masked_mse"] == loss
  hidden = np.asarray(rffr.pixel_mask(masked, PATCH))[..., None]
  changed = jnp.where(hidden, 1.0 - images, images)
  np.testing.assert_array_equal(pred, apply(changed))


def test_mim_random_masking_option_masks_mae_ratio():
  obj = _objective(_mim_config(masking="random"))
  masked = np.asarray(obj.masked_patches(jax.random.key(1), 64))
  assert (masked.sum(axis=1) == 16 - int(16 * 0.25)).all()  # MAE keeps int(N·(1 − 0.75))
  assert len({tuple(r) for r in masked}) > 1


def test_mim_eval_statistics_and_the_mean_fill_reference():
  """block_mse of a perfect reconstruction is 0; mean_fill_mse matches a direct loop."""
  k = 2
  images = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, SIZE, SIZE, 3)), jnp.float32)
  np.testing.assert_allclose(rffr_obj.block_mse(images, images, k, PATCH), 0.0)
  want = []
  for x in np.asarray(images, np.float64):
    errs = []
    for top, left, bottom, right in rffr.block_boxes(k, SIZE, PATCH):
      inside = np.zeros(x.shape[:2], bool)
      inside[top:bottom, left:right] = True
      fill = x[~inside].mean(axis=0)
      errs.append(np.mean((x[inside] - fill) ** 2))
    want.append(np.mean(errs))
  np.testing.assert_allclose(rffr_obj.mean_fill_mse(images, k, PATCH), want, rtol=1e-4)


# ----------------------------------------------------------------------------- stage 2
def test_residual_matches_a_hand_computation():
  """R = α(B̂ − B) clipped: each selected block is the MAE's prediction from the ORIGINAL rest
  of the image (one pass per block, never from an already inpainted neighbour); unselected
  pixels have R = 0."""
  k, alpha = 2, 4.0
  obj = _objective(_detector_config(k=k))
  video = _video(batch=2)
  params = _init(obj, video)
  mae = {"params": params["mae"]}
  images = video[:, 0].astype(jnp.float32) / 255.0
  selected = jnp.asarray([[True, False, False, True], [False, True, False, False]])
  recon = jax.jit(lambda x, s: rffr_obj.inpaint_selected(obj.mae, mae, x, s, k=k))(
      images, selected)
  apply = jax.jit(lambda x, ids: obj.mae.apply(mae, x, train=False, ids_keep=ids)["pred"])
  want = np.asarray(images).copy()
  blocks = rffr.block_patches(k, SIZE, PATCH)
  for i in range(2):
    for j in np.flatnonzero(selected[i]):
      keep = np.setdiff1d(np.arange(16), blocks[j])[None]
      full = np.asarray(vit.unpatchify(apply(images[i:i + 1], jnp.asarray(keep)), PATCH))[0]
      top, left, bottom, right = rffr.block_boxes(k, SIZE, PATCH)[j]
      want[i, top:bottom, left:right] = full[top:bottom, left:right]
  np.testing.assert_allclose(recon, want, atol=1e-6)
  r = np.asarray(rffr.residual(images, recon, alpha, 1.0))
  np.testing.assert_allclose(r, np.clip(alpha * (want - np.asarray(images)), -1, 1), atol=1e-5)
  outside = ~np.asarray(rffr.pixel_mask(rffr.selected_patches(selected, k, SIZE, PATCH), PATCH))
  assert np.all(r[outside] == 0)


@pytest.mark.parametrize("per_image", [True, False])
def test_random_input_selects_each_block_with_probability_p(per_image):
  """Empirical selection rate over many draws ≈ p + (1 − p)^{k²} (a row with no block drawn
  takes every block, as the authors' code); per batch every row is the same draw."""
  k, p, batch, draws = 4, 0.25, 8, 2000
  keys = jax.random.split(jax.random.key(0), draws)
  selected = np.asarray(jax.vmap(
      lambda r: rffr_obj.sample_blocks(r, batch, k, p, per_image))(keys))  # [draws, B, k²]
  assert selected.any(axis=2).all()
  expected = p + (1 - p) ** (k * k)
  assert abs(selected.mean() - expected) < (0.004 if per_image else 0.01)
  rows_equal = (selected == selected[:, :1]).all()
  assert rows_equal != per_image


def test_detector_branches_see_full_image_positions():
  """A patch's feature depends on WHERE it is: the same uniform content fed as one block or as
  another gives different branch features, and a selected subset is encoded exactly as the
  gathered patches with their own position embeddings."""
  k = 2
  obj = _objective(_detector_config(k=k, readout="first_patch"))
  video = jnp.full((1, 1, SIZE, SIZE, 3), 128, jnp.uint8)
  params = _init(obj, video)
  images = jnp.full((1, SIZE, SIZE, 3), 0.5, jnp.float32)
  detector = jax.jit(lambda keep: obj.detector.apply(
      {"params": params["detector"]}, images, images, train=False, keep=keep)["original_cls"])
  encoder = jax.jit(lambda ids: vit.ViTEncoder(**TINY_VIT).apply(
      {"params": params["detector"]["original"]}, images, train=False, ids_keep=ids,
      use_cls=False)["patch_tokens"][:, 0])
  feats = []
  for j in range(k * k):
    feats.append(np.asarray(detector(
        rffr.selected_patches(jnp.arange(k * k)[None] == j, k, SIZE, PATCH))))
    gathered = encoder(jnp.asarray(rffr.block_patches(k, SIZE, PATCH)[j])[None])
    np.testing.assert_allclose(feats[-1], gathered, atol=1e-5)
  for a in range(k * k):
    for b in range(a):
      assert np.abs(feats[a] - feats[b]).max() > 1e-3


def test_detector_gradients_reach_both_branches_never_the_mae_and_loss_falls():
  obj = _objective(_detector_config(k=2, selection="image"))
  video = _video(batch=8, seed=1)
  labels = jnp.asarray([0, 1] * 4)
  batch = {"video": video, "label": labels}
  params = _init(obj, video)
  grad_fn = jax.jit(jax.value_and_grad(lambda p, r: obj.loss(p, None, batch, r)[0]))
  _, grads = grad_fn(params, jax.random.key(1))
  norm = lambda t: float(optax.global_norm(t))
  assert norm(grads["mae"]) == 0.0
  assert norm(grads["detector"]["original"]) > 0 and norm(grads["detector"]["residual"]) > 0
  tx = optax.adam(3e-3)
  opt = tx.init(params["detector"])
  losses = []
  for step in range(12):
    loss, grads = grad_fn(params, jax.random.key(2))  # same blocks every step: a fixed task
    updates, opt = tx.update(grads["detector"], opt)
    params = dict(params, detector=optax.apply_updates(params["detector"], updates))
    losses.append(float(loss))
  assert losses[-1] < 0.7 * losses[0], losses


def test_mim_loss_falls():
  obj = _objective(_mim_config(k=2))
  video = _video(batch=8, seed=2)
  params = _init(obj, video)
  grad_fn = jax.jit(jax.value_and_grad(lambda p: obj.loss(p, None, {"video": video},
                                                          jax.random.key(4))[0]))
  tx = optax.adam(3e-3)
  opt = tx.init(params)
  losses = []
  for _ in range(12):
    loss, grads = grad_fn(params)
    updates, opt = tx.update(grads, opt)
    params = optax.apply_updates(params, updates)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0], losses


def test_predict_and_maps_shapes_and_ranges():
  """predict: one logit per clip; maps: |R| [B, H, W] and B̂ [B, H, W, 3] in [0, 1]; with k = 3
  on a 4×4 grid the last patch row/column is in no block: zero residual, the input's pixels."""
  obj = _objective(_detector_config(k=3))
  video = _video(batch=3)
  state = _State(_init(obj, video))
  logits, maps = jax.jit(lambda s, b: (obj.predict(s, b), obj.maps(s, b)))(
      state, {"video": video})
  assert logits.shape == (3,) and logits.dtype == jnp.float32
  assert set(maps) == {"residual", "reconstruction"}
  assert maps["residual"].shape == (3, SIZE, SIZE)
  assert maps["reconstruction"].shape == (3, SIZE, SIZE, 3)
  for m in maps.values():
    assert m.dtype == jnp.float32 and float(m.min()) >= 0.0 and float(m.max()) <= 1.0
  assert float(maps["residual"][:, :24, :24].max()) > 0
  np.testing.assert_array_equal(maps["residual"][:, 24:], 0.0)
  np.testing.assert_array_equal(maps["residual"][:, :, 24:], 0.0)
  np.testing.assert_allclose(maps["reconstruction"][:, 24:], video[:, 0, 24:] / 255.0, atol=1e-6)


def test_frame_level_and_geometry_errors_name_the_config_key():
  config = _detector_config()
  config.input.clip_frames = 4
  with pytest.raises(ValueError, match="config.input.clip_frames must be 1"):
    _objective(config)
  config = _detector_config()
  config.model.detector.patch_size = 16
  with pytest.raises(ValueError, match="config.model.detector.patch_size"):
    _objective(config)
  config = _detector_config()
  config.objective.selection = "sometimes"
  with pytest.raises(ValueError, match="config.objective.selection"):
    _objective(config)
  config = _mim_config(k=5)
  with pytest.raises(ValueError, match="config.objective.k=5"):
    _objective(config)
  obj = _objective(_detector_config())
  with pytest.raises(ValueError, match="config.input.train_ops"):
    obj.init(jax.random.key(0), {"video": jnp.zeros((1, 1, 48, 48, 3), jnp.uint8)})


# ----------------------------------------------------------------------------- configs
def _load(name, arg):
  import importlib.util
  path = os.path.join(ROOT, "configs", name)
  spec = importlib.util.spec_from_file_location(name[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("name, arg", [
    ("rffr_mim.py", None), ("rffr_mim.py", "k=2"), ("rffr_mim.py", "k=6"),
    ("rffr_mim.py", "ff_only"), ("rffr_mim.py", "demo"),
    ("rffr_detect.py", None), ("rffr_detect.py", "paper,k=6"),
    ("rffr_detect.py", "train_on=face2face"), ("rffr_detect.py", "demo"),
    ("rffr_detect.py", "demo,holdout=neural_texture")])
def test_configs_build_and_validate(name, arg):
  config = _load(name, arg)
  trainers.get(config.trainer).check(config)


def test_configs_follow_the_paper_and_the_code():
  mim, det = _load("rffr_mim.py", None), _load("rffr_detect.py", None)
  assert mim.model.mae.image_size == 224 and mim.model.mae.patch_size == 16
  assert mim.optim.lr == pytest.approx(7.5e-5) and mim.optim.schedule == "cosine"
  assert sum(s.batch_size for s in mim.input.sources.values()) == 128
  assert (det.objective.k, det.objective.p, det.objective.alpha) == (4, 0.25, 4.0)
  assert det.optim.lr == 2e-5 and det.total_steps == 15_000
  assert det.selection.metric == ""  # validation-free: the final state is scored
  assert det.input.train_ops == det.input.eval.ops  # no augmentation
  assert det.model.detector.width == 768 and det.model.detector.depth == 12


# ----------------------------------------------------------------------------- end to end
def _tiny_demo(name, arg):
  """The demo config of ``name`` shrunk to ``synthetic:tiny`` (40-px frames → 32 px), 2 steps."""
  config = _load(name, arg)
  config.model.mae = dict(TINY_MAE)
  if "detector" in config.model:
    config.model.detector = dict(TINY_VIT, readout="first_patch")
  config.objective.k = 2
  config.input.train_ops = config.input.eval.ops = "center_crop(size=40, resize=32)"
  for source in config.input.sources.values():
    source.data_dir, source.batch_size = "synthetic:tiny", 8  # 8 simulated devices
  config.input.eval.data_dir, config.input.eval.batch_size = "synthetic:tiny", 8
  config.input.eval.clips_per_video = 1
  config.total_steps, config.log_every, config.eval_every = 2, 1, 0
  config.optim.warmup_steps = 1
  config.checkpoint.every_steps, config.checkpoint.async_save = 2, False
  return config


@pytest.mark.integration  # Two trainer runs (MIM, then the detector warm-started from it).
def test_mim_then_detector_through_the_trainer(tmp_path):
  """Stage 1 reports its reconstruction figures; stage 2 takes stage 1's final MAE through
  ``MIM_INIT_RULES``, keeps it frozen (bit for bit) and is scored by the shared evaluator."""
  from fakedet import checkpointing
  mim_dir, det_dir = str(tmp_path / "mim"), str(tmp_path / "det")
  mim = _tiny_demo("rffr_mim.py", "demo,ff_only")
  trainers.get(mim.trainer).check(mim)
  result = train.run(mim, mim_dir)
  assert 0 < result["eval"]["eval/block_mse"] and 0 < result["eval"]["eval/mean_fill_mse"]
  det = _tiny_demo("rffr_detect.py", "demo")
  det.init.workdir = mim_dir
  trainers.get(det.trainer).check(det)
  result = train.run(det, det_dir)
  assert 0.0 <= result["eval"]["eval/overall/video_auc"] <= 1.0
  stage1 = checkpointing.load_tree(mim_dir)["params"]
  stage2 = checkpointing.load_tree(det_dir)["params"]
  jax.tree.map(np.testing.assert_array_equal, stage2["mae"], stage1)


def test_imagenet_vit_and_stage1_mae_both_warm_start_the_detector(tmp_path):
  """config.init grafts the stage-1 MAE and config.init.also both branches from one ViT
  workdir (what `import_weights --format=mae --mae_model=vit` writes: the encoder's params at
  the top), with configs/rffr_detect.py's rules; the head stays as initialised."""
  from fakedet import import_weights, warm_start  # pylint: disable=import-outside-toplevel
  from tests.tiny_configs import config_module  # pylint: disable=import-outside-toplevel
  detect = config_module("rffr_detect")
  config = _detector_config()
  obj = _objective(config)
  params = _init(obj, _video())
  encoder = vit.ViTEncoder(**TINY_VIT, pos_embed="learned")
  vit_params = jax.jit(lambda key, x: encoder.init(key, x, train=False))(
      jax.random.key(7), jnp.zeros((1, SIZE, SIZE, 3)))["params"]
  mae_params = jax.tree.map(lambda x: x + 1.0, params["mae"])
  import_weights.write(str(tmp_path / "vit"), {"params": vit_params}, {}, None)
  import_weights.write(str(tmp_path / "mim"), {"params": mae_params}, {}, None)
  init = warm_start.init_config()
  init.update(workdir=str(tmp_path / "mim"), rules=detect.MIM_INIT_RULES)
  init.also.update(workdir=str(tmp_path / "vit"), rules=detect.IMAGENET_INIT_RULES)
  got = warm_start.warm_start({"params": params}, init)["params"]
  for branch in ("original", "residual"):
    for a, b in zip(jax.tree.leaves(got["detector"][branch]), jax.tree.leaves(vit_params)):
      np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(got["mae"]), jax.tree.leaves(mae_params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(got["detector"]["head"]["kernel"],
                                params["detector"]["head"]["kernel"])

"""PCL + I2G model side: ResNet-34 (torchvision parity through the importer), the PCL head
(Eq. 1, heatmap) and the losses (Eq. 2–4)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from fakedet.importers import WeightsError, flatten, torchvision_resnet
from fakedet.models import MODELS, pcl, resnet2d
from fakedet.objectives import pcl_losses

torch.set_num_threads(1)  # 2 shared cores; the tests' torch work is tiny

TINY_BACKBONE = dict(name="resnet34", stage_blocks=(1, 1, 1, 1), width_multiplier=0.125)
TINY_SIZE = 64  # → a 4×4 patch grid of 32 channels; 16 patches


def _make_test_model(**overrides):
  return pcl.PCL(**{"backbone": TINY_BACKBONE, "embed_dim": 8, **overrides})


def _abstract(model, shape):
  """(variables, outputs) as ShapeDtypeStructs: nothing is allocated or computed."""
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  return variables, out


def _num_params(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def _l2(tree):
  return float(jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))))


def _rel_err(a, b):
  return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


def _torch_resnet(stage_blocks=(3, 4, 6, 3), seed=0):
  """A torchvision BasicBlock ResNet in eval mode with random weights AND random BN affine
  parameters and running statistics (fresh BN layers are identities in eval, which would let a
  mis-mapped mean/var pass)."""
  torch.manual_seed(seed)
  model = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock,
                                           list(stage_blocks)).eval()
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5, generator=gen)
        m.bias.normal_(0.0, 0.2, generator=gen)
        m.running_mean.normal_(0.0, 0.5, generator=gen)
        m.running_var.uniform_(0.5, 2.0, generator=gen)
  return model


def _state_dict(model):
  return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny():
  """A tiny PCL and its variables (shared: init compiles slowly on CPU)."""
  model = _make_test_model()
  # The rbg PRNG: threefry-based init takes ~15 s to compile on a small CPU.
  key = jax.random.key(0, impl="rbg")
  x = jnp.zeros((1, TINY_SIZE, TINY_SIZE, 3))
  return model, jax.jit(lambda x: model.init(key, x, train=False))(x)


def _image(seed, batch=2):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(batch, TINY_SIZE, TINY_SIZE, 3)), jnp.float32)


# ----------------------------------------------------------------------------- backbone
def test_registered():
  assert MODELS.get("resnet34") is resnet2d.ResNet2D
  assert MODELS.get("pcl") is pcl.PCL


def test_resnet34_shapes_and_parameter_count_match_torchvision():
  variables, out = _abstract(resnet2d.ResNet2D(), (2, 256, 256, 3))
  assert {k: v.shape for k, v in out.items()} == {
      "stage1": (2, 64, 64, 64), "stage2": (2, 32, 32, 128), "stage3": (2, 16, 16, 256),
      "stage4": (2, 8, 8, 512), "features": (2, 16, 16, 256), "pooled": (2, 512)}
  tv = torchvision.models.resnet34()
  tv_count = sum(p.numel() for p in tv.parameters()) - tv.fc.weight.numel() - tv.fc.bias.numel()
  assert _num_params(variables["params"]) == tv_count == 21_284_672
  # Running statistics: one mean and one var per BN channel, as torch's buffers.
  tv_stats = sum(b.numel() for n, b in tv.named_buffers() if "running" in n)
  assert _num_params(variables["batch_stats"]) == tv_stats


def test_resnet34_matches_torchvision_through_the_importer():
  tv = _torch_resnet()
  x = np.random.default_rng(0).normal(size=(2, 3, 96, 96)).astype(np.float32)
  with torch.no_grad():
    y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(torch.from_numpy(x)))))
    expected = []
    for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
      y = layer(y)
      expected.append(y.numpy().transpose(0, 2, 3, 1))
  variables = torchvision_resnet.convert(_state_dict(tv))
  model = resnet2d.ResNet2D()
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(
      variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
  # 96 px: layer3 at 6×6 (H/16), layer4 at 3×3 (odd: exercises the torch-style padding).
  assert out["features"].shape == (2, 6, 6, 256) and out["stage4"].shape == (2, 3, 3, 512)
  errors = [_rel_err(out[f"stage{s + 1}"], expected[s]) for s in range(4)]
  assert max(errors) <= 1e-4, errors  # measured ~3e-6
  np.testing.assert_array_equal(out["features"], out["stage3"])


def test_converted_tree_is_the_models_tree():
  variables = torchvision_resnet.convert(_state_dict(torchvision.models.resnet34()))
  abstract, _ = _abstract(resnet2d.ResNet2D(), (1, 64, 64, 3))
  shapes = lambda tree: {k: tuple(v.shape) for k, v in flatten(tree).items()}
  assert shapes(variables) == shapes(abstract)


def test_converter_reports_renamed_missing_and_misshaped_keys_at_once():
  sd = _state_dict(_torch_resnet((1, 1, 1, 1)))
  assert torchvision_resnet.convert(sd, (1, 1, 1, 1))  # fc.* and num_batches_tracked ignored
  sd["layer1.0.convX.weight"] = sd.pop("layer1.0.conv1.weight")  # renamed
  del sd["layer3.0.downsample.1.running_var"]  # missing
  sd["bn1.weight"] = sd["bn1.weight"][:10]  # mis-shaped
  with pytest.raises(WeightsError) as err:
    torchvision_resnet.convert(sd, (1, 1, 1, 1))
  message = str(err.value)
  assert "missing 2: layer1.0.conv1.weight, layer3.0.downsample.1.running_var" in message
  assert "mis-shaped 1: bn1.weight (10,) (expected (64,))" in message
  assert "unexpected 1: layer1.0.convX.weight" in message


def test_converter_depth_mismatch_and_unbuilt_stages():
  sd = _state_dict(_torch_resnet((1, 1, 1, 1)))
  with pytest.raises(WeightsError, match=r"missing \d+: layer1\.1\.conv1\.weight"):
    torchvision_resnet.convert(sd, (2, 1, 1, 1))
  # A 3-stage backbone deliberately drops layer4.
  three = torchvision_resnet.convert(sd, (1, 1, 1))
  assert "layer4_0" not in three["params"] and "layer3_0" in three["params"]


# ----------------------------------------------------------------------------- PCL head
def test_pcl_shapes_at_paper_size():
  model = pcl.PCL(backbone={"name": "resnet34"})
  variables, out = _abstract(model, (2, 256, 256, 3))
  assert {k: v.shape for k, v in out.items()} == {
      "features": (2, 16, 16, 256), "volume_logits": (2, 256, 256), "volume": (2, 256, 256),
      "heatmap": (2, 16, 16), "pooled": (2, 512), "logit": (2,)}
  heads = {k: _num_params(v) for k, v in variables["params"].items() if k != "backbone"}
  # θ, φ: 1×1 conv 256 → C′ = 128 with bias; classifier: FC 512 → 1.
  assert heads == {"theta": 256 * 128 + 128, "phi": 256 * 128 + 128, "classifier": 513}
  assert _num_params(variables["params"]["backbone"]) == 21_284_672


def test_pcl_conv_classifier_on_a_three_stage_backbone():
  model = pcl.PCL(backbone={"name": "resnet34", "stage_blocks": (3, 4, 6)}, classifier="conv",
                  dtype="bfloat16")
  variables, out = _abstract(model, (1, 256, 256, 3))
  assert "layer4_0" not in variables["params"]["backbone"]
  assert out["pooled"].shape == (1, 512) and out["logit"].shape == (1,)
  assert out["volume_logits"].dtype == jnp.float32  # the BCE's input stays float32


def test_volume_is_eq1_and_heatmap_its_column_mean(tiny):
  model, variables = tiny
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, _image(1))
  f = np.asarray(out["features"], np.float64).reshape(2, 16, -1)
  p = variables["params"]
  theta = f @ np.asarray(p["theta"]["kernel"][0, 0]) + np.asarray(p["theta"]["bias"])
  phi = f @ np.asarray(p["phi"]["kernel"][0, 0]) + np.asarray(p["phi"]["bias"])
  by_hand = np.einsum("bic,bjc->bij", theta, phi) / np.sqrt(8)
  np.testing.assert_allclose(out["volume_logits"], by_hand, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out["volume"], 1 / (1 + np.exp(-by_hand)), rtol=1e-4, atol=1e-5)
  heat = 1 - np.asarray(out["volume"]).mean(axis=1).reshape(2, 4, 4)
  np.testing.assert_allclose(out["heatmap"], heat, rtol=1e-6, atol=1e-6)


def test_volume_is_symmetric_only_when_theta_equals_phi(tiny):
  """Eq. 1 with θ ≠ φ is not symmetric in (i, j), though its target (Eq. 2) is."""
  model, variables = tiny
  run = jax.jit(lambda v, x: model.apply(v, x, train=False)["volume_logits"])
  v = np.asarray(run(variables, _image(2)))
  assert np.max(np.abs(v - v.transpose(0, 2, 1))) > 1e-3
  tied = {**variables, "params": {**variables["params"], "phi": variables["params"]["theta"]}}
  v = np.asarray(run(tied, _image(2)))
  np.testing.assert_allclose(v, v.transpose(0, 2, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.integration  # > 6 s on 2 cores (compile-heavy): kept out of the fast subset.
def test_gradient_reaches_theta_phi_backbone_and_classifier(tiny):
  model, variables = tiny
  mask = np.zeros((2, TINY_SIZE, TINY_SIZE), np.float32)
  mask[1, 16:48, 16:48] = 1.0

  def loss(params):
    # Eval-mode BN halves the CPU compile time; the paths to every parameter are the same.
    out = model.apply({**variables, "params": params}, _image(3), train=False)
    return pcl_losses.pcl_total_loss(out["volume_logits"], out["logit"], jnp.asarray(mask),
                                     jnp.array([0, 1]), jnp.array([True, True]), (4, 4))[0]

  grads = jax.jit(jax.grad(loss))(variables["params"])
  norms = {k: _l2(g) for k, g in grads.items()}
  assert set(norms) == {"backbone", "theta", "phi", "classifier"}
  assert all(n > 0 for n in norms.values()), norms
  dead = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_flatten_with_path(grads)[0]
          if not np.any(np.abs(g) > 0)]
  assert not dead


def test_heatmap_is_hot_where_the_mask_is_fake():
  """A perfect volume (= the Eq. 2 target) of a mask faking 4 of 16 patches: fake patches are
  inconsistent with the 12 real ones (score 12/16), real patches with the 4 fake ones (4/16)."""
  coarse = np.zeros((1, 4, 4), np.float32)
  coarse[0, 1:3, 1:3] = 1.0
  volume = pcl_losses.consistency_target(jnp.asarray(coarse))
  heat = np.asarray(pcl.inconsistency_heatmap(volume, (4, 4)))
  np.testing.assert_allclose(heat, np.where(coarse > 0, 12 / 16, 4 / 16), rtol=1e-6)
  up = np.asarray(pcl.upsample_heatmap(jnp.asarray(heat), (64, 64)))
  assert up.shape == (1, 64, 64)
  assert up[0, 32, 32] == pytest.approx(0.75) and up[0, 2, 2] == pytest.approx(0.25)


# ----------------------------------------------------------------------------- losses
def test_downsample_mask_averages_each_patch():
  mask = np.zeros((1, 8, 8), np.float32)
  mask[0, :2, :3] = 1.0  # 6 of patch (0, 0)'s 16 pixels, nothing elsewhere
  coarse = np.asarray(pcl_losses.downsample_mask(jnp.asarray(mask), (2, 2)))
  np.testing.assert_allclose(coarse, [[[6 / 16, 0], [0, 0]]])
  with pytest.raises(ValueError, match="whole number"):
    pcl_losses.downsample_mask(jnp.zeros((1, 10, 8)), (4, 4))


def test_ground_truth_volume_eq2_by_hand():
  real = pcl_losses.consistency_target(jnp.zeros((1, 2, 2)))
  np.testing.assert_array_equal(real, np.ones((1, 4, 4)))
  np.testing.assert_array_equal(pcl_losses.consistency_target(jnp.full((1, 2, 2), 0.7)), real)
  half = np.zeros((1, 2, 2), np.float32)
  half[0, :, 1] = 1.0  # right column fake: patches 1 and 3 (row-major)
  g = np.asarray(pcl_losses.consistency_target(jnp.asarray(half)))[0]
  np.testing.assert_array_equal(g, [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]])
  soft = np.asarray(pcl_losses.consistency_target(jnp.array([[[0.25, 1.0]]])))[0]
  np.testing.assert_allclose(soft, [[1, 0.25], [0.25, 1]])
  np.testing.assert_array_equal(g, g.T)


def _bce(z, y):
  p = 1 / (1 + np.exp(-np.asarray(z, np.float64)))
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_volume_bce_matches_hand_computation_and_ignores_padding():
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(3, 4, 4)).astype(np.float32) * 3
  target = rng.uniform(size=(3, 4, 4)).astype(np.float32)
  valid = np.array([True, True, False])
  loss, metrics = pcl_losses.volume_bce(jnp.asarray(logits), jnp.asarray(target),
                                        jnp.asarray(valid))
  expected = _bce(logits[:2], target[:2]).mean()  # N = 16 entries per sample, 2 samples
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert float(metrics["pcl_loss"]) == float(loss)
  mae = np.abs(1 / (1 + np.exp(-logits[:2])) - target[:2]).mean()
  assert float(metrics["volume_mae"]) == pytest.approx(mae, rel=1e-5)
  # Saturated logits stay finite (the naive log(σ(z)) is -inf at z = -200 in float32).
  loss, _ = pcl_losses.volume_bce(jnp.full((1, 2, 2), -200.0), jnp.ones((1, 2, 2)),
                                  jnp.array([True]))
  assert float(loss) == pytest.approx(200.0)


def test_total_loss_is_lambda_pcl_plus_cls_over_valid_samples():
  rng = np.random.default_rng(5)
  vlogits = jnp.asarray(rng.normal(size=(3, 4, 4)), jnp.float32)
  logit = jnp.array([0.3, 1.2, 4.0])
  label = jnp.array([0, 1, 1])
  mask = np.zeros((3, 8, 8), np.float32)
  mask[1, :, 4:] = 1.0  # sample 1: right half fake
  valid = jnp.array([True, True, False])
  loss, metrics = pcl_losses.pcl_total_loss(vlogits, logit, jnp.asarray(mask), label, valid,
                                            (2, 2))
  target = np.ones((2, 4, 4))
  target[1] = [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]
  l_pcl = _bce(np.asarray(vlogits[:2]), target).mean()
  l_cls = _bce(np.asarray(logit[:2]), np.array([0, 1])).mean()
  assert float(loss) == pytest.approx(10 * l_pcl + l_cls, rel=1e-5)
  assert float(metrics["cls_accuracy"]) == 0.5  # sample 0: a fake logit for a real image
  assert set(metrics) == {"loss", "pcl_loss", "volume_mae", "cls_loss", "cls_accuracy"}
  # Whatever a padded sample holds, it changes nothing; no valid sample gives a finite 0.
  garbage, _ = pcl_losses.pcl_total_loss(vlogits.at[2].set(1e4), logit.at[2].set(-1e4),
                                         jnp.asarray(mask).at[2].set(0.5), label, valid, (2, 2))
  assert float(garbage) == pytest.approx(float(loss), rel=1e-6)
  none, _ = pcl_losses.pcl_total_loss(vlogits, logit, jnp.asarray(mask), label,
                                      jnp.zeros(3, bool), (2, 2))
  assert float(none) == 0.0
  with pytest.raises(ValueError, match="grid"):
    pcl_losses.pcl_total_loss(vlogits, logit, jnp.asarray(mask), label, valid, (4, 4))

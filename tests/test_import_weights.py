"""``python -m fakedet.import_weights``: the torch-free .pth reader against torch itself, and a
released-layout RealForensics file imported into a workdir that the evaluator's restore path
scores exactly like the PyTorch reference.

What this cannot check: the released files themselves (none is downloaded); the reference
architecture is the one tests/reference/realforensics_torch.py builds from the paper and the
released parameter names (see tests/test_import_realforensics.py).
"""
import collections
import os
import subprocess
import sys

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch

from fakedet import cli, import_weights
from fakedet.evaluation import detector
from fakedet.importers import WeightsError, torch_file
from tests import tiny_configs
from tests import test_import_realforensics as rf


class _Opaque:
  """A class only the test module knows: the reader must not import it."""

  def __init__(self):
    self.value = 3


# ----------------------------------------------------------------------------- .pth reader
def test_reads_what_torch_saved_dtypes_views_and_wrappers(tmp_path):
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  tensors = collections.OrderedDict(
      f32=torch.randn(3, 5), f16=torch.randn(4).half(), bf16=torch.randn(2, 3).bfloat16(),
      i64=torch.arange(7), boolean=torch.tensor([True, False, True]),
      transposed=base.t(),          # a non-contiguous view: strides matter
      sliced=base[1:3, 2:5],        # an offset into a shared storage
      whole=base, scalar=torch.tensor(2.5), param=torch.nn.Parameter(torch.ones(2)))
  path = tmp_path / "lightning.ckpt"
  torch.save({"state_dict": tensors, "epoch": 4, "hyper_parameters": {"obj": _Opaque()},
              "shape": torch.Size([2, 3])}, path)
  loaded = torch_file.load(str(path))
  assert loaded["epoch"] == 4 and loaded["shape"] == (2, 3)
  assert not isinstance(loaded["hyper_parameters"]["obj"], _Opaque)  # a placeholder, not code
  for name, tensor in tensors.items():
    ours = loaded["state_dict"][name]
    theirs = tensor.detach().float().numpy() if name == "bf16" else tensor.detach().numpy()
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, name
    np.testing.assert_array_equal(ours, theirs, err_msg=name)
  assert ml_dtypes.bfloat16 != loaded["state_dict"]["bf16"].dtype  # widened to float32


def test_reader_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.pth"):
    torch_file.load(str(tmp_path / "nope.pth"))
  legacy = tmp_path / "legacy.pth"
  legacy.write_bytes(b"\x80\x02not a zip archive")
  with pytest.raises(WeightsError, match="legacy.pth is not a PyTorch zip archive"):
    torch_file.load(str(legacy))


# ----------------------------------------------------------------------------- CLI
def _stage2_config():
  """configs/stage2.py:demo with the tiny reference's architecture."""
  config = tiny_configs.config_module("stage2").get_config("demo")
  for key, value in rf.STAGE2_CFG.items():
    config.model[key] = value
  return config


@pytest.mark.integration
def test_greyscale_eval_only_file_imports_into_a_workdir_the_evaluator_scores_like_torch(tmp_path):
  reference = rf._stage2_ref(1, seed=21)  # pylint: disable=protected-access
  state = {"model." + k: v for k, v in reference.state_dict().items()
           if k.startswith(("backbone.", "df_head."))}
  weights = tmp_path / "realforensics_ff.pth"
  torch.save({"state_dict": state, "epoch": 10}, weights)
  out = str(tmp_path / "imported")

  record = import_weights.run("realforensics", str(weights), out, _stage2_config())
  assert record["absent"] == ["aux_head", "teacher"] and len(record["sha256"]) == 64
  config = cli.config_for(None, out)  # The saved, adjusted config: what evaluate/predict read.
  assert config.model.teacher is False and config.objective.aux_weight == 0.0
  assert tuple(config.model.pixel_mean) == (0.421,) and tuple(config.model.pixel_std) == (0.165,)

  rng = np.random.default_rng(0)
  video = rng.integers(0, 256, size=(rf.B, rf.T, rf.SIZE, rf.SIZE, 3), dtype=np.uint8)
  det = detector.load(config, out, None, {"video": video, "label": np.zeros(rf.B, np.int32)})
  assert det.step == 0
  ours = det.objective.predict(det.state, {"video": jnp.asarray(video)})
  grey = (video.astype(np.float32) / 255.0) @ np.asarray([0.299, 0.587, 0.114], np.float32)
  normalised = ((grey[..., None] - 0.421) / 0.165).astype(np.float32)
  with torch.no_grad():
    theirs = reference(rf._torch_video(normalised))["logit"]  # pylint: disable=protected-access
  assert rf._rel_err(ours, theirs) <= rf.TOL  # pylint: disable=protected-access

  with pytest.raises(FileExistsError, match="already holds checkpoints"):
    import_weights.run("realforensics", str(weights), out, _stage2_config())


def test_wrong_file_or_config_fails_naming_what_was_expected(tmp_path):
  weights = tmp_path / "w.pth"
  torch.save({"backbone.nonsense": torch.zeros(3)}, weights)
  with pytest.raises(WeightsError, match=r"w.pth does not fit .*missing"):
    import_weights.run("realforensics", str(weights), str(tmp_path / "a"), _stage2_config())
  with pytest.raises(ValueError, match="fills a mmv config"):
    import_weights.run("mmv", str(weights), str(tmp_path / "b"), _stage2_config())
  with pytest.raises(ValueError, match="give --config"):
    import_weights.run("fakeout", str(weights), str(tmp_path / "c"))
  with pytest.raises(FileNotFoundError, match="missing.pth"):
    import_weights.run("mae", str(tmp_path / "missing.pth"), str(tmp_path / "d"))


@pytest.mark.integration
def test_cli_reports_a_bad_file_in_one_line(tmp_path):
  weights = tmp_path / "broken.pth"
  weights.write_bytes(b"garbage")
  proc = subprocess.run(
      [sys.executable, "-m", "fakedet.import_weights", "--format=realforensics",
       f"--weights={weights}", "--config=configs/stage2.py:demo",
       f"--workdir={tmp_path / 'out'}"],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "broken.pth is not a PyTorch zip archive" in last
  assert "Traceback" not in proc.stderr

"""Configs build; bad configs fail before anything is built, naming the key and allowed values."""
import glob
import json
import os
import sys

import ml_collections
import pytest
from ml_collections import config_flags  # noqa: F401  (config files are loaded like the CLI does)

from fakedet import trainers
from fakedet.trainers import data_preview

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
VARIANTS = {"data_preview.py": [None, "demo"], "mmv.py": [None, "x2", "demo", "demo,x2"],
            "stage1.py": [None, "demo"],
            "stage2.py": [None, "demo", "baseline", "demo,baseline", "demo,holdout=reenactment",
                          "robustness", "grey", "grey,robustness"],
            "fakeout.py": [None, "video_only", "demo", "demo,video_only,holdout=graphics_swap",
                           "linear_probe", "mlp", "train_families=Face2Face+NeuralTextures",
                           "demo,train_families=graphics_swap+neural_texture"],
            "pcl_i2g.py": [None, "reals_only", "lambda=0", "demo", "demo,reals_only",
                           "demo,holdout=reenactment,lambda=100"],
            "avcl.py": [None, "demo", "r50", "layers=4", "demo,layers=8"],
            "avcl_finetune.py": [None, "demo", "demo,holdout=reenactment"],
            "rffr_mim.py": [None, "k=2", "ff_only", "demo"],
            "rffr_detect.py": [None, "paper", "train_on=face2face", "demo",
                               "demo,holdout=neural_texture"]}


def _load(path, arg=None):
  import importlib.util
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_every_config_file_has_known_variants():
  assert CONFIGS, "no config files found"
  assert sorted(VARIANTS) == sorted(os.path.basename(p) for p in CONFIGS if
                                    os.path.basename(p) not in ("__init__.py", "common.py"))


@pytest.mark.parametrize("name, arg", [(n, a) for n, args in VARIANTS.items() for a in args])
def test_config_builds_and_validates(name, arg):
  config = _load(os.path.join(ROOT, "configs", name), arg)
  trainers.get(config.trainer).check(config)


def test_realforensics_schedules_follow_the_authors_code():
  """Stage-1 EMA: μ = 1 − 0.001·batch/96 (0.99733 at batch 256); stage 2: AdamP at
  7e-4·√(32/256) after a 5-epoch warm-up, constant (their optimizer configs)."""
  from fakedet.trainers import train
  stage1 = _load(os.path.join(ROOT, "configs", "stage1.py"))
  for batch in (96, 256, 1024):
    momentum = float(train.ema_momentum_fn(stage1, batch, 100)(0))
    assert momentum == pytest.approx(1 - 0.001 * batch / 96, abs=1e-7)
  stage2 = _load(os.path.join(ROOT, "configs", "stage2.py"))
  assert stage2.optim.lr == pytest.approx(2.4749e-4, rel=1e-4)
  assert stage2.optim.schedule == "constant" and stage2.warmup_epochs == 5.0


def test_stage1_masks_students_only_in_the_paper_config():
  """The paper config masks the students' views; the demo keeps both views but no masking."""
  from input_pipeline import ops
  path = os.path.join(ROOT, "configs", "stage1.py")
  masking = {"random_erase", "time_mask", "freq_mask"}
  for arg, expect in ((None, masking), ("demo", set())):
    spec = ops.parse_spec(_load(path, arg).input.train_ops)
    assert {name for name, _ in spec} & masking == expect
    for name, kwargs in spec:  # Masks only ever touch the students' copies.
      if name in masking:
        assert set(kwargs.values()) & {"video", "audio"} == set(), (name, kwargs)
    outputs = {kw.get("out_key") or kw.get("dst") for _, kw in spec}
    assert {"video_masked", "audio_masked"} <= outputs


def test_unknown_variant_fails():
  with pytest.raises(ValueError, match="unknown variant 'huge'.*allowed"):
    _load(os.path.join(ROOT, "configs", "data_preview.py"), "huge")


def test_unknown_trainer_lists_registered_ones():
  with pytest.raises(KeyError, match="unknown trainer 'byol2'; registered trainers: .*data_preview"):
    trainers.get("byol2")


def _demo():
  return _load(os.path.join(ROOT, "configs", "data_preview.py"), "demo")


def test_typo_in_config_file_names_the_key():
  config = _demo()
  config.input.clip_frame = 16  # typo: nothing would read it
  with pytest.raises(KeyError, match=r"unknown config key 'config.input.clip_frame'.*clip_frames"):
    data_preview.check(config)
  config = _demo()
  config.input.sources.reals.lables = (0,)
  with pytest.raises(KeyError, match=r"config.input.sources.reals.lables"):
    data_preview.check(config)


def test_wrong_type_in_config_names_the_key():
  config = _demo()
  with pytest.raises(TypeError, match="clip_frames"):  # ConfigDict itself guards assignments,
    config.input.clip_frames = "25"
  eval_cfg = config.input.eval.to_dict()  # but a section built from scratch can hold anything.
  eval_cfg["batch_size"] = "8"
  config.input.eval = ml_collections.ConfigDict(eval_cfg)
  with pytest.raises(TypeError, match=r"'config.input.eval.batch_size' = '8' has type str, "
                     "expected int"):
    data_preview.check(config)


def test_unknown_data_op_or_argument():
  config = _demo()
  config.input.train_ops = "log_mel|random_flip"
  with pytest.raises(KeyError, match="unknown data op 'random_flip'; registered data ops: .*flip"):
    data_preview.check(config)
  config.input.train_ops = "log_mel(n_mel=40)"
  with pytest.raises(TypeError, match=r"data op 'log_mel' got unknown argument\(s\) \['n_mel'\]"):
    data_preview.check(config)
  config.input.sources.reals.balance = "classes"
  config.input.train_ops = "log_mel"
  with pytest.raises(ValueError, match="balance='classes'; allowed: 'none', 'class'"):
    data_preview.check(config)
  config.input.sources.reals.balance = "none"
  config.input.eval.clip_layout = "consecutve"  # Caught before training, not at the first eval.
  with pytest.raises(ValueError, match="clip_layout='consecutve'; allowed: uniform, "
                     "consecutive"):
    data_preview.check(config)
  config.input.eval.clip_layout = "consecutive"
  config.input.sources.reals.frame_window = -1
  with pytest.raises(ValueError, match=r"input.sources.reals.frame_window=-1: expected 0 "):
    data_preview.check(config)


# A mistyped key, a wrong type or an unknown trainer on the command line: one line, exit 2,
# nothing written — tests/test_writers.py::test_cli_config_errors_are_one_line_and_exit_2.


def _preview_config(data_dir, num_steps):
  config = _demo()
  config.num_steps = num_steps
  config.log_every = 2
  ops = "center_crop(size=40, resize=32)|log_mel"
  config.input.clip_frames = 10
  config.input.train_ops = ops + "|random_erase(key='video')"
  config.input.eval.ops = ops
  for src in config.input.sources.values():
    src.data_dir = data_dir
  config.input.eval.data_dir = data_dir
  return config


@pytest.mark.integration
def test_data_preview_runs_and_resumes_where_it_stopped(tiny_dir, tmp_path):
  straight = data_preview.run(_preview_config(tiny_dir, 6), str(tmp_path / "a"))
  first = data_preview.run(_preview_config(tiny_dir, 4), str(tmp_path / "b"))
  resumed = data_preview.run(_preview_config(tiny_dir, 6), str(tmp_path / "b"))
  assert straight["clips_this_run"] == 6 * 16
  assert first["clips_this_run"] == 4 * 16 and resumed["clips_this_run"] == 2 * 16
  states = [json.load(open(tmp_path / d / data_preview.STATE_FILE)) for d in "ab"]
  assert states[0] == states[1] and states[0]["step"] == 6
  assert straight["clips_per_source_manipulation"] == {
      k: first["clips_per_source_manipulation"].get(k, 0) +
      resumed["clips_per_source_manipulation"].get(k, 0)
      for k in straight["clips_per_source_manipulation"]}
  assert os.path.exists(tmp_path / "a" / data_preview.SHEET_FILE)


def test_config_without_a_trainer_section_names_it():
  config = _load(os.path.join(ROOT, "configs", "stage1.py"), "demo")
  del config["selection"]
  with pytest.raises(KeyError, match=r"config lacks \['selection'\].*reference_config"):
    trainers.get(config.trainer).check(config)


def _documented_commands():
  """``python -m fakedet.main --config=... --config.a.b=...`` commands as written in README.md
  and in the config files' docstrings (continuation lines joined)."""
  import re
  import shlex
  texts = [open(os.path.join(ROOT, "README.md")).read()] + [open(p).read() for p in CONFIGS]
  for text in texts:
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
      if "fakedet.main" in line and "--config=" in line and "$(" not in line:
        argv = shlex.split(line[line.index("--config="):])
        yield [a for a in argv if a.startswith("--config")]


@pytest.mark.parametrize("argv", [a for a in _documented_commands() if "<" not in a[0]],
                         ids=" ".join)
def test_documented_overrides_parse_as_written(argv, monkeypatch):
  """Every override the docs show parses on the config it is shown with (a source name that the
  config does not have used to fail here with a bare KeyError)."""
  from absl import flags as absl_flags
  fv = absl_flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
  argv = ["prog"] + [a.replace("--config=configs/", f"--config={ROOT}/configs/") for a in argv]
  monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads the overrides from sys.argv.
  fv(argv)
  config = fv.config
  trainers.get(config.trainer).check(config)

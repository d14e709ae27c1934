"""FakeOut's cross-approach protocol (Table 3): train on one group of manipulation families,
select the model on the same group, test on the others — and several held-out families."""
import ast

import ml_collections
import numpy as np
import pytest

from fakedet import config_variants
from input_pipeline import config as input_config
from input_pipeline import pipeline, sources
from tests import tiny_configs

FF = ["real", "Deepfakes", "FaceSwap", "Face2Face", "NeuralTextures"]
INDEX = {"label": [0, 1, 1, 1, 1, 0], "manipulation": FF + ["real"]}


def _apply(config, flags):
  """``fakedet.evaluate``'s ``--config.a.b=value`` overrides, as the flag parser applies them."""
  for flag in flags:
    key, value = flag[len("--config."):].split("=", 1)
    *path, leaf = key.split(".")
    node = config
    for p in path:
      node = node[p]
    node[leaf] = ast.literal_eval(value) if value.startswith("(") else value


def _kept(section):
  return [INDEX["manipulation"][i]
          for i in sources.Selection.from_config(section).indices(INDEX)]


def test_train_families_trains_and_selects_on_the_group_and_tests_on_the_rest():
  config = tiny_configs.config_module("stage2").get_config("demo")
  reals_before = config.input.sources.reals.to_dict()
  config_variants.train_families(config, "Face2Face+NeuralTextures")  # Reenactment.
  assert _kept(config.input.sources.forgery) == ["real", "Face2Face", "NeuralTextures", "real"]
  assert _kept(config.input.eval) == ["real", "Face2Face", "NeuralTextures", "real"]
  assert config.input.sources.reals.to_dict() == reals_before  # The reals-only source as is.
  flags = config_variants.unseen_split_overrides("Face2Face+NeuralTextures")
  _apply(config, flags)
  assert config.input.eval.split == "test"
  assert _kept(config.input.eval) == ["real", "Deepfakes", "FaceSwap", "real"]  # Face swapping.


def test_holdout_of_several_families_is_the_other_direction():
  config = tiny_configs.config_module("stage2").get_config("demo")
  config_variants.hold_out(config, "Deepfakes+FaceSwap")  # Train on reenactment too.
  assert _kept(config.input.sources.forgery) == ["real", "Face2Face", "NeuralTextures", "real"]
  assert _kept(config.input.eval) == ["real", "Face2Face", "NeuralTextures", "real"]
  flags = config_variants.test_split_overrides("Deepfakes+FaceSwap")
  assert flags[1] == "--config.input.eval.manipulations=('real', 'Deepfakes', 'FaceSwap')"
  _apply(config, flags)
  assert _kept(config.input.eval) == ["real", "Deepfakes", "FaceSwap", "real"]


@pytest.mark.parametrize("bad", ["", "a+", "a+a", "real+b", "a,b"])
def test_family_lists_are_checked(bad):
  config = tiny_configs.config_module("stage2").get_config("demo")
  with pytest.raises(ValueError, match=r"name one or more manipulations .* joined by '\+'"):
    config_variants.train_families(config, bad)


def test_the_pipeline_trains_and_evaluates_only_the_named_families(tiny_dir):
  """tiny_dir holds reals, 'swap' and 'reenact' fakes: train on 'swap' only."""
  icfg = input_config.input_config()
  icfg.clip_frames = 10
  icfg.train_ops = icfg.eval.ops = "center_crop(size=40, resize=32)"
  icfg.sources = ml_collections.ConfigDict(
      {"forgery": input_config.source_config(tiny_dir, "train", 8, balance="class")})
  icfg.eval.update(data_dir=tiny_dir, batch_size=4)
  config = ml_collections.ConfigDict({"input": icfg})
  config_variants.train_families(config, "swap")
  it = iter(pipeline.train_dataset(icfg, seed=0, process_index=0, process_count=1))
  seen = set(np.concatenate([next(it)["manipulation"] for _ in range(4)]).tolist())
  assert seen == {"real", "swap"}  # Balanced classes: every fake is a 'swap'.

  def evaluated():
    batches = list(pipeline.eval_dataset(icfg, process_index=0, process_count=1))
    valid = np.concatenate([b["valid"] for b in batches])
    return set(np.concatenate([b["manipulation"] for b in batches])[valid].tolist())
  assert evaluated() == {"real", "swap"}  # Model selection sees the trained family only.
  _apply(config, config_variants.unseen_split_overrides("swap", split="val"))
  assert evaluated() == {"real", "reenact"}  # The test: reals and every other family.

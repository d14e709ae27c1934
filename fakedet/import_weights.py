"""Released weights → an ordinary fakedet workdir.

  python -m fakedet.import_weights --format=FORMAT --weights=FILE_OR_DIR --workdir=OUT \
      [--config=configs/<experiment>.py[:variant]] [--config.a.b=value ...]

Formats that fill a whole experiment's model (``--config`` required; the workdir then holds
``config.json`` and ``checkpoints/0/state`` exactly as the trainer writes them, so
``fakedet.evaluate --checkpoint=OUT``, ``fakedet.predict`` and ``config.init.workdir=OUT`` warm
starts use it like any trained run):

  realforensics  the authors' ``.pth`` (Lightning or plain state dict; RGB or greyscale stem):
                 a stage-1 file into a ``byol_av`` config (configs/stage1.py), a stage-2 file
                 into a ``video_detector`` config (configs/stage2.py)
  mmv            DeepMind's released MMV TSM-ResNet50 ×1/×2 pickle into configs/mmv.py
  fakeout        FakeOut's fine-tuned pickle into configs/fakeout.py

Formats that hold one pretrained component a paper starts from (no ``--config``; the workdir's
state holds that component's ``params``/``batch_stats`` at the top, for ``config.init`` rules
such as ``("params", "params/audio_encoder/wav2vec2")``):

  wav2vec2            a Hugging Face checkpoint directory (config.json + model.safetensors)
  mae                 an MAE ``.pth`` (encoder, or encoder + decoder) or a timm ViT-B/16 ``.pth``
  torchvision_resnet  a torchvision ResNet-18/34 ``.pth`` (``--stage_blocks``; or name the depth:
                      ``torchvision_resnet18``, ``torchvision_resnet34``)

The config is adjusted to what the file decides (``model_updates``: e.g. a stage-2 file without
its teacher switches ``model.teacher`` off; the stem's normalisation for RealForensics), and the
adjusted config is the one saved, so later commands build the model the weights fit. Nothing
is downloaded: the user supplies the file. ``import.json`` records the file, its SHA-256 and
every decision the converter took.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from fakedet import checkpointing, cli, objectives, trainers
from fakedet import workdir as workdir_lib
from fakedet.importers import WeightsError, mae, mmv, realforensics, torch_file
from fakedet.importers import torchvision_resnet, wav2vec2
from fakedet.models import vit
from input_pipeline import records

IMPORT_FILE = "import.json"
EXPERIMENT_FORMATS = ("realforensics", "mmv", "fakeout")
COMPONENT_FORMATS = ("wav2vec2", "mae", "torchvision_resnet", "torchvision_resnet18",
                     "torchvision_resnet34")
# The depth names torchvision files come with (PCL starts from ResNet-34).
RESNET_BLOCKS = {"torchvision_resnet18": (2, 2, 2, 2), "torchvision_resnet34": (3, 4, 6, 3)}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The experiment config the weights fill (experiment formats).",
    lock_config=False)
_FORMAT = flags.DEFINE_enum("format", None, EXPERIMENT_FORMATS + COMPONENT_FORMATS,
                            "Layout of the weights file.")
_WEIGHTS = flags.DEFINE_string("weights", None, "The released file (or HF checkpoint directory).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the imported workdir is written.")
_MAE_MODEL = flags.DEFINE_enum("mae_model", "mae", ["mae", "vit"],
                               "mae: encoder (+ decoder when the file has it); vit: encoder only.")
_STAGE_BLOCKS = flags.DEFINE_list("stage_blocks", ["3", "4", "6", "3"],
                                  "torchvision_resnet: blocks per stage (3,4,6,3 = ResNet-34).")
flags.mark_flags_as_required(["format", "weights", "workdir"])


# ----------------------------------------------------------------------------- converters
def _model_cfg(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  return config.model.to_dict()


def _realforensics(path: str, config: ml_collections.ConfigDict):
  """By the config's objective: a stage-1 file into byol_av, a stage-2 file into a detector."""
  tensors = torch_file.load(path)
  name = config.objective.name
  if name == "byol_av":
    return realforensics.convert_stage1(tensors, _model_cfg(config), source=path)
  if name == "video_detector":
    return realforensics.convert_stage2(tensors, _model_cfg(config), source=path)
  raise ValueError(f"--format=realforensics fills a byol_av (configs/stage1.py) or "
                   f"video_detector (configs/stage2.py) config; this config's objective is "
                   f"{name!r}")


def _need_objective(config: ml_collections.ConfigDict, fmt: str, want: str, example: str):
  if config.objective.name != want:
    raise ValueError(f"--format={fmt} fills a {want} config ({example}); this config's "
                     f"objective is {config.objective.name!r}")


def _mmv(path: str, config: ml_collections.ConfigDict):
  _need_objective(config, "mmv", "mmv", "configs/mmv.py")
  return mmv.convert(mmv.read_pickle(path), _model_cfg(config), source=path)


def _fakeout(path: str, config: ml_collections.ConfigDict):
  _need_objective(config, "fakeout", "video_detector", "configs/fakeout.py")
  return mmv.convert_fakeout(mmv.read_pickle(path), _model_cfg(config), source=path)


EXPERIMENT_CONVERTERS: Dict[str, Callable] = {
    "realforensics": _realforensics, "mmv": _mmv, "fakeout": _fakeout}


def _wav2vec2(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  directory = path if epath.Path(path).is_dir() else os.path.dirname(path)
  if not (epath.Path(directory) / "config.json").exists():
    raise WeightsError(f"--weights={path}: a wav2vec2 import needs the checkpoint's config.json "
                       f"beside its safetensors (a Hugging Face checkpoint directory)")
  arch = wav2vec2.config_from_hf(json.loads((epath.Path(directory) / "config.json").read_text()))
  return wav2vec2.convert(wav2vec2.read(path), arch, source=path), {"model": arch}


def _mae(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  spec = {"name": _MAE_MODEL.value, **(vit.MAE_BASE if _MAE_MODEL.value == "mae"
                                       else vit.VIT_B16)}
  out = mae.convert(torch_file.load(path), spec, source=path)
  return {"params": out["params"]}, {"model": spec, "not_in_file": list(out["not_in_file"]),
                                     "dropped": len(out["dropped"])}


def _torchvision_resnet(path: str, blocks=None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  blocks = tuple(int(b) for b in (blocks or _STAGE_BLOCKS.value))
  tensors = torch_file.load(path)
  return torchvision_resnet.convert(tensors, blocks, source=path), {"stage_blocks": list(blocks)}


COMPONENT_CONVERTERS: Dict[str, Callable] = {
    "wav2vec2": _wav2vec2, "mae": _mae, "torchvision_resnet": _torchvision_resnet,
    **{name: (lambda path, b=b: _torchvision_resnet(path, b)) for name, b in RESNET_BLOCKS.items()}}


# ----------------------------------------------------------------------------- workdir
def apply_updates(config: ml_collections.ConfigDict, imported) -> ml_collections.ConfigDict:
  """``config`` with the file's decisions: ``model_updates`` (dotted keys under ``model``) and,
  for a RealForensics file, the normalisation of the stem it holds."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in imported.model_updates.items():
    node = config.model
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  if hasattr(imported, "pixel_mean"):
    config.model.pixel_mean = tuple(imported.pixel_mean)
    config.model.pixel_std = tuple(imported.pixel_std)
  if "teacher" in imported.absent and config.objective.get("aux_weight", 0) > 0:
    # The auxiliary loss predicts the teacher's targets: without the teacher the saved config
    # is an evaluation one (fine-tuning this file further is plain supervised training).
    config.objective.aux_weight = 0.0
  return config


def state_tree(variables: Mapping[str, Any], uses_ema: bool) -> Dict[str, Any]:
  """The saved-state layout the trainer writes (``TrainState`` fields), at step 0, without
  optimizer state; an objective with an EMA teacher gets the file's teacher, or the students'
  weights when the file has none (what a fresh run starts from)."""
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  ema = uses_ema or "ema_params" in variables
  return {
      "step": np.zeros((), np.int32), "params": params, "batch_stats": batch_stats,
      "opt_state": {},
      "ema_params": variables.get("ema_params", params) if ema else {},
      "ema_batch_stats": variables.get("ema_batch_stats", batch_stats) if ema else {}}


def write(workdir: str, state: Mapping[str, Any], record: Mapping[str, Any],
          config: ml_collections.ConfigDict = None) -> str:
  """``checkpoints/0/state`` (+ ``config.json``) + ``import.json``; refuses a workdir that
  already holds checkpoints (an import never overwrites a run)."""
  directory = checkpointing.manager_path(workdir) / checkpointing.CHECKPOINTS
  if directory.exists() and any(directory.iterdir()):
    raise FileExistsError(f"--workdir={workdir} already holds checkpoints; import into a new "
                          f"directory")
  state = jax.tree.map(jnp.asarray, dict(state))
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=True),
                                  item_names=("state",))
  manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  manager.wait_until_finished()
  manager.close()
  if config is not None:
    workdir_lib.save_config(workdir, config)
  (epath.Path(workdir) / IMPORT_FILE).write_text(json.dumps(record, indent=1, default=str))
  return str(directory)


def run(fmt: str, weights: str, workdir: str,
        config: ml_collections.ConfigDict = None) -> Dict[str, Any]:
  """Converts and writes; returns the ``import.json`` record."""
  if not epath.Path(weights).exists():
    raise FileNotFoundError(f"--weights={weights}: no such file or directory")
  is_file = not epath.Path(weights).is_dir()  # A wav2vec2 checkpoint directory has no hash.
  record = {"format": fmt, "weights": weights,
            "sha256": records.sha256(weights) if is_file else ""}
  if fmt in EXPERIMENT_FORMATS:
    if config is None:
      raise ValueError(f"--format={fmt} fills an experiment: give --config=configs/<experiment>"
                       f".py[:variant]")
    trainers.get(config.trainer).check(config)
    imported = EXPERIMENT_CONVERTERS[fmt](weights, config)
    config = apply_updates(config, imported)
    uses_ema = objectives.get(config.objective.name).uses_ema
    state = state_tree(imported.variables, uses_ema)
    record.update(absent=list(imported.absent),
                  model_updates=dict(imported.model_updates), notes=list(imported.notes))
  else:
    variables, info = COMPONENT_CONVERTERS[fmt](weights)
    state = state_tree(variables, uses_ema=False)
    config = None
    record.update(info)
  record["parameters"] = int(sum(np.size(x) for x in jax.tree.leaves(state["params"])))
  write(workdir, state, record, config)
  return record


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.setup()
  try:
    record = run(_FORMAT.value, _WEIGHTS.value, _WORKDIR.value, _CONFIG.value)
  except (WeightsError, FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
    cli.fail(e)
  for note in record.get("notes", ()):
    print(f"note: {note}")
  if record.get("absent"):
    print(f"not in the file (switched off in the saved config): {record['absent']}")
  print(f"imported {record['parameters']:,} parameters from {_WEIGHTS.value} into "
        f"{_WORKDIR.value}")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)

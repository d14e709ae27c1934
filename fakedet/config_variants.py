"""Variant strings of experiment configs and the leave-one-manipulation-out protocol.

``--config=configs/stage2.py:demo,holdout=neural_texture`` passes "demo,holdout=neural_texture"
to ``get_config``; ``parse`` turns it into ``{"demo": True, "holdout": "neural_texture"}`` and
rejects anything the config does not offer, so a typo fails before anything is built.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple, Union

import ml_collections


def parse(arg: Optional[str], flags: Iterable[str] = (), keys: Iterable[str] = (),
          where: str = "config") -> Dict[str, Union[bool, str]]:
  """Comma-separated ``flag`` and ``key=value`` tokens → dict (flags map to True)."""
  flags, keys = set(flags), set(keys)
  out: Dict[str, Union[bool, str]] = {}
  for token in filter(None, (t.strip() for t in (arg or "").split(","))):
    name, eq, value = token.partition("=")
    if (eq and name not in keys) or (not eq and name not in flags):
      allowed = sorted(flags) + [f"{k}=..." for k in sorted(keys)]
      raise ValueError(f"unknown variant {token!r} of {where}; allowed (comma-separated): "
                       f"{', '.join(allowed) or 'none'}")
    out[name] = value if eq else True
  return out


def hold_out(config: ml_collections.ConfigDict, family: str, source: str = "forgery") -> None:
  """Leave-one-manipulation-out (RealForensics Table 1, FakeOut Table 2): train on the reals and
  every manipulation of the training source but ``family``.

  The periodic evaluation (and model selection) sees the validation split without ``family``
  too: choosing a checkpoint by the held-out family would leak the test. The held-out test is
  ``test_split_overrides(family)`` on the evaluator. Which families exist is read from the
  data's index when the pipeline starts (a name it lacks fails there, listing the ones it has).
  """
  if not family or "," in family:
    raise ValueError(f"holdout={family!r}: name one manipulation of the dataset")
  if source not in config.input.sources:
    raise KeyError(f"holdout: config.input.sources has no {source!r} (has "
                   f"{sorted(config.input.sources)})")
  config.input.sources[source].exclude_manipulations = (family,)
  config.input.eval.exclude_manipulations = (family,)


def test_split_overrides(family: str, split: str = "test") -> Tuple[str, ...]:
  """``fakedet.evaluate`` flags that score the held-out ``family`` against the reals of
  ``split`` (the split no training or model-selection step looked at)."""
  return (f"--config.input.eval.split={split}",
          f"--config.input.eval.manipulations=('real', '{family}')",
          "--config.input.eval.exclude_manipulations=()")


def synthetic_detector_demo(config: ml_collections.ConfigDict, init_workdir: str,
                            steps: int = 400) -> None:
  """The detectors' ``:demo`` data and schedule: the ``forgery`` source (16 clips per step) and
  the evaluation (every val video, 2 clips each) on ``synthetic:demo``, ``steps`` steps with an
  evaluation — hence a model-selection point — every 100, starting from ``init_workdir``."""
  config.input.sources.forgery.data_dir = "synthetic:demo"
  config.input.sources.forgery.batch_size = 16
  config.input.eval.data_dir = "synthetic:demo"
  config.input.eval.clips_per_video = 2
  config.input.eval.batch_size = 60
  config.input.num_workers = 0
  config.num_epochs = 0.0
  config.total_steps = steps
  config.optim.warmup_steps = 25
  config.init.workdir = init_workdir
  config.checkpoint.every_steps = 100
  config.log_every = 25
  config.eval_every = 100

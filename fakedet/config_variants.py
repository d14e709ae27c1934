"""Variant strings of experiment configs and the held-out-manipulation protocols
(leave one family out, FakeOut's cross-approach train-on-one-group).

``--config=configs/stage2.py:demo,holdout=neural_texture`` passes "demo,holdout=neural_texture"
to ``get_config``; ``parse`` turns it into ``{"demo": True, "holdout": "neural_texture"}`` and
rejects anything the config does not offer, so a typo fails before anything is built.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import ml_collections

from input_pipeline import records


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


def families(value: Union[str, Sequence[str]], key: str = "holdout") -> Tuple[str, ...]:
  """``"Deepfakes+FaceSwap"`` (a variant value) or a sequence → the family names, in order.

  ``+`` joins families because ``,`` separates variants. Names are the dataset's own (its
  index's ``manipulation`` column); whether they exist is checked when the pipeline starts.
  """
  names = tuple(value.split("+")) if isinstance(value, str) else tuple(value)
  bad = [n for n in names if not n or "," in n or n == records.REAL]
  if not names or bad or len(set(names)) != len(names):
    raise ValueError(f"{key}={value!r}: name one or more manipulations of the dataset, joined by "
                     f"'+' (e.g. Deepfakes+FaceSwap), each once and none of them {records.REAL!r}")
  return names


def _source(config: ml_collections.ConfigDict, source: str, key: str):
  if source not in config.input.sources:
    raise KeyError(f"{key}: config.input.sources has no {source!r} (has "
                   f"{sorted(config.input.sources)})")
  return config.input.sources[source]


def hold_out(config: ml_collections.ConfigDict, family: Union[str, Sequence[str]],
             source: str = "forgery") -> None:
  """Leave manipulations out (RealForensics Table 1, FakeOut Table 2: one family; FakeOut
  Table 3's cross-approach protocol: ``Deepfakes+FaceSwap`` or ``Face2Face+NeuralTextures``):
  train on the reals and every manipulation of the training source but the named ones.

  The periodic evaluation (and model selection) sees the validation split without them too:
  choosing a checkpoint by a held-out family would leak the test. The held-out test is
  ``test_split_overrides(family)`` on the evaluator. Which families exist is read from the
  data's index when the pipeline starts (a name it lacks fails there, listing the ones it has).
  """
  held = families(family, "holdout")
  _source(config, source, "holdout").exclude_manipulations = held
  config.input.eval.exclude_manipulations = held


def train_families(config: ml_collections.ConfigDict, family: Union[str, Sequence[str]],
                   source: str = "forgery") -> None:
  """The other side of ``hold_out``: train on the reals and ONLY the named families (FakeOut
  Table 3: ``Face2Face+NeuralTextures`` trains on reenactment and tests on face swapping), the
  periodic evaluation restricted to the same families; every other family of the data is held
  out without naming it. The test: ``unseen_split_overrides(family)``."""
  kept = (records.REAL,) + families(family, "train_families")
  src = _source(config, source, "train_families")
  src.manipulations, src.exclude_manipulations = kept, ()
  config.input.eval.manipulations, config.input.eval.exclude_manipulations = kept, ()


def test_split_overrides(family: Union[str, Sequence[str]], split: str = "test"
                         ) -> Tuple[str, ...]:
  """``fakedet.evaluate`` flags that score the held-out ``family`` (one, or several joined by
  '+') against the reals of ``split`` (the split no training or model-selection step looked
  at)."""
  kept = (records.REAL,) + families(family, "holdout")
  return (f"--config.input.eval.split={split}",
          f"--config.input.eval.manipulations={kept!r}",
          "--config.input.eval.exclude_manipulations=()")


def unseen_split_overrides(trained: Union[str, Sequence[str]], split: str = "test"
                           ) -> Tuple[str, ...]:
  """``fakedet.evaluate`` flags after ``train_families(trained)``: the reals of ``split`` and
  every family but the trained ones (the report has a row per family and their ``overall``)."""
  return (f"--config.input.eval.split={split}",
          "--config.input.eval.manipulations=()",
          f"--config.input.eval.exclude_manipulations={families(trained, 'train_families')!r}")


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

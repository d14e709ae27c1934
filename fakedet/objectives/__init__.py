"""Objectives: what a method optimises, chosen by ``config.objective.name``.

An objective owns its model(s) and knows how to (1) initialise variables from an example batch,
(2) compute the training loss from the train state, and (3) compute evaluation statistics. The
shared trainer (``fakedet/trainers/train.py``) does everything else, so a method is a config plus
an objective, never a copy of the training loop.
"""
from __future__ import annotations

import abc
import copy
import importlib
from typing import Any, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from fakedet.registry import Registry

OBJECTIVES = Registry("objective")
_MODULES = ("fakedet.objectives.byol_av", "fakedet.objectives.mmv_nce",
            "fakedet.objectives.video_detector", "fakedet.objectives.pcl",
            "fakedet.objectives.rffr", "fakedet.objectives.avcl")

Batch = Mapping[str, jax.Array]
Metrics = Dict[str, jax.Array]


class Objective(abc.ABC):
  """Interface every objective implements. All methods are pure and jit-able."""

  #: Whether the train state carries an EMA (teacher) copy of the params.
  uses_ema: bool = False
  #: Batch fields the objective reads (others, e.g. strings, stay on the host).
  input_keys: Tuple[str, ...] = ()
  #: Batch fields ``eval_step`` reads (``valid`` is always added).
  eval_keys: Tuple[str, ...] = ()
  #: Regexes of the periodic evaluation's metric names (what ``config.selection.metric`` may
  #: name; checked before anything is built). Detectors get ``DETECTOR_METRICS``.
  eval_metric_patterns: Tuple[str, ...] = ()

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @staticmethod
  def apply(module, variables, *args, **kwargs):
    """``module.apply`` with every floating output in float32: under ``config.precision =
    "bfloat16"`` the network computes in bf16, but losses, logits and the metrics built on them
    stay in float32 (a bf16 log-sum-exp over a batch of 256 loses about 2 digits)."""
    out = module.apply(variables, *args, **kwargs)
    return jax.tree.map(
        lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, out)

  @abc.abstractmethod
  def init(self, rng: jax.Array, batch: Batch) -> Dict[str, Any]:
    """Returns the initial variables ``{"params": ..., "batch_stats": ...}``."""

  @abc.abstractmethod
  def loss(self, params: Any, state: Any, batch: Batch,
           rng: jax.Array) -> Tuple[jax.Array, Tuple[Metrics, Dict[str, Any]]]:
    """Returns ``(loss, (metrics, updated))``; ``updated`` holds new ``batch_stats`` (and
    ``ema_batch_stats`` for EMA objectives)."""

  def eval_step(self, state: Any, batch: Batch) -> Metrics:
    """Per-batch SUMS of evaluation statistics (``count`` included); the trainer adds them up
    over the evaluation set and divides by ``count`` — global numbers, never per host."""
    del state, batch
    return {}

  def predict(self, state: Any, batch: Batch) -> jax.Array:
    """Per-clip fake logits [B] (detectors only): what the evaluator and predict CLI score."""
    del state, batch
    raise NotImplementedError(f"objective {type(self).__name__} is not a detector (no predict)")

  def maps(self, state: Any, batch: Batch) -> Dict[str, jax.Array]:
    """Per-clip images that show *where* a detector looks (PCL's inconsistency heatmap, RFFR's
    inpainting residual): name → float32 [B, H, W] (one channel) or [B, H, W, 3], values in
    [0, 1], at the model input's resolution (the frame the evaluator and ``fakedet.predict``
    overlay them on). A method without such an output returns {} (the default); the predict
    CLI then falls back to occlusion maps."""
    del state, batch
    return {}


def _load_all():
  for module in _MODULES:
    importlib.import_module(module)


def get(name: str):
  _load_all()
  return OBJECTIVES.get(name)


PRECISIONS = ("float32", "bfloat16")


def with_precision(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` with every ``dtype`` under ``config.model`` set to ``config.precision``.

  The mixed-precision policy in one key: "bfloat16" makes every network compute in bf16 while
  parameters (flax's ``param_dtype``), optimizer moments and BatchNorm statistics stay float32
  and ``Objective.apply`` hands float32 outputs to the losses. A copy: the config the run
  records keeps the policy, not 40 rewritten fields."""
  precision = config.get("precision", "float32")
  if precision not in PRECISIONS:
    raise ValueError(f"config.precision={precision!r}: expected one of {PRECISIONS}")
  if precision == "float32":
    return config
  config = copy.deepcopy(config)

  def visit(node):
    for key in list(node.keys()):
      if key == "dtype":
        node[key] = precision
      elif isinstance(node[key], (ml_collections.ConfigDict, dict)):
        visit(node[key])

  with config.unlocked():
    visit(config.model)
  return config


def build(config: ml_collections.ConfigDict) -> "Objective":
  """The objective ``config.objective.name`` names, under the config's precision policy."""
  return get(config.objective.name)(with_precision(config))


# The evaluator's report scalars: eval/{overall|<manipulation>}/{clip|video}_{metric}.
DETECTOR_METRICS = (r"eval/[^/]+/(clip|video)_(auc|accuracy|ap|eer)",)


def metric_patterns(objective) -> Tuple[str, ...]:
  """The periodic evaluation's metric-name regexes of an objective (class or instance)."""
  return DETECTOR_METRICS if is_detector(objective) else tuple(objective.eval_metric_patterns)


def is_detector(objective) -> bool:
  """Whether an objective (class or instance) overrides ``predict``, i.e. can score clips."""
  cls = objective if isinstance(objective, type) else type(objective)
  return cls.predict is not Objective.predict


def has_maps(objective) -> bool:
  """Whether an objective (class or instance) overrides ``maps`` (localisation images)."""
  cls = objective if isinstance(objective, type) else type(objective)
  return cls.maps is not Objective.maps


def require_detector(name: str) -> None:
  """Fails before anything is restored when ``config.objective.name`` cannot score clips."""
  if not is_detector(get(name)):
    detectors = [n for n in OBJECTIVES.names() if is_detector(OBJECTIVES.get(n))]
    raise ValueError(f"config.objective.name={name!r} is not a detector: its objective has no "
                     f"predict(state, batch) to score clips with. Evaluate a config whose "
                     f"objective is one of: {', '.join(detectors) or '(none)'}")


# ITU-R 601 luma (PIL's "L", torchvision's rgb_to_grayscale): RGB → one grey channel.
LUMA = (0.299, 0.587, 0.114)


def normalize_video(video: jax.Array, mean, std) -> jax.Array:
  """uint8 [.., 3] → float32 standardised on device (the host pipeline keeps uint8).

  A one-element ``mean``/``std`` means a greyscale model (RealForensics' greyscale stems take
  one channel): the frames become one luma channel first, so the same RGB records feed both.
  """
  x = video.astype(jnp.float32) / 255.0
  if len(mean) == 1 and x.shape[-1] == 3:
    x = jnp.sum(x * jnp.asarray(LUMA, jnp.float32), axis=-1, keepdims=True)
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)

"""Gaussian smoothing of tracks over time (numpy only).

Coarticulation, prosody, head motion and transferred expressions are all smoothed trajectories.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def gaussian(x: np.ndarray, sigma: float, axis: int = 0) -> np.ndarray:
  """Gaussian filter along `axis` (sigma in samples, kernel cut at 4 sigma, edges extended)."""
  x = np.asarray(x, np.float64)
  if sigma <= 0:
    return x
  r = int(4 * sigma + 0.5)
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  x = np.moveaxis(x, axis, 0)
  xp = np.pad(x, [(r, r)] + [(0, 0)] * (x.ndim - 1), mode="edge")
  out = np.tensordot(sliding_window_view(xp, 2 * r + 1, axis=0), k / k.sum(), axes=([-1], [0]))
  return np.moveaxis(out, 0, axis)

"""Log-mel spectrograms for the audio stream (numpy for the data workers, jax.numpy on device).

Defaults follow the RealForensics audio front end: 16 kHz mono, 20 ms Hann window (320 samples)
zero-padded to a 512-point FFT, 10 ms hop (100 frames/s, i.e. 4 audio frames per 25 fps video
frame), 80 Slaney mel bins, power -> dB relative to the clip maximum with an 80 dB floor, then
``(dB + 40) / 40`` so the values sit roughly in [-1, 1]. The numbers match
``librosa.feature.melspectrogram(center=True, pad_mode="constant")`` + ``power_to_db(ref=np.max)``
except that librosa's extra final centre frame is dropped: we return exactly
``len(waveform) // hop_length`` frames so that ``Ta == 4 * Tv``.
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from input_pipeline.op_registry import register

# Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per
# factor 6.4 in frequency).
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0
_AMIN = 1e-10  # power floor before log10, as librosa.power_to_db.


def hz_to_mel(hz):
  """Hz -> Slaney mel (array or scalar, float64)."""
  hz = np.asarray(hz, np.float64)
  log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
  return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def mel_to_hz(mel):
  """Slaney mel -> Hz (array or scalar, float64); inverse of `hz_to_mel`."""
  mel = np.asarray(mel, np.float64)
  log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
  return np.where(mel >= _MIN_LOG_MEL, log_part, _F_SP * mel)


def _check_stft_args(op: str, sample_rate, n_fft, win_length, hop_length, n_mels, fmin, fmax,
                     top_db=None, scale=1.0) -> None:
  """Raises ValueError naming `op` and the offending argument."""

  def fail(arg, value, allowed):
    raise ValueError(f"{op}: {arg}={value!r} is out of range; allowed: {allowed}")

  for arg, value in (("sample_rate", sample_rate), ("n_fft", n_fft), ("win_length", win_length),
                     ("hop_length", hop_length), ("n_mels", n_mels)):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
      fail(arg, value, "an integer >= 1")
  if win_length > n_fft:
    fail("win_length", win_length, f"<= n_fft ({n_fft})")
  nyquist = sample_rate / 2
  top = nyquist if fmax is None else fmax
  if not 0 <= fmin < top:
    fail("fmin", fmin, f"0 <= fmin < fmax ({top})")
  if fmax is not None and not fmin < fmax <= nyquist:
    fail("fmax", fmax, f"None or fmin < fmax <= sample_rate / 2 ({nyquist})")
  if top_db is not None and not top_db >= 0:
    fail("top_db", top_db, "None or >= 0")
  if scale == 0:
    fail("scale", scale, "non-zero")


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: Optional[float] = None) -> np.ndarray:
  """Slaney-normalised triangular mel filters, float64 [n_fft // 2 + 1, n_mels].

  Filter i rises from centre i-1 to centre i and falls to centre i+1 (n_mels + 2 points evenly
  spaced on the Slaney mel scale between fmin and fmax, Hz); each triangle is scaled by
  2 / bandwidth so all filters have equal area (librosa's ``norm="slaney"``). Transposed w.r.t.
  ``librosa.filters.mel`` so that ``power [..., n_freq] @ fb -> mel [..., n_mels]``.
  """
  fmax = sample_rate / 2 if fmax is None else fmax
  _check_stft_args("mel_filterbank", sample_rate, n_fft, n_fft, 1, n_mels, fmin, fmax)
  fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
  edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
  widths = np.diff(edges_hz)  # [n_mels + 1]
  # ramps[j, k] = edge_j - f_k; rising slope for filter i uses edge i, falling uses edge i + 2.
  ramps = edges_hz[:, None] - fft_hz[None, :]
  rising = -ramps[:-2] / widths[:-1, None]
  falling = ramps[2:] / widths[1:, None]
  weights = np.maximum(0.0, np.minimum(rising, falling))  # [n_mels, n_freq]
  weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
  return weights.T


@functools.lru_cache(maxsize=16)
def _cached_filterbank(sample_rate, n_fft, n_mels, fmin, fmax) -> np.ndarray:
  fb = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
  fb.flags.writeable = False  # shared by every call; nobody may edit it.
  return fb


@functools.lru_cache(maxsize=16)
def _cached_window(win_length: int, n_fft: int) -> np.ndarray:
  """Periodic Hann of win_length centred in n_fft zeros (librosa's pad_center), float64 [n_fft]."""
  hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win_length) / win_length)
  window = np.zeros(n_fft)
  left = (n_fft - win_length) // 2
  window[left:left + win_length] = hann
  window.flags.writeable = False
  return window


def _num_frames(op: str, shape, hop_length: int) -> int:
  """N // hop_length; at least one frame is needed for the per-clip dB reference."""
  if not shape or shape[-1] < hop_length:
    raise ValueError(f"{op}: waveform shape {tuple(shape)} has fewer samples than "
                     f"hop_length={hop_length}; need [..., N] with N >= hop_length")
  return shape[-1] // hop_length


def _power_to_scaled_db(mel, top_db, offset, scale, xp):
  """Power -> dB re clip max (over the last two axes), floored at max - top_db, then affine."""
  db = 10.0 * xp.log10(xp.maximum(mel, _AMIN))
  ref_db = 10.0 * xp.log10(xp.maximum(xp.max(mel, axis=(-2, -1), keepdims=True), _AMIN))
  db = db - ref_db
  if top_db is not None:
    db = xp.maximum(db, xp.max(db, axis=(-2, -1), keepdims=True) - top_db)
  return (db + offset) / scale


def log_mel_spectrogram(waveform: np.ndarray, *, sample_rate: int = 16000, n_fft: int = 512,
                        win_length: int = 320, hop_length: int = 160, n_mels: int = 80,
                        fmin: float = 0.0, fmax: Optional[float] = None,
                        top_db: Optional[float] = 80.0, offset: float = 40.0,
                        scale: float = 40.0) -> np.ndarray:
  """Scaled log-mel of mono audio: waveform [..., N] in [-1, 1] -> f32 [..., N // hop, n_mels].

  Frame t is centred on sample t * hop_length (zero padding of n_fft // 2 at both ends). The dB
  reference is the maximum of each clip, so the output is invariant to the clip's gain.
  Computed in float64 (cheap: 1 s of audio is 100 FFTs of 512 points).
  """
  _check_stft_args("log_mel_spectrogram", sample_rate, n_fft, win_length, hop_length, n_mels,
                   fmin, fmax, top_db, scale)
  x = np.asarray(waveform, np.float64)
  n_frames = _num_frames("log_mel_spectrogram", x.shape, hop_length)
  pad = n_fft // 2
  x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)])
  frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)
  frames = frames[..., :n_frames * hop_length:hop_length, :]  # [..., n_frames, n_fft] view
  spec = np.fft.rfft(frames * _cached_window(win_length, n_fft), axis=-1)
  power = spec.real ** 2 + spec.imag ** 2
  mel = power @ _cached_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
  return _power_to_scaled_db(mel, top_db, offset, scale, np).astype(np.float32)


def log_mel_spectrogram_jax(waveform, *, sample_rate: int = 16000, n_fft: int = 512,
                            win_length: int = 320, hop_length: int = 160, n_mels: int = 80,
                            fmin: float = 0.0, fmax: Optional[float] = None,
                            top_db: Optional[float] = 80.0, offset: float = 40.0,
                            scale: float = 40.0):
  """jax.numpy twin of `log_mel_spectrogram` (on device): [..., N] -> f32 [..., N // hop, n_mels].

  Traceable (call it inside `jax.jit`; the keyword arguments are Python constants). jax is
  imported lazily so that numpy-only data workers never pay for it.
  """
  import jax.numpy as jnp  # numpy-only data workers never pay for importing jax.

  _check_stft_args("log_mel_spectrogram_jax", sample_rate, n_fft, win_length, hop_length,
                   n_mels, fmin, fmax, top_db, scale)
  x = jnp.asarray(waveform, jnp.float32)
  n_frames = _num_frames("log_mel_spectrogram_jax", x.shape, hop_length)
  pad = n_fft // 2
  x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)])
  idx = np.arange(n_frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
  window = jnp.asarray(_cached_window(win_length, n_fft), jnp.float32)
  spec = jnp.fft.rfft(x[..., idx] * window, axis=-1)  # [..., n_frames, n_fft // 2 + 1]
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
  fb = jnp.asarray(_cached_filterbank(sample_rate, n_fft, n_mels, fmin, fmax), jnp.float32)
  mel = jnp.matmul(power, fb, precision="highest")
  return _power_to_scaled_db(mel, top_db, offset, scale, jnp).astype(jnp.float32)


@register("log_mel")
def log_mel(key: str = "waveform", out_key: str = "audio", sample_rate: int = 16000,
            n_fft: int = 512, win_length: int = 320, hop_length: int = 160, n_mels: int = 80,
            fmin: float = 0.0, fmax: Optional[float] = None, top_db: Optional[float] = 80.0,
            offset: float = 40.0, scale: float = 40.0):
  """Op: ``example[key]`` float waveform [N] -> ``example[out_key]`` float32 [N // hop, n_mels]."""
  kwargs = dict(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length,
                hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax, top_db=top_db,
                offset=offset, scale=scale)
  _check_stft_args("log_mel", sample_rate, n_fft, win_length, hop_length, n_mels, fmin, fmax,
                   top_db, scale)
  _cached_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)  # Build once, up front.

  def fn(example, rng):
    del rng  # Deterministic.
    if key not in example:
      raise KeyError(f"log_mel: example has no key {key!r}; keys: {sorted(example)}")
    waveform = np.asarray(example[key])
    if waveform.ndim != 1:
      raise ValueError(f"log_mel: {key!r} must be a mono waveform [N], got shape "
                       f"{waveform.shape}")
    out = dict(example)
    out[out_key] = log_mel_spectrogram(waveform, **kwargs)
    return out

  return fn

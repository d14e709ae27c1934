"""Log-mel spectrograms for the audio stream (numpy for the data workers, jax.numpy on device).

One parametrised front end; named presets reproduce the authors' released code, so a model
that starts from their weights (or is compared with their numbers) sees the input it was
trained on. ``log_mel(preset='realforensics')`` / ``log_mel(preset='fakeout')`` in an op string;
explicit arguments override single fields of a preset. Without a preset the op keeps its
original output (Slaney mel, area-normalised filters, zero padding) bit for bit.

| field        | default (no preset)      | ``realforensics``        | ``fakeout``              |
|--------------|--------------------------|--------------------------|--------------------------|
| follows      | librosa defaults         | torchaudio MelSpectrogram| tf.signal (FakeOut       |
|              |                          | defaults (RealForensics  | data/data_utils.py,      |
|              |                          | stage1/data/data_module) | mel_spectrogram_of_seq.) |
| sample_rate  | 16000                    | 16000                    | 44100                    |
| window       | periodic Hann 320 in the | periodic Hann 320 in the | periodic Hann 2048       |
|              | middle of n_fft 512      | middle of n_fft 512      | (n_fft 2048)             |
| hop_length   | 160 (10 ms)              | 160 = 16000 / 25 fps / 4 | 256 (5.8 ms)             |
| centring     | frame t centred on t·hop | frame t centred on t·hop | none: frame t = samples  |
|              | zero padding             | reflect padding          | [t·hop, t·hop + 2048)    |
| frames       | N // hop                 | N // hop                 | 1 + (N - 2048) // 256    |
| mel scale    | Slaney                   | HTK 2595·log10(1+f/700)  | HTK (1127·ln(1+f/700))   |
| filters      | 80, 0–sr/2, ramps linear | 80, 0–sr/2, ramps linear | 80, 0–sr/2, ramps linear |
|              | in Hz, equal area        | in Hz, peak 1            | in mel, peak 1           |
| power        | abs(STFT)²               | abs(STFT)²               | abs(STFT)²               |
| log (dB)     | all: 10·log10(max(m, amin)) − 10·log10(max(clip max, amin)), floor −top_db |
| amin, top_db | 1e-10, 80                | 1e-10, 80                | 1e-16, 80                |
| affine       | (dB + 40) / 40           | (dB + 40) / 40           | none: raw dB in [-80, 0] |
| silence      | 1.0 everywhere (0 dB)    | 1.0 everywhere           | 0.0 everywhere           |

Where the code and the papers differ (we follow the code):
- RealForensics: the paper says only "80 mel filters and 100 audio frames" per 25-frame clip;
  the code takes torchaudio's defaults (HTK scale, no filter normalisation, reflect padding),
  keeps the first ``fps · 4 = 100`` of torchaudio's ``1 + N // hop`` frames (its clip sampler
  asks for 0.96 s and then ``uniform_temporal_subsample``s the frames it gets to 4 per video
  frame), and takes the dB reference after that cut. We return ``N // hop`` frames of exactly
  ``T · sr / fps`` samples (the same 100 frames for a 1 s clip, no resampling of frames).
  Stage 2 of the code drops the audio (``RemoveKey("audio")``).
- FakeOut: the paper says "log-MEL spectrograms with 80 bins" from audio re-encoded at 44.1 kHz
  and 29 fps, and "32 consecutive frames and their corresponding audio". The code uses the first
  channel of the stereo wav, samples the 32 video frames at stride 2 (64 source frames), but
  feeds only ``int(44100 / 29 · 32) = 48662`` samples (32 source frames, from the window's start)
  to the front end above: 183 × 80 per clip. At test time the dB reference and the 80 dB floor
  are taken over all the windows of a video together, and a video without a wav gets an
  all-zero log-mel (which is also what silence gives with this preset). We use the clip's own
  maximum and the waveform the sampler gives us.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional

import numpy as np

from input_pipeline.op_registry import register

# Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per
# factor 6.4 in frequency).
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0
# HTK: mel = 2595·log10(1 + f/700) (torchaudio, librosa htk=True). tf.signal writes it
# 1127·ln(1 + f/700); the constant differs by 5e-6 relative but cancels in every filter (edges
# are evenly spaced on the scale and mapped back with its own inverse).
_HTK_FACTOR = 2595.0
_HTK_BREAK_HZ = 700.0

DEFAULTS: Dict[str, Any] = dict(
    sample_rate=16000, n_fft=512, win_length=320, hop_length=160, n_mels=80, fmin=0.0,
    fmax=None, mel_scale="slaney", mel_norm="slaney", triangles="hz", center=True,
    pad_mode="constant", amin=1e-10, top_db=80.0, offset=40.0, scale=40.0)

PRESETS: Dict[str, Dict[str, Any]] = {
    # torchaudio.transforms.MelSpectrogram(sample_rate=16000, win_length=320, hop_length=160,
    # n_fft=512, n_mels=80) + amplitude_to_DB(multiplier=10, amin=1e-10, ref=clip max,
    # top_db=80) + (x + 40) / 40: RealForensics stage1/data/data_module.py, conf/data/*.yaml.
    "realforensics": dict(DEFAULTS, mel_scale="htk", mel_norm=None, pad_mode="reflect"),
    # tf.signal.stft(frame_length=2048, frame_step=256, pad_end=False) (periodic Hann, fft 2048)
    # → |·|² @ tf.signal.linear_to_mel_weight_matrix(80, 1025, 44100, 0, 22050) → power_to_db
    # (amin 1e-16, ref = max, top_db 80): FakeOut fakeout/data/data_utils.py, mel_filters=80.
    "fakeout": dict(DEFAULTS, sample_rate=44100, n_fft=2048, win_length=2048, hop_length=256,
                    mel_scale="htk", mel_norm=None, triangles="mel", center=False,
                    pad_mode=None, amin=1e-16, offset=0.0, scale=1.0),
}


class _FromPreset:
  """Default of the op's front-end arguments: take the value from the preset (or DEFAULTS)."""

  def __repr__(self):
    return "FROM_PRESET"


FROM_PRESET = _FromPreset()


def front_end(preset: Optional[str] = None, op: str = "log_mel", **overrides) -> Dict[str, Any]:
  """The full argument set of `log_mel_spectrogram` for ``preset`` (None: DEFAULTS) + overrides.

  Raises ValueError naming the allowed presets / arguments, and validates the result.
  """
  if preset is None:
    kwargs = dict(DEFAULTS)
  elif preset in PRESETS:
    kwargs = dict(PRESETS[preset])
  else:
    raise ValueError(f"{op}: preset={preset!r} is unknown; allowed: None or one of "
                     f"{sorted(PRESETS)}")
  unknown = sorted(set(overrides) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"{op}: unknown front-end argument(s) {unknown}; allowed: {sorted(DEFAULTS)}")
  kwargs.update(overrides)
  _check_args(op, **kwargs)
  return kwargs


def hz_to_mel(hz, scale: str = "slaney"):
  """Hz -> mel (array or scalar, float64) on the Slaney or the HTK scale."""
  hz = np.asarray(hz, np.float64)
  if scale == "htk":
    return _HTK_FACTOR * np.log10(1.0 + hz / _HTK_BREAK_HZ)
  _check_choice("hz_to_mel", "scale", scale, ("slaney", "htk"))
  log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
  return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def mel_to_hz(mel, scale: str = "slaney"):
  """mel -> Hz (array or scalar, float64); inverse of `hz_to_mel` on the same scale."""
  mel = np.asarray(mel, np.float64)
  if scale == "htk":
    return _HTK_BREAK_HZ * (10.0 ** (mel / _HTK_FACTOR) - 1.0)
  _check_choice("mel_to_hz", "scale", scale, ("slaney", "htk"))
  log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
  return np.where(mel >= _MIN_LOG_MEL, log_part, _F_SP * mel)


def _check_choice(op, arg, value, allowed) -> None:
  if not any(value is a or (isinstance(value, str) and value == a) for a in allowed):
    raise ValueError(f"{op}: {arg}={value!r} is not allowed; allowed: {list(allowed)}")


def _check_args(op: str, *, sample_rate, n_fft, win_length, hop_length, n_mels, fmin, fmax,
                mel_scale="slaney", mel_norm="slaney", triangles="hz", center=True,
                pad_mode="constant", amin=1e-10, top_db=None, offset=0.0, scale=1.0) -> None:
  """Raises ValueError naming `op` and the offending argument."""
  del offset  # Any float.

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
  _check_choice(op, "mel_scale", mel_scale, ("slaney", "htk"))
  _check_choice(op, "mel_norm", mel_norm, (None, "slaney"))
  _check_choice(op, "triangles", triangles, ("hz", "mel"))
  _check_choice(op, "center", center, (True, False))
  if center:
    _check_choice(op, "pad_mode", pad_mode, ("constant", "reflect"))
  elif pad_mode is not None:
    fail("pad_mode", pad_mode, "None when center=False (no padding)")
  if not (isinstance(amin, (int, float)) and amin > 0):
    fail("amin", amin, "a number > 0")
  if top_db is not None and not top_db >= 0:
    fail("top_db", top_db, "None or >= 0")
  if scale == 0:
    fail("scale", scale, "non-zero")


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: Optional[float] = None, *, mel_scale: str = "slaney",
                   norm: Optional[str] = "slaney", triangles: str = "hz") -> np.ndarray:
  """Triangular mel filters, float64 [n_fft // 2 + 1, n_mels].

  n_mels + 2 edges are evenly spaced on the mel scale between fmin and fmax; filter i rises
  from edge i to edge i+1 and falls to edge i+2. ``triangles="hz"``: the ramps are linear in
  Hz (librosa, torchaudio); ``"mel"``: linear in mel (tf.signal.linear_to_mel_weight_matrix,
  which also zeroes the DC bin — already zero here for any fmin >= 0). ``norm="slaney"``
  scales each triangle by 2 / bandwidth (Hz) so all have equal area; None keeps peak 1.
  Transposed w.r.t. ``librosa.filters.mel`` so that ``power [..., n_freq] @ fb -> [..., n_mels]``.
  """
  fmax = sample_rate / 2 if fmax is None else fmax
  _check_args("mel_filterbank", sample_rate=sample_rate, n_fft=n_fft, win_length=n_fft,
              hop_length=1, n_mels=n_mels, fmin=fmin, fmax=fmax, mel_scale=mel_scale,
              mel_norm=norm, triangles=triangles)
  fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
  edges_mel = np.linspace(hz_to_mel(fmin, mel_scale), hz_to_mel(fmax, mel_scale), n_mels + 2)
  edges_hz = mel_to_hz(edges_mel, mel_scale)
  if triangles == "hz":
    axis, edges = fft_hz, edges_hz
  else:
    axis, edges = hz_to_mel(fft_hz, mel_scale), edges_mel
  widths = np.diff(edges)  # [n_mels + 1]
  # ramps[j, k] = edge_j - x_k; rising slope for filter i uses edge i, falling uses edge i + 2.
  ramps = edges[:, None] - axis[None, :]
  rising = -ramps[:-2] / widths[:-1, None]
  falling = ramps[2:] / widths[1:, None]
  weights = np.maximum(0.0, np.minimum(rising, falling))  # [n_mels, n_freq]
  if norm == "slaney":
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
  return weights.T


@functools.lru_cache(maxsize=16)
def _cached_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, mel_scale="slaney",
                       mel_norm="slaney", triangles="hz") -> np.ndarray:
  fb = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, mel_scale=mel_scale,
                      norm=mel_norm, triangles=triangles)
  fb.flags.writeable = False  # shared by every call; nobody may edit it.
  return fb


@functools.lru_cache(maxsize=16)
def _cached_window(win_length: int, n_fft: int) -> np.ndarray:
  """Periodic Hann of win_length centred in n_fft zeros (librosa's pad_center, torch.stft's
  window padding), float64 [n_fft]; tf.signal's periodic Hann when win_length == n_fft."""
  hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win_length) / win_length)
  window = np.zeros(n_fft)
  left = (n_fft - win_length) // 2
  window[left:left + win_length] = hann
  window.flags.writeable = False
  return window


def num_frames(num_samples: int, *, hop_length: int, n_fft: int, center: bool,
               pad_mode: Optional[str] = "constant", op: str = "log_mel") -> int:
  """Spectrogram frames for ``num_samples`` samples (raises naming `op` when there are none).

  Centred: ``num_samples // hop_length`` — the frames centred on samples 0, hop, ... inside the
  clip, i.e. 4 per 25 fps video frame at 16 kHz / hop 160 (librosa and torch add one more,
  centred on the last sample; RealForensics drops it). Not centred (tf.signal, pad_end=False):
  ``1 + (num_samples - n_fft) // hop_length`` whole windows.
  """
  if center:
    need = hop_length
    if pad_mode == "reflect":  # Reflecting n_fft // 2 samples needs more than that many.
      need = max(need, n_fft // 2 + 1)
    if num_samples < need:
      raise ValueError(f"{op}: waveform has {num_samples} samples; need [..., N] with N >= "
                       f"{need} (hop_length={hop_length}, pad_mode={pad_mode!r})")
    return num_samples // hop_length
  if num_samples < n_fft:
    raise ValueError(f"{op}: waveform has {num_samples} samples, fewer than one window; need "
                     f"[..., N] with N >= n_fft={n_fft} (center=False)")
  return 1 + (num_samples - n_fft) // hop_length


def _power_to_scaled_db(mel, amin, top_db, offset, scale, xp):
  """Power -> dB re clip max (over the last two axes), floored at max - top_db, then affine."""
  db = 10.0 * xp.log10(xp.maximum(mel, amin))
  ref_db = 10.0 * xp.log10(xp.maximum(xp.max(mel, axis=(-2, -1), keepdims=True), amin))
  db = db - ref_db
  if top_db is not None:
    db = xp.maximum(db, xp.max(db, axis=(-2, -1), keepdims=True) - top_db)
  return (db + offset) / scale


def mel_power(waveform: np.ndarray, *, sample_rate: int = 16000, n_fft: int = 512,
              win_length: int = 320, hop_length: int = 160, n_mels: int = 80,
              fmin: float = 0.0, fmax: Optional[float] = None, mel_scale: str = "slaney",
              mel_norm: Optional[str] = "slaney", triangles: str = "hz", center: bool = True,
              pad_mode: Optional[str] = "constant", op: str = "mel_power") -> np.ndarray:
  """Linear mel power (before the log), float64 [..., frames, n_mels]; see `num_frames`."""
  x = np.asarray(waveform, np.float64)
  n_frames = num_frames(x.shape[-1] if x.ndim else 0, hop_length=hop_length, n_fft=n_fft,
                        center=center, pad_mode=pad_mode, op=op)
  if center:
    pad = n_fft // 2
    x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode=pad_mode)
  frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)
  frames = frames[..., :n_frames * hop_length:hop_length, :]  # [..., n_frames, n_fft] view
  spec = np.fft.rfft(frames * _cached_window(win_length, n_fft), axis=-1)
  power = spec.real ** 2 + spec.imag ** 2
  return power @ _cached_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, mel_scale, mel_norm,
                                    triangles)


def log_mel_spectrogram(waveform: np.ndarray, *, sample_rate: int = 16000, n_fft: int = 512,
                        win_length: int = 320, hop_length: int = 160, n_mels: int = 80,
                        fmin: float = 0.0, fmax: Optional[float] = None,
                        mel_scale: str = "slaney", mel_norm: Optional[str] = "slaney",
                        triangles: str = "hz", center: bool = True,
                        pad_mode: Optional[str] = "constant", amin: float = 1e-10,
                        top_db: Optional[float] = 80.0, offset: float = 40.0,
                        scale: float = 40.0) -> np.ndarray:
  """Scaled log-mel of mono audio: waveform [..., N] in [-1, 1] -> f32 [..., frames, n_mels].

  The defaults are `DEFAULTS`; ``**front_end("realforensics")`` etc. give a preset. The dB
  reference is the maximum of each clip, so the output is invariant to the clip's gain.
  Computed in float64 (cheap: 1 s of audio is 100 FFTs of 512 points).
  """
  kwargs = dict(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length,
                hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax, mel_scale=mel_scale,
                mel_norm=mel_norm, triangles=triangles, center=center, pad_mode=pad_mode)
  _check_args("log_mel_spectrogram", **kwargs, amin=amin, top_db=top_db, offset=offset,
              scale=scale)
  mel = mel_power(waveform, **kwargs, op="log_mel_spectrogram")
  return _power_to_scaled_db(mel, amin, top_db, offset, scale, np).astype(np.float32)


def log_mel_spectrogram_jax(waveform, *, sample_rate: int = 16000, n_fft: int = 512,
                            win_length: int = 320, hop_length: int = 160, n_mels: int = 80,
                            fmin: float = 0.0, fmax: Optional[float] = None,
                            mel_scale: str = "slaney", mel_norm: Optional[str] = "slaney",
                            triangles: str = "hz", center: bool = True,
                            pad_mode: Optional[str] = "constant", amin: float = 1e-10,
                            top_db: Optional[float] = 80.0, offset: float = 40.0,
                            scale: float = 40.0):
  """jax.numpy twin of `log_mel_spectrogram` (on device): [..., N] -> f32 [..., frames, n_mels].

  Traceable (call it inside `jax.jit`; the keyword arguments are Python constants). jax is
  imported lazily so that numpy-only data workers never pay for it. float32 throughout, so
  bins far below the clip maximum differ from the float64 numpy path by more than rounding.
  """
  import jax.numpy as jnp  # numpy-only data workers never pay for importing jax.

  op = "log_mel_spectrogram_jax"
  _check_args(op, sample_rate=sample_rate, n_fft=n_fft, win_length=win_length,
              hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax, mel_scale=mel_scale,
              mel_norm=mel_norm, triangles=triangles, center=center, pad_mode=pad_mode,
              amin=amin, top_db=top_db, offset=offset, scale=scale)
  x = jnp.asarray(waveform, jnp.float32)
  n_frames = num_frames(x.shape[-1] if x.ndim else 0, hop_length=hop_length, n_fft=n_fft,
                        center=center, pad_mode=pad_mode, op=op)
  if center:
    pad = n_fft // 2
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode=pad_mode)
  idx = np.arange(n_frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
  window = jnp.asarray(_cached_window(win_length, n_fft), jnp.float32)
  spec = jnp.fft.rfft(x[..., idx] * window, axis=-1)  # [..., n_frames, n_fft // 2 + 1]
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
  fb = jnp.asarray(_cached_filterbank(sample_rate, n_fft, n_mels, fmin, fmax, mel_scale,
                                      mel_norm, triangles), jnp.float32)
  mel = jnp.matmul(power, fb, precision="highest")
  return _power_to_scaled_db(mel, amin, top_db, offset, scale, jnp).astype(jnp.float32)


@register("log_mel")
def log_mel(key: str = "waveform", out_key: str = "audio", preset: Optional[str] = None,
            sample_rate=FROM_PRESET, n_fft=FROM_PRESET, win_length=FROM_PRESET,
            hop_length=FROM_PRESET, n_mels=FROM_PRESET, fmin=FROM_PRESET, fmax=FROM_PRESET,
            mel_scale=FROM_PRESET, mel_norm=FROM_PRESET, triangles=FROM_PRESET,
            center=FROM_PRESET, pad_mode=FROM_PRESET, amin=FROM_PRESET, top_db=FROM_PRESET,
            offset=FROM_PRESET, scale=FROM_PRESET):
  """Op: ``example[key]`` float waveform [N] -> ``example[out_key]`` float32 [frames, n_mels].

  ``preset``: None (`DEFAULTS`) or a name in `PRESETS` ('realforensics', 'fakeout'); every
  other argument left out takes the preset's value, one given overrides it.
  """
  given = dict(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length,
               hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax, mel_scale=mel_scale,
               mel_norm=mel_norm, triangles=triangles, center=center, pad_mode=pad_mode,
               amin=amin, top_db=top_db, offset=offset, scale=scale)
  kwargs = front_end(preset, op="log_mel",
                     **{k: v for k, v in given.items() if v is not FROM_PRESET})
  _cached_filterbank(kwargs["sample_rate"], kwargs["n_fft"], kwargs["n_mels"], kwargs["fmin"],
                     kwargs["fmax"], kwargs["mel_scale"], kwargs["mel_norm"],
                     kwargs["triangles"])  # Build once, up front.

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

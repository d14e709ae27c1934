"""Latent speech shared by the synthetic audio and the synthetic mouth.

One `Utterance` per video — a timed phoneme sequence grouped into pseudo-words, plus prosody —
drives both `articulate` (jaw, lips and brows at the video frame rate) and `synthesize` (a
source–filter formant waveform). Open vowels are both loud and wide-mouthed, closures are both
silent and closed-lipped, and pitch accents raise the brows, so audio and video correspond frame
by frame and a shifted or swapped soundtrack is detectable (the cue RealForensics / FakeOut use).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from input_pipeline.synthetic import smoothing

CONTROL_RATE = 1000.0  # Hz: resolution of the latent tracks before resampling to video/audio.

# Columns: symbol, F1, F2, F3 (Hz), voicing, frication, noise centre, noise bandwidth (Hz),
# loudness, jaw opening, lip closure, lip rounding, lip spreading, min / max duration (s).
# Loudness follows jaw opening for vowels, as in real speech (open vowels are more intense).
_TABLE = (
    ("_", 500, 1500, 2500, 0.0, 0.0, 3000, 3000, 0.0, 0.05, 0.0, 0.0, 0.3, 0.10, 0.10),
    ("a", 750, 1250, 2550, 1.0, 0.0, 3000, 3000, 1.00, 1.00, 0.0, 0.10, 0.45, 0.09, 0.17),
    ("e", 480, 1850, 2600, 1.0, 0.0, 3000, 3000, 0.85, 0.60, 0.0, 0.00, 0.80, 0.08, 0.15),
    ("i", 300, 2250, 3000, 1.0, 0.0, 3000, 3000, 0.70, 0.30, 0.0, 0.00, 1.00, 0.07, 0.13),
    ("o", 500, 900, 2450, 1.0, 0.0, 3000, 3000, 0.85, 0.65, 0.0, 0.85, 0.05, 0.08, 0.15),
    ("u", 320, 800, 2300, 1.0, 0.0, 3000, 3000, 0.70, 0.35, 0.0, 1.00, 0.00, 0.07, 0.13),
    ("m", 250, 1100, 2300, 0.5, 0.0, 3000, 3000, 0.35, 0.15, 1.0, 0.10, 0.30, 0.05, 0.09),
    ("n", 250, 1500, 2500, 0.5, 0.0, 3000, 3000, 0.35, 0.25, 0.0, 0.00, 0.40, 0.05, 0.08),
    ("p", 400, 1200, 2400, 0.0, 0.0, 800, 1500, 0.25, 0.10, 1.0, 0.10, 0.30, 0.06, 0.09),
    ("b", 400, 1200, 2400, 0.15, 0.0, 800, 1500, 0.25, 0.10, 1.0, 0.10, 0.30, 0.05, 0.08),
    ("t", 400, 1700, 2600, 0.0, 0.0, 4500, 3000, 0.25, 0.20, 0.0, 0.00, 0.40, 0.05, 0.08),
    ("d", 400, 1700, 2600, 0.15, 0.0, 4500, 3000, 0.25, 0.20, 0.0, 0.00, 0.40, 0.05, 0.07),
    ("k", 400, 1900, 2500, 0.0, 0.0, 2200, 2000, 0.25, 0.25, 0.0, 0.10, 0.30, 0.06, 0.09),
    ("g", 400, 1900, 2500, 0.15, 0.0, 2200, 2000, 0.25, 0.25, 0.0, 0.10, 0.30, 0.05, 0.08),
    ("f", 400, 1400, 2500, 0.0, 0.35, 5000, 5000, 0.30, 0.12, 0.7, 0.00, 0.40, 0.07, 0.11),
    ("v", 400, 1400, 2500, 0.4, 0.25, 5000, 5000, 0.35, 0.12, 0.7, 0.00, 0.40, 0.05, 0.09),
    ("s", 400, 1700, 2600, 0.0, 0.60, 6000, 2500, 0.35, 0.15, 0.0, 0.00, 0.60, 0.08, 0.12),
    ("z", 400, 1700, 2600, 0.4, 0.40, 6000, 2500, 0.40, 0.15, 0.0, 0.00, 0.60, 0.06, 0.10),
    ("S", 400, 1600, 2300, 0.0, 0.60, 3200, 2000, 0.40, 0.20, 0.0, 0.70, 0.00, 0.08, 0.12),
    ("h", 600, 1500, 2500, 0.0, 0.30, 1500, 3000, 0.30, 0.45, 0.0, 0.00, 0.30, 0.05, 0.08),
    ("l", 360, 1300, 2700, 0.7, 0.0, 3000, 3000, 0.55, 0.35, 0.0, 0.00, 0.40, 0.05, 0.08),
    ("r", 420, 1300, 1700, 0.7, 0.0, 3000, 3000, 0.55, 0.35, 0.0, 0.40, 0.10, 0.05, 0.08),
    ("w", 300, 700, 2200, 0.6, 0.0, 3000, 3000, 0.50, 0.20, 0.0, 1.00, 0.00, 0.05, 0.08),
    ("j", 280, 2200, 2900, 0.6, 0.0, 3000, 3000, 0.50, 0.20, 0.0, 0.00, 0.80, 0.05, 0.08),
)
SYMBOLS = "".join(row[0] for row in _TABLE)
_T = np.array([row[1:] for row in _TABLE], np.float64)
FORMANTS, VOICING, FRICATION, NOISE_BAND = _T[:, 0:3], _T[:, 3], _T[:, 4], _T[:, 5:7]
LOUDNESS, JAW, CLOSURE, ROUNDING, SPREAD, DURATION = (
    _T[:, 7], _T[:, 8], _T[:, 9], _T[:, 10], _T[:, 11], _T[:, 12:14])
IS_VOWEL = np.array([s in "aeiou" for s in SYMBOLS])
IS_STOP = np.array([s in "pbtdkg" for s in SYMBOLS])
SILENCE = 0

# 50 pseudo-words built from the inventory (CV syllables; "S" is the "sh" fricative).
VOCABULARY = (
    "mala", "tiso", "bune", "kato", "pimu", "dena", "folu", "sami", "noke", "gabi",
    "hulo", "rema", "wita", "jusa", "lobe", "moti", "vaku", "zeni", "Sano", "pela",
    "dibu", "tuma", "kesi", "nura", "bofi", "lani", "gomu", "rako", "wema", "sipo",
    "fena", "huti", "mobas", "tilen", "kaSum", "pobi", "dazo", "nile", "vuta", "joma",
    "zuki", "rafo", "selo", "bami", "tuno", "gila", "waSe", "fumi", "koda", "limo",
)


@dataclasses.dataclass(frozen=True)
class Voice:
  """A speaker's voice (persistent per identity)."""
  f0: float  # Mean pitch (Hz).
  formant_scale: float  # Vocal-tract length factor on all formants (smaller tract → higher).
  breathiness: float  # Aspiration noise mixed into voicing, 0..1.


@dataclasses.dataclass(frozen=True)
class Utterance:
  """The latent speech of one video: timed phonemes, words, prosody and speaking style.

  Phones tile [0, duration] (pauses are the silence phone). Times in seconds.
  """
  phones: np.ndarray  # int [P] indices into SYMBOLS.
  starts: np.ndarray  # float64 [P]
  ends: np.ndarray  # float64 [P]
  stress: np.ndarray  # float64 [P] stress of the word each phone belongs to (0 in pauses).
  words: Tuple[str, ...]
  word_start: np.ndarray  # float32 [W]
  word_end: np.ndarray  # float32 [W]
  accents: np.ndarray  # float64 [W] time of each word's pitch accent (its first vowel).
  duration: float
  coarticulation: float  # Gaussian sigma (s) smoothing articulator targets.
  rest_jaw: float  # Jaw opening in pauses.
  brow_gain: float  # How strongly the brows follow pitch accents.
  declination: float  # Log-pitch drop over the utterance.
  drift: np.ndarray  # float64 [2, 3] slow pitch drift (amplitude, frequency Hz, phase).


class Articulation(NamedTuple):
  """Per-video-frame articulator positions, each float32 [T] in 0..1 (brow may be a bit above)."""
  jaw: np.ndarray  # Chin drop.
  lip_open: np.ndarray  # Gap between the inner lips.
  rounding: np.ndarray  # Lip protrusion / narrowing.
  spread: np.ndarray  # Lip widening.
  brow: np.ndarray  # Brow raise.


def sample_voice(rng: np.random.Generator) -> Voice:
  """A low (~95-140 Hz, longer tract) or high (~175-240 Hz, shorter tract) voice."""
  low = rng.random() < 0.5
  f0 = rng.uniform(95, 140) if low else rng.uniform(175, 240)
  scale = rng.uniform(0.92, 1.0) if low else rng.uniform(1.05, 1.15)
  return Voice(f0=float(f0), formant_scale=float(scale), breathiness=float(rng.uniform(0.02, 0.12)))


def topic_words(topic: int, topics: int) -> Tuple[str, ...]:
  """The `VOCABULARY` words of `topic` when the vocabulary is dealt into `topics` topics."""
  if not 0 <= topic < topics <= len(VOCABULARY):
    raise ValueError(f"topic {topic} of {topics}: need 0 <= topic < topics <= "
                     f"{len(VOCABULARY)}")
  return VOCABULARY[topic::topics]


def sample_utterance(rng: np.random.Generator, duration: float,
                     vocabulary: Tuple[str, ...] = VOCABULARY) -> Utterance:
  """Words from `vocabulary` separated by pauses until `duration` (s) is filled."""
  rate = rng.uniform(0.85, 1.2)  # Speaking rate: phone durations are divided by it.
  t = rng.uniform(0.04, 0.3)
  phones, starts, ends, stress = [SILENCE], [0.0], [t], [0.0]
  words, w_start, w_end, accents = [], [], [], []
  while True:
    word = vocabulary[rng.integers(len(vocabulary))]
    ids = [SYMBOLS.index(c) for c in word]
    lo, hi = DURATION[ids, 0], DURATION[ids, 1]
    durs = rng.uniform(lo, hi) / rate
    if t + durs.sum() > duration - 0.04:
      break
    s = rng.uniform(0.5, 1.0)
    bounds = t + np.concatenate([[0.0], np.cumsum(durs)])
    phones += ids
    starts += bounds[:-1].tolist()
    ends += bounds[1:].tolist()
    stress += [s] * len(ids)
    first_vowel = int(np.argmax(IS_VOWEL[ids]))
    words.append(word)
    w_start.append(bounds[0])
    w_end.append(bounds[-1])
    accents.append(0.5 * (bounds[first_vowel] + bounds[first_vowel + 1]))
    t = bounds[-1]
    gap = rng.uniform(0.03, 0.12) if rng.random() < 0.6 else rng.uniform(0.18, 0.45)
    phones.append(SILENCE)
    starts.append(t)
    ends.append(min(t + gap, duration))
    stress.append(0.0)
    t += gap
    if t >= duration:
      break
  if ends[-1] < duration:
    phones.append(SILENCE)
    starts.append(ends[-1])
    ends.append(duration)
    stress.append(0.0)
  ends[-1] = duration
  drift = np.stack([rng.uniform(0.01, 0.04, 2), rng.uniform(0.3, 1.5, 2),
                    rng.uniform(0, 2 * np.pi, 2)], axis=1)
  return Utterance(
      phones=np.array(phones, np.int64), starts=np.array(starts), ends=np.array(ends),
      stress=np.array(stress), words=tuple(words), word_start=np.array(w_start, np.float32),
      word_end=np.array(w_end, np.float32), accents=np.array(accents), duration=float(duration),
      coarticulation=float(rng.uniform(0.022, 0.035)), rest_jaw=float(rng.uniform(0.0, 0.12)),
      brow_gain=float(rng.uniform(0.4, 1.0)), declination=float(rng.uniform(0.05, 0.2)),
      drift=drift)


def _control(utt: Utterance) -> Tuple[np.ndarray, np.ndarray]:
  """Control-rate sample times (s) and the phone index active at each, both [n]."""
  n = int(np.ceil(utt.duration * CONTROL_RATE))
  times = (np.arange(n) + 0.5) / CONTROL_RATE
  idx = np.minimum(np.searchsorted(utt.ends, times, side="right"), len(utt.phones) - 1)
  return times, idx


def _smooth(x: np.ndarray, sigma_s: float) -> np.ndarray:
  return smoothing.gaussian(x, sigma_s * CONTROL_RATE)


def _accent_curve(utt: Utterance, times: np.ndarray, width: float) -> np.ndarray:
  """Sum of stress-weighted Gaussian bumps (width s) at the pitch accents, [n]."""
  if not len(utt.accents):
    return np.zeros_like(times)
  stress = np.array([utt.stress[np.searchsorted(utt.ends, a, side="right")] for a in utt.accents])
  z = (times[:, None] - utt.accents[None]) / width
  return (stress[None] * np.exp(-0.5 * z * z)).sum(axis=1)


def _loudness(utt: Utterance, times: np.ndarray, idx: np.ndarray) -> np.ndarray:
  """Prosodic gain [n]: stressed words are louder, the utterance declines a little."""
  stress = utt.stress[idx]
  return (0.55 + 0.45 * stress) * (1.0 - 0.15 * times / utt.duration)


def pitch(utt: Utterance, voice: Voice, times: np.ndarray) -> np.ndarray:
  """F0 contour (Hz) at `times` (s): declination + accents on stressed words + slow drift."""
  x = times / utt.duration
  log_f0 = utt.declination * (0.5 - x) + 0.18 * _accent_curve(utt, times, 0.09)
  amp, freq, phase = utt.drift.T
  log_f0 = log_f0 + (amp[None] * np.sin(2 * np.pi * freq[None] * times[:, None] + phase)).sum(1)
  return voice.f0 * np.exp(log_f0)


def articulate(utt: Utterance, num_frames: int, fps: float) -> Articulation:
  """Articulator trajectories at the video rate, frame i sampled at its centre (i + .5) / fps.

  Per-phone targets are smoothed with a Gaussian (coarticulation: neighbouring phones blend), so
  the mouth moves continuously; stressed words are articulated more widely.
  """
  times, idx = _control(utt)
  ph = utt.phones[idx]
  emphasis = 0.75 + 0.25 * utt.stress[idx]
  silent = ph == SILENCE
  jaw = np.where(silent, utt.rest_jaw, JAW[ph] * emphasis)
  lip_open = np.where(silent, 0.5 * utt.rest_jaw, jaw * (1.0 - CLOSURE[ph]))
  targets = np.stack([jaw, lip_open, ROUNDING[ph], SPREAD[ph]], axis=1)
  tracks = _smooth(targets, utt.coarticulation)
  brow = utt.brow_gain * _smooth(_accent_curve(utt, times, 0.12), 0.04)
  frame_t = (np.arange(num_frames) + 0.5) / fps
  out = [np.interp(frame_t, times, tracks[:, k]) for k in range(4)]
  out.append(np.interp(frame_t, times, brow))
  return Articulation(*(np.clip(x, 0.0, 1.2).astype(np.float32) for x in out))


def _resonance(freqs: np.ndarray, centre: np.ndarray, bandwidth: np.ndarray) -> np.ndarray:
  """Magnitude response of a two-pole resonator (unit gain at DC), broadcast over inputs."""
  b2 = (0.5 * bandwidth) ** 2
  return (centre ** 2 + b2) / np.sqrt(((freqs - centre) ** 2 + b2) * ((freqs + centre) ** 2 + b2))


def _stft_filter(x: np.ndarray, gains: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  """Time-varying filtering by weighted overlap-add: frame m is multiplied by gains[m].

  Frame m is centred at sample m * hop - n_fft / 2 of `x` (see `_frame_times`).
  """
  xp = np.pad(x, (n_fft, n_fft + hop))
  m = (len(xp) - n_fft) // hop + 1
  win = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft))  # sqrt periodic Hann.
  frames = sliding_window_view(xp, n_fft)[::hop][:m] * win
  y = np.fft.irfft(np.fft.rfft(frames, axis=1) * gains[:m], n=n_fft, axis=1) * win
  out = np.zeros(len(xp))
  r = n_fft // hop
  for k in range(r):  # Frames k, k + r, ... do not overlap: add them as one contiguous block.
    block = y[k::r].reshape(-1)
    out[k * hop:k * hop + block.size] += block
  out /= r / 2.0  # Sum of the squared window over the r overlapping frames.
  return out[n_fft:n_fft + len(x)]


def _frame_times(num_samples: int, sample_rate: int, n_fft: int, hop: int) -> np.ndarray:
  m = (num_samples + 2 * n_fft + hop - n_fft) // hop + 1
  return (np.arange(m) * hop - n_fft / 2) / sample_rate


def _glottal(phase: np.ndarray) -> np.ndarray:
  """Derivative of a Rosenberg glottal pulse at cycle phase (cycles), zero-mean per period."""
  x = phase % 1.0
  tp, tn = 0.4, 0.16
  flow = np.where(x < tp, 0.5 * (1 - np.cos(np.pi * x / tp)),
                  np.where(x < tp + tn, np.cos(0.5 * np.pi * (x - tp) / tn), 0.0))
  d = np.diff(flow, prepend=flow[0])
  return d - d.mean()


def synthesize(utt: Utterance, voice: Voice, num_samples: int, sample_rate: int,
               rng: np.random.Generator) -> np.ndarray:
  """Source–filter speech: int16 [num_samples] mono at `sample_rate`.

  Voicing is a glottal pulse train following `pitch`; frication and stop bursts are band-passed
  noise; both go through per-phone formant resonators (cascade magnitude, interpolated in time)
  and are scaled by the phone loudness times the prosodic gain.
  """
  times, idx = _control(utt)
  ph = utt.phones[idx]
  gain = _loudness(utt, times, idx) * LOUDNESS[ph]
  voiced_amp = _smooth(VOICING[ph] * gain, 0.008)
  noise_tgt = FRICATION[ph] * gain
  # Stop release: a 15 ms noise burst at the end of each stop closure.
  burst = IS_STOP[ph] & (utt.ends[idx] - times < 0.015)
  noise_tgt = np.where(burst, 0.5 * (0.55 + 0.45 * utt.stress[idx]), noise_tgt)
  noise_amp = _smooth(noise_tgt, 0.004)
  formants = _smooth(FORMANTS[ph], 0.02) * voice.formant_scale
  band = _smooth(NOISE_BAND[ph], 0.01)

  t = (np.arange(num_samples) + 0.5) / sample_rate
  f0 = pitch(utt, voice, t)
  va = np.interp(t, times, voiced_amp)
  source = _glottal(np.cumsum(f0 / sample_rate)) * 40.0 * va
  source += voice.breathiness * va * rng.standard_normal(num_samples)
  noise = rng.standard_normal(num_samples) * np.interp(t, times, noise_amp)

  n_fft, hop = 512, 128
  ft = _frame_times(num_samples, sample_rate, n_fft, hop)
  freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)[None]
  fm = np.stack([np.interp(ft, times, formants[:, k]) for k in range(3)], axis=1)
  bw = np.array([80.0, 100.0, 150.0])
  env = np.prod(_resonance(freqs[:, :, None], fm[:, None, :], bw), axis=2)
  env *= _resonance(freqs, 3500.0 * voice.formant_scale, 250.0)
  nc = np.interp(ft, times, band[:, 0])[:, None]
  nb = np.interp(ft, times, band[:, 1])[:, None]
  noise_env = 3.0 * np.exp(-0.5 * ((freqs - nc) / (0.5 * nb)) ** 2)
  y = _stft_filter(source, env, n_fft, hop) + _stft_filter(noise, noise_env, n_fft, hop)
  y += rng.uniform(1e-3, 4e-3) * np.std(y) * rng.standard_normal(num_samples)  # Room noise.
  peak = np.percentile(np.abs(y), 99.9) + 1e-9
  y *= rng.uniform(0.25, 0.6) * 32767 / peak
  return np.clip(np.round(y), -32768, 32767).astype(np.int16)

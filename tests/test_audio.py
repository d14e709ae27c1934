"""Log-mel front end: parity with librosa (the reference), the jax twin, and edge cases."""
import jax
import librosa
import numpy as np
import pytest

from input_pipeline import audio, ops

SR = 16000


def _chirp_plus_noise(num_samples=SR, seed=0):
  """A 100 Hz -> 7 kHz linear chirp plus white noise: energy in every mel bin over time."""
  t = np.arange(num_samples) / SR
  duration = num_samples / SR
  phase = 2 * np.pi * (100 * t + (7000 - 100) / (2 * duration) * t ** 2)
  noise = np.random.default_rng(seed).standard_normal(num_samples)
  return (0.5 * np.sin(phase) + 1e-4 * noise).astype(np.float32)


def _librosa_log_mel(y, drop_before_db):
  power = librosa.feature.melspectrogram(
      y=y, sr=SR, n_fft=512, win_length=320, hop_length=160, n_mels=80, center=True,
      pad_mode="constant", power=2.0)
  if drop_before_db:  # Our definition: the dB reference is the max over the returned frames.
    return ((librosa.power_to_db(power[:, :-1], ref=np.max, top_db=80) + 40) / 40).T
  return ((librosa.power_to_db(power, ref=np.max, top_db=80) + 40) / 40)[:, :-1].T


@pytest.mark.integration
def test_matches_librosa_on_chirp_plus_noise():
  y = _chirp_plus_noise()
  ours = audio.log_mel_spectrogram(y)
  assert ours.shape == (100, 80) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, _librosa_log_mel(y, drop_before_db=True), atol=1e-5)
  # The final centre frame is half padding, so here it does not hold the max: either order
  # of "drop the frame" and "power_to_db" gives the same numbers.
  np.testing.assert_allclose(ours, _librosa_log_mel(y, drop_before_db=False), atol=1e-5)
  assert ours.min() == pytest.approx((-80 + 40) / 40, abs=1e-6)  # top_db floor is reached,
  assert ours.max() == pytest.approx(1.0, abs=1e-6)  # and the clip max maps to 0 dB.


@pytest.mark.integration
def test_matches_librosa_non_default_args_and_odd_length():
  y = _chirp_plus_noise(SR + 123, seed=1)
  kwargs = dict(n_fft=1024, win_length=400, hop_length=200, n_mels=40, fmin=60.0, fmax=7600.0)
  ours = audio.log_mel_spectrogram(y, sample_rate=SR, top_db=60.0, offset=0.0, scale=1.0,
                                   **kwargs)
  power = librosa.feature.melspectrogram(y=y, sr=SR, center=True, pad_mode="constant",
                                         power=2.0, **kwargs)[:, :-1]
  expected = librosa.power_to_db(power, ref=np.max, top_db=60).T
  assert ours.shape == (len(y) // 200, 40)
  np.testing.assert_allclose(ours, expected, atol=4e-4)  # dB units: 1e-5 relative.


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [
    (16000, 512, 80, 0.0, None),
    (16000, 400, 40, 50.0, 7600.0),
    (22050, 1024, 128, 0.0, 11025.0),
])
def test_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax):
  ours = audio.mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
  ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                            dtype=np.float64)
  assert ours.shape == (n_fft // 2 + 1, n_mels)
  np.testing.assert_allclose(ours, ref.T, rtol=1e-9, atol=1e-12)


def test_mel_scale_round_trip_and_break_point():
  hz = np.array([0.0, 200.0, 999.0, 1000.0, 1001.0, 4000.0, 8000.0])
  np.testing.assert_allclose(audio.mel_to_hz(audio.hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)
  assert audio.hz_to_mel(1000.0) == pytest.approx(15.0)
  np.testing.assert_allclose(audio.hz_to_mel(hz), librosa.hz_to_mel(hz), rtol=1e-12)


def test_jax_twin_matches_numpy_batched_and_jitted():
  batch = np.stack([_chirp_plus_noise(seed=2), 0.01 * _chirp_plus_noise(seed=3)[::-1]])
  fn = jax.jit(lambda y: audio.log_mel_spectrogram_jax(y, n_mels=80))
  ours_jax = np.asarray(fn(batch))
  assert ours_jax.shape == (2, 100, 80) and ours_jax.dtype == np.float32
  for i in range(2):
    np.testing.assert_allclose(ours_jax[i], audio.log_mel_spectrogram(batch[i]), atol=1e-4)


@pytest.mark.parametrize("num_video_frames", [1, 7, 25])
def test_four_audio_frames_per_video_frame(num_video_frames):
  num_samples = num_video_frames * 640  # 16 kHz / 25 fps.
  y = _chirp_plus_noise(num_samples)
  assert audio.log_mel_spectrogram(y).shape == (4 * num_video_frames, 80)
  assert audio.log_mel_spectrogram_jax(y).shape == (4 * num_video_frames, 80)


def test_frame_count_drops_partial_hop():
  assert audio.log_mel_spectrogram(np.ones(16159, np.float32)).shape[0] == 100
  with pytest.raises(ValueError, match="log_mel_spectrogram"):
    audio.log_mel_spectrogram(np.ones(100, np.float32))


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0, 6000.0])
def test_pure_tone_lights_up_its_mel_bin(freq):
  t = np.arange(SR) / SR
  spec = audio.log_mel_spectrogram(np.sin(2 * np.pi * freq * t).astype(np.float32))
  centres = librosa.mel_frequencies(n_mels=82, fmin=0.0, fmax=SR / 2)[1:-1]
  profile = spec[10:-10].mean(axis=0)
  peak = int(np.argmax(profile))
  assert abs(peak - int(np.argmin(np.abs(centres - freq)))) <= 1
  assert profile[peak] == pytest.approx(1.0, abs=0.05)  # Near the clip max (0 dB).
  assert np.median(profile) < 0.0  # Most bins are > 40 dB below.


def test_gain_invariant_above_the_power_floor():
  y = _chirp_plus_noise()
  np.testing.assert_allclose(audio.log_mel_spectrogram(0.25 * y), audio.log_mel_spectrogram(y),
                             atol=1e-5)


@pytest.mark.parametrize("scale", [0.0, 1e-30])
def test_silence_is_finite(scale):
  y = np.full(SR, scale, np.float32)
  for out in (audio.log_mel_spectrogram(y), np.asarray(audio.log_mel_spectrogram_jax(y))):
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, 1.0)  # Every bin equals the (floored) reference: 0 dB.


def test_log_mel_op_writes_audio_and_keeps_waveform():
  y = _chirp_plus_noise()
  example = {"waveform": y, "label": 1}
  out = ops.build("log_mel(n_mels=80)")(example, np.random.default_rng(0))
  assert set(out) == {"waveform", "label", "audio"}
  assert out["waveform"] is y and "audio" not in example
  np.testing.assert_array_equal(out["audio"], audio.log_mel_spectrogram(y))
  with pytest.raises(ValueError, match="log_mel"):
    ops.build("log_mel")({"waveform": np.zeros((2, SR), np.float32)}, np.random.default_rng(0))


@pytest.mark.parametrize("spec,arg", [
    ("log_mel(win_length=1024)", "win_length"),
    ("log_mel(hop_length=0)", "hop_length"),
    ("log_mel(fmax=9000.0)", "fmax"),
    ("log_mel(fmin=8000.0)", "fmin"),
    ("log_mel(top_db=-1.0)", "top_db"),
    ("log_mel(scale=0.0)", "scale"),
])
def test_log_mel_rejects_bad_arguments(spec, arg):
  with pytest.raises(ValueError, match=f"log_mel: {arg}="):
    ops.build(spec)

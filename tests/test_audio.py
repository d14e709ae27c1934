"""Log-mel front ends: parity with librosa, torchaudio and tf.signal (the authors' frameworks),
the jax twin, frame counts and edge cases."""
import jax
import librosa
import numpy as np
import pytest

from input_pipeline import audio, ops

SR = 16000


def _chirp_plus_noise(num_samples=SR, seed=0, sr=SR, f_end=7000.0):
  """A 100 Hz -> f_end linear chirp plus white noise: energy in every mel bin over time."""
  t = np.arange(num_samples) / sr
  duration = num_samples / sr
  phase = 2 * np.pi * (100 * t + (f_end - 100) / (2 * duration) * t ** 2)
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


# --- Presets: the authors' front ends (see the table in input_pipeline/audio.py). ---
FAKEOUT_SR = 44100
FAKEOUT_CLIP = int(FAKEOUT_SR / 29.0 * 32)  # FakeOut's audio per clip: 32 frames at 29 fps.


def _torch_power(y, n_fft, hop, win, center, pad_mode):
  """torch.stft as torchaudio's Spectrogram calls it (periodic Hann), |.|^2 [n_freq, frames]."""
  import torch  # pylint: disable=import-outside-toplevel  # conftest imported it already.

  spec = torch.stft(torch.from_numpy(np.asarray(y, np.float64)), n_fft=n_fft, hop_length=hop,
                    win_length=win, window=torch.hann_window(win, dtype=torch.float64),
                    center=center, pad_mode=pad_mode or "reflect", normalized=False,
                    onesided=True, return_complex=True)
  return (spec.abs() ** 2).numpy()


def _mel_power(y, kwargs):
  """`audio.mel_power` with a preset's arguments (the log ones do not apply before the log)."""
  return audio.mel_power(y, **{k: v for k, v in kwargs.items()
                               if k not in ("amin", "top_db", "offset", "scale")})


def _db_re_max(mel, amin, top_db=80.0):
  """torchaudio amplitude_to_DB(multiplier=10, db_multiplier=log10(max(amin, max))) / FakeOut's
  power_to_db: both are this, written from their documented formulas."""
  db = 10 * np.log10(np.maximum(mel, amin)) - 10 * np.log10(max(amin, mel.max()))
  return np.maximum(db, db.max() - top_db)


def test_realforensics_preset_matches_torchaudio_with_the_authors_arguments():
  import math  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel  # conftest imported it already.
  import torchaudio  # pylint: disable=import-outside-toplevel  # Only this test needs it.

  # Their transform, as RealForensics stage1/data/data_module.py builds it (conf/data: 16 kHz,
  # 25 fps, audio2video 4, win 320, n_fft 512, 80 mels), constructed in float64: the authors
  # ran float32, whose window rounding alone moves bins 70 dB down by ~1%.
  default_dtype = torch.get_default_dtype()
  torch.set_default_dtype(torch.float64)
  try:
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, win_length=320, hop_length=int(round(16000 / 25 / 4)), n_fft=512,
        n_mels=80)
  finally:
    torch.set_default_dtype(default_dtype)
  y = _chirp_plus_noise(SR + 77, seed=9)
  mel = transform(torch.from_numpy(y.astype(np.float64)))  # [80, 101]
  mel = mel[:, :len(y) // 160]  # They keep fps * audio2video = 100 frames of 1 + N // hop.
  db = torchaudio.functional.amplitude_to_DB(
      mel, multiplier=10, amin=1e-10, db_multiplier=math.log10(max(1e-10, mel.max().item())),
      top_db=80)
  expected = ((db + 40) / 40).T.numpy()
  kwargs = audio.front_end("realforensics")
  np.testing.assert_allclose(_mel_power(y, kwargs), mel.T.numpy(), rtol=1e-5)
  ours = audio.log_mel_spectrogram(y, **kwargs)
  assert ours.shape == expected.shape == (100, 80)
  np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_realforensics_preset_matches_torch_stft_and_librosa_htk_filters():
  y = _chirp_plus_noise()
  power = _torch_power(y, 512, 160, 320, center=True, pad_mode="reflect")  # [257, 101]
  fb = librosa.filters.mel(sr=SR, n_fft=512, n_mels=80, fmin=0.0, fmax=None, htk=True, norm=None,
                           dtype=np.float64)
  mel_ref = (fb @ power)[:, :100]  # The authors keep fps * audio2video = 100 frames.
  expected = (_db_re_max(mel_ref, amin=1e-10) + 40) / 40
  kwargs = audio.front_end("realforensics")
  np.testing.assert_allclose(_mel_power(y, kwargs), mel_ref.T, rtol=1e-5)
  ours = audio.log_mel_spectrogram(y, **kwargs)
  assert ours.shape == (100, 80) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, expected.T, rtol=1e-5, atol=1e-5)
  assert ours.min() == pytest.approx(-1.0) and ours.max() == pytest.approx(1.0)
  # Reflect padding (not zeros) and peak-1 HTK filters (not Slaney areas) are what changed.
  assert np.abs(ours - audio.log_mel_spectrogram(y)).max() > 0.1
  op_out = ops.build("log_mel(preset='realforensics')")({"waveform": y}, None)["audio"]
  np.testing.assert_array_equal(op_out, ours)


@pytest.mark.integration
def test_realforensics_preset_matches_librosa_melspectrogram():
  y = _chirp_plus_noise(SR + 321, seed=4)
  power = librosa.feature.melspectrogram(
      y=y.astype(np.float64), sr=SR, n_fft=512, win_length=320, hop_length=160, n_mels=80,
      center=True, pad_mode="reflect", power=2.0, htk=True, norm=None)[:, :-1]
  expected = (librosa.power_to_db(power, ref=np.max, amin=1e-10, top_db=80) + 40) / 40
  kwargs = audio.front_end("realforensics")
  np.testing.assert_allclose(_mel_power(y, kwargs), power.T, rtol=1e-5)
  np.testing.assert_allclose(audio.log_mel_spectrogram(y, **kwargs), expected.T, rtol=1e-5,
                             atol=1e-5)


def test_fakeout_preset_frames_are_whole_windows_from_sample_zero():
  y = _chirp_plus_noise(FAKEOUT_CLIP, seed=5, sr=FAKEOUT_SR, f_end=20000.0)
  kwargs = audio.front_end("fakeout")
  power = _torch_power(y, 2048, 256, 2048, center=False, pad_mode=None)  # [1025, 183]
  fb = audio.mel_filterbank(FAKEOUT_SR, 2048, 80, mel_scale="htk", norm=None, triangles="mel")
  np.testing.assert_allclose(_mel_power(y, kwargs), power.T @ fb, rtol=1e-5)
  ours = audio.log_mel_spectrogram(y, **kwargs)
  assert ours.shape == (183, 80)  # FakeOut's audio input per clip.
  assert ours.max() == 0.0 and ours.min() == pytest.approx(-80.0)  # Raw dB, no affine.


@pytest.mark.integration
def test_fakeout_preset_matches_tf_signal():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  # 10+ s: only this test.

  y = _chirp_plus_noise(FAKEOUT_CLIP, seed=6, sr=FAKEOUT_SR, f_end=20000.0)
  stft = tf.signal.stft(tf.constant(y, tf.float64), frame_length=2048, frame_step=256,
                        pad_end=False)
  fb = tf.signal.linear_to_mel_weight_matrix(num_mel_bins=80, num_spectrogram_bins=1025,
                                             sample_rate=44100, lower_edge_hertz=0.0,
                                             upper_edge_hertz=22050.0, dtype=tf.float64)
  mel_ref = tf.matmul(tf.square(tf.abs(stft)), fb).numpy()  # [183, 80]
  np.testing.assert_allclose(audio.mel_filterbank(44100, 2048, 80, mel_scale="htk", norm=None,
                                                  triangles="mel"), fb.numpy(),
                             rtol=1e-9, atol=1e-12)
  kwargs = audio.front_end("fakeout")
  np.testing.assert_allclose(_mel_power(y, kwargs), mel_ref, rtol=1e-5)
  np.testing.assert_allclose(audio.log_mel_spectrogram(y, **kwargs),
                             _db_re_max(mel_ref, amin=1e-16), rtol=1e-5, atol=1e-4)
  for n in (2048, 2303, 2304, 56448):  # Frame count = tf.signal.stft's (pad_end=False).
    frames = tf.signal.stft(tf.zeros([n], tf.float64), 2048, 256, pad_end=False).shape[0]
    assert audio.log_mel_spectrogram(np.ones(n), **kwargs).shape == (frames, 80)


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [
    (16000, 512, 80, 0.0, None),
    (44100, 2048, 80, 0.0, None),
    (16000, 400, 40, 50.0, 7600.0),
])
def test_htk_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax):
  ours = audio.mel_filterbank(sr, n_fft, n_mels, fmin, fmax, mel_scale="htk", norm=None)
  ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True,
                            norm=None, dtype=np.float64)
  np.testing.assert_allclose(ours, ref.T, rtol=1e-9, atol=1e-12)
  assert ours.max() == pytest.approx(1.0, abs=0.1)  # Peak-1 triangles, sampled on FFT bins.


def test_htk_mel_scale_values_and_round_trip():
  hz = np.array([0.0, 700.0, 1000.0, 8000.0, 22050.0])
  mel = audio.hz_to_mel(hz, "htk")
  assert mel[1] == pytest.approx(2595 * np.log10(2.0))  # f = 700 Hz: 1 + f/700 = 2.
  np.testing.assert_allclose(mel, 1127.0 * np.log1p(hz / 700.0), rtol=1e-4)  # tf's form.
  np.testing.assert_allclose(mel, librosa.hz_to_mel(hz, htk=True), rtol=1e-12)
  np.testing.assert_allclose(audio.mel_to_hz(mel, "htk"), hz, rtol=1e-12, atol=1e-9)


def test_mel_domain_triangles_are_linear_in_mel():
  fb = audio.mel_filterbank(44100, 2048, 80, mel_scale="htk", norm=None, triangles="mel")
  bins_mel = audio.hz_to_mel(np.linspace(0, 22050, 1025), "htk")
  edges = np.linspace(0.0, audio.hz_to_mel(22050.0, "htk"), 82)
  k = int(np.searchsorted(bins_mel, 0.5 * (edges[40] + edges[41])))  # Rising half of filter 40.
  assert fb[k, 40] == pytest.approx((bins_mel[k] - edges[40]) / (edges[41] - edges[40]))
  assert fb[k, 39] == pytest.approx((edges[41] - bins_mel[k]) / (edges[41] - edges[40]))
  assert np.all(fb[0] == 0.0)  # DC carries no weight (tf.signal zeroes it explicitly).


@pytest.mark.parametrize("preset,num_samples,frames", [
    ("realforensics", 16000, 100),       # 1 s of 25 fps video: 4 frames per video frame.
    ("realforensics", 7 * 640, 28),
    ("realforensics", 257, 1),           # Reflect padding of 256 needs 257 samples.
    ("fakeout", FAKEOUT_CLIP, 183),      # The authors' clip: 32 frames at 29 fps, 44.1 kHz.
    ("fakeout", 32 * 44100 // 25, 213),  # 32 frames at 25 fps.
    ("fakeout", 64 * 44100 // 25, 434),  # 32 frames at stride 2 (64 frames) at 25 fps.
    ("fakeout", 2048, 1),
])
def test_preset_frame_count(preset, num_samples, frames):
  kwargs = audio.front_end(preset)
  y = _chirp_plus_noise(num_samples, sr=kwargs["sample_rate"])
  assert audio.log_mel_spectrogram(y, **kwargs).shape == (frames, 80)
  assert audio.log_mel_spectrogram_jax(y, **kwargs).shape == (frames, 80)


@pytest.mark.parametrize("preset,num_samples", [("realforensics", 256), ("fakeout", 2047)])
def test_preset_too_short_fails_naming_the_need(preset, num_samples):
  with pytest.raises(ValueError, match="log_mel_spectrogram: waveform has"):
    audio.log_mel_spectrogram(np.ones(num_samples), **audio.front_end(preset))


@pytest.mark.parametrize("preset,value", [("realforensics", 1.0), ("fakeout", 0.0), (None, 1.0)])
def test_silence_gives_the_presets_documented_value(preset, value):
  # A video without an audio track is preprocessed to silence (require_audio=False); FakeOut's
  # code gives such a video an all-zero log-mel, which is what its front end makes of silence.
  kwargs = audio.front_end(preset)
  y = np.zeros(kwargs["sample_rate"], np.float32)
  np.testing.assert_array_equal(audio.log_mel_spectrogram(y, **kwargs), value)
  np.testing.assert_array_equal(np.asarray(audio.log_mel_spectrogram_jax(y, **kwargs)), value)
  spec = f"log_mel(preset={preset!r})"
  np.testing.assert_array_equal(ops.build(spec)({"waveform": y}, None)["audio"], value)


@pytest.mark.parametrize("preset,atol", [("realforensics", 1e-4), ("fakeout", 5e-3)])
def test_jax_twin_matches_numpy_for_presets(preset, atol):
  kwargs = audio.front_end(preset)
  sr = kwargs["sample_rate"]
  batch = np.stack([_chirp_plus_noise(sr, seed=7, sr=sr), 0.01 * _chirp_plus_noise(sr, seed=8, sr=sr)])
  ours = np.asarray(jax.jit(lambda y: audio.log_mel_spectrogram_jax(y, **kwargs))(batch))
  for i in range(2):  # atol: 1e-4 of the [-1, 1] scale / 5e-3 dB of 80 dB (float32 on device).
    np.testing.assert_allclose(ours[i], audio.log_mel_spectrogram(batch[i], **kwargs), atol=atol)


def test_explicit_arguments_override_the_preset():
  y = _chirp_plus_noise(FAKEOUT_CLIP, sr=FAKEOUT_SR)
  out = ops.build("log_mel(preset='fakeout', n_mels=40, offset=40.0, scale=40.0)")(
      {"waveform": y}, None)["audio"]
  expected = audio.log_mel_spectrogram(y, **dict(audio.front_end("fakeout"), n_mels=40,
                                                 offset=40.0, scale=40.0))
  assert out.shape == (183, 40)  # The preset's 44.1 kHz / 2048 / 256 framing is kept.
  np.testing.assert_array_equal(out, expected)
  np.testing.assert_allclose(out, (audio.log_mel_spectrogram(
      y, **audio.front_end("fakeout", n_mels=40)) + 40) / 40, atol=1e-5)


def test_defaults_are_the_function_defaults():
  import inspect  # pylint: disable=import-outside-toplevel

  params = inspect.signature(audio.log_mel_spectrogram).parameters
  assert {k: params[k].default for k in audio.DEFAULTS} == audio.DEFAULTS
  assert audio.front_end(None) == audio.DEFAULTS


@pytest.mark.parametrize("spec,match", [
    ("log_mel(preset='fakeOut')", r"preset='fakeOut' is unknown; allowed: None or one of "
                                  r"\['fakeout', 'realforensics'\]"),
    ("log_mel(preset='realforensics', mel_scale='mel')", r"log_mel: mel_scale='mel' is not "
                                                         r"allowed; allowed: \['slaney', 'htk'\]"),
    ("log_mel(triangles='log')", r"log_mel: triangles='log'"),
    ("log_mel(pad_mode='edge')", r"log_mel: pad_mode='edge'"),
    ("log_mel(preset='fakeout', pad_mode='reflect')",
     r"log_mel: pad_mode='reflect' .*center=False"),
    ("log_mel(amin=0.0)", r"log_mel: amin=0.0"),
])
def test_log_mel_rejects_bad_presets_and_choices(spec, match):
  with pytest.raises(ValueError, match=match):
    ops.build(spec)

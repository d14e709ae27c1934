"""The base every experiment config starts from, and the variant parser they all use.

``base_config()`` is the shared trainer's whole schema with its defaults
(``fakedet.trainers.train.reference_config``: the same object the trainer validates a config
against, so the two cannot drift); an experiment file changes only what differs and says in a
comment where each value comes from (paper section, or the authors' released code).
"""
import ml_collections

from fakedet import config_variants
from fakedet.importers.realforensics import PIXEL_NORMALISATION
from fakedet.trainers import train

# RealForensics' input normalisation (their data/channel/rgb.yaml and grayscale.yaml): ImageNet
# statistics for RGB models; 0.421 / 0.165 for greyscale (one-channel) models.
RGB_MEAN, RGB_STD = PIXEL_NORMALISATION[3]
GREY_MEAN, GREY_STD = PIXEL_NORMALISATION[1]
# Their audio front end: torchaudio's MelSpectrogram defaults (HTK scale, no filter area
# normalisation, reflect padding), dB against the clip maximum, (dB + 40) / 40.
REALFORENSICS_LOG_MEL = "log_mel(preset='realforensics')"


def base_config() -> ml_collections.ConfigDict:
  """Every key the trainer reads, at its default (checkpoint every 1000 steps keeping 3,
  asynchronously; log every 50 steps; evaluate only at the end; no warm start; no model
  selection; data parallel over every device)."""
  return train.reference_config()


def variants(arg, where: str, flags=(), keys=()):
  """``arg`` (``"demo,holdout=neural_texture"``) → ``{"demo": True, "holdout": "..."}``;
  anything the config does not offer fails, listing what it does."""
  return config_variants.parse(arg, flags=flags, keys=keys, where=where)


def fill_value(mean) -> tuple:
  """The uint8 RGB colour that normalises to ~0 under ``mean`` (one entry = greyscale).

  RealForensics erases and time-masks AFTER normalisation, with zeros: the mean colour. fakedet's
  ops run on uint8 frames before the on-device normalisation, so they fill this colour instead
  (within half a grey level of the exact mean).
  """
  rgb = tuple(mean) * 3 if len(mean) == 1 else tuple(mean)
  return tuple(int(round(255 * m)) for m in rgb)


def realforensics_views(crop: int, size: int, *, mean, masking: bool, tmask: int = 12,
                        audio: bool = False) -> str:
  """The authors' two training views of a clip, as an op string (stage 1 and stage 2).

  ``video`` is the teacher's clean view and ``video_masked`` the student's: each its own random
  crop and flip; for RGB models the student alone turns grey with p 0.5; with ``masking`` the
  student gets random erasing (p 0.5, scale 0.02–0.33) and a time mask of up to ``tmask``
  frames (p 0.5), both filled with the mean colour (see `fill_value`). With ``audio`` the
  log-mels are made too (``audio`` clean, ``audio_masked`` for the audio student, which the
  time mask spans as well, plus a frequency mask of up to 27 bins).
  """
  ops = [f"random_crop(key='video', out_key='video_masked', size={crop}, resize={size})",
         f"random_crop(key='video', size={crop}, resize={size})",
         "flip(keys=('video',))", "flip(keys=('video_masked',))"]
  if len(mean) == 3:
    ops.append("grayscale(keys=('video_masked',))")
  if audio:
    ops += [REALFORENSICS_LOG_MEL, "copy(src='audio', dst='audio_masked')"]
  if masking:
    fill = fill_value(mean)
    audio_key = "'audio_masked'" if audio else "None"
    ops += [f"random_erase(key='video_masked', p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), "
            f"value={fill})",
            f"time_mask(video_key='video_masked', audio_key={audio_key}, max_frames={tmask}, "
            f"audio_ratio=4, p=0.5, video_value={fill})"]
    if audio:
      ops.append("freq_mask(key='audio_masked', max_bins=27, p=0.5)")
  return "|".join(ops)

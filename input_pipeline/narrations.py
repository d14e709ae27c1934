"""Narrations for MIL-NCE: word vocabulary, word2vec files, and the ``narrations`` data op.

MMV / MIL-NCE pair a clip with a *set* of temporally close narrations (ASR text), any of which
may be the one that describes it. Records carry word tokens with start/end times (``words``,
``word_start``, ``word_end``; the synthetic generator fills them with its pseudo-words); with
``input.with_words=True`` the sampler adds the clip's transcript to the example (times relative
to the clip start), and the ``narrations`` op turns it into fixed-size token arrays:

  a narration = ``words_per_narration`` consecutive words (a sliding window, stride 1, over the
  video's transcript); the ``num`` windows whose temporal centre is closest to the clip's centre
  are the clip's candidate positives, nearest first;
  ``text`` int32 [num, max_words] token ids (0 = ``<pad>``, 1 = ``<unk>``);
  ``text_valid`` bool [num] (False for padding narrations when the video has fewer windows).

The vocabulary is ``<pad>``, ``<unk>`` and then the words of ``vocab_path``, which is either a
user-supplied word2vec text file (one word followed by its vector per line, e.g. 300 floats; an
optional ``"<count> <dim>"`` header line is skipped) or a plain word list (one word per line, no
vectors: the text model then learns its embeddings). The vocabulary comes from the data, never
from code: a dataset may ship its word list as ``vocabulary.txt`` (the embedded synthetic
datasets do), named e.g. ``synthetic:narrated/vocabulary.txt`` (``sources.resolve_path``).
The text model reads the same file for its initial embeddings, so ids agree. Nothing is ever
downloaded.
"""
from __future__ import annotations

import functools
from typing import Dict, Optional, Tuple

import numpy as np
from etils import epath

from input_pipeline import sources
from input_pipeline.op_registry import register

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
TRANSCRIPT_KEYS = ("words", "word_start", "word_end", "clip_duration")


@functools.lru_cache(maxsize=4)
def load_vocabulary(vocab_path: str) -> Tuple[Tuple[str, ...], Optional[np.ndarray]]:
  """(words, vectors float32 [V, D] or None) from a word2vec text file or a word list, with
  ``<pad>``/``<unk>`` prepended (zero vectors). Raises naming the file and line on a malformed
  or inconsistent line."""
  if not vocab_path:
    raise ValueError("vocab_path is empty: give a word2vec text file or a word list (e.g. the "
                     "dataset's vocabulary.txt, 'synthetic:narrated/vocabulary.txt')")
  path = sources.resolve_path(vocab_path)
  words, vectors, dim = [PAD, UNK], [], None
  with epath.Path(path).open("r", encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      parts = [p for p in line.rstrip("\n").split(" ") if p]
      if not parts:
        continue
      if n == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
        continue  # "<count> <dim>" header.
      try:
        vec = np.asarray([float(v) for v in parts[1:]], np.float32)
      except ValueError:
        raise ValueError(f"{path}:{n}: expected a word, optionally followed by floats") from None
      if dim is None:
        dim = len(vec)
      if len(vec) != dim:
        raise ValueError(f"{path}:{n}: {len(vec)} values, expected {dim} like the first line")
      if parts[0] in (PAD, UNK):
        continue
      words.append(parts[0])
      vectors.append(vec)
  if dim is None:
    raise ValueError(f"{path}: no words")
  if dim == 0:  # A word list: no vectors.
    return tuple(words), None
  table = np.concatenate([np.zeros((2, dim), np.float32), np.stack(vectors)])
  return tuple(words), table


def vocabulary(vocab_path: str) -> Tuple[str, ...]:
  """The token list: ``<pad>``, ``<unk>``, then the file's words."""
  return load_vocabulary(vocab_path)[0]


@functools.lru_cache(maxsize=4)
def _token_ids(vocab_path: str) -> Dict[str, int]:
  return {w: i for i, w in enumerate(vocabulary(vocab_path))}


def tokenize(words, vocab_path: str, max_words: Optional[int] = None) -> np.ndarray:
  """Words → int32 ids (unknown words → ``<unk>``), truncated / padded to ``max_words``."""
  ids = _token_ids(vocab_path)
  out = [ids.get(w, UNK_ID) for w in words]
  if max_words is None:
    return np.asarray(out, np.int32)
  out = out[:max_words] + [PAD_ID] * max(0, max_words - len(out))
  return np.asarray(out, np.int32)


def select_narrations(word_start: np.ndarray, word_end: np.ndarray, clip_duration: float,
                      num: int, words_per_narration: int):
  """(first word, last word + 1) of the ``num`` windows nearest the clip centre (t = 0 is the
  clip start), nearest first, ties by position. Fewer when the transcript is short."""
  n = len(word_start)
  if n == 0:
    return []
  w = min(words_per_narration, n)
  first = np.arange(n - w + 1)
  centre = 0.5 * (np.asarray(word_start)[first] + np.asarray(word_end)[first + w - 1])
  order = np.argsort(np.abs(centre - 0.5 * clip_duration), kind="stable")[:num]
  return [(int(i), int(i) + w) for i in order]


@register("narrations")
def narrations(num: int = 4, words_per_narration: int = 4, max_words: int = 16,
               vocab_path: str = "", out_key: str = "text", parts: int = 1):
  """Op: the clip's transcript (``with_words=True``) → ``text`` int32 [num, max_words] and
  ``text_valid`` bool [num]; the transcript fields are removed (they vary in length).

  ``parts`` > 1: narrations for each of ``parts`` equal consecutive sub-clips (to go with
  ``split_time``) → ``text`` [parts, num, max_words], ``text_valid`` [parts, num].
  """
  for arg, value in (("num", num), ("words_per_narration", words_per_narration),
                     ("max_words", max_words), ("parts", parts)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"data op 'narrations': {arg} must be a positive int, got {value!r}")
  vocabulary(vocab_path)  # Fail fast on a bad file.

  def apply(example, rng):
    del rng  # Deterministic: the nearest narrations.
    missing = [k for k in TRANSCRIPT_KEYS if k not in example]
    if missing:
      raise KeyError(f"data op 'narrations' needs the clip transcript {missing}: set "
                     f"input.with_words=True; the example has {sorted(example)}")
    words = list(example["words"])
    part = float(example["clip_duration"]) / parts
    text = np.zeros((parts, num, max_words), np.int32)
    valid = np.zeros((parts, num), bool)
    for p in range(parts):  # times relative to the start of sub-clip p
      picks = select_narrations(np.asarray(example["word_start"]) - p * part,
                                np.asarray(example["word_end"]) - p * part, part, num,
                                words_per_narration)
      for k, (a, b) in enumerate(picks):
        text[p, k] = tokenize(words[a:b], vocab_path, max_words)
        valid[p, k] = True
    out = {k: v for k, v in example.items() if k not in TRANSCRIPT_KEYS}
    out[out_key] = text if parts > 1 else text[0]
    out[f"{out_key}_valid"] = valid if parts > 1 else valid[0]
    return out

  return apply


@register("split_time")
def split_time(keys=("video", "audio"), parts: int = 2):
  """Op: cuts each field's leading (time) axis into ``parts`` consecutive equal sub-clips,
  [T, ...] → [parts, T / parts, ...] (video frames and log-mel frames alike, so the pieces stay
  aligned). With ``narrations(parts=...)`` one sampled window gives ``parts`` temporally
  adjacent clips of the same video; the ``mmv`` objective flattens them into the batch, where
  they are each other's hardest negatives (same face, voice and background, other words)."""
  if not isinstance(parts, int) or parts < 2:
    raise ValueError(f"data op 'split_time': parts must be an int >= 2, got {parts!r}")
  keys = (keys,) if isinstance(keys, str) else tuple(keys)

  def apply(example, rng):
    del rng
    out = dict(example)
    for key in keys:
      x = np.asarray(example[key])
      if x.shape[0] % parts:
        raise ValueError(f"data op 'split_time': {key!r} has {x.shape[0]} steps, not divisible "
                         f"into {parts} parts")
      out[key] = x.reshape((parts, x.shape[0] // parts) + x.shape[1:])
    return out

  return apply

"""MMV's text branch: word embeddings → per-word linear + ReLU → max-pool over words.

FakeOut App. C.1 / MMV §3: word2vec embeddings (300-d) of the narration's tokens, a shared linear
layer to 2048 with ReLU on every word, then max-pooling over the (up to 16) words. The released
MMV model (deepmind-research ``mmv/models/mm_embeddings.py`` ``TextModule``) does exactly this
with a width-1 Conv1D as the linear layer, a frozen (``stop_gradient``) 65,536 × 300 table, and a
max over ALL word positions, padding included — the default here (``mask_padding=False``), so
converted weights give the released sentence features; ``mask_padding=True`` pools over real
words only (zeros for an empty narration). The embedding table comes from a user-supplied
word2vec text file (``input_pipeline.narrations.load_vocabulary``; then frozen, as in MMV), from a
converted checkpoint (``vocab_size`` rows), or, for a plain word list such as a dataset's
``vocabulary.txt`` (the synthetic pseudo-words have no word2vec), is random and trained.
Freezing is ``stop_gradient`` here plus weight decay 0 for ``.*word_embeddings.*`` in the
config's optimiser groups, so the table does not move at all.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fakedet.models import MODELS
from input_pipeline import narrations


def embedding_table(vocab_path: str) -> Optional[np.ndarray]:
  """The word2vec table [V, D] for ``vocab_path`` (row 0 = ``<pad>``, 1 = ``<unk>``), or None
  for a word list."""
  return narrations.load_vocabulary(vocab_path)[1]


class TextEncoder(nn.Module):
  """Attributes:
    vocab_path: word2vec text file, or a word list (one word per line: random embeddings,
      trained), e.g. the dataset's ``synthetic:narrated/vocabulary.txt``.
    embedding_dim: word-vector size (300 for word2vec; must match the file's).
    features: per-word linear output size (2048 in MMV).
    freeze_embeddings: keep a table from outside (word2vec file or converted checkpoint) fixed,
      as MMV does; a word list's random table is always trained.
    vocab_size: rows of the table; 0 = the vocabulary of ``vocab_path``. Set it to hold a
      converted checkpoint's table (65,536 in the released MMV; the table then counts as from
      outside); with a word2vec file it must equal the file's vocabulary.
    mask_padding: False (released MMV): max over all L positions, padding included; True: over
      the non-padding words only.
  """
  vocab_path: str = ""
  embedding_dim: int = 300
  features: int = 2048
  freeze_embeddings: bool = True
  vocab_size: int = 0
  mask_padding: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Token ids [..., L] (0 = padding) → dict of

      words: [..., L, features] per-word features after the linear + ReLU;
      pooled: [..., features] max over the words (``mask_padding``: over the non-padding words,
        zeros when there are none).
    """
    del train
    if not (self.vocab_path or self.vocab_size):
      raise ValueError("model.text_backbone needs vocab_path (a word2vec file or the dataset's "
                       "word list) or vocab_size (a converted checkpoint's table)")
    table = embedding_table(self.vocab_path) if self.vocab_path else None
    vocab = self.vocab_size or len(narrations.vocabulary(self.vocab_path))
    if table is not None:
      if table.shape[0] != vocab:
        raise ValueError(f"{self.vocab_path} has {table.shape[0]} words (with <pad>, <unk>); "
                         f"model.text_backbone.vocab_size={self.vocab_size}")
      if table.shape[1] != self.embedding_dim:
        raise ValueError(f"{self.vocab_path} has {table.shape[1]}-d vectors; "
                         f"model.text_backbone.embedding_dim={self.embedding_dim}")
      init = lambda *_: jnp.asarray(table)
    else:
      init = nn.initializers.normal(stddev=1.0)
    emb = self.param("word_embeddings", init, (vocab, self.embedding_dim), jnp.float32)
    if self.freeze_embeddings and (table is not None or self.vocab_size):
      emb = jax.lax.stop_gradient(emb)
    x = jnp.take(emb, tokens, axis=0)
    x = nn.relu(nn.Dense(self.features, name="word_proj")(x))
    if not self.mask_padding:
      return {"words": x, "pooled": jnp.max(x, axis=-2)}
    mask = (tokens != narrations.PAD_ID)[..., None]
    pooled = jnp.max(jnp.where(mask, x, -jnp.inf), axis=-2)
    pooled = jnp.where(jnp.any(mask, axis=-2), pooled, 0.0)
    return {"words": x, "pooled": pooled}


MODELS.register("text_encoder")(TextEncoder)

"""MMV's text branch: word embeddings → per-word linear + ReLU → max-pool over words.

FakeOut App. C.1 / MMV §3: word2vec embeddings (300-d) of the narration's tokens, a shared linear
layer to 2048 with ReLU on every word, then max-pooling over the (up to 16) words. The embedding
table comes from a user-supplied word2vec text file (``input_pipeline.narrations.load_vocabulary``;
then frozen, as in MMV) or, for a plain word list such as a dataset's ``vocabulary.txt`` (the
synthetic pseudo-words have no word2vec), is random and trained.
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
    freeze_embeddings: keep a word2vec table fixed (ignored for random embeddings).
  """
  vocab_path: str = ""
  embedding_dim: int = 300
  features: int = 2048
  freeze_embeddings: bool = True

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool) -> Dict[str, jax.Array]:
    """Token ids [..., L] (0 = padding) → dict of

      words: [..., L, features] per-word features after the linear + ReLU;
      pooled: [..., features] max over the non-padding words (zeros when there are none).
    """
    del train
    table = embedding_table(self.vocab_path)
    vocab = len(narrations.vocabulary(self.vocab_path))
    if table is not None:
      if table.shape[1] != self.embedding_dim:
        raise ValueError(f"{self.vocab_path} has {table.shape[1]}-d vectors; "
                         f"model.text_backbone.embedding_dim={self.embedding_dim}")
      init = lambda *_: jnp.asarray(table)
    else:
      init = nn.initializers.normal(stddev=1.0)
    emb = self.param("word_embeddings", init, (vocab, self.embedding_dim), jnp.float32)
    if table is not None and self.freeze_embeddings:
      emb = jax.lax.stop_gradient(emb)
    x = jnp.take(emb, tokens, axis=0)
    x = nn.relu(nn.Dense(self.features, name="word_proj")(x))
    mask = (tokens != narrations.PAD_ID)[..., None]
    pooled = jnp.max(jnp.where(mask, x, -jnp.inf), axis=-2)
    pooled = jnp.where(jnp.any(mask, axis=-2), pooled, 0.0)
    return {"words": x, "pooled": pooled}


MODELS.register("text_encoder")(TextEncoder)

"""The semantic backend: the user as one sentence of history titles in time order (LLM-Rec),
encoded by a sentence encoder; each candidate scored by the cosine with its title embedding.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mdrec.generate.backends.base import ranked_results
from mdrec.generate.encoder import encode, load_encoder


def history_sentence(titles: list, domains: list) -> str:
    return "; ".join(f"{d}: {t}" for t, d in zip(titles, domains) if t)


class SemanticScorer:
    def __init__(self, model: str, batch_size: int, threads: int, item_embeddings: np.ndarray, per_user: int):
        self.encoder = load_encoder(model, threads)
        self.batch_size, self.items, self.per_user = batch_size, item_embeddings, per_user

    def __call__(self, batch: pa.Table) -> pa.Table:
        sentences = [history_sentence(t, d) for t, d in zip(batch["history_titles"].to_pylist(),
                                                             batch["history_domains"].to_pylist())]
        users = encode(self.encoder, sentences, self.batch_size)
        scores = [self.items[np.asarray(c, dtype=np.int64)] @ u for c, u in zip(batch["candidates"].to_pylist(), users)]
        return ranked_results(batch, scores, self.per_user)

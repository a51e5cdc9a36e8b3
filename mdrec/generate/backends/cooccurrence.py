"""The co-occurrence backend: each candidate scored by log(1 + its cross-domain votes).

A candidate's votes are the training users who have one of the user's source items and that
candidate (see `mdrec.generate.cooccurrence`); the context carries them, so the scorer needs no
model. It reads no titles: the collaborative reference a text backend must beat.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mdrec.generate.backends.base import ranked_results


class CooccurrenceScorer:
    def __init__(self, per_user: int):
        self.per_user = per_user

    def __call__(self, batch: pa.Table) -> pa.Table:
        scores = [np.log1p(np.asarray(v, dtype=np.float64)) for v in batch["candidate_votes"].to_pylist()]
        return ranked_results(batch, scores, self.per_user)

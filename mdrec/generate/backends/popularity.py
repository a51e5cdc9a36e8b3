"""The popularity backend: each candidate scored by log(1 + its training count in the domain).

The floor every other backend must beat: it knows nothing about the user beyond which popular
items they already have.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mdrec import faults
from mdrec.generate.backends.base import ranked_results


class PopularityScorer:
    def __init__(self, per_user: int):
        self.per_user = per_user

    def __call__(self, batch: pa.Table) -> pa.Table:
        faults.slow_batch()
        scores = [np.log1p(np.asarray(p, dtype=np.float64)) for p in batch["candidate_popularity"].to_pylist()]
        return ranked_results(batch, scores, self.per_user)

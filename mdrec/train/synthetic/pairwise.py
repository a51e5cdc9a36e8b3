"""`pairwise` (LLMRec, Wei et al. WSDM 2024): synthetic rows as preference pairs, not positives.

Each synthetic row (user, preferred item) is paired with the candidate its backend found least
likely for that user (`rejected_item_idx`; a uniform item of the domain where the backend named
none, as the oracle does). An auxiliary BPR term, -log sigmoid(f(u, preferred) - f(u, rejected)),
is added to the real rows' loss with its own weight; each batch takes at most `max_share`
pairs per real positive, so the pairs can steer but never outweigh the real data (LLMRec samples
about 10% of users per batch). The rows are part of the context too.
"""

from __future__ import annotations

from pydantic import Field

from mdrec.train.synthetic.base import ModeParams, SyntheticMode


class PairwiseParams(ModeParams):
    weight: float = Field(1.0, gt=0, le=10, description="Weight of one pair's BPR term against one real example's "
                          "loss (the term is summed over the pairs and divided by the step's examples).")
    max_share: float = Field(0.1, gt=0, le=1, description="At most this many pairs per real positive in a batch.")


class Pairwise(SyntheticMode):
    name = "pairwise"
    Params = PairwiseParams

    def pair_weight(self) -> float:
        return self.params.weight

    def pair_share(self) -> float:
        return self.params.max_share

    def describe(self) -> str:
        return (f"synthetic rows are (preferred, rejected) pairs in a BPR term of weight {self.params.weight:g}, "
                f"at most {self.params.max_share:g} per real positive in a batch; part of the context")

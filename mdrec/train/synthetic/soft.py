"""`soft` (SCALR): a synthetic row weighs what its backend's calibrated score says it is worth.

Each synthetic positive's loss weight is `scale` times P(the pick is right), the backend's score
through a Platt fit on the cold-start validation users (see calibration.py): a confident pick
counts nearly as a real row, a guess barely counts. The rows are part of the context as under
`label`.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from mdrec.train.synthetic.base import ModeParams, SyntheticMode


class SoftParams(ModeParams):
    scale: float = Field(1.0, gt=0, le=10, description="A synthetic positive's loss weight is scale x its "
                         "calibrated probability of being right (real rows weigh 1).")


class Soft(SyntheticMode):
    name = "soft"
    Params = SoftParams
    calibrated = True

    def loss_weight(self) -> float:
        return self.params.scale  # the most a row can weigh; each row's own weight comes from row_weights

    def row_weights(self, probability: np.ndarray | None, n: int) -> np.ndarray:
        return self.params.scale * np.asarray(probability, dtype=np.float64)

    def describe(self) -> str:
        return (f"synthetic rows are positives weighing {self.params.scale:g} x their backend's calibrated "
                "probability of being right, and part of the context")

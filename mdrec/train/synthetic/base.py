"""What a synthetic-data training mode decides: where a run's synthetic rows go.

A synthetic row (user, item, domain) can be put in two places:
- the **loss**: a training example, a positive with its own weight and sampled negatives, for
  some or all epochs;
- the **context**: what a model reads about a user (SASRec's history, LightGCN's graph, EMCDR's
  active domains, full-catalog evaluation's seen items), never a target of the loss.
A mode is one choice of both. Its parameters are a pydantic model beside its code, validated when
the config is read, like a model's.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict


class ModeParams(BaseModel):
    """A mode's parameters (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticMode:
    """One way to train on synthetic rows. Subclasses set `name`, `Params` and the two decisions."""

    name: ClassVar[str]
    Params: ClassVar[type[ModeParams]] = ModeParams
    in_context: ClassVar[bool] = True  # synthetic rows are part of what models read about users
    calibrated: ClassVar[bool] = False  # its row weights need the backend's scores as probabilities

    def __init__(self, params: ModeParams):
        self.params = params

    def loss_weight(self) -> float | None:
        """Loss weight of a synthetic positive (its sampled negatives weigh the same); None: not in the loss."""
        return None

    def row_weights(self, probability: np.ndarray | None, n: int) -> np.ndarray:
        """Each of `n` synthetic positives' loss weight; `probability`: their calibrated scores
        (only for modes with `calibrated`). Default: all `loss_weight()`."""
        return np.full(n, self.loss_weight(), dtype=np.float64)

    def pair_weight(self) -> float | None:
        """Weight of an auxiliary BPR term on (user, preferred, rejected) pairs; None: no pairs."""
        return None

    def pair_share(self) -> float | None:
        """At most this many pairs per real positive in a batch."""
        return None

    def loss_epochs(self) -> int | None:
        """Synthetic positives are in the loss for the first this-many epochs; None: every epoch."""
        return None

    def fingerprint(self) -> dict[str, Any]:
        """What of this mode changes the trained weights (hashed into each run's fingerprint)."""
        return {"mode": self.name, **self.params.model_dump(mode="json")}

    def describe(self) -> str:
        """One line for consoles and the report."""
        raise NotImplementedError

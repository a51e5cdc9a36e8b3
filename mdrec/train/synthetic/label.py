"""`label`: synthetic rows are weighted positives, every epoch, and part of the context."""

from __future__ import annotations

from pydantic import Field

from mdrec.train.synthetic.base import ModeParams, SyntheticMode


class LabelParams(ModeParams):
    weight: float = Field(1.0, gt=0, le=10, description="Loss weight of a synthetic positive (and of the "
                          "negatives drawn for it); real rows weigh 1.")


class Label(SyntheticMode):
    name = "label"
    Params = LabelParams

    def loss_weight(self) -> float:
        return self.params.weight

    def fingerprint(self) -> dict:
        # The payload runs had before modes existed, so committed label runs stay current.
        return {"weight": self.params.weight}

    def describe(self) -> str:
        return f"synthetic rows are positives of weight {self.params.weight:g} and part of the context"

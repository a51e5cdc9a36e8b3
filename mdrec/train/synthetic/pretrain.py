"""`pretrain`: real plus synthetic positives for the first epochs, then real rows only.

The synthetic rows shape the embeddings early (a warm start for cold users and items) and the
fine-tuning epochs pull the model back to the real distribution; early stopping on validation
picks the epoch, so a run whose fine-tuning does not help keeps its best pretraining epoch. The
rows stay in the context throughout (the user is the same person in both phases).
"""

from __future__ import annotations

from pydantic import Field

from mdrec.train.synthetic.base import ModeParams, SyntheticMode


class PretrainParams(ModeParams):
    weight: float = Field(1.0, gt=0, le=10, description="Loss weight of a synthetic positive while pretraining.")
    epochs: int = Field(2, ge=1, description="Epochs with synthetic positives in the loss; real rows only after.")


class Pretrain(SyntheticMode):
    name = "pretrain"
    Params = PretrainParams

    def loss_weight(self) -> float:
        return self.params.weight

    def loss_epochs(self) -> int:
        return self.params.epochs

    def describe(self) -> str:
        return (f"synthetic rows are positives of weight {self.params.weight:g} for {self.params.epochs} epoch(s), "
                "then real rows only; part of the context throughout")

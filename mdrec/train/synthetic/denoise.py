"""Denoising synthetic positives while training: truncated cross-entropy (T-CE).

Wang et al., "Denoising Implicit Feedback for Recommendation" (WSDM 2021): noisy positives are the
hard ones early in training, so each step drops the largest-loss positives at a rate that grows
from 0 to `max_rate` (their Eq. 4: ε(T) = min(αT, ε_max)). Here only **synthetic** positives are
candidates for dropping (real rows are trusted), and the rate reaches `max_rate` after
`warmup_epochs`. A dropped positive gets weight 0 for that step: it leaves the weighted mean of the
loss, its sampled negatives stay. It applies to every mode that puts synthetic rows in the loss
(label, soft, pretrain); the arm's name gets `+tce`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DenoiseConfig(BaseModel):
    """`train.synthetic.denoise`: how synthetic positives are denoised during training."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["tce"] = Field("tce", description="tce: truncated cross-entropy (drop the largest-loss "
                                 "synthetic positives of each batch).")
    max_rate: float = Field(0.2, gt=0, lt=1, description="Share of a batch's synthetic positives dropped once the "
                            "rate has grown (T-CE's ε_max; the paper tries 0.05-0.3).")
    warmup_epochs: float = Field(1.0, ge=0, description="Epochs over which the rate grows linearly from 0 to "
                                 "max_rate (0: max_rate from the first step).")

    @property
    def suffix(self) -> str:
        """What the arm's name gains: raw -> raw+tce."""
        return self.name


class TruncatedLoss:
    """The drop rate as training advances, and the weights of one step's examples after dropping."""

    def __init__(self, config: DenoiseConfig, steps_per_epoch: int, start_epoch: int = 0):
        self.config = config
        self.warmup_steps = max(1.0, config.warmup_epochs * max(1, steps_per_epoch))
        self.step = start_epoch * max(1, steps_per_epoch)  # a resumed run continues the schedule
        self.dropped = 0  # synthetic positives dropped so far (reset by whoever reports them)

    @property
    def rate(self) -> float:
        if self.config.warmup_epochs == 0:
            return self.config.max_rate
        return self.config.max_rate * min(1.0, self.step / self.warmup_steps)

    def advance(self) -> None:
        self.step += 1

    def weights(self, losses, label, weight, synthetic):
        """`weight` (a tensor, or None for all ones) with the `rate` largest-loss synthetic positives
        set to 0. `losses` are the per-example losses (no gradient needed)."""
        import torch

        weight = torch.ones_like(losses) if weight is None else weight
        candidates = torch.nonzero(synthetic & (label > 0.5)).flatten()
        drop = int(len(candidates) * self.rate)
        if drop == 0:
            return weight
        worst = candidates[torch.topk(losses.detach()[candidates], drop).indices]
        self.dropped += drop
        kept = weight.clone()
        kept[worst] = 0.0
        return kept

"""The training loop every model shares, in one process (Ray Train wraps it per worker)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from mdrec.models.base import Batch, RecModel
from mdrec.train.examples import Candidates, Examples
from mdrec.train.synthetic.denoise import TruncatedLoss


@dataclass
class EpochResult:
    epoch: int
    loss: float
    examples: int


class LossOf(torch.nn.Module):
    """A model's training view: forward returns its loss, auxiliary terms included.

    DDP wraps this, not the model, so every parameter the loss touches (EMCDR's mapping,
    LightGCN's penalty) is part of the forward pass that DDP synchronises.
    """

    def __init__(self, model: RecModel, denoise: "TruncatedLoss | None" = None):
        super().__init__()
        self.model = model
        self.denoise = denoise

    def forward(self, batch: Batch, pairs: "Pairs | None" = None) -> torch.Tensor:
        logits = None
        if self.denoise is not None and batch.synthetic is not None and self.denoise.rate > 0:
            # T-CE: the largest-loss synthetic positives of this step get weight 0.
            logits = self.model(batch)
            losses = self.model.example_losses(batch, logits.detach())
            batch = replace(batch, weight=self.denoise.weights(losses, batch.label, batch.weight, batch.synthetic))
        loss = self.model.loss(batch, logits)
        if pairs is not None and len(pairs.preferred):
            # BPR on (user, preferred, rejected): the pairwise synthetic mode's auxiliary term. Summed
            # over the pairs and divided by the step's examples, so a pair weighs `weight` real
            # examples (a mean over the few pairs of a step made each weigh hundreds of them).
            margin = self.model(pairs.preferred) - self.model(pairs.rejected)
            loss = loss + pairs.weight * -torch.nn.functional.logsigmoid(margin).sum() / len(batch)
        return loss


@dataclass
class Pairs:
    """Preference pairs for one step: the same users, contexts and times, two items each."""

    preferred: Batch
    rejected: Batch
    weight: float


def train_step(loss_of: torch.nn.Module, batch: Batch, optimizer: torch.optim.Optimizer,
               pairs: Pairs | None = None) -> float:
    """One optimizer step; `loss_of` is a LossOf, or a DDP wrapper around one."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_of(batch) if pairs is None else loss_of(batch, pairs)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train_epoch(model: RecModel, examples: Examples, optimizer: torch.optim.Optimizer, batch_size: int,
                rng: np.random.Generator) -> float:
    model.train()
    loss_of = LossOf(model)
    total, seen = 0.0, 0
    for batch in examples.batches(batch_size, rng):
        total += train_step(loss_of, batch, optimizer) * len(batch)
        seen += len(batch)
    return total / max(seen, 1)


@torch.no_grad()
def score(model: RecModel, candidates: Candidates, batch_size: int = 8192) -> np.ndarray:
    """Logits of every candidate, shaped like `candidates.items`."""
    model.eval()
    flat = candidates.flat()
    out = np.empty(len(flat), dtype=np.float32)
    for start in range(0, len(flat), batch_size):
        end = start + batch_size
        part = Batch(flat.user[start:end], flat.item[start:end], flat.domain[start:end], flat.ts[start:end])
        out[start:end] = model(part).float().cpu().numpy()
    return out.reshape(candidates.items.shape)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """AdamW: with weight_decay 0 it is Adam; decoupled decay shrinks the embeddings of items a
    batch does not touch too, which is what keeps rarely-seen items from keeping random weights."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def fit(
    model: RecModel,
    make_examples: Callable[[int], Examples],
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 1024,
    seed: int = 0,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> list[EpochResult]:
    """Train for `epochs`; `make_examples(epoch)` draws that epoch's examples (fresh negatives)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = make_optimizer(model, lr, weight_decay)
    history = []
    for epoch in range(epochs):
        examples = make_examples(epoch)
        result = EpochResult(epoch, train_epoch(model, examples, optimizer, batch_size, rng), len(examples))
        history.append(result)
        if on_epoch:
            on_epoch(result)
    return history

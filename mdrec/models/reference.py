"""Reference recommenders: what every learned model must beat.

- `popularity`: an item's number of training rows under the protocol (its log, times a positive
  scale); so a user's ranking is the domain's best-seller list. On the shared data it beats the
  learned models on cold-start Food (README), which is why it is in the zoo.
- `random`: a fixed pseudo-random score per (user, item), new for every training seed; the chance
  level of every metric, with realistic top-K lists (a constant scorer would tie everything).

Both train through the same loop as every model: each has a scalar or two to fit (a bias, the
popularity scale), which calibrates logloss and never changes a ranking.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mdrec.models.base import Batch, Dims, ModelConfig, RecModel, register

_MASK = 0x7FFFFFFF


@register("popularity")
class Popularity(RecModel):
    def __init__(self, config: ModelConfig, dims: Dims):
        super().__init__(config, dims)
        self.scale = nn.Parameter(torch.zeros(()))  # softplus(0) > 0: more rows never rank lower
        self.bias = nn.Parameter(torch.zeros(()))
        self.register_buffer("log_count", torch.zeros(dims.num_items), persistent=False)

    def attach(self, context) -> None:
        # The protocol's training rows (and, for an augmented variant, its synthetic rows).
        counts = np.bincount(context.items, minlength=self.dims.num_items)[: self.dims.num_items]
        self.log_count = torch.from_numpy(np.log1p(counts).astype(np.float32)).to(self.bias.device)

    def forward(self, batch: Batch) -> torch.Tensor:
        return nn.functional.softplus(self.scale) * self.log_count[batch.item] + self.bias


@register("random")
class Random(RecModel):
    def __init__(self, config: ModelConfig, dims: Dims):
        super().__init__(config, dims)
        self.bias = nn.Parameter(torch.zeros(()))
        # Drawn from the run's seeded torch RNG and saved with the model: training and evaluation
        # see the same scores, and each seed a different draw.
        self.register_buffer("salt", torch.randint(0, _MASK, (1,), dtype=torch.int64))

    def forward(self, batch: Batch) -> torch.Tensor:
        # An integer hash of (user, item, salt), uniform in [0, 1): products stay below 2^62.
        x = (batch.user * 0x9E3779B1 + batch.item * 0x85EBCA77 + self.salt) & _MASK
        x = ((x ^ (x >> 15)) * 0x2C1B3C6D) & _MASK
        x = ((x ^ (x >> 12)) * 0x297A2D39) & _MASK
        x = x ^ (x >> 15)
        return self.bias + x.to(torch.float32) / float(_MASK) - 0.5

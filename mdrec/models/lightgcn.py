"""LightGCN (He et al., SIGIR 2020) over the user-item graph of every domain at once.

User and item embeddings are smoothed over the normalised bipartite graph (no weights, no
non-linearity) and averaged across layers; a score is the dot product of the two. Because the
graph spans all domains, a user's neighbours in a rich domain shape their embedding in a sparse
one. The graph comes from the training rows (`attach`); propagated embeddings are cached while
the model is in eval mode, since they do not change between scoring batches.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import nn

from mdrec.models.base import Batch, Dims, ModelConfig, RecModel, register


class LightGCNConfig(ModelConfig):
    embedding_dim: int = Field(64, gt=0, description="Size of user and item embeddings.")
    num_layers: int = Field(2, ge=0, description="Propagation layers (0 is plain matrix factorisation).")
    l2: float = Field(1e-4, ge=0.0, description="L2 penalty on the batch's layer-0 embeddings.")


def normalized_adjacency(num_users: int, num_items: int, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the bipartite graph (users first, then items), repeated edges counted once."""
    pairs = np.unique(np.stack([users, items], axis=1), axis=0) if len(users) else np.zeros((0, 2), np.int64)
    u, i = pairs[:, 0], pairs[:, 1] + num_users
    rows, cols = np.concatenate([u, i]), np.concatenate([i, u])
    degree = np.bincount(rows, minlength=num_users + num_items).astype(np.float32)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1.0)), 0.0).astype(np.float32)
    values = inv_sqrt[rows] * inv_sqrt[cols]
    n = num_users + num_items
    return torch.sparse_coo_tensor(np.stack([rows, cols]), values, (n, n), check_invariants=True).coalesce()


@register("lightgcn")
class LightGCN(RecModel):
    config_class = LightGCNConfig

    def __init__(self, config: LightGCNConfig, dims: Dims):
        super().__init__(config, dims)
        self.user = nn.Embedding(dims.num_users, config.embedding_dim)
        self.item = nn.Embedding(dims.num_items, config.embedding_dim)
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=0.1)
        self.graph: torch.Tensor | None = None
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None

    def attach(self, context) -> None:
        self.graph = normalized_adjacency(self.dims.num_users, self.dims.num_items, context.row_users(), context.items)
        self._cached = None

    def train(self, mode: bool = True):
        self._cached = None  # weights are about to change (or just did)
        return super().train(mode)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.graph is None:
            raise RuntimeError("lightgcn needs the interaction graph (attach)")
        if self._cached is not None:
            return self._cached
        layer = torch.cat([self.user.weight, self.item.weight])
        graph = self.graph.to(layer.device)
        total = layer
        for _ in range(self.config.num_layers):
            layer = graph @ layer
            total = total + layer
        mean = total / (self.config.num_layers + 1)
        out = (mean[: self.dims.num_users], mean[self.dims.num_users:])
        if not self.training:
            self._cached = out
        return out

    def forward(self, batch: Batch) -> torch.Tensor:
        users, items = self.propagate()
        return (users[batch.user] * items[batch.item]).sum(-1)

    def loss(self, batch: Batch, logits: torch.Tensor | None = None) -> torch.Tensor:
        base = super().loss(batch, logits)
        ego = self.user(batch.user).pow(2).sum(-1) + self.item(batch.item).pow(2).sum(-1)
        return base + self.config.l2 * ego.mean() / 2

"""SASRec (Kang & McAuley, ICDM 2018) over the user's mixed cross-domain history.

The history before each example (every domain, time order, at most `max_len` items) goes
through causal self-attention; the last position's state, plus an embedding of the domain being
asked for, is matched against the candidate item's embedding. So a Kitchen history can rank Food
items, which is what a cold domain needs.

Two things keep it fast on CPU without changing the result:
- examples that share a history (a positive and its negatives, a case and its candidates) are
  encoded once;
- histories are encoded in length buckets, each cut to its longest member, because most users
  have far fewer than `max_len` items. Positions count back from the newest item, so cutting
  the left padding does not move any item's position embedding.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from mdrec.models.base import Batch, Dims, ModelConfig, RecModel, distinct_histories, register

BUCKETS = (4, 8, 16, 32, 64, 128, 256)


class SASRecConfig(ModelConfig):
    embedding_dim: int = Field(64, gt=0, description="Size of item, position and domain embeddings.")
    max_len: int = Field(50, gt=0, le=512, description="Most recent history items the model reads.")
    num_layers: int = Field(2, gt=0, description="Self-attention blocks.")
    num_heads: int = Field(2, gt=0, description="Attention heads; must divide embedding_dim.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout on embeddings and inside the blocks.")


@register("sasrec")
class SASRec(RecModel):
    config_class = SASRecConfig

    def __init__(self, config: SASRecConfig, dims: Dims):
        super().__init__(config, dims)
        d = config.embedding_dim
        if d % config.num_heads:
            from mdrec.errors import ConfigError

            raise ConfigError(f"model 'sasrec': num_heads {config.num_heads} does not divide embedding_dim {d}")
        self.item = nn.Embedding(dims.num_items + 1, d, padding_idx=dims.num_items)  # last row: padding
        self.position = nn.Embedding(config.max_len, d)  # 0 = the newest item
        self.domain = nn.Embedding(dims.num_domains, d)
        self.item_bias = nn.Embedding(dims.num_items + 1, 1)
        for emb in (self.item, self.position, self.domain):
            nn.init.normal_(emb.weight, std=0.05)
        nn.init.zeros_(self.item_bias.weight)
        layer = nn.TransformerEncoderLayer(d, config.num_heads, dim_feedforward=d, dropout=config.dropout,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.input_dropout = nn.Dropout(config.dropout)
        self.context = None

    def attach(self, context) -> None:
        self.context = context

    def histories(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The distinct histories of the batch (n, max_len) and, per example, which one is its own."""
        if self.context is None or batch.ts is None:
            raise RuntimeError("sasrec needs the interaction context (attach) and batch.ts")
        return distinct_histories(self.context, batch, self.config.max_len)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        """(n, L) left-padded item ids -> (n, d): the state after the newest item."""
        n, width = history.shape
        pad = history == self.dims.num_items
        positions = torch.arange(width - 1, -1, -1, device=history.device)  # newest at the right = 0
        x = self.item(history) * math.sqrt(self.config.embedding_dim) + self.position(positions)
        x = self.input_dropout(x) * (~pad).unsqueeze(-1)
        # Causal attention that never looks at padding; each position may see itself, so no row is
        # fully masked (a padded row's output is ignored: only the last position is used).
        future = torch.ones(width, width, dtype=torch.bool, device=history.device).triu(1)
        blocked = future.unsqueeze(0) | pad.unsqueeze(1)
        blocked = blocked & ~torch.eye(width, dtype=torch.bool, device=history.device)
        mask = blocked.repeat_interleave(self.config.num_heads, dim=0)
        return self.norm(self.blocks(x, mask=mask))[:, -1]

    def encode_bucketed(self, history: torch.Tensor) -> torch.Tensor:
        lengths = (history != self.dims.num_items).sum(dim=1)
        out = torch.empty(history.shape[0], self.config.embedding_dim, device=history.device)
        edges = [b for b in BUCKETS if b < history.shape[1]] + [history.shape[1]]
        low = -1
        for edge in edges:
            rows = ((lengths > low) & (lengths <= edge)).nonzero(as_tuple=True)[0]
            if len(rows):
                width = max(int(lengths[rows].max()), 1)
                out[rows] = self.encode(history[rows, -width:])
            low = edge
        return out

    def forward(self, batch: Batch) -> torch.Tensor:
        history, inverse = self.histories(batch)
        state = self.encode_bucketed(history)[inverse] + self.domain(batch.domain)
        return (state * self.item(batch.item)).sum(-1) + self.item_bias(batch.item).squeeze(-1)

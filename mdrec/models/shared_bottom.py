"""Shared-bottom: one MLP shared by every domain, then one small tower per domain."""

from __future__ import annotations

import torch
from pydantic import Field

from mdrec.models.base import Batch, Dims, FeatureEmbedding, ModelConfig, RecModel, domain_towers, mlp, pick_by_domain, register


class SharedBottomConfig(ModelConfig):
    bottom: list[int] = Field([64, 32], description="Hidden sizes of the shared bottom MLP.")
    tower: list[int] = Field([16], description="Hidden sizes of each domain's tower.")


@register("shared_bottom")
class SharedBottom(RecModel):
    config_class = SharedBottomConfig

    def __init__(self, config: SharedBottomConfig, dims: Dims):
        super().__init__(config, dims)
        self.embed = FeatureEmbedding(dims, config.embedding_dim)
        self.bottom = mlp([self.embed.out_dim, *config.bottom], config.dropout)
        self.towers = domain_towers(config.bottom[-1], config.tower, config.dropout, dims.num_domains)

    def forward(self, batch: Batch) -> torch.Tensor:
        shared = self.bottom(self.embed(batch))
        per_domain = torch.cat([tower(shared) for tower in self.towers], dim=1)
        return pick_by_domain(per_domain, batch.domain)

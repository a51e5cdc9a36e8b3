"""MMoE (Ma et al., KDD 2018) with domains as tasks: shared experts, one gate and tower per domain."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from mdrec.models.base import Batch, Dims, FeatureEmbedding, ModelConfig, RecModel, domain_towers, mlp, pick_by_domain, register


class MMoEConfig(ModelConfig):
    num_experts: int = Field(4, gt=0, description="Number of shared experts.")
    expert: list[int] = Field([64, 32], description="Hidden sizes of each expert MLP.")
    tower: list[int] = Field([16], description="Hidden sizes of each domain's tower.")


@register("mmoe")
class MMoE(RecModel):
    config_class = MMoEConfig

    def __init__(self, config: MMoEConfig, dims: Dims):
        super().__init__(config, dims)
        self.embed = FeatureEmbedding(dims, config.embedding_dim)
        d_in, d_out = self.embed.out_dim, config.expert[-1]
        self.experts = nn.ModuleList(mlp([d_in, *config.expert], config.dropout) for _ in range(config.num_experts))
        self.gates = nn.ModuleList(nn.Linear(d_in, config.num_experts) for _ in range(dims.num_domains))
        self.towers = domain_towers(d_out, config.tower, config.dropout, dims.num_domains)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # (B, E, d)
        outputs = []
        for gate, tower in zip(self.gates, self.towers):
            w = torch.softmax(gate(x), dim=-1).unsqueeze(-1)  # (B, E, 1)
            outputs.append(tower((w * experts).sum(dim=1)))
        return pick_by_domain(torch.cat(outputs, dim=1), batch.domain)

"""PLE (Tang et al., RecSys 2020) with domains as tasks: shared and per-domain experts, stacked
extraction layers; each domain's gate mixes the shared experts with its own."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from mdrec.models.base import Batch, Dims, FeatureEmbedding, ModelConfig, RecModel, domain_towers, mlp, pick_by_domain, register


class PLEConfig(ModelConfig):
    levels: int = Field(2, gt=0, description="Number of extraction layers.")
    shared_experts: int = Field(2, gt=0, description="Shared experts per layer.")
    domain_experts: int = Field(1, gt=0, description="Experts of each domain per layer.")
    expert_dim: int = Field(32, gt=0, description="Output size of every expert.")
    tower: list[int] = Field([16], description="Hidden sizes of each domain's tower.")


class _Extraction(nn.Module):
    def __init__(self, d_in: int, cfg: PLEConfig, num_domains: int, last: bool):
        super().__init__()
        make = lambda n: nn.ModuleList(mlp([d_in, cfg.expert_dim], cfg.dropout) for _ in range(n))  # noqa: E731
        self.shared = make(cfg.shared_experts)
        self.own = nn.ModuleList(make(cfg.domain_experts) for _ in range(num_domains))
        n_gate = cfg.shared_experts + cfg.domain_experts
        self.gates = nn.ModuleList(nn.Linear(d_in, n_gate) for _ in range(num_domains))
        # The shared gate feeds the next layer's shared input; the last layer needs none.
        self.shared_gate = None if last else nn.Linear(d_in, cfg.shared_experts + num_domains * cfg.domain_experts)

    def forward(self, shared_in: torch.Tensor, domain_in: list[torch.Tensor]):
        shared_out = [e(shared_in) for e in self.shared]
        domain_out = []
        all_own = []
        for d, (experts, gate) in enumerate(zip(self.own, self.gates)):
            own = [e(domain_in[d]) for e in experts]
            all_own += own
            stack = torch.stack(shared_out + own, dim=1)
            w = torch.softmax(gate(domain_in[d]), dim=-1).unsqueeze(-1)
            domain_out.append((w * stack).sum(dim=1))
        next_shared = None
        if self.shared_gate is not None:
            stack = torch.stack(shared_out + all_own, dim=1)
            w = torch.softmax(self.shared_gate(shared_in), dim=-1).unsqueeze(-1)
            next_shared = (w * stack).sum(dim=1)
        return next_shared, domain_out


@register("ple")
class PLE(RecModel):
    config_class = PLEConfig

    def __init__(self, config: PLEConfig, dims: Dims):
        super().__init__(config, dims)
        self.embed = FeatureEmbedding(dims, config.embedding_dim)
        sizes = [self.embed.out_dim] + [config.expert_dim] * (config.levels - 1)
        self.layers = nn.ModuleList(
            _Extraction(d, config, dims.num_domains, last=(i == config.levels - 1)) for i, d in enumerate(sizes)
        )
        self.towers = domain_towers(config.expert_dim, config.tower, config.dropout, dims.num_domains)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        shared, per_domain = x, [x] * self.dims.num_domains
        for layer in self.layers:
            shared, per_domain = layer(shared, per_domain)
        outputs = torch.cat([tower(h) for tower, h in zip(self.towers, per_domain)], dim=1)
        return pick_by_domain(outputs, batch.domain)

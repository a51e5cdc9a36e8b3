"""STAR (Sheng et al., CIKM 2021): one model serving all domains through a star topology.

- Partitioned normalization: each domain normalizes with its own statistics, and scales and
  shifts with shared parameters combined with its own (gamma * gamma_d, beta + beta_d).
- Star-topology FCN: each layer's weight for domain d is W_shared * W_d (element-wise) and its
  bias b_shared + b_d, so shared knowledge and domain specifics live in one network.
- Auxiliary network: a small MLP on the domain embedding and the features, added to the logit,
  so the domain identity acts directly on the prediction.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from mdrec.models.base import Batch, Dims, FeatureEmbedding, ModelConfig, RecModel, mlp, register


class StarConfig(ModelConfig):
    hidden: list[int] = Field([64, 32], description="Hidden sizes of the star-topology FCN.")
    aux_hidden: list[int] = Field([16], description="Hidden sizes of the auxiliary network.")
    momentum: float = Field(0.1, gt=0.0, le=1.0, description="Running-statistics momentum of partitioned normalization.")


class _StarLayer(nn.Module):
    def __init__(self, d_in: int, d_out: int, num_domains: int):
        super().__init__()
        self.shared_w = nn.Parameter(torch.empty(d_out, d_in))
        nn.init.xavier_uniform_(self.shared_w)
        self.shared_b = nn.Parameter(torch.zeros(d_out))
        self.domain_w = nn.Parameter(torch.ones(num_domains, d_out, d_in))  # starts as the shared net
        self.domain_b = nn.Parameter(torch.zeros(num_domains, d_out))

    def forward(self, h: torch.Tensor, d: int) -> torch.Tensor:
        return F.linear(h, self.shared_w * self.domain_w[d], self.shared_b + self.domain_b[d])


@register("star")
class STAR(RecModel):
    config_class = StarConfig

    def __init__(self, config: StarConfig, dims: Dims):
        super().__init__(config, dims)
        self.embed = FeatureEmbedding(dims, config.embedding_dim)
        d_in, n_dom = self.embed.out_dim, dims.num_domains
        self.gamma = nn.Parameter(torch.ones(d_in))
        self.beta = nn.Parameter(torch.zeros(d_in))
        self.domain_gamma = nn.Parameter(torch.ones(n_dom, d_in))
        self.domain_beta = nn.Parameter(torch.zeros(n_dom, d_in))
        self.register_buffer("running_mean", torch.zeros(n_dom, d_in))
        self.register_buffer("running_var", torch.ones(n_dom, d_in))
        sizes = [d_in, *config.hidden, 1]
        self.layers = nn.ModuleList(_StarLayer(a, b, n_dom) for a, b in zip(sizes[:-1], sizes[1:]))
        self.aux = mlp([config.embedding_dim + d_in, *config.aux_hidden, 1], config.dropout, last_activation=False)
        self.dropout = nn.Dropout(config.dropout)

    def _normalize(self, h: torch.Tensor, d: int) -> torch.Tensor:
        # Batch statistics of this domain's rows in training (when there are two or more), its
        # running statistics otherwise.
        use_batch = self.training and h.shape[0] > 1
        h = F.batch_norm(
            h, self.running_mean[d], self.running_var[d], training=use_batch, momentum=self.config.momentum
        )
        return h * (self.gamma * self.domain_gamma[d]) + (self.beta + self.domain_beta[d])

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embed(batch)
        logits = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for d in torch.unique(batch.domain).tolist():
            rows = batch.domain == d
            h = self._normalize(x[rows], d)
            for i, layer in enumerate(self.layers):
                h = layer(h, d)
                if i < len(self.layers) - 1:
                    h = self.dropout(F.relu(h))
            logits = logits.index_put((rows.nonzero(as_tuple=True)[0],), h.squeeze(-1))
        aux = self.aux(torch.cat([self.embed.domain(batch.domain), x], dim=-1)).squeeze(-1)
        return logits + aux

"""STAR (Sheng et al., CIKM 2021): one model serving all domains through a star topology.

- Partitioned normalization: each domain normalizes with its own statistics, and scales and
  shifts with shared parameters combined with its own (gamma * gamma_d, beta + beta_d).
- Star-topology FCN: each layer's weight for domain d is W_shared * W_d (element-wise) and its
  bias b_shared + b_d, so shared knowledge and domain specifics live in one network.
- Auxiliary network: a small MLP on the domain embedding and the features, added to the logit,
  so the domain identity acts directly on the prediction.
- User behaviour (`history: N`, off by default): the paper's features include the user's
  behaviour sequence, pooled; here the user's last N items before the example, from every domain,
  mean-pooled and concatenated to the user, item and domain embeddings. This is STAR's user side:
  under the `context` training mode the synthetic items reach STAR here, and only here.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from mdrec.models.base import Batch, Dims, FeatureEmbedding, ModelConfig, RecModel, distinct_histories, mlp, register


class StarConfig(ModelConfig):
    hidden: list[int] = Field([64, 32], description="Hidden sizes of the star-topology FCN.")
    aux_hidden: list[int] = Field([16], description="Hidden sizes of the auxiliary network.")
    momentum: float = Field(0.1, gt=0.0, le=1.0, description="Running-statistics momentum of partitioned normalization.")
    history: int = Field(0, ge=0, le=512, description="The user's last N items before the example (every domain), "
                         "mean-pooled into a user-side feature; 0: no behaviour feature (STAR then reads no context).")


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
        self.context = None
        if config.history:
            # its own table: a history item is evidence about the user, not the candidate's identity
            self.history_item = nn.Embedding(dims.num_items + 1, config.embedding_dim, padding_idx=dims.num_items)
            nn.init.normal_(self.history_item.weight, std=0.05)
            d_in += config.embedding_dim
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

    def attach(self, context) -> None:
        self.context = context

    def _behaviour(self, batch: Batch) -> torch.Tensor:
        """Mean embedding of each example's history (zeros for a user with none before its time)."""
        if self.context is None or batch.ts is None:
            raise RuntimeError("star with history needs the interaction context (attach) and batch.ts")
        history, inverse = distinct_histories(self.context, batch, self.config.history)
        present = (history != self.dims.num_items).unsqueeze(-1).float()
        pooled = (self.history_item(history) * present).sum(1) / present.sum(1).clamp(min=1.0)
        return pooled[inverse]

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
        if self.config.history:
            x = torch.cat([x, self._behaviour(batch)], dim=-1)
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

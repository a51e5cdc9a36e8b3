"""EMCDR (Man et al., IJCAI 2017): per-domain latent factors plus a learned cross-domain mapping.

- Latent factors: each domain has its own user factors (a user has one vector per domain) and
  item factors; a score is their dot product plus an item bias (matrix factorisation).
- Mapping: for each target domain, an MLP from a user's factors in the other domains (averaged
  over the domains they are active in) to their factors in the target. It is learned on users
  active in both, with both sides detached, so it never moves the factors it imitates.
- Scoring: a user with training rows in the domain asked for uses their own factors there; a
  user without any (a cold-start user) gets the mapped ones: EMCDR's answer to cold start.

The paper's two stages (factors first, then the mapping) run here in one loop: the mapping's
loss is added to every batch and chases the factors as they converge.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from mdrec.models.base import Batch, Dims, ModelConfig, RecModel, mlp, register


class EMCDRConfig(ModelConfig):
    mapping_hidden: list[int] = Field([64], description="Hidden sizes of each domain's mapping MLP.")
    mapping_weight: float = Field(1.0, ge=0.0, description="Weight of the mapping loss next to the ranking loss.")


@register("emcdr")
class EMCDR(RecModel):
    config_class = EMCDRConfig

    def __init__(self, config: EMCDRConfig, dims: Dims):
        super().__init__(config, dims)
        d = config.embedding_dim
        self.user = nn.Embedding(dims.num_users * dims.num_domains, d)  # row = user * domains + domain
        self.item = nn.Embedding(dims.num_items, d)
        self.item_bias = nn.Embedding(dims.num_items, 1)
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=0.05)
        nn.init.zeros_(self.item_bias.weight)
        self.mapping = nn.ModuleList(mlp([d, *config.mapping_hidden, d], 0.0, last_activation=False)
                                     for _ in range(dims.num_domains))
        self.active: torch.Tensor | None = None  # (users, domains) bool, from attach

    def attach(self, context) -> None:
        self.active = torch.from_numpy(context.user_domains())

    def _factors(self, user: torch.Tensor) -> torch.Tensor:
        """(batch, domains, d): the user's own factors in every domain."""
        rows = user.unsqueeze(1) * self.dims.num_domains + torch.arange(self.dims.num_domains, device=user.device)
        return self.user(rows)

    def _source(self, factors: torch.Tensor, active: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean factors over the active domains other than the target, and whether there is any."""
        others = active.clone()
        others[torch.arange(len(target)), target] = False
        weight = others.float()
        count = weight.sum(1, keepdim=True)
        return (factors * weight.unsqueeze(-1)).sum(1) / count.clamp_min(1.0), count.squeeze(1) > 0

    def _map(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(source)
        for d in torch.unique(target).tolist():
            rows = target == d
            out[rows] = self.mapping[d](source[rows])
        return out

    def _active(self, user: torch.Tensor) -> torch.Tensor:
        if self.active is None:
            raise RuntimeError("emcdr needs the users' active domains (attach)")
        return self.active.to(user.device)[user]

    def forward(self, batch: Batch) -> torch.Tensor:
        factors = self._factors(batch.user)
        active = self._active(batch.user)
        rows = torch.arange(len(batch.user), device=batch.user.device)
        own = factors[rows, batch.domain]
        cold = ~active[rows, batch.domain]
        if cold.any():
            source, _ = self._source(factors[cold], active[cold], batch.domain[cold])
            own = own.clone()
            own[cold] = self._map(source, batch.domain[cold])
        return (own * self.item(batch.item)).sum(-1) + self.item_bias(batch.item).squeeze(-1)

    def mapping_loss(self, batch: Batch) -> torch.Tensor:
        """Squared error of the mapping on this batch's users active in the target and elsewhere."""
        factors = self._factors(batch.user).detach()
        active = self._active(batch.user)
        rows = torch.arange(len(batch.user), device=batch.user.device)
        source, has_source = self._source(factors, active, batch.domain)
        usable = has_source & active[rows, batch.domain]
        if not usable.any():
            return factors.sum() * 0.0
        target = factors[rows, batch.domain][usable]
        mapped = self._map(source[usable], batch.domain[usable])
        return (mapped - target).pow(2).sum(-1).mean()

    def loss(self, batch: Batch, logits: torch.Tensor | None = None) -> torch.Tensor:
        return super().loss(batch, logits) + self.config.mapping_weight * self.mapping_loss(batch)

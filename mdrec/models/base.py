"""The model contract: one batch layout, one base class, and a registry from name to class.

Every model scores (user, item, domain, ts) examples with a logit, so one training loop and one
evaluator drive them all. Models that need more (a history, a graph, which domains a user is
active in) take it from the `InteractionContext` given to `attach` once, before training or
scoring; the loop does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

if TYPE_CHECKING:
    from mdrec.train.context import InteractionContext


@dataclass(frozen=True)
class Dims:
    """Sizes a model is built for, from the prepared data."""

    num_users: int
    num_items: int
    num_domains: int


@dataclass
class Batch:
    """Training or scoring examples; every tensor has the batch size as its first dimension."""

    user: torch.Tensor  # int64 user_idx
    item: torch.Tensor  # int64 item_idx
    domain: torch.Tensor  # int64 domain_idx
    ts: torch.Tensor | None = None  # int64 time of the example: sequential models read the history before it
    label: torch.Tensor | None = None  # float32, 1 positive / 0 negative
    weight: torch.Tensor | None = None  # float32 sample weight (synthetic rows may weigh less)
    synthetic: torch.Tensor | None = None  # bool, a synthetic positive (denoising may drop it)

    def to(self, device: torch.device | str) -> "Batch":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return Batch(**moved)

    def __len__(self) -> int:
        return int(self.user.shape[0])


class ModelConfig(BaseModel):
    """Hyper-parameters shared by every model; each model extends it with its own."""

    model_config = ConfigDict(extra="forbid")

    embedding_dim: int = Field(32, gt=0, description="Size of user, item and domain embeddings.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout in hidden layers.")


class RecModel(nn.Module):
    """Base class: `forward(batch)` returns one logit per example."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig, dims: Dims):
        super().__init__()
        self.config = config
        self.dims = dims

    def attach(self, context: "InteractionContext") -> None:
        """Receive the training interactions (histories, graph); models that need none ignore it.

        Whatever a model derives here is rebuilt from the context, never saved in its state_dict.
        """

    def forward(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def example_losses(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        """Each example's unweighted loss (what `loss` weighs and averages; what T-CE ranks)."""
        return nn.functional.binary_cross_entropy_with_logits(logits, batch.label, reduction="none")

    def loss(self, batch: Batch, logits: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted binary cross-entropy on the logits; models may add auxiliary terms.

        Pass `logits` computed through a wrapper (DDP) so that gradients are synchronised.
        """
        logits = self(batch) if logits is None else logits
        losses = self.example_losses(batch, logits)
        if batch.weight is not None:
            return (losses * batch.weight).sum() / batch.weight.sum().clamp_min(1e-12)
        return losses.mean()


MODELS: dict[str, type[RecModel]] = {}


def register(name: str):
    """Class decorator: make a model findable by name."""

    def add(cls: type[RecModel]) -> type[RecModel]:
        if name in MODELS:
            raise ValueError(f"model name {name!r} registered twice")
        cls.name = name
        MODELS[name] = cls
        return cls

    return add


def model_params(name: str, params: dict) -> ModelConfig:
    """The model's parameters, validated by its config class; ValueError in one line for an
    unknown model or parameter (the config's ModelSpec checks this when a config loads)."""
    from pydantic import ValidationError

    from mdrec.models import load_all

    load_all()  # fills the registry
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}' (known: {', '.join(sorted(MODELS))})")
    try:
        return MODELS[name].config_class.model_validate(params)
    except ValidationError as e:
        from mdrec.config import format_validation_error

        raise ValueError(format_validation_error(e, f"model '{name}'")) from None


def build_model(name: str, params: dict, dims: Dims, context: "InteractionContext | None" = None) -> RecModel:
    from mdrec.errors import ConfigError

    try:
        config = model_params(name, params)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    model = MODELS[name](config, dims)
    if context is not None:
        model.attach(context)
    return model


def mlp(sizes: list[int], dropout: float, last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def domain_towers(d_in: int, hidden: list[int], dropout: float, num_domains: int) -> nn.ModuleList:
    """One small MLP per domain, each ending in a single logit."""
    return nn.ModuleList(mlp([d_in, *hidden, 1], dropout, last_activation=False) for _ in range(num_domains))


def distinct_histories(context, batch: Batch, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's distinct histories (the last `length` items before each example's time, every
    domain; n x length, padded with num_items) and, per example, which one is its own: a positive
    and its negatives, or a case and its candidates, share one history and are encoded once."""
    ends = context.history_ends(batch.user.cpu().numpy(), batch.ts.cpu().numpy())
    distinct, inverse = np.unique(ends, return_inverse=True)
    history = torch.from_numpy(context.histories(distinct, length))
    return history.to(batch.user.device), torch.from_numpy(inverse.reshape(-1)).to(batch.user.device)


class FeatureEmbedding(nn.Module):
    """User, item and domain embeddings, concatenated: the input of the multi-domain CTR models."""

    def __init__(self, dims: Dims, dim: int):
        super().__init__()
        self.user = nn.Embedding(dims.num_users, dim)
        self.item = nn.Embedding(dims.num_items, dim)
        self.domain = nn.Embedding(dims.num_domains, dim)
        for emb in (self.user, self.item, self.domain):
            nn.init.normal_(emb.weight, std=0.05)
        self.out_dim = 3 * dim

    def forward(self, batch: Batch) -> torch.Tensor:
        return torch.cat([self.user(batch.user), self.item(batch.item), self.domain(batch.domain)], dim=-1)


def pick_by_domain(per_domain: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
    """From (batch, num_domains) outputs, each example's own domain column."""
    return per_domain.gather(1, domain.unsqueeze(1)).squeeze(1)

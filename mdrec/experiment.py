"""The experiment grid: every trained model is one (model, variant, protocol, seed).

- variant: the training data (`real` now; augmented variants join with the generation stages);
- protocol: warm or cold_start, which decides the training rows and the cases it is judged on;
- seed: the training seed; the prepared data and its candidates are the same for every seed,
  so seeds give a spread and variants can be compared case by case.

Each key owns `models/<key.path>/` and `evaluation/<key.path>/` in the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from mdrec.config import MdrecConfig
from mdrec.data.schema import Protocol

REAL = "real"


@dataclass(frozen=True, order=True)
class RunKey:
    model: str
    variant: str
    protocol: Protocol
    seed: int

    @property
    def path(self) -> str:
        return f"{self.model}/{self.variant}/{self.protocol.value}/seed-{self.seed}"

    @property
    def label(self) -> str:
        return f"{self.model} {self.variant} {self.protocol.value} seed {self.seed}"


def train_seeds(cfg: MdrecConfig) -> list[int]:
    return list(cfg.train.seeds) if cfg.train.seeds is not None else [cfg.seed]


def grid(cfg: MdrecConfig, variant: str = REAL) -> list[RunKey]:
    """Every key the config trains, grouped by protocol (each protocol loads its own data once)."""
    return [RunKey(spec.name, variant, protocol, seed)
            for protocol in cfg.train.protocols for spec in cfg.train.models for seed in train_seeds(cfg)]

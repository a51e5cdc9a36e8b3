"""The experiment grid: every trained model is one (model, variant, protocol, seed).

- variant: the training data: `real` only, or real plus synthetic rows (`raw` or `filtered`);
- protocol: warm or cold_start, which decides the training rows and the cases it is judged on;
- seed: the training seed; the prepared data and its candidates are the same for every seed,
  so seeds give a spread and variants can be compared case by case.

Each key owns `models/<key.path>/` and `evaluation/<key.path>/` in the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from mdrec.config import MdrecConfig
from mdrec.data.schema import Protocol



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


def grid(cfg: MdrecConfig) -> list[RunKey]:
    """Every key the config trains, grouped by protocol then variant (each pair loads its data once)."""
    return [RunKey(spec.name, variant.value, protocol, seed)
            for protocol in cfg.train.protocols for variant in cfg.train.variants
            for spec in cfg.train.models for seed in train_seeds(cfg)]

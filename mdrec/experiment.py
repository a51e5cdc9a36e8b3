"""The experiment grid: every trained model is one (model, variant, protocol, seed).

- variant: the training data and how it is used: `real` only, or real plus synthetic rows (`raw`
  or `filtered`) under a training mode (train.synthetic.modes): `raw` is the label mode (weighted
  positives), `raw+context` the context mode, `raw+<tag>` a tagged mode. This arm name is what
  the report's tables call the variant;
- protocol: warm or cold_start, which decides the training rows and the cases it is judged on;
- seed: the training seed; the prepared data and its candidates are the same for every seed,
  so seeds give a spread and variants can be compared case by case.

Each key owns `models/<key.path>/` and `evaluation/<key.path>/` in the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from mdrec.config import MdrecConfig, SyntheticModeSpec, Variant
from mdrec.train.synthetic.denoise import DenoiseConfig
from mdrec.data.schema import Protocol

LABEL = "label"  # the mode whose arms carry the bare variant name (what `raw` meant before modes)


@dataclass(frozen=True)
class Arm:
    """One column of the grid's data axis: a data variant and, when augmented, the mode it trains with."""

    variant: Variant
    mode: SyntheticModeSpec | None  # None for real
    denoise: DenoiseConfig | None = None  # set only where the mode puts synthetic rows in the loss

    @property
    def name(self) -> str:
        if self.mode is None:
            return self.variant.value
        name = self.variant.value if self.mode.key == LABEL else f"{self.variant.value}+{self.mode.key}"
        return name if self.denoise is None else f"{name}+{self.denoise.suffix}"


def augmented_arm(variant: Variant, mode: SyntheticModeSpec, denoise: DenoiseConfig | None) -> Arm:
    """The arm of an augmented variant under a mode: denoising applies only where the mode puts
    synthetic rows in the loss (a context arm never becomes +tce)."""
    from mdrec.train.synthetic import build_mode

    in_loss = build_mode(mode.name, mode.params).loss_weight() is not None
    return Arm(variant, mode, denoise if in_loss else None)


def arms(cfg: MdrecConfig) -> list[Arm]:
    """real first, then each augmented variant under each mode, in config order."""
    return [Arm(v, None) if v is Variant.real else augmented_arm(v, mode, cfg.train.synthetic.denoise)
            for v in cfg.train.variants for mode in ([None] if v is Variant.real else cfg.train.synthetic.modes)]


def arm_named(cfg: MdrecConfig, name: str) -> Arm:
    for arm in arms(cfg):
        if arm.name == name:
            return arm
    raise KeyError(f"{name!r} is not a variant of this config (known: {', '.join(a.name for a in arms(cfg))})")



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
    return [RunKey(spec.name, arm.name, protocol, seed)
            for protocol in cfg.train.protocols for arm in arms(cfg)
            for spec in cfg.train.models for seed in train_seeds(cfg)]

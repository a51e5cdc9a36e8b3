"""The sweep's grid: the arms every model trains under, where each one lives, and the config it reads.

An arm of the sweep is real-only or one backend's synthetic rows under one training mode (and,
for modes that put the rows in the loss, one denoising choice). Real-only runs live in the run
directory itself; each backend's rows, and the models trained on them, live in its own run
directory `<run-dir>/backends/<name>/`, which holds a copy of the shared prepared data.
"""

from __future__ import annotations

from dataclasses import dataclass

from mdrec.config import MdrecConfig, ModelSpec, SweepConfig, SyntheticModeSpec, Variant
from mdrec.errors import ConfigError
from mdrec.experiment import Arm, augmented_arm
from mdrec.storage import RunDir

REAL = Variant.real.value


@dataclass(frozen=True)
class SweepArm:
    """One column of the sweep: `backend` None is real-only."""

    backend: str | None
    arm: Arm
    oracle: bool = False  # the backend reads held-out rows: a ceiling, never picked

    @property
    def name(self) -> str:
        """How tables name it: real, or <backend>:<arm> (cooccurrence:raw+context)."""
        return REAL if self.backend is None else f"{self.backend}:{self.arm.name}"


def sweep_of(cfg: MdrecConfig) -> SweepConfig:
    """The config's sweep section, checked against the rest of the config (only `mdrec sweep` reads it,
    so a config whose train.models is overridden for another command still loads)."""
    if cfg.sweep is None:
        raise ConfigError("sweep: the config has no sweep section (e.g. sweep: {backends: {cooccurrence: "
                          "{type: cooccurrence}}})")
    known = [m.name for m in cfg.train.models]
    for name in cfg.sweep.models or []:
        if name not in known:
            raise ConfigError(f"sweep.models: {name!r} is not in train.models ({', '.join(known)})")
    return cfg.sweep


def modes_of(cfg: MdrecConfig) -> list[SyntheticModeSpec]:
    return sweep_of(cfg).modes or list(cfg.train.synthetic.modes)


def sweep_arms(cfg: MdrecConfig) -> list[SweepArm]:
    """real first, then for each backend every mode (times every denoising choice where the mode
    puts synthetic rows in the loss), in config order."""
    sweep = sweep_of(cfg)
    found = [SweepArm(None, Arm(Variant.real, None))]
    for name, backend in sweep.backends.items():
        for mode in modes_of(cfg):
            for denoise in sweep.denoise:  # a mode that keeps rows out of the loss gives one arm for all
                arm = SweepArm(name, augmented_arm(sweep.variant, mode, denoise), oracle=backend.type == "oracle")
                if arm.name not in {a.name for a in found}:
                    found.append(arm)
    return found


def swept_models(cfg: MdrecConfig) -> list[ModelSpec]:
    names = sweep_of(cfg).models
    return [m for m in cfg.train.models if names is None or m.name in names]


def test_seeds(cfg: MdrecConfig) -> list[int]:
    sweep = sweep_of(cfg)
    if sweep.test_seeds is not None:
        return list(sweep.test_seeds)
    return list(cfg.train.seeds) if cfg.train.seeds is not None else [cfg.seed]


def backend_dir(run_dir: RunDir, backend: str) -> RunDir:
    return RunDir(run_dir.location.join("backends", backend).uri)


def home_of(run_dir: RunDir, arm: SweepArm) -> RunDir:
    """The run directory an arm's models are trained and scored in."""
    return run_dir if arm.backend is None else backend_dir(run_dir, arm.backend)


def backend_config(cfg: MdrecConfig, backend: str) -> MdrecConfig:
    """The config a backend's folder generates (and filters) with: the sweep's backend in place of
    generate.backend, and the sweep's variant as the one augmented variant."""
    sweep = sweep_of(cfg)
    generate = cfg.generate.model_copy(update={"backend": sweep.backends[backend]})
    train = cfg.train.model_copy(update={"variants": [Variant.real, sweep.variant]})
    return cfg.model_copy(update={"generate": generate, "train": train})


def arm_config(cfg: MdrecConfig, arm: SweepArm, models: list[ModelSpec], seeds: list[int]) -> MdrecConfig:
    """The config one arm's runs train and evaluate with: its models, seeds, variant, mode and denoising."""
    base = cfg if arm.backend is None else backend_config(cfg, arm.backend)
    update: dict = {"models": models, "seeds": seeds}
    if arm.arm.mode is None:
        update["variants"] = [Variant.real]
    else:
        synthetic = base.train.synthetic.model_copy(update={"modes": [arm.arm.mode], "denoise": arm.arm.denoise})
        update.update(variants=[Variant.real, arm.arm.variant], synthetic=synthetic)
    return base.model_copy(update={"train": base.train.model_copy(update=update)})

"""Runs the stages in order; each stage resumes from its committed output when it is current."""

from __future__ import annotations

from typing import Callable

import click

from mdrec.config import MdrecConfig, Variant
from mdrec.errors import ConfigError
from mdrec.storage import RunDir

Log = Callable[[str], None]


def _prepare(cfg: MdrecConfig, run_dir: RunDir, force: bool, log: Log):
    from mdrec.prepare.stage import run_prepare
    from mdrec.prepare.summary import domain_table

    result = run_prepare(cfg, run_dir, force=force, log=log)
    click.echo(domain_table(result.stats))
    return result


def _train(cfg: MdrecConfig, run_dir: RunDir, force: bool, log: Log):
    from mdrec.train.stage import run_train
    from mdrec.train.summary import training_table

    results = run_train(cfg, run_dir, force=force, log=log)
    click.echo(training_table(results))
    return results


def _generate(cfg: MdrecConfig, run_dir: RunDir, force: bool, log: Log):
    from mdrec.generate.stage import run_generate
    from mdrec.generate.summary import generate_table

    report = run_generate(cfg, run_dir, force=force, log=log)
    click.echo(generate_table(report))
    return report


def _filter(cfg: MdrecConfig, run_dir: RunDir, force: bool, log: Log):
    from mdrec.filter.stage import run_filter
    from mdrec.filter.summary import filter_table

    report = run_filter(cfg, run_dir, force=force, log=log)
    click.echo(filter_table(report))
    return report


def _evaluate(cfg: MdrecConfig, run_dir: RunDir, force: bool, log: Log):
    from mdrec.evaluate.stage import run_evaluate
    from mdrec.evaluate.summary import evaluation_table

    results = run_evaluate(cfg, run_dir, force=force, log=log)
    click.echo(evaluation_table(results))
    return results


def _report(cfg: MdrecConfig, run_dir: RunDir, force: bool, log: Log):
    from mdrec.report.stage import build_report

    return build_report(run_dir, log=log)


# Stage name -> runner.
STAGES: dict[str, Callable] = {
    "prepare": _prepare,
    "generate": _generate,
    "filter": _filter,
    "train": _train,
    "evaluate": _evaluate,
    "report": _report,
}
# What `mdrec run` does, in order.
RUN_ORDER = ["prepare", "generate", "filter", "train", "evaluate", "report"]
# Stages only augmented variants need: a real-only config skips them.
SYNTHETIC_STAGES = {"generate", "filter"}


def run_order(cfg: MdrecConfig, until: str | None = None) -> list[str]:
    """The stages `mdrec run` runs for this config, up to and including UNTIL when given."""
    augmented = any(v is not Variant.real for v in cfg.train.variants)
    order = [s for s in RUN_ORDER if augmented or s not in SYNTHETIC_STAGES]
    if until is None:
        return order
    if until not in order:
        why = " (train.variants is real only: no synthetic data is made)" if until in SYNTHETIC_STAGES else ""
        raise ConfigError(f"--until {until}: not a stage of this run{why}; its stages: {', '.join(order)}")
    return order[: order.index(until) + 1]


def run_stages(cfg: MdrecConfig, run_dir: RunDir, names: list[str], *, force: bool = False,
               force_only: list[str] | None = None, log: Log = print) -> dict:
    """Run `names` in order; `force` redoes them all, or only those in `force_only` when given."""
    results = {}
    if any(name != "report" for name in names):  # the report reads files; every other stage runs on Ray
        from mdrec import placement
        from mdrec.ray_session import ensure_ray

        ensure_ray(cfg.ray)
        placement.describe(cfg, log)
    for name in names:
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}")
        redo = force and (force_only is None or name in force_only)
        results[name] = STAGES[name](cfg, run_dir, redo, log)
    return results

"""Runs the stages in order; each stage resumes from its committed output when it is current."""

from __future__ import annotations

from typing import Callable

import click

from mdrec.config import MdrecConfig
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


def _evaluate(cfg: MdrecConfig, run_dir: RunDir, force: bool, log: Log):
    from mdrec.evaluate.stage import run_evaluate
    from mdrec.evaluate.summary import evaluation_table

    results = run_evaluate(cfg, run_dir, force=force, log=log)
    click.echo(evaluation_table(results))
    return results


def _report(cfg: MdrecConfig, run_dir: RunDir, force: bool, log: Log):
    from mdrec.report.stage import build_report

    return build_report(run_dir, log=log)


# Stage name -> runner, in pipeline order. Later stages (generate, filter) join this table as
# they are built.
STAGES: dict[str, Callable] = {
    "prepare": _prepare,
    "train": _train,
    "evaluate": _evaluate,
    "report": _report,
}


def run_stages(cfg: MdrecConfig, run_dir: RunDir, names: list[str], *, force: bool = False, log: Log = print) -> dict:
    results = {}
    for name in names:
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}")
        results[name] = STAGES[name](cfg, run_dir, force, log)
    return results

"""`mdrec sweep`: the validation pass (every backend x mode, validation seeds), the choice, then the
test pass (real-only and each pick, test seeds), each committed under `<run-dir>/sweep/`.

The validation pass never reads a test case: it trains and reads the runs' validation histories.
The test pass trains only what validation picked (and the oracle's best arm, as the ceiling), so
test is scored once, on the choice.
"""

from __future__ import annotations

import enum
import hashlib
import json
from typing import Callable

import pandas as pd

from mdrec.config import MdrecConfig, ModelSpec, Variant
from mdrec.data.schema import Protocol
from mdrec.errors import DataError
from mdrec.experiment import RunKey
from mdrec.storage import RunDir
from mdrec.sweep import lift
from mdrec.sweep import pick as picking
from mdrec.sweep import plan
from mdrec.sweep.plan import SweepArm

Log = Callable[[str], None]
VALIDATION, TEST = "sweep/validation", "sweep/test"


class Phase(str, enum.Enum):
    validate = "validate"  # generate, train every arm with the validation seeds, choose
    test = "test"  # train the choice and real-only with the test seeds, evaluate, compare
    all = "all"


def _generate(cfg: MdrecConfig, run_dir: RunDir, force: bool, log: Log) -> None:
    from mdrec.filter.stage import run_filter
    from mdrec.generate.stage import run_generate

    sweep = plan.sweep_of(cfg)
    for name in sweep.backends:
        home = plan.backend_dir(run_dir, name)
        home.stage("prepared").copy_from(run_dir.stage("prepared"))
        bcfg = plan.backend_config(cfg, name)
        log(f"sweep: backend {name} ({sweep.backends[name].type}) in {home.uri}")
        run_generate(bcfg, home, force=force, log=log)
        if sweep.variant is Variant.filtered:
            run_filter(bcfg, home, force=force, log=log)


def _train(cfg: MdrecConfig, run_dir: RunDir, arm: SweepArm, models: list[ModelSpec], seeds: list[int],
           force: bool, log: Log) -> list[tuple[RunKey, dict]]:
    """Train one arm's runs (every protocol, model and seed) in its home run directory."""
    from mdrec.train.stage import load_prepared, train_model, with_variant

    home = plan.home_of(run_dir, arm)
    acfg = plan.arm_config(cfg, arm, models, seeds)
    done = []
    for protocol in cfg.train.protocols:
        prepared = with_variant(load_prepared(home, protocol), home, arm.arm)
        for spec in models:
            for seed in seeds:
                key = RunKey(spec.name, arm.arm.name, protocol, seed)
                done.append((key, train_model(acfg, home, prepared, spec, key, force=force, log=log)))
    return done


def cold_domains(run_dir: RunDir) -> list[str]:
    from mdrec.train.stage import read_shape

    domains = read_shape(run_dir).domains
    return sorted(domains.loc[domains["role"] == "cold", "domain"])


def _commit(run_dir: RunDir, name: str, files: dict[str, bytes]) -> None:
    digest = hashlib.sha256(b"".join(hashlib.sha256(v).digest() for _, v in sorted(files.items()))).hexdigest()
    with run_dir.stage(name).writing(digest) as out:
        for path, data in files.items():
            out.join(path).write_bytes(data)


def validate(cfg: MdrecConfig, run_dir: RunDir, *, force: bool = False, log: Log = lambda m: None) -> dict:
    from mdrec.prepare.stage import run_prepare
    from mdrec.sweep.report import validation_report

    sweep = plan.sweep_of(cfg)
    run_prepare(cfg, run_dir, force=force, log=log)
    _generate(cfg, run_dir, force, log)
    models = plan.swept_models(cfg)
    trained = []
    for arm in plan.sweep_arms(cfg):
        for _, metrics in _train(cfg, run_dir, arm, models, list(sweep.validation_seeds), force, log):
            trained.append((arm, metrics))
    validation = picking.validation_frame(trained)
    values = picking.arm_values(validation, cold_domains(run_dir))
    picks = picking.choose(values, sweep.max_other_drop, sweep.min_gain)
    for p in picks:
        log(f"sweep: {p.protocol} {p.model}: validation picks {p.pick} ({p.why})")
    _commit(run_dir, VALIDATION, {
        "validation.csv": validation.to_csv(index=False).encode(),
        "arms.csv": values.to_csv(index=False).encode(),
        "picks.json": json.dumps([p.as_dict() for p in picks], indent=2).encode(),
        "report.md": validation_report(values, picks, sweep).encode(),
    })
    return {"validation": validation, "values": values, "picks": picks}


def read_picks(run_dir: RunDir) -> list[picking.Pick]:
    stage = run_dir.stage(VALIDATION)
    if stage.commit_record() is None:
        raise DataError(f"{stage.location.uri}: no validation pass yet (run `mdrec sweep --phase validate` first)")
    return [picking.Pick(**p) for p in stage.location.join("picks.json").read_json()]


def _arms_by_name(cfg: MdrecConfig) -> dict[str, SweepArm]:
    return {a.name: a for a in plan.sweep_arms(cfg)}


def test(cfg: MdrecConfig, run_dir: RunDir, *, force: bool = False, log: Log = lambda m: None) -> dict:
    from mdrec.evaluate.stage import evaluate_protocol
    from mdrec.report import collect
    from mdrec.sweep.report import test_report

    picks = read_picks(run_dir)
    known = _arms_by_name(cfg)
    specs = {m.name: m for m in cfg.train.models}
    seeds = plan.test_seeds(cfg)
    # Every (arm, protocol, model) the test pass scores: real-only, the pick, the ceiling.
    wanted: dict[str, set[tuple[str, str]]] = {}
    for p in picks:
        for name in {plan.REAL, p.pick, *([p.ceiling] if p.ceiling else [])}:
            if name not in known:
                raise DataError(f"{run_dir.stage(VALIDATION).location.uri}: picked arm {name!r} is not in this "
                                "config's sweep (was the config changed after the validation pass?)")
            wanted.setdefault(name, set()).add((p.protocol, p.model))
    evaluations: list[tuple[SweepArm, RunDir, dict]] = []
    for name, where in wanted.items():
        arm = known[name]
        home = plan.home_of(run_dir, arm)
        for protocol, model in sorted(where):
            one = cfg.model_copy(update={"train": cfg.train.model_copy(update={"protocols": [Protocol(protocol)]})})
            _train(one, run_dir, arm, [specs[model]], seeds, force, log)
            acfg = plan.arm_config(one, arm, [specs[model]], seeds)
            keys = [RunKey(model, arm.arm.name, Protocol(protocol), s) for s in seeds]
            for result in evaluate_protocol(acfg, home, Protocol(protocol), keys, force=force, log=log).values():
                evaluations.append((arm, home, result))
    cases = pd.concat([collect.test_cases(home, [m]).assign(variant=arm.name) for arm, home, m in evaluations],
                      ignore_index=True)
    long = collect.test_metrics([{**m, "variant": arm.name} for arm, _, m in evaluations])
    report = test_report(run_dir, picks, cases, long, _lift(run_dir, evaluations, cases))
    _commit(run_dir, TEST, {"report.md": report["markdown"].encode(),
                            "summary.csv": report["summary"].to_csv(index=False).encode(),
                            "comparison.csv": report["comparison"].to_csv(index=False).encode(),
                            "lift_by_rows.csv": report["lift"].to_csv(index=False).encode()})
    log(f"sweep: report {run_dir.stage(TEST).location.join('report.md').uri}")
    return report


def _lift(run_dir: RunDir, evaluations: list[tuple[SweepArm, RunDir, dict]], cases: pd.DataFrame) -> pd.DataFrame:
    """Each scored augmented arm's test lift, split by whether its backend wrote the case's answer."""
    targets: dict[str, pd.DataFrame] = {}
    groups = {}
    for arm, home, m in evaluations:
        protocol = str(m["protocol"])
        if arm.backend is None or (arm.name, protocol) in groups:
            continue
        if protocol not in targets:
            targets[protocol] = lift.test_targets(run_dir, protocol)
        groups[(arm.name, protocol)] = lift.case_groups(
            targets[protocol], lift.written_rows(home, arm.arm.variant, Protocol(protocol)))
    return lift.lift_by_group(cases, groups, plan.REAL)


def run_sweep(cfg: MdrecConfig, run_dir: RunDir, *, phase: Phase = Phase.all, force: bool = False,
              log: Log = lambda m: None) -> dict:
    from mdrec.ray_session import ensure_ray

    plan.sweep_of(cfg)  # a config without a sweep section fails here, before Ray starts
    if phase is Phase.test:
        read_picks(run_dir)  # as does a test pass with no validation pass to read
    ensure_ray(cfg.ray)
    out = {}
    if phase in (Phase.validate, Phase.all):
        out["validate"] = validate(cfg, run_dir, force=force, log=log)
    if phase in (Phase.test, Phase.all):
        out["test"] = test(cfg, run_dir, force=force, log=log)
    return out

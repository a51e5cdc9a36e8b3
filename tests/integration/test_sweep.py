"""`mdrec sweep`: every backend x mode trained on validation only, the choice made from the
validation table (never an oracle arm), and only the choice scored on test."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mdrec.significance import holm
from tests.conftest import run_cli
from tests.integration.conftest import world_config, write_config
from tests.tiny_models import TINY

BACKENDS = {"popularity": {"type": "popularity", "cpus_per_actor": 0.5, "batch_size": 64},
            "oracle": {"type": "oracle", "allow_oracle": True, "cpus_per_actor": 0.5, "batch_size": 64}}


def sweep_config() -> dict:
    cfg = world_config(users=300, cold_start={"fraction": 0.4})
    cfg["generate"] = {"candidates": {"size": 10, "popular": 10}, "budget": {"per_user": 3, "ratio": 1.0},
                       "users_per_shard": 64, "protocols": ["cold_start"]}
    cfg["train"] = {"models": [{"name": "lightgcn", "params": TINY["lightgcn"]}], "protocols": ["cold_start"],
                    "epochs": 2, "batch_size": 512, "lr": 0.01, "resources_per_worker": {"CPU": 0.5},
                    "early_stopping": {"metric": "ndcg@10", "patience": 2}}
    cfg["evaluate"] = {"num_actors": 1}
    cfg["sweep"] = {"backends": BACKENDS, "modes": [{"name": "label"}, {"name": "context"}],
                    "validation_seeds": [0], "test_seeds": [0, 1]}
    return cfg


def evaluated_arms(run: Path) -> set[str]:
    """Every (home, arm) with a committed evaluation: real in the run dir, <backend>:<arm> in backends/."""
    found = {f"real:{p.parent.parent.name}" for p in (run / "evaluation").glob("*/*/*/seed-*") if p.is_dir()}
    for home in (run / "backends").glob("*"):
        found |= {f"{home.name}:{p.parent.parent.name}" for p in (home / "evaluation").glob("*/*/*/seed-*")}
    return {a.removeprefix("real:") for a in found}


@pytest.fixture(scope="module")
def swept(ray_session, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    config = write_config(folder / "sweep.yaml", sweep_config())
    run = folder / "run"
    code, out, err = run_cli("sweep", config, "--run-dir", str(run), "--phase", "validate")
    assert code == 0, err
    after_validation = evaluated_arms(run)
    code, out_test, err = run_cli("sweep", config, "--run-dir", str(run), "--phase", "test")
    assert code == 0, err
    return run, after_validation, out, out_test


def test_validation_trains_every_arm_and_reads_no_test_case(swept):
    run, after_validation, _, _ = swept
    assert after_validation == set()  # nothing was scored on test before the choice
    validation = pd.read_csv(run / "sweep" / "validation" / "validation.csv")
    assert set(validation["arm"]) == {"real", "popularity:raw", "popularity:raw+context", "oracle:raw",
                                      "oracle:raw+context"}
    # each backend's rows and models live in its own run directory, beside a copy of the prepared data
    for backend in BACKENDS:
        home = run / "backends" / backend
        assert (home / "prepared" / "_COMMITTED.json").exists() and (home / "synthetic" / "raw").exists()
        assert {p.name for p in (home / "models" / "lightgcn").iterdir()} == {"raw", "raw+context"}
    assert {p.name for p in (run / "models" / "lightgcn").iterdir()} == {"real"}
    oracle = json.loads((run / "backends" / "oracle" / "synthetic" / "generate_report.json").read_text())
    assert oracle["backend"] == "oracle"


def test_the_pick_is_the_best_non_oracle_arm_on_the_cold_domain(swept):
    run, _, out, _ = swept
    validation = pd.read_csv(run / "sweep" / "validation" / "validation.csv")
    cold = validation[validation["domain"] == "Music"].groupby(["arm", "oracle"])["value"].mean().reset_index()
    candidates = cold[~cold["oracle"]].set_index("arm")["value"]
    best = candidates.idxmax() if candidates.max() > candidates["real"] else "real"
    [pick] = json.loads((run / "sweep" / "validation" / "picks.json").read_text())
    assert (pick["protocol"], pick["model"], pick["pick"]) == ("cold_start", "lightgcn", best)
    assert pick["ceiling"] == cold[cold["oracle"]].set_index("arm")["value"].idxmax()
    assert pick["pick"] in out  # the console shows the picks table


def test_only_the_choice_is_scored_on_test(swept):
    run, _, _, out = swept
    [pick] = json.loads((run / "sweep" / "validation" / "picks.json").read_text())
    assert evaluated_arms(run) == {"real", pick["pick"], pick["ceiling"]}
    for arm in {"real", pick["pick"], pick["ceiling"]}:
        home = run if arm == "real" else run / "backends" / arm.split(":")[0]
        variant = arm.split(":")[-1]
        assert sorted(p.name for p in (home / "evaluation" / "lightgcn" / variant / "cold_start").iterdir()) == \
            ["seed-0", "seed-1"]
    comparison = pd.read_csv(run / "sweep" / "test" / "comparison.csv")
    music = comparison[comparison["domain"] == "Music"]
    assert set(music["variant"]) == {pick["ceiling"], *([pick["pick"]] if pick["pick"] != "real" else [])}
    assert (music["seeds"] == 2).all()
    # Holm within each family: the picks' comparisons, and apart the ceilings'
    assert comparison["ceiling"].tolist() == (comparison["variant"] == pick["ceiling"]).tolist()
    for _, rows in comparison.groupby("ceiling"):
        assert rows["ndcg@10_p_holm"].tolist() == pytest.approx(holm(rows["ndcg@10_p"].to_numpy()).tolist())
    report = (run / "sweep" / "test" / "report.md").read_text()
    assert "| cold_start | lightgcn | popularity:raw+context |" in report  # the validation table, every arm
    assert "Test: what validation picked" in report and pick["ceiling"] in out


def test_a_test_pass_before_validation_and_a_config_without_sweep_fail_in_one_line(tmp_path):
    cfg = sweep_config()
    config = write_config(tmp_path / "s.yaml", cfg)
    code, _, err = run_cli("sweep", config, "--run-dir", str(tmp_path / "r"), "--phase", "test")
    assert code != 0
    [line] = err.strip().splitlines()
    assert "sweep/validation" in line and "--phase validate" in line
    cfg["sweep"]["models"] = ["bert"]  # not a model of train.models: refused by `mdrec sweep` only
    code, _, err = run_cli("sweep", write_config(tmp_path / "b.yaml", cfg), "--run-dir", str(tmp_path / "b"))
    assert code != 0
    [line] = err.strip().splitlines()
    assert "sweep.models" in line and "'bert'" in line and "lightgcn" in line
    assert not (tmp_path / "b").exists()
    code, _, err = run_cli("config", str(tmp_path / "b.yaml"))
    assert code == 0, err
    del cfg["sweep"]
    code, _, err = run_cli("sweep", write_config(tmp_path / "n.yaml", cfg), "--run-dir", str(tmp_path / "n"))
    assert code != 0
    [line] = err.strip().splitlines()
    assert "sweep" in line and "backends" in line
    assert not (tmp_path / "n").exists()

def test_the_test_lift_is_split_by_whether_the_backend_wrote_the_answer(swept):
    run, _, _, _ = swept
    [pick] = json.loads((run / "sweep" / "validation" / "picks.json").read_text())
    lift = pd.read_csv(run / "sweep" / "test" / "lift_by_rows.csv")
    comparison = pd.read_csv(run / "sweep" / "test" / "comparison.csv")
    assert set(lift["arm"]) == set(comparison["variant"])  # every scored augmented arm, real-only never
    cases = pd.read_parquet(run / "prepared" / "cases")
    test = cases[(cases["protocol"] == "cold_start") & (cases["split"] == "test")]
    oracle = pd.read_parquet(run / "backends" / "oracle" / "synthetic" / "raw", columns=["user_idx", "item_idx"])
    written = set(zip(oracle["user_idx"], oracle["item_idx"]))
    answered = sum((u, i) in written for u, i in zip(test["user_idx"], test["item_idx"]))
    ceiling = lift[lift["arm"] == pick["ceiling"]]
    assert ceiling.loc[ceiling["group"] == "answer among the user's rows", "cases"].sum() == answered
    for (arm, domain), rows in lift.groupby(["arm", "domain"]):
        row = comparison[(comparison["variant"] == arm) & (comparison["domain"] == domain)].iloc[0]
        # the groups partition the domain's cases, and their parts add up to the whole difference
        assert rows["cases"].sum() == row["cases"]
        assert (rows["delta"] * rows["share"]).sum() == pytest.approx(row["ndcg@10_delta"], abs=1e-9)
    assert "Where the lift comes from" in (run / "sweep" / "test" / "report.md").read_text()

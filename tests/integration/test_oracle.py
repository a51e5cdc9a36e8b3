"""The oracle backend (the ceiling of augmentation): refused unless allowed, never a validation or
test case, exactly the held-out rows it promises on real data, true taste on the world, and
marked as oracle in the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mdrec.config import config_from_dict
from mdrec.data import world
from mdrec.generate.backends.oracle import held_out_training_rows
from mdrec.generate.stage import run_generate
from mdrec.prepare.stage import run_prepare
from mdrec.storage import RunDir, resolve
from tests.conftest import run_cli
from tests.integration.conftest import world_config, write_config

ORACLE = {"type": "oracle", "allow_oracle": True, "cpus_per_actor": 0.5, "batch_size": 32}


def table_config(tables, **generate) -> dict:
    """The world's rows as plain tables: the oracle then has only the data's held-out rows to read."""
    return {
        "name": "oracle", "seed": 0,
        "data": {"source": {"type": "table", "interactions": str(tables / "interactions.parquet"),
                            "items": str(tables / "items.parquet"),
                            "interaction_columns": {"timestamp": "ts", "seq": None}}},
        "prepare": {"num_negatives": 10, "roles": {"Music": "cold", "Books": "rich"}, "cold_start": {"fraction": 0.5}},
        "generate": {"backend": ORACLE, "protocols": ["warm", "cold_start"], "encoder": {"cpus_per_actor": 0.5},
                     "candidates": {"size": 10, "popular": 10}, "users_per_shard": 64,
                     "budget": {"per_user": 3, "ratio": 10.0}, **generate},  # every eligible user
        "ray": {"progress_bars": False},
    }


@pytest.fixture(scope="module")
def real_run(ray_session, tmp_path_factory):
    folder = tmp_path_factory.mktemp("oracle")
    source = config_from_dict(world_config(users=400)).data.source
    items, interactions = world.generate(source, seed=0)
    pd.DataFrame(interactions.to_pandas()).to_parquet(folder / "interactions.parquet")
    pd.DataFrame(items.to_pandas()).to_parquet(folder / "items.parquet")
    cfg = config_from_dict(table_config(folder))
    run_dir = folder / "run"
    run_prepare(cfg, RunDir(str(run_dir)))
    report = run_generate(cfg, RunDir(str(run_dir)))
    return run_dir, report, pd.read_parquet(run_dir / "synthetic" / "raw")


def test_oracle_is_refused_unless_allowed(tmp_path):
    cfg = world_config()
    cfg["generate"] = {"backend": {"type": "oracle"}}
    code, _, err = run_cli("generate", write_config(tmp_path / "c.yaml", cfg), "--run-dir", str(tmp_path / "r"))
    assert code != 0
    [line] = err.strip().splitlines()
    assert "generate.backend" in line and "allow_oracle: true" in line
    assert not (tmp_path / "r" / "synthetic").exists()


def test_oracle_never_writes_a_validation_or_test_case(real_run):
    run_dir, _, rows = real_run
    cases = pd.read_parquet(run_dir / "prepared" / "cases")
    written = set(zip(rows["user_idx"], rows["item_idx"]))
    assert written and not written & set(zip(cases["user_idx"], cases["item_idx"]))
    # Nor does its reader return one: every protocol's validation and test cases stay out.
    read = held_out_training_rows(resolve(str(run_dir / "prepared")), [1])
    read_pairs = {(u, i) for (u, _), items in read.items() for i in items}
    assert read_pairs and not read_pairs & set(zip(cases["user_idx"], cases["item_idx"]))


def test_oracle_writes_each_held_out_users_own_rows_most_recent_first(real_run):
    run_dir, report, rows = real_run
    inter = pd.read_parquet(run_dir / "prepared" / "interactions")
    cases = pd.read_parquet(run_dir / "prepared" / "cases")
    cold = cases[(cases["protocol"] == "cold_start") & (cases["domain_idx"] == 1)]
    held = inter[inter["held_out"] & (inter["domain_idx"] == 1) & (inter["split"] == "train")]
    expected = {}
    for user, mine in held.sort_values(["ts", "item_id"]).groupby("user_idx"):
        others = [i for i in mine["item_idx"] if i not in set(cold.loc[cold["user_idx"] == user, "item_idx"])]
        if others:
            expected[user] = others[::-1][:3]
    got = rows[rows["protocol"] == "cold_start"].sort_values("rank").groupby("user_idx")["item_idx"].agg(list).to_dict()
    assert got == expected and len(expected) > 10
    assert set(rows["backend"]) == {"oracle"} and (rows["rejected_item_idx"].isna()).all()


def test_oracle_gives_warm_users_nothing_and_the_report_says_so(real_run):
    _, report, rows = real_run
    assert "warm" not in set(rows["protocol"])
    contexts = {t["protocol"]: t["contexts"] for t in report["targets"]}
    written_users = rows.groupby("protocol")["user_idx"].nunique().to_dict()
    nothing = contexts["warm"] + contexts["cold_start"] - written_users["cold_start"]
    assert contexts["warm"] > 0 and report["problems"] == {"nothing_to_give": nothing}
    assert "held-out" in report["backend_details"]["oracle"]


def test_oracle_on_the_world_draws_from_true_taste(ray_session, tmp_path):
    cfg = world_config(users=400, cold_start={"fraction": 0.4})
    cfg["generate"] = {"backend": ORACLE, "protocols": ["cold_start"], "users": {"held_out_only": True},
                       "encoder": {"cpus_per_actor": 0.5}, "users_per_shard": 64, "budget": {"per_user": 3, "ratio": 1.0}}
    run_dir = tmp_path / "w"
    config = write_config(tmp_path / "w.yaml", cfg)
    assert run_cli("prepare", config, "--run-dir", str(run_dir))[0] == 0
    code, out, err = run_cli("generate", config, "--run-dir", str(run_dir))
    assert code == 0, err
    assert "ORACLE" in out
    report = json.loads((run_dir / "synthetic" / "generate_report.json").read_text())
    [q] = report["quality"]["targets"]
    # On-taste picks: far above a uniform draw from the same lists and above popularity's picks.
    assert q["taste"]["backend"] > q["taste"]["random"] + 0.1 and q["taste"]["backend"] > q["taste"]["popularity"]
    assert report["rows"] == 3 * report["contexts"]  # the world always has something honest to draw

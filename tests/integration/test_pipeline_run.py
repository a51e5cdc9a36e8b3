"""`mdrec run` end to end on a generated world: generate, filter, train the three variants, evaluate,
report; then the same run killed mid-training and resumed gives the same report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_cli
from tests.integration.conftest import run_cli_until, world_config, write_config

STEPS = [
    {"name": "validity"}, {"name": "dedupe"}, {"name": "seen"},
    {"name": "min_score", "quantile": 0.1},
    {"name": "top_k", "k": 2},
    {"name": "teacher", "drop_fraction": 0.25},
    {"name": "popularity_cap", "max_share": 0.15},
    {"name": "budget", "ratio": 0.05},
]


def pipeline_config() -> dict:
    cfg = world_config(users=600, cold_start={"fraction": 0.4})
    cfg["generate"] = {"backend": {"type": "popularity", "cpus_per_actor": 0.5, "batch_size": 32},
                       "candidates": {"size": 10, "popular": 10}, "users_per_shard": 40,
                       "budget": {"per_user": 3, "ratio": 0.6}}
    cfg["filter"] = {"steps": STEPS, "tasks": 3}
    cfg["train"] = {"models": [{"name": "star"}], "protocols": ["cold_start"], "variants": ["real", "raw", "filtered"],
                    "synthetic": {"modes": [{"name": "label", "params": {"weight": 0.5}}]}, "epochs": 2, "batch_size": 256, "resources_per_worker": {"CPU": 0.5},
                    "early_stopping": {"metric": "ndcg@10", "patience": 2}}
    cfg["evaluate"] = {"num_actors": 1}
    return cfg


@pytest.fixture(scope="module")
def pipeline_run(ray_session, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    config = write_config(folder / "c.yaml", pipeline_config())
    run_dir = folder / "run"
    code, out, err = run_cli("run", config, "--run-dir", str(run_dir))
    assert code == 0, err[-3000:]
    return config, run_dir, out, err


def _read(path) -> pd.DataFrame:
    return pd.read_parquet(path)


def test_filter_report_accounts_for_every_row(pipeline_run):
    _, run_dir, out, _ = pipeline_run
    report = json.loads((run_dir / "synthetic" / "filter_report.json").read_text())
    raw, kept = _read(run_dir / "synthetic" / "raw"), _read(run_dir / "synthetic" / "filtered")
    dropped = _read(run_dir / "synthetic" / "dropped")
    assert report["raw"] == len(raw) > 0 and report["kept"] == len(kept) > 0
    assert len(kept) + len(dropped) == len(raw)
    assert [s["name"] for s in report["steps"]] == [s["name"] for s in STEPS]
    by_name = dropped["dropped_by"].value_counts().to_dict()
    for step in report["steps"]:
        assert step["dropped"] == by_name.get(step["name"], 0), step["name"]
        assert step["why"]
    for key in report["by_protocol_and_domain"]:
        assert key["raw"] == key["kept"] + sum(key["dropped"].values())
    # These filters had work to do on this data; validity, dedupe and seen had none (generation
    # already guarantees what they check).
    for name in ("min_score", "top_k", "teacher", "popularity_cap", "budget"):
        assert by_name.get(name, 0) > 0, name
    assert not {"validity", "dedupe", "seen"} & set(by_name)
    # Every row is in exactly one of the two outputs.
    key = ["protocol", "user_id", "item_id"]
    both = pd.concat([kept[key], dropped[key]])
    assert not both.duplicated().any()
    assert set(map(tuple, both.to_numpy())) == set(map(tuple, raw[key].to_numpy()))
    assert "-teacher" in out and (run_dir / "synthetic" / "filter_scores.png").stat().st_size > 10_000


def test_kept_rows_meet_every_limit(pipeline_run):
    _, run_dir, _, _ = pipeline_run
    raw, kept = _read(run_dir / "synthetic" / "raw"), _read(run_dir / "synthetic" / "filtered")
    dropped = _read(run_dir / "synthetic" / "dropped")
    train = _read(run_dir / "prepared" / "train")
    # top_k: at most 2 per user and domain.
    assert kept.groupby(["protocol", "user_idx", "domain_idx"]).size().max() <= 2
    # budget: at most 0.05 x the domain's real training rows the protocol sees.
    real = train[~train["held_out"]].groupby("domain_idx").size()
    for domain, n in kept.groupby("domain_idx").size().items():
        assert n <= int(np.floor(0.05 * real[domain]))
    # min_score (quantile 0.1, the first filter with work): the lowest tenth of each domain's scores.
    for domain, group in raw.groupby("domain_idx"):
        gone = dropped[(dropped["domain_idx"] == domain) & (dropped["dropped_by"] == "min_score")]
        past = pd.concat([kept, dropped[dropped["dropped_by"] != "min_score"]])
        assert len(gone) == int(np.floor(0.1 * len(group)))
        assert gone["score"].max() <= past.loc[past["domain_idx"] == domain, "score"].min()
    # teacher: what it dropped scored lowest among the rows it saw (they all carry its score).
    seen_by_teacher = pd.concat([kept, dropped[dropped["dropped_by"].isin(["teacher", "popularity_cap", "budget"])]])
    assert seen_by_teacher["teacher_score"].notna().all()
    by_teacher = dropped[dropped["dropped_by"] == "teacher"]
    survivors = seen_by_teacher[seen_by_teacher["dropped_by"].fillna("") != "teacher"]
    assert by_teacher["teacher_score"].max() <= survivors["teacher_score"].min()
    assert len(by_teacher) == int(np.floor(0.25 * len(seen_by_teacher)))
    # popularity_cap: among the rows it kept, no item above 15% of its domain's rows (or just 1 row).
    after_cap = pd.concat([kept, dropped[dropped["dropped_by"] == "budget"]])
    per_item = after_cap.groupby(["domain_idx", "item_idx"]).size()
    totals = after_cap.groupby("domain_idx").size()
    for (domain, _), n in per_item.items():
        assert n <= max(1, int(np.floor(0.15 * totals[domain])))


def test_each_variant_trains_on_its_rows_and_is_scored_on_the_same_cases(pipeline_run):
    _, run_dir, _, _ = pipeline_run
    raw, kept = _read(run_dir / "synthetic" / "raw"), _read(run_dir / "synthetic" / "filtered")
    expected = {"real": 0, "raw": len(raw), "filtered": len(kept)}
    cases = _read(run_dir / "prepared" / "cases")
    test_ids = set(cases[(cases["protocol"] == "cold_start") & (cases["split"] == "test")]["case_id"])
    scored = {}
    for variant, rows in expected.items():
        metrics = json.loads((run_dir / "models" / "star" / variant / "cold_start" / "seed-0" / "metrics.json").read_text())
        assert metrics["synthetic_rows"] == rows
        # One worker reads every row once per epoch: synthetic positives are exactly the variant's rows.
        assert [h["synthetic_positives"] for h in metrics["history"]] == [rows] * metrics["epochs_run"]
        per_case = _read(run_dir / "evaluation" / "star" / variant / "cold_start" / "seed-0" / "cases.parquet")
        scored[variant] = per_case.sort_values("case_id").reset_index(drop=True)
        # Synthetic rows never become evaluation cases: exactly the prepared test cases are scored.
        assert set(per_case["case_id"]) == test_ids
    assert (scored["raw"]["case_id"] == scored["real"]["case_id"]).all()
    assert not np.allclose(scored["raw"]["ndcg@10"], scored["real"]["ndcg@10"])  # the synthetic rows changed the model


def test_report_compares_augmented_with_real_only(pipeline_run):
    _, run_dir, _, _ = pipeline_run
    text = (run_dir / "report" / "report.md").read_text()
    assert "## Augmented against real-only" in text
    comparison = pd.read_csv(run_dir / "report" / "comparison.csv")
    assert set(comparison["variant"]) == {"raw", "filtered"}
    assert set(comparison["domain"]) == {"Music"}  # cold-start cases exist only in the cold domain
    assert comparison["ndcg@10_p"].between(0, 1).all() and comparison["case_auc_p"].between(0, 1).all()
    for row in comparison.itertuples():
        assert f"| cold_start | star | {row.variant} |" in text
    assert (run_dir / "report" / "augmentation.png").exists()
    # The validation table (what filter settings are chosen on) has every variant.
    validation = text[text.index("## Validation"):]
    for variant in ("real", "raw", "filtered"):
        assert f"| cold_start | star | {variant} | ndcg@10 | 1 |" in validation


def test_rerun_reuses_every_stage(pipeline_run):
    config, run_dir, _, _ = pipeline_run
    before = (run_dir / "report" / "summary.csv").read_text()
    code, _, err = run_cli("run", config, "--run-dir", str(run_dir))
    assert code == 0, err[-2000:]
    for stage in ("generate: reusing", "filter: reusing", "train star filtered cold_start seed 0: reusing",
                  "evaluate star raw cold_start seed 0: reusing"):
        assert stage in err, stage
    assert (run_dir / "report" / "summary.csv").read_text() == before


def test_killed_mid_training_resumes_and_gives_the_same_report(pipeline_run, tmp_path):
    config, full_run, _, _ = pipeline_run
    run_dir = tmp_path / "run"
    # What the uninterrupted run committed before the filtered variant's training, copied (stage
    # commits hold content fingerprints, not paths): this run reuses them and trains only that one.
    for stage in ("prepared", "synthetic", "models/star/real", "models/star/raw"):
        shutil.copytree(full_run / stage, run_dir / stage)
    # The filtered variant's first epoch: raw is committed, filtered is mid-way. The progress line is
    # printed before the checkpoint is reported: kill only once Ray Train has registered it.
    lines = run_cli_until(["run", config, "--run-dir", str(run_dir)], "[star filtered cold_start seed 0] epoch 1/", 420,
                          ready=lambda: any((run_dir / ".train").glob("star-filtered-*/checkpoint_manager_snapshot.json")))
    assert any("[star filtered cold_start seed 0] epoch 1/" in line for line in lines), "".join(lines[-30:])
    assert sum("reusing" in line for line in lines) >= 5  # prepare, generate, filter, train real and raw
    assert (run_dir / "models" / "star" / "raw" / "cold_start" / "seed-0" / "_COMMITTED.json").exists()
    assert not (run_dir / "models" / "star" / "filtered").exists()
    assert not (run_dir / "report").exists()

    code, _, err = run_cli("run", config, "--run-dir", str(run_dir))
    assert code == 0, err[-3000:]
    assert "train star raw cold_start seed 0: reusing" in err and "filter: reusing" in err
    metrics = json.loads((run_dir / "models" / "star" / "filtered" / "cold_start" / "seed-0" / "metrics.json").read_text())
    # It went on from the checkpoint of epoch 1, not from scratch.
    assert metrics["attempt_starts"] == [0, 1], metrics["attempt_starts"]
    resumed = pd.read_csv(run_dir / "report" / "summary.csv")
    full = pd.read_csv(full_run / "report" / "summary.csv")
    print(f"killed mid-training and resumed: {len(resumed)} report values, "
          f"largest difference from the uninterrupted run {np.abs(resumed['mean'] - full['mean']).max():.2e}")
    pd.testing.assert_frame_equal(resumed, full)
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "report" / "comparison.csv"),
                                  pd.read_csv(full_run / "report" / "comparison.csv"))


def test_filter_before_generate_is_a_one_line_error(ray_session, tmp_path):
    cfg = pipeline_config()
    config = write_config(tmp_path / "c.yaml", cfg)
    from mdrec.config import load_config
    from mdrec.filter.stage import run_filter
    from mdrec.prepare.stage import run_prepare
    from mdrec.storage import RunDir

    run = RunDir(str(tmp_path / "run"))
    run_prepare(load_config(config), run)
    from mdrec.errors import DataError

    with pytest.raises(DataError, match=r"synthetic/raw: no synthetic interactions yet \(run `mdrec generate` first\)"):
        run_filter(load_config(config), run)


def test_unknown_teacher_model_names_the_key(pipeline_run, tmp_path):
    config, run_dir, _, _ = pipeline_run
    code, _, err = run_cli("filter", config, "--run-dir", str(run_dir), "--set",
                           "filter.steps=[{name: teacher, model: nosuch}]")
    assert code == 2
    assert err.strip().splitlines()[-1] == ("error: filter.steps teacher.model: 'nosuch' is not in train.models "
                                            "(star)")


def test_report_marks_rows_of_the_oracle_as_oracle(pipeline_run, tmp_path):
    """A ceiling must never be read as a result: when the synthetic rows came from the oracle
    backend, every augmented variant in the tables, comparison and validation says so."""
    _, run_dir, _, _ = pipeline_run
    copy = tmp_path / "oracle-run"
    shutil.copytree(run_dir, copy)
    generate_report = copy / "synthetic" / "generate_report.json"
    generate_report.write_text(json.dumps({**json.loads(generate_report.read_text()), "backend": "oracle"}))
    code, _, err = run_cli("report", str(copy))
    assert code == 0, err[-2000:]
    text = (copy / "report" / "report.md").read_text()
    comparison = pd.read_csv(copy / "report" / "comparison.csv")
    assert set(comparison["variant"]) == {"raw (oracle)", "filtered (oracle)"}
    assert "| cold_start | star | raw (oracle) |" in text and "| cold_start | star | raw |" not in text
    assert "| cold_start | star | real |" in text

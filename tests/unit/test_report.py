"""Report tables: mean and spread over seeds, one table per domain."""

from __future__ import annotations

import pandas as pd
import pytest

from mdrec.report import plots, tables


def long_metrics() -> pd.DataFrame:
    rows = []
    for seed, ndcg in enumerate([0.2, 0.3, 0.4]):
        for domain, role, scale in (("Food", "cold", 1.0), ("Kitchen", "rich", 2.0)):
            for metric, value in (("ndcg@10", ndcg * scale), ("auc", 0.7), ("cases", 100)):
                rows.append({"model": "star", "variant": "real", "protocol": "warm", "seed": seed, "domain": domain,
                             "role": role, "metric": metric, "value": value})
    rows.append({"model": "sasrec", "variant": "real", "protocol": "cold_start", "seed": 0, "domain": "Food",
                 "role": "cold", "metric": "ndcg@10", "value": 0.25})
    return pd.DataFrame(rows)


def test_aggregate_gives_mean_sample_std_and_seed_count():
    summary = tables.aggregate(long_metrics()).set_index(["domain", "protocol", "model", "metric"])
    star = summary.loc[("Food", "warm", "star", "ndcg@10")]
    assert star["mean"] == pytest.approx(0.3) and star["std"] == pytest.approx(0.1) and star["seeds"] == 3
    assert summary.loc[("Kitchen", "warm", "star", "ndcg@10")]["mean"] == pytest.approx(0.6)
    one = summary.loc[("Food", "cold_start", "sasrec", "ndcg@10")]
    assert one["std"] == 0.0 and one["seeds"] == 1


def test_domain_tables_have_one_row_per_run_and_mean_pm_std_cells():
    out = tables.domain_tables(tables.aggregate(long_metrics()))
    assert set(out) == {"Food", "Kitchen"}
    food = out["Food"].splitlines()
    assert food[0].startswith("| protocol | model | variant | seeds | cases | ndcg@10 |")
    assert "| warm | star | real | 3 | 100 | 0.3000 ± 0.1000 |" in out["Food"]
    assert "| cold_start | sasrec | real | 1 | " in out["Food"] and "0.2500 |" in out["Food"]
    assert "sasrec" not in out["Kitchen"]


def test_plots_are_png():
    summary = tables.aggregate(long_metrics())
    assert plots.metric_bars(summary, "ndcg@10")[:4] == b"\x89PNG"


def trained_run(seed: int, best_epoch: int, food: list[float], kitchen: list[float] | None) -> dict:
    """A run's metrics.json: per-epoch pooled and per-domain validation NDCG@10."""
    history = []
    for epoch, f in enumerate(food):
        h = {"epoch": epoch, "loss": 0.5, "valid_ndcg@10": f if kitchen is None else (f + kitchen[epoch]) / 2}
        if kitchen is not None:
            h["valid_by_domain"] = {"Food": {"ndcg@10": f, "cases": 10}, "Kitchen": {"ndcg@10": kitchen[epoch], "cases": 10}}
        history.append(h)
    return {"model": "star", "variant": "filtered", "protocol": "warm", "seed": seed, "early_stopping_metric": "ndcg@10",
            "best_epoch": best_epoch, "best_value": history[best_epoch]["valid_ndcg@10"], "history": history}


def test_validation_table_shows_each_domain_at_the_best_epoch():
    from mdrec.report import collect

    # seed 0 is best at epoch 1, seed 1 at epoch 0: each domain's value is read at that epoch
    runs = [trained_run(0, 1, [0.10, 0.30], [0.50, 0.50]), trained_run(1, 0, [0.20, 0.00], [0.60, 0.90])]
    validation = collect.best_validation(runs)
    food = validation[validation["domain"] == "Food"].sort_values("seed")["value"].tolist()
    assert food == [0.30, 0.20]
    table = tables.validation_table(validation)
    assert "| protocol | model | variant | metric | seeds | best validation | Food | Kitchen |" in table
    assert "| warm | star | filtered | ndcg@10 | 2 | 0.4000 ± 0.0000 | 0.2500 ± 0.0707 | 0.5500 ± 0.0707 |" in table
    # runs from before per-domain validation: the pooled column only, and curves skip the dicts
    old = collect.best_validation([trained_run(0, 0, [0.1], None)])
    assert list(old["domain"]) == ["all"]
    curves = collect.training_curves(runs)
    assert set(curves["metric"]) == {"loss", "valid_ndcg@10"}


def test_validation_picks_take_each_cold_domain_best_variant_by_its_mean():
    from mdrec.report import collect

    runs = []
    for variant, foods in (("real", [0.30, 0.32]), ("raw", [0.35, 0.31]), ("raw+pairwise", [0.28, 0.29])):
        for seed, food in enumerate(foods):
            run = trained_run(seed, 0, [food], [0.5])
            runs.append({**run, "variant": variant})
    picks = tables.validation_picks(collect.best_validation(runs), ["Food"])
    # raw's mean 0.33 beats real's 0.31; Kitchen (rich) is not a cold domain
    assert "| warm | star | Food | ndcg@10 | 0.3100 | raw | 0.3300 | +0.0200 | 2 |" in picks
    assert "Kitchen" not in picks
    tied = [{**r, "variant": v} for r in runs if r["variant"] == "real" for v in ("filtered", "real")]
    assert "| warm | star | Food | ndcg@10 | 0.3100 | real | 0.3100 |  | 2 |" in tables.validation_picks(
        collect.best_validation(tied), ["Food"])  # a tie keeps real-only
    only_real = [r for r in runs if r["variant"] == "real"]
    assert tables.validation_picks(collect.best_validation(only_real), ["Food"]) == ""

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

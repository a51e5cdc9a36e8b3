"""The augmented-against-real comparison: pairing by case, seeds, p-values, Holm, fairness columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from mdrec.report.compare import compare, comparison_tables, holm, paired_test


def cases_frame(rng, shift: float, seeds=(0, 1, 2), n=400) -> pd.DataFrame:
    """Per-case metrics of a real run and an augmented one whose NDCG is `shift` higher on average."""
    frames = []
    base = rng.random(n)
    for variant, delta in (("real", 0.0), ("filtered", shift)):
        for seed in seeds:
            noise = rng.normal(0, 0.01, n)
            frames.append(pd.DataFrame({
                "model": "star", "variant": variant, "protocol": "warm", "seed": seed, "case_id": np.arange(n),
                "domain": "Music", "ndcg@10": base + delta + noise, "case_auc": base + noise}))
    return pd.concat(frames, ignore_index=True)


def summary_frame() -> pd.DataFrame:
    rows = []
    for variant, cov in (("real", 0.2), ("filtered", 0.3)):
        for metric, value in (("coverage@10", cov), ("gini_exposure@10", 0.9 - cov), ("gini_user_ndcg@10", 0.5)):
            rows.append({"domain": "Music", "protocol": "warm", "model": "star", "variant": variant,
                         "metric": metric, "mean": value, "std": 0.0, "seeds": 3})
    return pd.DataFrame(rows)


def test_a_real_gain_is_significant_and_matches_scipy():
    cases = cases_frame(np.random.default_rng(0), shift=0.01)
    table = compare(cases, summary_frame())
    assert len(table) == 1
    row = table.iloc[0]
    assert row["cases"] == 400 and row["seeds"] == 3
    assert abs(row["ndcg@10_delta"] - 0.01) < 0.003
    real = cases[cases.variant == "real"].groupby("case_id")["ndcg@10"].mean()
    aug = cases[cases.variant == "filtered"].groupby("case_id")["ndcg@10"].mean()
    assert row["ndcg@10_p"] == stats.ttest_rel(aug, real).pvalue < 1e-6
    assert row["ndcg@10_seeds_better"] == 3
    assert row["case_auc_p"] > 0.01  # the AUC column did not move
    assert (row["coverage@10_real"], row["coverage@10_aug"]) == (0.2, 0.3)
    text = comparison_tables(table)["Music"]
    assert "| warm | star | filtered | 400 |" in text and "p <0.001" in text and "0.200 → 0.300" in text


def test_no_difference_gives_p_one_and_only_shared_seeds_and_cases_are_paired():
    cases = cases_frame(np.random.default_rng(1), shift=0.0)
    aug = cases["variant"] == "filtered"
    cases.loc[aug, "ndcg@10"] = cases.loc[~aug, "ndcg@10"].to_numpy()
    extra = cases[aug & (cases.seed == 0)].assign(seed=7)  # a seed real-only does not have
    cases = pd.concat([cases, extra, cases[aug].head(1).assign(case_id=10_000)], ignore_index=True)
    row = compare(cases, summary_frame()).iloc[0]
    assert row["seeds"] == 3 and row["cases"] == 400
    assert row["ndcg@10_p"] == 1.0 and row["ndcg@10_delta"] == 0.0


def test_without_a_real_run_there_is_nothing_to_compare():
    cases = cases_frame(np.random.default_rng(2), shift=0.1)
    assert compare(cases[cases.variant != "real"], summary_frame()).empty


def test_holm_adjustment():
    assert np.allclose(holm(np.array([0.01, 0.04, 0.03, 0.2])), [0.04, 0.09, 0.09, 0.2])
    assert np.allclose(holm(np.array([0.5, 0.5])), [1.0, 1.0])
    assert paired_test(np.array([1.0]), np.array([0.0])) == 1.0  # one case: no test

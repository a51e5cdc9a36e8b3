"""Augmented against real-only, per domain: differences, paired significance tests, fairness.

Every variant is scored on the same stored test cases, so the comparison is paired case by case:
each case's metric is averaged over the seeds both variants have, and a two-sided paired t-test
over the cases asks whether the mean difference is zero. With many comparisons in one report,
some small p-values come by chance: `p_holm` adjusts the NDCG@10 p-values for all of them
(Holm-Bonferroni). The seeds give a second, coarser view: in how many seeds the augmented
variant's domain mean beats real-only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mdrec.significance import format_p, holm, paired_test

REAL = "real"
TESTED = ["ndcg@10", "case_auc"]  # per-case metrics the paired tests run on
FAIRNESS = ["coverage@10", "gini_exposure@10", "gini_user_ndcg@10"]  # domain-level, shown side by side
GROUP = ["domain", "protocol", "model"]


def compare(cases: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (domain, protocol, model, augmented variant) with a real-only run beside it.

    `cases`: per-case metrics (model, variant, protocol, seed, case_id, domain, ndcg@10, auc, ...).
    `summary`: the report's mean/std table (for the fairness columns).
    """
    rows = []
    means = summary.set_index(["domain", "protocol", "model", "variant", "metric"])["mean"]
    for (domain, protocol, model), part in cases.groupby(GROUP, sort=True):
        real = part[part["variant"] == REAL]
        if real.empty:
            continue
        for variant, aug in part[part["variant"] != REAL].groupby("variant", sort=True):
            seeds = sorted(set(real["seed"]) & set(aug["seed"]))
            if not seeds:
                continue
            r = real[real["seed"].isin(seeds)]
            a = aug[aug["seed"].isin(seeds)]
            row = {"domain": domain, "protocol": protocol, "model": model, "variant": variant, "seeds": len(seeds)}
            for metric in TESTED:
                paired = (r.groupby("case_id")[metric].mean().rename("real").to_frame()
                          .join(a.groupby("case_id")[metric].mean().rename("aug"), how="inner"))
                row["cases"] = len(paired)
                row[f"{metric}_real"] = float(paired["real"].mean())
                row[f"{metric}_aug"] = float(paired["aug"].mean())
                row[f"{metric}_delta"] = row[f"{metric}_aug"] - row[f"{metric}_real"]
                row[f"{metric}_p"] = paired_test(paired["aug"].to_numpy(), paired["real"].to_numpy())
                per_seed = (a.groupby("seed")[metric].mean() - r.groupby("seed")[metric].mean()).dropna()
                row[f"{metric}_delta_std"] = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0
                row[f"{metric}_seeds_better"] = int((per_seed > 0).sum())
            for metric in FAIRNESS:
                for v, label in ((REAL, "real"), (variant, "aug")):
                    row[f"{metric}_{label}"] = float(means.get((domain, protocol, model, v, metric), np.nan))
            rows.append(row)
    out = pd.DataFrame(rows)
    if not out.empty:
        out["ndcg@10_p_holm"] = holm(out["ndcg@10_p"].to_numpy())
    return out


def _delta(row, metric: str) -> str:
    return (f"{row[f'{metric}_real']:.4f} → {row[f'{metric}_aug']:.4f} ({row[f'{metric}_delta']:+.4f}, "
            f"p {format_p(row[f'{metric}_p'])})")


def comparison_tables(table: pd.DataFrame) -> dict[str, str]:
    """Domain -> Markdown table of every augmented variant against real-only."""
    out = {}
    if table.empty:
        return out
    for domain, part in table.groupby("domain", sort=False):
        lines = ["| protocol | model | variant | cases | ndcg@10 real → augmented (Δ, p) | p (Holm) | seeds better | "
                 "case AUC real → augmented (Δ, p) | coverage@10 | gini_exposure@10 | gini_user_ndcg@10 |",
                 "|" + "---|" * 11]
        for row in part.sort_values(["protocol", "model", "variant"]).to_dict("records"):
            fair = [f"{row[f'{m}_real']:.3f} → {row[f'{m}_aug']:.3f}" for m in FAIRNESS]
            lines.append(f"| {row['protocol']} | {row['model']} | {row['variant']} | {row['cases']:,} | "
                         f"{_delta(row, 'ndcg@10')} | {format_p(row['ndcg@10_p_holm'])} | "
                         f"{row['ndcg@10_seeds_better']}/{row['seeds']} | {_delta(row, 'case_auc')} | " + " | ".join(fair) + " |")
        out[domain] = "\n".join(lines)
    return out

"""Markdown tables of the report: one per domain, mean ± std over seeds."""

from __future__ import annotations

import math

import pandas as pd

# The columns of the per-domain tables, in reading order: ranking, CTR, then fairness.
SHOWN = ["ndcg@10", "hr@10", "ndcg@20", "auc", "gauc", "logloss", "coverage@10", "gini_exposure@10",
         "gini_user_ndcg@10", "full_ndcg@10", "full_hr@10", "full_coverage@10"]
GROUP = ["domain", "protocol", "model", "variant"]


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof 1; 0 for one seed) and seed count per domain, protocol, model, variant, metric."""
    grouped = long.groupby([*GROUP, "metric"], sort=True)["value"]
    out = grouped.agg(mean="mean", std=lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0, seeds="count")
    return out.reset_index()


def _cell(mean: float, std: float, seeds: int, metric: str) -> str:
    if metric == "cases":
        return f"{mean:,.0f}"
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4f} ± {std:.4f}" if seeds > 1 else f"{mean:.4f}"


def domain_tables(summary: pd.DataFrame) -> dict[str, str]:
    """Domain -> Markdown table with one row per (protocol, model, variant)."""
    tables = {}
    for domain, part in summary.groupby("domain", sort=False):
        shown = [m for m in ["cases", *SHOWN] if m in set(part["metric"])]
        wide = part.set_index(["protocol", "model", "variant", "metric"])[["mean", "std", "seeds"]]
        lines = ["| protocol | model | variant | seeds | " + " | ".join(shown) + " |",
                 "|" + "---|" * (4 + len(shown))]
        for (protocol, model, variant), rows in wide.groupby(level=[0, 1, 2], sort=True):
            rows = rows.droplevel([0, 1, 2])
            seeds = int(rows["seeds"].max())
            cells = [_cell(*rows.loc[m, ["mean", "std", "seeds"]], m) if m in rows.index else "" for m in shown]
            lines.append(f"| {protocol} | {model} | {variant} | {seeds} | " + " | ".join(cells) + " |")
        tables[domain] = "\n".join(lines)
    return tables


def validation_table(validation: pd.DataFrame) -> str:
    """Markdown: protocol x model x variant, the best validation value (all cases, then each domain's
    own at that epoch), mean ± std over seeds."""
    domains = sorted(d for d in validation["domain"].unique() if d != "all")
    head = ["protocol", "model", "variant", "metric", "seeds", "best validation", *domains]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    grouped = validation.groupby(["protocol", "model", "variant", "metric"], sort=True)
    for (protocol, model, variant, metric), rows in grouped:
        cells = []
        for domain in ["all", *domains]:
            values = rows.loc[rows["domain"] == domain, "value"]
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            cells.append(_cell(float(values.mean()), std, len(values), metric) if len(values) else "")
        seeds = int((rows["domain"] == "all").sum())
        lines.append(f"| {protocol} | {model} | {variant} | {metric} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def validation_picks(validation: pd.DataFrame, cold_domains: list[str]) -> str:
    """Markdown: for each protocol, model and cold domain with more than one variant, the variant
    with the highest mean validation value in that domain (what a choice made without peeking at
    test would take), beside real-only. Empty when no model has an augmented variant."""
    lines = []
    cold = validation[validation["domain"].isin(cold_domains)]
    for (protocol, model, domain, metric), rows in cold.groupby(["protocol", "model", "domain", "metric"], sort=True):
        means = rows.groupby("variant")["value"].agg(["mean", "count"])
        if len(means) < 2:
            continue
        # real first: a tie (a reference model that ignores synthetic rows) keeps real-only
        means = means.loc[sorted(means.index, key=lambda v: v != "real")]
        pick = means["mean"].idxmax()
        real = means["mean"].get("real")
        delta = "" if real is None or pick == "real" else f"{means.loc[pick, 'mean'] - real:+.4f}"
        lines.append(f"| {protocol} | {model} | {domain} | {metric} | "
                     f"{'' if real is None else f'{real:.4f}'} | {pick} | {means.loc[pick, 'mean']:.4f} | {delta} | "
                     f"{int(means.loc[pick, 'count'])} |")
    if not lines:
        return ""
    head = "| protocol | model | cold domain | metric | real only | validation's pick | its value | Δ | seeds |"
    return "\n".join([head, "|" + "---|" * 9, *lines])

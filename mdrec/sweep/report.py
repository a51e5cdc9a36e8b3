"""The sweep's Markdown: the validation table every choice was made on, the picks and why, then
real-only against each pick (and the oracle ceiling) on test."""

from __future__ import annotations

import math

import pandas as pd

from mdrec.config import SweepConfig
from mdrec.report import compare, tables
from mdrec.significance import format_p, holm
from mdrec.storage import RunDir
from mdrec.sweep.lift import lift_table
from mdrec.sweep.pick import Pick
from mdrec.sweep.plan import REAL


def _value(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def validation_table(values: pd.DataFrame, picks: list[Pick]) -> str:
    chosen = {(p.protocol, p.model): p.pick for p in picks}
    ceiling = {(p.protocol, p.model): p.ceiling for p in picks}
    lines = ["| protocol | model | arm | seeds | cold domains | Δ vs real | seeds better | other domains | |",
             "|" + "---|" * 9]
    for (protocol, model), rows in values.groupby(["protocol", "model"], sort=True):
        real = rows.loc[rows["arm"] == REAL, "cold"]
        base = float(real.iloc[0]) if len(real) else float("nan")
        rows = rows.assign(first=rows["arm"] != REAL).sort_values(["first", "cold"], ascending=[True, False])
        for r in rows.itertuples():
            mark = "picked" if chosen.get((protocol, model)) == r.arm else \
                "ceiling" if ceiling.get((protocol, model)) == r.arm else "oracle" if r.oracle else ""
            delta = "" if r.arm == REAL else f"{r.cold - base:+.4f}"
            better = "" if r.arm == REAL else f"{int(r.seeds_better)}/{int(r.seeds)}"
            lines.append(f"| {protocol} | {model} | {r.arm} | {int(r.seeds)} | {_value(r.cold)} | {delta} | {better} | "
                         f"{_value(r.other)} | {mark} |")
    return "\n".join(lines)


def picks_table(picks: list[Pick]) -> str:
    lines = ["| protocol | model | pick | its validation value | real-only | ceiling (oracle) | why |", "|" + "---|" * 7]
    for p in picks:
        ceiling = "" if p.ceiling is None else f"{p.ceiling} {p.ceiling_value:.4f}"
        lines.append(f"| {p.protocol} | {p.model} | {p.pick} | {p.value:.4f} | {p.real:.4f} | {ceiling} | {p.why} |")
    return "\n".join(lines)


def validation_report(values: pd.DataFrame, picks: list[Pick], sweep: SweepConfig) -> str:
    return "\n".join([
        "# mdrec sweep: validation", "",
        "Every arm (real-only, or a backend's rows under a training mode) trained with the validation seeds. "
        "`cold domains`: the early-stopping metric at each run's best epoch on the cold domains' validation cases, "
        "mean over cold domains then seeds; `other domains`: the same on the rest (empty under cold_start, whose "
        "validation cases are all in cold domains); `seeds better`: validation seeds in which the arm beats real-only. "
        "Per protocol and model the pick is the highest cold value among arms more than "
        f"{sweep.min_gain:g} above real-only, better in every validation seed, and whose other domains lose at most "
        f"{sweep.max_other_drop:.0%} (real-only wins ties; oracle arms are ceilings, never picked). No test case was "
        "read.", "",
        validation_table(values, picks), "", "## Picks", "", picks_table(picks), ""])


def test_report(run_dir: RunDir, picks: list[Pick], cases: pd.DataFrame, long: pd.DataFrame,
                lift: pd.DataFrame) -> dict:
    """Markdown and tables of the test pass: real-only against each pick and ceiling, case by case."""
    summary = tables.aggregate(long)
    comparison = compare.compare(cases, summary)
    if not comparison.empty:
        # Two families of hypotheses: the picks (the claim) and the ceilings (the oracle, never a
        # claim). Holm runs within each, so a ceiling's comparisons do not dilute the picks'.
        ceilings = {p.ceiling for p in picks if p.ceiling}
        comparison["ceiling"] = comparison["variant"].isin(ceilings)
        for _, rows in comparison.groupby("ceiling"):
            comparison.loc[rows.index, "ndcg@10_p_holm"] = holm(rows["ndcg@10_p"].to_numpy())
    validation = run_dir.stage("sweep/validation").location.join("report.md").read_bytes().decode()
    roles = long.drop_duplicates("domain").set_index("domain")["role"]
    parts = [validation.replace("# mdrec sweep: validation", "# mdrec sweep", 1), "## Test: what validation picked", "",
             "Scored once, after the choice: real-only, each pick and the oracle's best arm (the ceiling) with the "
             "test seeds, on the same stored test cases. p: two-sided paired t-test over cases (per-case metric "
             "averaged over seeds); Holm over the picks' NDCG@10 comparisons (every domain), and apart over the "
             "ceilings'; seeds better: seeds whose domain mean "
             "beats real-only.", ""]
    for domain, table in compare.comparison_tables(comparison).items():
        parts += [f"### {domain} ({roles[domain]} domain)", "", table, ""]
    if not lift.empty:
        parts += ["### Where the lift comes from", "",
                  "Each scored arm's test cases split by the rows its backend wrote for the case's user: the "
                  "case's answer among them, other rows only, or none (NDCG@10 per case averaged over the test "
                  "seeds). A backend that re-tells the data writes answers the real-only model already ranks "
                  "high; rows that tell the model something new lift cases whose answer they never wrote.", "",
                  lift_table(lift), ""]
    for domain, table in tables.domain_tables(summary).items():
        parts += [f"### {domain}: every scored run", "", table, ""]
    if comparison.empty:
        parts += ["Validation picked real-only everywhere and no oracle arm was swept: nothing to compare.", ""]
    return {"markdown": "\n".join(parts), "summary": summary, "comparison": comparison, "lift": lift}


def headline(comparison: pd.DataFrame) -> list[str]:
    """One line per comparison in cold domains, for the console."""
    lines = []
    for r in comparison.to_dict("records"):
        lines.append(f"{r['protocol']} {r['model']} {r['domain']}: real {r['ndcg@10_real']:.4f} -> {r['variant']} "
                     f"{r['ndcg@10_aug']:.4f} ({r['ndcg@10_delta']:+.4f}, p {format_p(r['ndcg@10_p'])}, Holm "
                     f"{format_p(r['ndcg@10_p_holm'])}, {r['ndcg@10_seeds_better']}/{r['seeds']} seeds better)")
    return lines

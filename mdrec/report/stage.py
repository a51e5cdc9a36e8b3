"""`mdrec report RUN_DIR`: everything committed in a run directory, as Markdown and PNG.

Reads only the committed metrics (no config, no model), so it works on any run directory,
local or s3://, and can be re-run at any time. Writes `<run-dir>/report/`:
- report.md: one table per domain (protocol x model x variant, mean ± std over seeds),
  timings, and the plots;
- summary.csv: the same numbers, long form, for notebooks;
- comparison.csv: each augmented variant against real-only per domain (differences, paired
  p-values, fairness side by side; see compare.py);
- ndcg@10.png, auc.png, coverage@10.png, fairness.png, training.png, augmentation.png.
"""

from __future__ import annotations

import hashlib
import json

from mdrec.config import Variant
from mdrec.errors import DataError
from mdrec.report import collect, compare, plots, tables
from mdrec.storage import RunDir

PLOTTED = {"ndcg@10.png": "ndcg@10", "auc.png": "auc", "coverage@10.png": "coverage@10"}


def _timing_table(timings) -> str:
    if timings.empty:
        return ""
    mean = timings.groupby(["model", "protocol"])[["epoch_seconds", "score_seconds"]].mean().reset_index()
    lines = ["| model | protocol | training epoch (s) | scoring all test cases (s) |", "|---|---|---|---|"]
    lines += [f"| {r.model} | {r.protocol} | {r.epoch_seconds:.1f} | {r.score_seconds:.1f} |" for r in mean.itertuples()]
    return "\n".join(lines)


def oracle_labels(run_dir: RunDir, variants) -> dict[str, str]:
    """Variant renames when the synthetic rows came from the oracle backend: a ceiling must never
    be read as a result, so its runs (every augmented variant, under every mode) say so in every
    table and plot."""
    loc = run_dir.file("synthetic/generate_report.json")
    if not loc.exists() or loc.read_json().get("backend") != "oracle":
        return {}
    return {v: f"{v} (oracle)" for v in set(variants) if v != Variant.real.value}


def build_report(run_dir: RunDir, log=lambda m: None) -> dict:
    evaluations = collect.committed_metrics(run_dir, "evaluation")  # read once: tables and timings
    renames = oracle_labels(run_dir, [e["variant"] for e in evaluations])

    def marked(frame):
        return frame.assign(variant=frame["variant"].replace(renames)) if renames and len(frame) else frame

    long = marked(collect.test_metrics(evaluations))
    if long.empty:
        raise DataError(f"{run_dir.uri}: no committed evaluation to report (run `mdrec evaluate` first)")
    summary = tables.aggregate(long)
    trained = collect.committed_metrics(run_dir, "models")  # read once: curves and validation
    curves = marked(collect.training_curves(trained))
    validation = marked(collect.best_validation(trained))
    timings = marked(collect.timings(evaluations))
    comparison = compare.compare(marked(collect.test_cases(run_dir, evaluations)), summary)
    fingerprint = hashlib.sha256(json.dumps([long.to_csv(index=False), curves.to_csv(index=False),
                                             comparison.to_csv(index=False)]).encode()).hexdigest()
    stage = run_dir.stage("report")
    files = {name: plots.metric_bars(summary, metric) for name, metric in PLOTTED.items()
             if metric in set(summary["metric"])}
    files["fairness.png"] = plots.accuracy_vs_fairness(summary)
    if not comparison.empty:
        files["augmentation.png"] = plots.augmentation_deltas(comparison)
    if not curves.empty:
        files["training.png"] = plots.training_curves(curves, "valid_ndcg@10")
    roles = long.drop_duplicates("domain").set_index("domain")["role"]
    parts = [f"# mdrec report: {run_dir.uri}", "",
             "Test split. Mean ± std over training seeds; every run is scored on the same stored candidates "
             "(1 positive + sampled negatives per case); `full_*` columns rank against the whole domain catalog.", ""]
    compared = compare.comparison_tables(comparison)
    if compared:
        parts += ["## Augmented against real-only", "",
                  "Each augmented variant against the real-only run of the same model and protocol, on the same "
                  "test cases: per-case metrics averaged over the seeds both have, a two-sided paired t-test over "
                  "the cases (p), Holm-adjusted over every NDCG@10 comparison in this report, and in how many seeds "
                  "the augmented domain mean is higher. Fairness side by side: coverage@10 (higher: more of the "
                  "catalog shown), Gini of exposure and of per-user NDCG@10 (lower: more even).", ""]
        for domain, table in compared.items():
            parts += [f"### {domain} ({roles[domain]} domain)", "", table, ""]
    for domain, table in tables.domain_tables(summary).items():
        parts += [f"## {domain} ({roles[domain]} domain)", "", table, ""]
    if not validation.empty:
        parts += ["## Validation", "",
                  "The early-stopping metric at each run's best epoch, over the protocol's validation cases (all "
                  "domains; under cold_start only the held-out users of the cold domains), then each domain's "
                  "own value at that epoch. Choose filter settings and synthetic weights on these numbers (the "
                  "cold domain's column), never on the test tables above.", "",
                  tables.validation_table(validation), ""]
        picks = tables.validation_picks(validation, [d for d, role in roles.items() if role == "cold"])
        if picks:
            parts += ["### What validation picks", "",
                      "Per model and cold domain, the variant with the highest mean validation value there (real-only "
                      "included): the choice to score on test, made without reading a test case.", "", picks, ""]
    timing = _timing_table(timings)
    if timing:
        parts += ["## Time", "", timing, ""]
    parts += ["## Plots", ""] + [f"![{name}]({name})" for name in files] + [""]
    with stage.writing(fingerprint) as out:
        out.join("report.md").write_bytes("\n".join(parts).encode())
        out.join("summary.csv").write_bytes(summary.to_csv(index=False).encode())
        if not comparison.empty:
            out.join("comparison.csv").write_bytes(comparison.to_csv(index=False).encode())
        for name, data in files.items():
            out.join(name).write_bytes(data)
    log(f"report: {stage.location.join('report.md').uri}")
    return {"report": stage.location.join("report.md").uri, "domains": list(roles.index), "files": sorted(files)}

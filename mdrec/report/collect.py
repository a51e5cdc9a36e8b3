"""Gather the committed metrics of a run directory into long tables (one row per value)."""

from __future__ import annotations

import pandas as pd

from mdrec.storage import RunDir

KEY = ["model", "variant", "protocol", "seed"]


def committed_folders(run_dir: RunDir, stage: str) -> list[str]:
    """Every committed run folder under `<run-dir>/<stage>/` (those holding a metrics.json)."""
    root = run_dir.location.join(stage)
    found = []
    for f in root.files():
        rel = f.path[len(root.path.rstrip("/")) + 1:]
        if rel.endswith("/metrics.json") and run_dir.stage(f"{stage}/{rel[: -len('/metrics.json')]}").commit_record():
            found.append(f"{stage}/{rel[: -len('/metrics.json')]}")
    return found


def committed_metrics(run_dir: RunDir, stage: str) -> list[dict]:
    """Every metrics.json under `<run-dir>/<stage>/` whose folder was committed."""
    return [run_dir.location.join(folder, "metrics.json").read_json() for folder in committed_folders(run_dir, stage)]


def test_cases(run_dir: RunDir, evaluations: list[dict]) -> pd.DataFrame:
    """Per-case test metrics of every committed evaluation (for paired tests), with its run's key."""
    frames = []
    for m in evaluations:
        loc = run_dir.location.join("evaluation", m["model"], m["variant"], m["protocol"], f"seed-{m['seed']}",
                                    "cases.parquet")
        if loc.exists():  # evaluations from before per-case output have none
            frame = loc.read_table().to_pandas()
            frame["domain"] = frame["domain"].astype(str)
            frames.append(frame.assign(**{k: m[k] for k in KEY}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEY, "case_id", "domain"])


def test_metrics(evaluations: list[dict]) -> pd.DataFrame:
    """Columns: model, variant, protocol, seed, domain, role, metric, value."""
    rows = []
    for m in evaluations:
        for domain, values in m["domains"].items():
            for metric, value in values.items():
                if metric != "role":
                    rows.append({**{k: m[k] for k in KEY}, "domain": domain, "role": values["role"],
                                 "metric": metric, "value": float(value)})
    return pd.DataFrame(rows, columns=[*KEY, "domain", "role", "metric", "value"])


def timings(evaluations: list[dict]) -> pd.DataFrame:
    """Per run: mean training epoch seconds and test scoring seconds."""
    rows = [{**{k: m[k] for k in KEY}, "epoch_seconds": m["train_epoch_seconds"], "score_seconds": m["score_seconds"]}
            for m in evaluations]
    return pd.DataFrame(rows, columns=[*KEY, "epoch_seconds", "score_seconds"])


def best_validation(trained: list[dict]) -> pd.DataFrame:
    """Per trained run: the early-stopping metric's best validation value (what settings are chosen on).

    `domain` is "all" for the value early stopping used, then each domain's own value at that
    epoch where the run recorded it (valid_by_domain).
    """
    rows = []
    for m in trained:
        key = {k: m[k] for k in KEY}
        metric = m["early_stopping_metric"]
        rows.append({**key, "metric": metric, "domain": "all", "value": float(m["best_value"])})
        best = next((h for h in m["history"] if h["epoch"] == m["best_epoch"]), {})
        for domain, values in best.get("valid_by_domain", {}).items():
            if metric in values:
                rows.append({**key, "metric": metric, "domain": domain, "value": float(values[metric])})
    return pd.DataFrame(rows, columns=[*KEY, "metric", "domain", "value"])


def training_curves(trained: list[dict]) -> pd.DataFrame:
    """Columns: model, variant, protocol, seed, epoch, metric (valid_*, loss), value."""
    rows = []
    for m in trained:
        for h in m["history"]:
            for metric, value in h.items():
                if (metric == "loss" or metric.startswith("valid_")) and not isinstance(value, dict):
                    rows.append({**{k: m[k] for k in KEY}, "epoch": h["epoch"], "metric": metric, "value": float(value)})
    return pd.DataFrame(rows, columns=[*KEY, "epoch", "metric", "value"])

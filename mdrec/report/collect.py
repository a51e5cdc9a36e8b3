"""Gather the committed metrics of a run directory into long tables (one row per value)."""

from __future__ import annotations

import pandas as pd

from mdrec.storage import RunDir

KEY = ["model", "variant", "protocol", "seed"]


def committed_metrics(run_dir: RunDir, stage: str) -> list[dict]:
    """Every metrics.json under `<run-dir>/<stage>/` whose folder was committed."""
    root = run_dir.location.join(stage)
    found = []
    for f in root.files():
        rel = f.path[len(root.path.rstrip("/")) + 1:]
        if rel.endswith("/metrics.json") and run_dir.stage(f"{stage}/{rel[: -len('/metrics.json')]}").commit_record():
            found.append(run_dir.location.join(stage, rel).read_json())
    return found


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


def training_curves(run_dir: RunDir) -> pd.DataFrame:
    """Columns: model, variant, protocol, seed, epoch, metric (valid_*, loss), value."""
    rows = []
    for m in committed_metrics(run_dir, "models"):
        for h in m["history"]:
            for metric, value in h.items():
                if metric == "loss" or metric.startswith("valid_"):
                    rows.append({**{k: m[k] for k in KEY}, "epoch": h["epoch"], "metric": metric, "value": float(value)})
    return pd.DataFrame(rows, columns=[*KEY, "epoch", "metric", "value"])

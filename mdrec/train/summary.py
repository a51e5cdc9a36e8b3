"""The table printed after `train`: each run's best validation epoch."""

from __future__ import annotations

from mdrec.text_table import text_table

COLUMNS = ["auc", "gauc", "hr@10", "ndcg@10", "coverage@10"]


def training_table(results: dict) -> str:
    header = ["model", "variant", "protocol", "seed", "epochs", "best", *[f"valid {c}" for c in COLUMNS], "seconds"]
    rows = []
    for key, r in results.items():
        best = next(h for h in r["history"] if h["epoch"] == r["best_epoch"])
        rows.append([key.model, key.variant, key.protocol.value, str(key.seed), str(r["epochs_run"]),
                     str(r["best_epoch"]), *[f"{best[f'valid_{c}']:.4f}" for c in COLUMNS], f"{r['seconds']:.0f}"])
    return text_table(header, rows, left=3)

"""The table printed after `train`: each model's best validation epoch."""

from __future__ import annotations

COLUMNS = ["auc", "gauc", "hr@10", "ndcg@10", "coverage@10"]


def training_table(results: dict[str, dict]) -> str:
    header = ["model", "protocol", "epochs", "best", *[f"valid {c}" for c in COLUMNS], "seconds"]
    rows = []
    for name, r in results.items():
        best = next(h for h in r["history"] if h["epoch"] == r["best_epoch"])
        rows.append([name, r["protocol"], str(r["epochs_run"]), str(r["best_epoch"]),
                     *[f"{best[f'valid_{c}']:.4f}" for c in COLUMNS], f"{r['seconds']:.0f}"])
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])

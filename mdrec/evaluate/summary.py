"""The table printed after `evaluate`: test metrics per model and domain."""

from __future__ import annotations

COLUMNS = ["auc", "gauc", "hr@10", "ndcg@10", "coverage@10", "gini_exposure@10", "gini_user_ndcg@10"]


def evaluation_table(results: dict[str, dict]) -> str:
    header = ["model", "protocol", "domain", "role", "cases", *COLUMNS]
    rows = []
    for name, r in results.items():
        for domain, m in r["domains"].items():
            rows.append([name, r["protocol"], domain, m["role"], f"{m['cases']:,}", *[f"{m[c]:.4f}" for c in COLUMNS]])
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])

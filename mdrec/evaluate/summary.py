"""The table printed after `evaluate`: test metrics per run and domain."""

from __future__ import annotations

from mdrec.text_table import text_table

COLUMNS = ["auc", "gauc", "hr@10", "ndcg@10", "coverage@10", "gini_exposure@10", "gini_user_ndcg@10"]


def evaluation_table(results: dict) -> str:
    header = ["model", "variant", "protocol", "seed", "domain", "role", "cases", *COLUMNS]
    rows = []
    for key, r in results.items():
        for domain, m in r["domains"].items():
            rows.append([key.model, key.variant, key.protocol.value, str(key.seed), domain, m["role"],
                         f"{m['cases']:,}", *[f"{m[c]:.4f}" for c in COLUMNS]])
    return text_table(header, rows, left=6)

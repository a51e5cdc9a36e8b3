"""The domain table printed after `prepare`."""

from __future__ import annotations

from mdrec.text_table import text_table


def domain_table(stats: dict) -> str:
    header = ["domain", "role", "users", "items", "interactions", "density", "train", "valid", "test",
              "cold-start users", "dropped", "no title"]
    rows = []
    for name, d in stats["domains"].items():
        s = d["splits"]
        rows.append([
            name,
            d["role"],
            f"{d['users']:,}",
            f"{d['items']:,}",
            f"{d['interactions']:,}",
            f"{d['density']:.2e}",
            f"{s['train']:,}",
            f"{s['valid']:,}",
            f"{s['test']:,}",
            f"{d['cold_start']['held_out_users']:,}",
            f"{sum(d['dropped'].values()):,}",
            f"{d['titles_missing']:,}",
        ])
    lines = [text_table(header, rows, left=2)]
    dropped = {k: v for k, v in stats["totals"]["dropped"].items() if v}
    if dropped:
        lines.append("dropped rows: " + ", ".join(f"{k}={v:,}" for k, v in dropped.items()))
    return "\n".join(lines)

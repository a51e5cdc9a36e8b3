"""The table printed after `filter`: what each filter dropped, per protocol and domain."""

from __future__ import annotations

from mdrec.text_table import text_table


def filter_table(report: dict) -> str:
    steps = [s["name"] for s in report["steps"]]
    header = ["protocol", "domain", "raw", *[f"-{s}" for s in steps], "kept"]
    rows = [[r["protocol"], r["domain"], f"{r['raw']:,}", *[f"{r['dropped'][s]:,}" for s in steps], f"{r['kept']:,}"]
            for r in report["by_protocol_and_domain"]]
    return text_table(header, rows, left=2)

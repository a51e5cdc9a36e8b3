"""The table `mdrec generate` prints: one row per (protocol, target domain)."""

from __future__ import annotations

from mdrec.text_table import text_table


def generate_table(report: dict) -> str:
    header = ["protocol", "target", "eligible users", "selected", "contexts", "rows", "cap", "within budget"]
    rows = [[t["protocol"], t["target"], f"{t['eligible_users']:,}", f"{t['selected_users']:,}", f"{t['contexts']:,}",
             f"{t['rows']:,}", f"{t['cap']:,}", "yes" if t["within_budget"] else "NO"] for t in report["targets"]]
    problems = ", ".join(f"{k}={v:,}" for k, v in report["problems"].items()) or "none"
    footer = (f"backend {report['backend']} ({report['model'] or '-'}): {report['rows']:,} rows from "
              f"{report['contexts']:,} contexts; answers with problems: {report['answers_with_problems']:,} ({problems})")
    return text_table(header, rows, left=2) + "\n" + footer

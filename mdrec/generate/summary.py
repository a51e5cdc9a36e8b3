"""The table `mdrec generate` prints: one row per (protocol, target domain)."""

from __future__ import annotations

from mdrec.significance import format_p
from mdrec.text_table import text_table


def generate_table(report: dict) -> str:
    header = ["protocol", "target", "eligible users", "selected", "contexts", "rows", "cap", "within budget"]
    rows = [[t["protocol"], t["target"], f"{t['eligible_users']:,}", f"{t['selected_users']:,}", f"{t['contexts']:,}",
             f"{t['rows']:,}", f"{t['cap']:,}", "yes" if t["within_budget"] else "NO"] for t in report["targets"]]
    problems = ", ".join(f"{k}={v:,}" for k, v in report["problems"].items()) or "none"
    name = report["backend"] + (" (ORACLE: a diagnostic ceiling, not a generator)" if report["backend"] == "oracle" else "")
    footer = (f"backend {name} ({report['model'] or '-'}): {report['rows']:,} rows from "
              f"{report['contexts']:,} contexts; answers with problems: {report['answers_with_problems']:,} ({problems})")
    return text_table(header, rows, left=2) + "\n" + footer + "\n" + quality_table(report.get("quality"))


def _versus(v: dict | None, rk: int) -> list[str]:
    """The paired comparison with popularity; p is Holm-adjusted over the table's targets."""
    if not v:
        return ["-", "-"]
    hit, ndcg = v["hit"], v[f"ndcg@{rk}"]
    return [f"+{hit['wins']}/-{hit['losses']} (p {format_p(hit['p_holm'])})", f"{ndcg['diff']:+.4f} (p {format_p(ndcg['p_holm'])})"]


def quality_table(q: dict | None) -> str:
    """How often the backend is right on held-out items, beside the popularity floor and the ceiling."""
    if not q:
        return ""
    if not q["targets"]:
        return f"quality: {q['note']}"
    k, rk = q["k"], q["ranking_k"]
    header = ["protocol", "target", "val users", f"hit@{k}", f"ndcg@{k}", f"popularity hit@{k}",
              f"random hit@{k}", f"ndcg@{rk}", f"popularity ndcg@{rk}", "in candidates", "taste",
              f"vs popularity: hit@{k} wins/losses (p)", f"ndcg@{rk} diff (p)"]
    rows = []
    for t in q["targets"]:
        b, p = t["backend"], t["popularity"]
        taste = t.get("taste")
        rows.append([t["protocol"], t["target"], f"{t['users']:,}", f"{b['hit']:.3f}", f"{b['ndcg']:.3f}",
                     f"{p['hit']:.3f}", f"{t['random']['hit']:.3f}", f"{b[f'ndcg@{rk}']:.3f}",
                     f"{p[f'ndcg@{rk}']:.3f}", f"{t['candidates']['any']:.3f}",
                     f"{taste['backend']:.2f} (pop {taste['popularity']:.2f}, random {taste['random']:.2f})"
                     if taste else "-", *_versus(t.get("vs_popularity"), rk)])
    ranks = "" if q["ranks_all_candidates"] else f"; this backend only picks: ndcg@{rk} ranks the rest in list order"
    picks = q.get("pick_positions") or {}
    total = sum(picks.values())
    first = sum(picks.get(str(i), 0) for i in range(1, k + 1))
    bias = (f"\npicks at list positions 1-{k}: {first / total:.0%} (uniform over the {len(picks)} positions seen: {k / max(len(picks), k):.0%})"
            if total else "")
    return "generator quality on " + q["measured_on"] + ranks + "; p: paired against popularity, Holm-adjusted\n" + text_table(header, rows, left=2) + bias

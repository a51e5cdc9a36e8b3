"""Where an augmented arm's test lift comes from: the cases whose answer the generator wrote, the
cases of users it wrote other rows for, and the users it wrote nothing for.

Why it matters: a generator that re-tells what the interactions already say (item-to-item
co-occurrence) writes the answer for cases the real-only model already ranks first, so it lifts
almost nothing; rows that carry what the data does not (the oracle's: the user's other held-out
items) lift cases whose answer they never wrote. The split tells which of the two a backend is.
It reads test cases, so only the test pass calls it, after the choice.
"""

from __future__ import annotations

import enum

import pandas as pd
import pyarrow.compute as pc

from mdrec.config import Variant
from mdrec.data.schema import Protocol, Split
from mdrec.storage import RunDir


class CaseGroup(str, enum.Enum):
    answer_written = "answer among the user's rows"
    other_rows = "rows, answer not among them"
    no_rows = "no rows"


METRIC = "ndcg@10"


def test_targets(run_dir: RunDir, protocol: str) -> pd.DataFrame:
    """case_id -> the item the test case asks for (its user and item), one protocol."""
    table = run_dir.stage("prepared").location.join("cases").read_table(
        columns=["case_id", "user_idx", "item_idx"],
        filter=(pc.field("protocol") == protocol) & (pc.field("split") == Split.test.value))
    return table.to_pandas()


def written_rows(home: RunDir, variant: Variant, protocol: Protocol) -> pd.DataFrame:
    """The (user_idx, item_idx) pairs a backend wrote for one protocol, in its run directory."""
    from mdrec.train.stage import read_synthetic

    return read_synthetic(home, protocol, variant, ["user_idx", "item_idx"])[0]


def case_groups(targets: pd.DataFrame, rows: pd.DataFrame) -> pd.Series:
    """Each test case's group (indexed by case_id) given the rows written for its user."""
    written = set(zip(rows["user_idx"].to_numpy().tolist(), rows["item_idx"].to_numpy().tolist()))
    with_rows = set(rows["user_idx"].to_numpy().tolist())
    groups = [CaseGroup.answer_written.value if (u, i) in written else
              CaseGroup.other_rows.value if u in with_rows else CaseGroup.no_rows.value
              for u, i in zip(targets["user_idx"].to_numpy().tolist(), targets["item_idx"].to_numpy().tolist())]
    return pd.Series(groups, index=targets["case_id"].to_numpy(), name="group")


def lift_by_group(cases: pd.DataFrame, groups: dict[tuple[str, str], pd.Series], real: str) -> pd.DataFrame:
    """Per (protocol, model, arm, domain, group): cases, the real-only and augmented metric (per case
    averaged over seeds, then over the group's cases) and the difference.

    `cases`: per-case test metrics with model, variant, protocol, seed, domain and case_id;
    `groups`: (arm, protocol) -> case_groups(...) for every augmented arm to split."""
    per_case = cases.groupby(["protocol", "model", "variant", "domain", "case_id"], observed=True)[METRIC].mean()
    out = []
    for (arm, protocol), group_of in groups.items():
        for model in sorted(cases.loc[(cases["variant"] == arm) & (cases["protocol"] == protocol), "model"].unique()):
            try:
                aug, base = per_case.loc[(protocol, model, arm)], per_case.loc[(protocol, model, real)]
            except KeyError:
                continue
            paired = pd.concat({"aug": aug, "real": base}, axis=1, join="inner").reset_index()
            paired["group"] = group_of.reindex(paired["case_id"].to_numpy()).to_numpy()
            for (domain, group), rows in paired.groupby(["domain", "group"], sort=True):
                out.append({"protocol": protocol, "model": model, "arm": arm, "domain": domain, "group": group,
                            "cases": len(rows), "real": rows["real"].mean(), "augmented": rows["aug"].mean(),
                            "delta": rows["aug"].mean() - rows["real"].mean(),
                            # the group's share of the domain's cases: share x delta is its part of the mean delta
                            "share": len(rows) / int((paired["domain"] == domain).sum())})
    return pd.DataFrame(out, columns=["protocol", "model", "arm", "domain", "group", "cases", "real", "augmented",
                                      "delta", "share"])


def lift_table(lift: pd.DataFrame) -> str:
    lines = [f"| protocol | model | arm | domain | the user's rows | cases | {METRIC} real → augmented | Δ | "
             "part of the domain's mean Δ |", "|" + "---|" * 9]
    for r in lift.itertuples():
        lines.append(f"| {r.protocol} | {r.model} | {r.arm} | {r.domain} | {r.group} | {r.cases} | "
                     f"{r.real:.4f} → {r.augmented:.4f} | {r.delta:+.4f} | {r.delta * r.share:+.4f} |")
    return "\n".join(lines)

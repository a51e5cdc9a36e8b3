"""One function per filter, found through the config type (`STEPS`).

A filter sees only the rows every filter before it kept ("live" rows) and says which of them go.
There are two kinds:

- **local**: decides from one shard alone (a user's rows always sit in one shard), so it runs
  inside each Ray task: `drop(live, cfg, ctx) -> bool mask`.
- **cut**: keeps the best `limit` rows of each group across all shards (budget, popularity cap,
  teacher, score quantile). The stage counts live rows per group on every task, asks
  `limits(counts, cfg, ctx)` how many each group may keep, then ranks only the rows of the
  groups over their limit (by `order`, ties broken by a seeded hash) and drops the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from mdrec.config import (BudgetFilter, DedupeFilter, MinScoreFilter, PopularityCapFilter, SeenFilter, TeacherFilter,
                          TopKFilter, ValidityFilter)

KEY = ["protocol", "domain_idx"]  # the unit every share, quantile and budget is taken over


@dataclass
class FilterContext:
    """What filters need to know about the real data, built once on the driver and shared."""

    item_ids: np.ndarray  # item_id per item_idx (object)
    item_domain: np.ndarray  # domain_idx per item_idx
    seen: dict[str, np.ndarray]  # protocol -> sorted user_idx * num_items + item_idx of visible training rows
    real_rows: dict[tuple[str, int], int]  # (protocol, domain_idx) -> real training rows
    domain_users: dict[int, int]  # domain_idx -> users with real rows
    domain_items: dict[int, int]  # domain_idx -> catalog size
    rich_domains: list[int] = field(default_factory=list)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def rich_density(self, protocol: str) -> float:
        if not self.rich_domains:
            raise ValueError("filter budget.relative_density: no domain has the rich role to take the density from")
        return float(np.mean([self.real_rows[(protocol, d)] / (self.domain_users[d] * self.domain_items[d])
                              for d in self.rich_domains]))


def best_first(rows: pd.DataFrame, order: str = "score") -> pd.DataFrame:
    """Rows from best to worst: higher `order` first, then a seeded hash (deterministic ties)."""
    return rows.sort_values([order, "tiebreak"], ascending=False, kind="stable", na_position="last")


# --------------------------------------------------------------------------- local filters


def validity(live: pd.DataFrame, cfg: ValidityFilter, ctx: FilterContext) -> np.ndarray:
    """The item exists, in the row's domain, under the same id."""
    idx = live["item_idx"].to_numpy()
    known = (idx >= 0) & (idx < ctx.num_items)
    safe = np.where(known, idx, 0)
    same_domain = ctx.item_domain[safe] == live["domain_idx"].to_numpy()
    same_id = ctx.item_ids[safe] == live["item_id"].to_numpy(dtype=object)
    return ~(known & same_domain & same_id)


def dedupe(live: pd.DataFrame, cfg: DedupeFilter, ctx: FilterContext) -> np.ndarray:
    ordered = best_first(live)
    repeated = ordered.duplicated(["protocol", "user_idx", "item_idx"], keep="first")
    return repeated.reindex(live.index).to_numpy()


def seen(live: pd.DataFrame, cfg: SeenFilter, ctx: FilterContext) -> np.ndarray:
    drop = np.zeros(len(live), dtype=bool)
    keys = live["user_idx"].to_numpy() * ctx.num_items + live["item_idx"].to_numpy()
    for protocol, rows in live.groupby("protocol").indices.items():
        history = ctx.seen[protocol]
        pos = np.clip(np.searchsorted(history, keys[rows]), 0, max(len(history) - 1, 0))
        drop[rows] = (history[pos] == keys[rows]) if len(history) else False
    return drop


def min_score_threshold(live: pd.DataFrame, cfg: MinScoreFilter, ctx: FilterContext) -> np.ndarray:
    score = live["score"].to_numpy(dtype=np.float64)
    return ~(score >= cfg.threshold)  # NaN scores go too


def top_k(live: pd.DataFrame, cfg: TopKFilter, ctx: FilterContext) -> np.ndarray:
    ordered = best_first(live)
    position = ordered.groupby(["protocol", "domain_idx", "user_idx"], sort=False).cumcount()
    return (position >= cfg.k).reindex(live.index).to_numpy()


# --------------------------------------------------------------------------- cut filters: limits per group


def _keep_share(counts: pd.DataFrame, share: float) -> np.ndarray:
    return counts["n"].to_numpy() - np.floor(share * counts["n"].to_numpy()).astype(np.int64)


def teacher_limits(counts: pd.DataFrame, cfg: TeacherFilter, ctx: FilterContext) -> np.ndarray:
    return _keep_share(counts, cfg.drop_fraction)


def quantile_limits(counts: pd.DataFrame, cfg: MinScoreFilter, ctx: FilterContext) -> np.ndarray:
    return _keep_share(counts, cfg.quantile)


def share_cap(counts: np.ndarray, share: float) -> int:
    """The largest per-item cap L with L <= share x (rows left once every item is cut to L).

    Capping shrinks the total, so a cap taken from the total before capping would still let
    items above the share afterwards; the largest fixed point does not. At least 1.
    """
    counts = np.asarray(counts, dtype=np.int64)
    cap = int(counts.max(initial=0))
    while cap > 1 and cap > share * np.minimum(counts, cap).sum():
        cap = int(np.floor(share * np.minimum(counts, cap).sum()))
    return max(1, cap)


def popularity_limits(counts: pd.DataFrame, cfg: PopularityCapFilter, ctx: FilterContext) -> np.ndarray:
    caps = counts.groupby(KEY)["n"].transform(lambda n: share_cap(n.to_numpy(), cfg.max_share))
    return caps.to_numpy(dtype=np.int64)


def budget_limits(counts: pd.DataFrame, cfg: BudgetFilter, ctx: FilterContext) -> np.ndarray:
    out = []
    for protocol, domain in zip(counts["protocol"], counts["domain_idx"]):
        real = ctx.real_rows.get((protocol, int(domain)), 0)
        if cfg.ratio is not None:
            out.append(int(np.floor(cfg.ratio * real)))
        else:
            d = int(domain)
            target = cfg.relative_density * ctx.rich_density(protocol) * ctx.domain_users[d] * ctx.domain_items[d]
            out.append(max(0, int(np.floor(target)) - real))
    return np.asarray(out, dtype=np.int64)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Step:
    """How the stage runs one filter config."""

    description: str
    drop: Callable | None = None  # local filters
    limits: Callable | None = None  # cut filters
    groups: tuple[str, ...] = tuple(KEY)
    order: str = "score"
    needs_teacher: bool = False

    @property
    def is_cut(self) -> bool:
        return self.limits is not None


def step_for(cfg) -> Step:
    """The Step that runs `cfg` (one of the filter configs)."""
    if isinstance(cfg, MinScoreFilter):
        if cfg.threshold is not None:
            return Step(f"score below {cfg.threshold}", drop=min_score_threshold)
        return Step(f"score below the {cfg.quantile:.0%} quantile of its protocol and domain", limits=quantile_limits)
    return STEPS[type(cfg)](cfg)


STEPS: dict[type, Callable[[object], Step]] = {
    ValidityFilter: lambda c: Step("item not in its domain's catalog", drop=validity),
    DedupeFilter: lambda c: Step("repeated (protocol, user, item)", drop=dedupe),
    SeenFilter: lambda c: Step("item already in the user's real training history", drop=seen),
    TopKFilter: lambda c: Step(f"beyond the user's {c.k} best in the domain", drop=top_k),
    TeacherFilter: lambda c: Step(f"lowest {c.drop_fraction:.0%} by a real-data teacher's score", limits=teacher_limits,
                                  order="teacher_score", needs_teacher=True),
    PopularityCapFilter: lambda c: Step(f"item over {c.max_share:.1%} of its domain's kept synthetic rows",
                                        limits=popularity_limits, groups=(*KEY, "item_idx")),
    BudgetFilter: lambda c: Step("over the domain's budget " + (f"({c.ratio:g} x real rows)" if c.ratio is not None
                                                                 else f"({c.relative_density:g} x rich density)"),
                                 limits=budget_limits),
}

"""Per-user work of `prepare`, on one shard of users at a time (plain pandas, no Ray).

Each shard holds every interaction of its users, so duplicates, splits and negatives are
decided without looking elsewhere. Every random choice is seeded from the run's seed and the
user (and domain), never from the shard, so results do not depend on how users are sharded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mdrec.data.schema import Split

KEY_SEP = "\x1f"  # joins domain and item id into one catalog key
ORDER = ["user_id", "domain", "ts", "item_id"]


def stable_hash(values: pd.Series, salt: str) -> np.ndarray:
    """64-bit hash of each string plus a salt, the same in every process and on every machine."""
    return pd.util.hash_pandas_object(values.astype(str) + KEY_SEP + salt, index=False).to_numpy(np.uint64)


def unit_hash(values: pd.Series, salt: str) -> np.ndarray:
    """Deterministic uniform numbers in [0, 1) keyed by value and salt."""
    return (stable_hash(values, salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def shard_of(user_ids: pd.Series, num_shards: int) -> np.ndarray:
    return (stable_hash(user_ids, "shard") % np.uint64(num_shards)).astype(np.int64)


def catalog_key(domain: pd.Series, item_id: pd.Series) -> pd.Series:
    return domain.astype(str) + KEY_SEP + item_id.astype(str)


def mark_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Sort a shard into user/domain/time order and flag exact duplicate rows (`_dup`)."""
    df = df.sort_values(ORDER, kind="stable", ignore_index=True)
    df["_dup"] = df.duplicated(subset=["user_id", "item_id", "domain", "ts", "rating"], keep="first")
    return df


@dataclass(frozen=True)
class SplitPlan:
    """What the split pass needs to know about the whole data set."""

    seed: int
    users: pd.Index  # sorted user ids; position = user_idx
    items: pd.Index  # catalog keys; position = item_idx (domains in contiguous ranges)
    domains: pd.Index  # domain names; position = domain_idx
    item_ranges: dict[int, tuple[int, int]]  # domain_idx -> [first item_idx, end)
    cold_start_domains: frozenset[str]
    cold_start_fraction: float
    min_interactions_for_eval: int
    num_negatives: int


def case_id(user_idx: np.ndarray, domain_idx: np.ndarray, n_domains: int, is_test: np.ndarray, cold: bool) -> np.ndarray:
    """Unique per (user, domain, valid|test, protocol): at most one of each per user and domain."""
    return ((user_idx.astype(np.int64) * n_domains + domain_idx) * 2 + is_test.astype(np.int64)) * 2 + int(cold)


def _choose_cold_start(df: pd.DataFrame, plan: SplitPlan) -> np.ndarray:
    """Rows of (user, domain) pairs held out as cold-start.

    Eligible: the domain is a cold-start domain and the user also has interactions in another
    domain. Each eligible pair is held out with probability `fraction`; a user is held out in at
    most one domain (the one with the lowest draw), so every held-out user keeps some history.
    """
    if plan.cold_start_fraction <= 0 or not plan.cold_start_domains:
        return np.zeros(len(df), dtype=bool)
    domains_per_user = df.groupby("user_id", sort=False)["domain"].transform("nunique").to_numpy()
    eligible = df["domain"].isin(plan.cold_start_domains).to_numpy() & (domains_per_user > 1)
    draw = np.where(eligible, unit_hash(df["user_id"] + KEY_SEP + df["domain"], f"cold-start/{plan.seed}"), 2.0)
    lowest = pd.Series(draw).groupby(df["user_id"].to_numpy(), sort=False).transform("min").to_numpy()
    return eligible & (draw == lowest) & (draw < plan.cold_start_fraction)


def sample_negatives(
    rng: np.random.Generator, lo: int, hi: int, exclude: np.ndarray, n: int
) -> np.ndarray:
    """Up to n distinct item indices in [lo, hi) outside `exclude`, in random order."""
    exclude = exclude[(exclude >= lo) & (exclude < hi)]
    available = (hi - lo) - len(exclude)
    if available <= n:
        pool = np.setdiff1d(np.arange(lo, hi), exclude, assume_unique=False)
        return rng.permutation(pool)
    # n + |exclude| distinct draws always leave at least n after removing the excluded ones.
    draw = lo + rng.choice(hi - lo, size=n + len(exclude), replace=False)
    return draw[~np.isin(draw, exclude)][:n]


def _negatives_for_cases(df: pd.DataFrame, case_rows: np.ndarray, from_end: np.ndarray, plan: SplitPlan) -> np.ndarray:
    """An array of negatives (or None) per row; rows must be sorted by user.

    A row that is a case under both protocols (the latest interaction of a held-out user) gets
    one set of negatives, used by both: the candidates depend on the user and domain only.
    """
    negatives = np.full(len(df), None, dtype=object)
    if len(case_rows) == 0:
        return negatives
    user_idx = df["user_idx"].to_numpy()
    item_idx = df["item_idx"].to_numpy()
    domain_idx = df["domain_idx"].to_numpy()
    # Rows of a user are contiguous: [start, end) bounds each user's items (in every domain).
    starts = np.searchsorted(user_idx, user_idx, side="left")
    ends = np.searchsorted(user_idx, user_idx, side="right")
    rows = df.iloc[case_rows]
    keys = rows["user_id"] + KEY_SEP + rows["domain"] + KEY_SEP + pd.Series(from_end[case_rows], index=rows.index).astype(str)
    seeds = stable_hash(keys, f"negatives/{plan.seed}")
    for row, s in zip(case_rows, seeds):
        lo, hi = plan.item_ranges[int(domain_idx[row])]
        rng = np.random.default_rng([int(s) >> 32, int(s) & 0xFFFFFFFF, plan.seed & 0xFFFFFFFF])
        negatives[row] = sample_negatives(rng, lo, hi, item_idx[starts[row]:ends[row]], plan.num_negatives)
    return negatives


def split_shard(df: pd.DataFrame, plan: SplitPlan) -> pd.DataFrame:
    """Dense ids, both protocols' splits of every interaction, and negatives for every case.

    Columns added: `split` (warm protocol: train, valid, test), `held_out` (the row's user and
    domain are held out by the cold-start protocol: not trained on there), `cold_case`
    (valid or test on the latest held-out interaction, else None), and `negatives`.
    """
    df = df.sort_values(ORDER, kind="stable", ignore_index=True)  # user_id order = user_idx order
    df["user_idx"] = plan.users.get_indexer(df["user_id"]).astype(np.int64)
    df["item_idx"] = plan.items.get_indexer(catalog_key(df["domain"], df["item_id"])).astype(np.int64)
    df["domain_idx"] = plan.domains.get_indexer(df["domain"]).astype(np.int64)
    if (df[["user_idx", "item_idx", "domain_idx"]] < 0).any(axis=None):
        raise AssertionError("split pass saw a user, item or domain without an id")

    groups = df.groupby(["user_id", "domain"], sort=False)
    size = groups["ts"].transform("size").to_numpy()
    position = groups.cumcount().to_numpy()
    from_end = size - 1 - position  # 0 = the latest interaction
    df["user_first"] = position == 0  # one row per user and domain: counts users without a shuffle

    # Warm protocol, every user: leave the last out for test and the one before for validation.
    warm_case = size >= plan.min_interactions_for_eval
    split = np.full(len(df), Split.train.value, dtype=object)
    split[warm_case & (from_end == 0)] = Split.test.value
    split[warm_case & (from_end == 1)] = Split.valid.value
    df["split"] = split

    # Cold-start protocol: held-out users lose the domain from training; their latest
    # interaction there is a validation or a test case (half the users each).
    held = _choose_cold_start(df, plan)
    cold_is_test = unit_hash(df["user_id"] + KEY_SEP + df["domain"], f"cold-split/{plan.seed}") < 0.5
    cold_case = held & (from_end == 0)
    df["held_out"] = held
    df["cold_case"] = np.where(cold_case, np.where(cold_is_test, Split.test.value, Split.valid.value), None)

    is_case = (split != Split.train.value) | cold_case
    df["negatives"] = _negatives_for_cases(df, np.flatnonzero(is_case), from_end, plan)
    return df

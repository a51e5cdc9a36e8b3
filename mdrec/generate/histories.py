"""Each user's training rows as one row of time-ordered lists, built on Ray Data.

The prepared training rows (warm split `train`, with the held-out flag) are grouped into partitions of users (a sort-based groupby), and
each partition becomes one row per user: `items`, `domains`, `ts` and `held_out` lists in time
order. Nothing is collected on the driver; the result stays in the object store.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import ray.data

from mdrec.data.schema import Protocol, Split
from mdrec.storage import Location

HISTORY_COLUMNS = ["user_idx", "user_id", "item_idx", "domain_idx", "ts", "held_out"]


def _partition(df: pd.DataFrame, *, parts: int) -> pd.DataFrame:
    df = df[df["split"] == Split.train.value].drop(columns=["split"])
    return df.assign(_part=df["user_idx"].to_numpy() % parts)


def _list(values: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))


def user_histories_of(df: pd.DataFrame) -> pa.Table:
    """One partition's rows -> one row per user, lists sorted by (ts, item)."""
    user = df["user_idx"].to_numpy(np.int64)
    item, domain, ts = (df[c].to_numpy(np.int64) for c in ("item_idx", "domain_idx", "ts"))
    held = df["held_out"].to_numpy(bool)
    order = np.lexsort((item, ts, user))
    user, item, domain, ts, held = user[order], item[order], domain[order], ts[order], held[order]
    users, starts = np.unique(user, return_index=True)
    offsets = np.append(starts, len(user))
    user_id = df["user_id"].to_numpy(object)[order][starts]
    return pa.table({
        "user_idx": pa.array(users),
        "user_id": pa.array(user_id, pa.string()),
        "items": _list(item, offsets),
        "domains": _list(domain, offsets),
        "ts": _list(ts, offsets),
        "held_out": _list(held, offsets),
    })


def build_histories(interactions: Location, parts: int) -> ray.data.Dataset:
    """Materialized dataset of user histories from `prepared/interactions` (its training rows,
    which carry the raw user id that `prepared/train` leaves out)."""
    ds = ray.data.read_parquet(interactions.path, filesystem=interactions.fs, columns=[*HISTORY_COLUMNS, "split"])
    return (
        ds.map_batches(_partition, batch_format="pandas", fn_kwargs=dict(parts=parts))
        .groupby("_part", num_partitions=parts)
        .map_groups(user_histories_of, batch_format="pandas")
        .materialize()
    )


class FlatHistories:
    """A batch of history rows, flattened: one entry per (user row, interaction), with the
    protocol's visibility applied. Vectorised helpers for counts and recent items."""

    def __init__(self, batch: pa.Table, protocol: Protocol):
        self.n = batch.num_rows
        self.user_idx = batch["user_idx"].to_numpy()
        self.user_id = batch["user_id"].to_pylist() if "user_id" in batch.column_names else None
        items = batch["items"]
        self.parent = pa.compute.list_parent_indices(items).to_numpy()
        self.items = pa.compute.list_flatten(items).to_numpy()
        self.domains = pa.compute.list_flatten(batch["domains"]).to_numpy()
        self.ts = pa.compute.list_flatten(batch["ts"]).to_numpy()
        held = pa.compute.list_flatten(batch["held_out"]).to_numpy(zero_copy_only=False).astype(bool)
        self.protocol = protocol
        # Who is held out of which domain (the rows themselves stay hidden under cold_start).
        self._held = (self.parent[held], self.domains[held])
        # Under cold-start the held-out users' target rows are invisible: to the prompt, the
        # candidates' exclusions and the popularity counts alike.
        visible = ~held if protocol is Protocol.cold_start else np.ones(len(held), dtype=bool)
        self.parent, self.items, self.domains, self.ts = (
            a[visible] for a in (self.parent, self.items, self.domains, self.ts)
        )

    def held_out_in(self, domain: int) -> np.ndarray:
        """(users,) whether each user's rows in `domain` are held out (cold-start protocol)."""
        parent, domains = self._held
        mask = np.zeros(self.n, dtype=bool)
        mask[parent[domains == domain]] = True
        return mask

    def counts(self, num_domains: int) -> np.ndarray:
        """(users, domains) visible interactions."""
        flat = np.bincount(self.parent * num_domains + self.domains, minlength=self.n * num_domains)
        return flat.reshape(self.n, num_domains)

    def recent_mask(self, per_domain: int) -> np.ndarray:
        """Rows among each user's `per_domain` most recent in their domain."""
        key = self.parent * (int(self.domains.max(initial=0)) + 1) + self.domains
        order = np.lexsort((np.arange(len(key)), key))  # by group, then time (rows are time-sorted)
        sorted_key = key[order]
        group_end = np.searchsorted(sorted_key, sorted_key, side="right")
        from_end = group_end - np.arange(len(key)) - 1
        mask = np.zeros(len(key), dtype=bool)
        mask[order] = from_end < per_domain
        return mask

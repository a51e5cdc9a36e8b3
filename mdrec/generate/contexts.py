"""User contexts: what a backend sees about one user and one target domain.

A context holds the user's `history_per_domain` most recent visible items of every domain, mixed
in time order (the LLM-Rec "user as a sentence of titles"), and the target-domain candidates.
Contexts are built per batch of user histories on Ray Data tasks; the shared pieces (titles,
candidate pools, embeddings) come from the object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from mdrec.config import CandidatesConfig
from mdrec.data.schema import Protocol
from mdrec.generate.candidates import TargetCatalog, retrieve
from mdrec.generate.cooccurrence import user_scores
from mdrec.generate.histories import FlatHistories
from mdrec.prepare.shards import stable_hash, unit_hash

import pandas as pd


@dataclass
class SelectionRule:
    max_target_interactions: int
    min_source_interactions: int
    held_out_only: bool = False  # cold_start: only users held out of the target


@dataclass
class ContextPlan:
    """Everything a context-building task needs, put in the object store once."""

    seed: int
    protocols: list[Protocol]
    targets: list[int]  # domain_idx of each target
    domain_names: list[str]
    rule: SelectionRule
    history_per_domain: int
    candidates: CandidatesConfig
    titles: np.ndarray  # item_idx -> title (object; None when untitled)
    embeddings: np.ndarray | None  # item_idx -> unit vector
    catalogs: dict[tuple[str, int], TargetCatalog] = field(default_factory=dict)  # (protocol, target) -> pool
    thresholds: dict[tuple[str, int], float] = field(default_factory=dict)  # selection hash below this
    num_shards: int = 1

    @property
    def num_domains(self) -> int:
        return len(self.domain_names)


def _resolved(plan) -> ContextPlan:
    """Ray Data hands fn_kwargs over as given: the plan arrives as an ObjectRef from the driver."""
    import ray

    return ray.get(plan) if isinstance(plan, ray.ObjectRef) else plan


def protocol_index(protocol: Protocol) -> int:
    return list(Protocol).index(protocol)


def selection_hash(user_idx: np.ndarray, seed: int, protocol: Protocol, target: int) -> np.ndarray:
    """Uniform [0, 1) per user: users below a threshold are the seeded sample that fits the budget."""
    return unit_hash(pd.Series(user_idx).astype(str), f"generate-{seed}-{protocol.value}-{target}")


def shard_of_user(user_idx: np.ndarray, num_shards: int) -> np.ndarray:
    return (stable_hash(pd.Series(user_idx).astype(str), "generate-shard") % np.uint64(num_shards)).astype(np.int64)


def context_id(user_idx, target_idx, protocol_idx, num_domains: int):
    return (np.asarray(user_idx, dtype=np.int64) * num_domains + target_idx) * len(Protocol) + protocol_idx


def eligible(fh: FlatHistories, plan: ContextPlan, target: int) -> np.ndarray:
    counts = fh.counts(plan.num_domains)
    in_target = counts[:, target]
    elsewhere = counts.sum(axis=1) - in_target
    ok = (in_target <= plan.rule.max_target_interactions) & (elsewhere >= plan.rule.min_source_interactions)
    if plan.rule.held_out_only and fh.protocol is Protocol.cold_start:
        ok &= fh.held_out_in(target)
    return ok


HISTOGRAM_BINS = 4096


def selection_histograms(batch: pa.Table, *, plan) -> pa.Table:
    """Per (protocol, target): how many eligible users fall in each bin of the selection hash."""
    plan = _resolved(plan)
    rows = {"protocol": [], "target": [], "bins": []}
    for protocol in plan.protocols:
        fh = FlatHistories(batch, protocol)
        for target in plan.targets:
            ok = eligible(fh, plan, target)
            h = selection_hash(fh.user_idx[ok], plan.seed, protocol, target)
            rows["protocol"].append(protocol.value)
            rows["target"].append(target)
            rows["bins"].append(np.bincount((h * HISTOGRAM_BINS).astype(np.int64), minlength=HISTOGRAM_BINS))
    return pa.table({"protocol": rows["protocol"], "target": rows["target"],
                     "bins": pa.array([b.tolist() for b in rows["bins"]], pa.list_(pa.int64()))})


def threshold_for(bins: np.ndarray, limit: int | None) -> tuple[float, int, int]:
    """The largest bin edge whose users fit the limit: (threshold, selected, eligible)."""
    total = int(bins.sum())
    if limit is None or total <= limit:
        return 1.0, total, total
    cum = np.cumsum(bins)
    edge = int(np.searchsorted(cum, limit, side="right"))  # bins [0, edge) fit
    return edge / HISTOGRAM_BINS, int(cum[edge - 1]) if edge else 0, total


CONTEXT_SCHEMA = pa.schema([
    ("context_id", pa.int64()), ("shard", pa.int64()), ("protocol", pa.string()), ("user_idx", pa.int64()),
    ("user_id", pa.string()), ("target_idx", pa.int64()), ("target", pa.string()),
    ("history_items", pa.list_(pa.int64())), ("history_titles", pa.list_(pa.string())),
    ("history_domains", pa.list_(pa.string())), ("history_domain_idx", pa.list_(pa.int64())),
    ("candidates", pa.list_(pa.int64())), ("candidate_titles", pa.list_(pa.string())),
    ("candidate_popularity", pa.list_(pa.int64())),
    # co-occurrence votes of the user's source items for each candidate (0s when the run needs none)
    ("candidate_votes", pa.list_(pa.float64())),
])


def _selected(fh: FlatHistories, plan: ContextPlan, protocol: Protocol, target: int, pending=None) -> np.ndarray:
    """Rows of the batch whose users are selected for (protocol, target)."""
    ok = eligible(fh, plan, target)
    if pending is not None:
        ok &= pending
    ok[ok] = selection_hash(fh.user_idx[ok], plan.seed, protocol, target) < plan.thresholds[(protocol.value, target)]
    return np.flatnonzero(ok)


def boundary_hashes(batch: pa.Table, *, plan, bins: dict) -> pa.Table:
    """Selection hashes of the eligible users inside each key's boundary bin, so the driver can
    place the threshold exactly (the histogram alone may fall a few users short)."""
    plan = _resolved(plan)
    cols = {"protocol": [], "target": [], "hash": []}
    for protocol in plan.protocols:
        fh = FlatHistories(batch, protocol)
        for target in plan.targets:
            b = bins.get((protocol.value, target))
            if b is None:
                continue
            h = selection_hash(fh.user_idx[eligible(fh, plan, target)], plan.seed, protocol, target)
            h = h[(h * HISTOGRAM_BINS).astype(np.int64) == b]
            cols["protocol"] += [protocol.value] * len(h)
            cols["target"] += [target] * len(h)
            cols["hash"] += h.tolist()
    return pa.table({"protocol": pa.array(cols["protocol"], pa.string()), "target": pa.array(cols["target"], pa.int64()),
                     "hash": pa.array(cols["hash"], pa.float64())})


def selected_history_items(batch: pa.Table, *, plan) -> pa.Table:
    """The distinct items in the selected users' recent histories: the titles worth encoding."""
    plan = _resolved(plan)
    found = [np.empty(0, dtype=np.int64)]
    for protocol in plan.protocols:
        fh = FlatHistories(batch, protocol)
        recent = fh.recent_mask(plan.history_per_domain)
        for target in plan.targets:
            rows = _selected(fh, plan, protocol, target)
            found.append(fh.items[recent & np.isin(fh.parent, rows)])
    return pa.table({"item_idx": np.unique(np.concatenate(found))})


def build_contexts(batch: pa.Table, *, plan, skip_shards: list[int]) -> pa.Table:
    """Contexts of the selected users in one batch of histories (shards already written skipped)."""
    plan = _resolved(plan)
    cols: dict[str, list] = {name: [] for name in CONTEXT_SCHEMA.names}
    shards = shard_of_user(batch["user_idx"].to_numpy(), plan.num_shards)
    pending = ~np.isin(shards, np.asarray(skip_shards, dtype=np.int64))
    for protocol in plan.protocols:
        fh = FlatHistories(batch, protocol)
        recent = fh.recent_mask(plan.history_per_domain)
        for target in plan.targets:
            rows = _selected(fh, plan, protocol, target, pending)
            if len(rows):
                _append(cols, plan, fh, recent, rows, shards, protocol, target)
    return pa.table(cols, schema=CONTEXT_SCHEMA)


def _append(cols, plan: ContextPlan, fh: FlatHistories, recent: np.ndarray, rows: np.ndarray, shards: np.ndarray,
            protocol: Protocol, target: int) -> None:
    catalog = plan.catalogs[(protocol.value, target)]
    # Row ranges of each user in the flattened (time-ordered) arrays.
    starts = np.searchsorted(fh.parent, rows, side="left")
    ends = np.searchsorted(fh.parent, rows, side="right")
    histories, seen, votes = [], [], None if catalog.cooccurrence is None else []
    for s, e in zip(starts, ends):
        keep = np.arange(s, e)[recent[s:e]]
        histories.append(keep)
        in_target = fh.domains[s:e] == target
        seen.append(fh.items[s:e][in_target])
        if votes is not None:  # the whole visible source history votes, not only the recent part
            votes.append(user_scores(catalog.cooccurrence, fh.items[s:e][~in_target]))
    query = None
    if plan.embeddings is not None:
        query = np.stack([plan.embeddings[fh.items[h]].mean(axis=0) if len(h) else np.zeros(plan.embeddings.shape[1], np.float32)
                          for h in histories])
        norms = np.linalg.norm(query, axis=1, keepdims=True)
        query = query / np.where(norms > 0, norms, 1.0)
    users = fh.user_idx[rows]
    p_idx = protocol_index(protocol)
    candidates = retrieve(catalog, query, seen, users, plan.candidates, plan.seed, p_idx, votes)
    popularity = dict(zip(catalog.items.tolist(), catalog.popularity.tolist()))
    for i, user in enumerate(users):
        if not len(candidates[i]):
            continue
        h = histories[i]
        cols["context_id"].append(int(context_id(user, target, p_idx, plan.num_domains)))
        cols["shard"].append(int(shards[rows[i]]))
        cols["protocol"].append(protocol.value)
        cols["user_idx"].append(int(user))
        cols["user_id"].append(fh.user_id[rows[i]])
        cols["target_idx"].append(target)
        cols["target"].append(plan.domain_names[target])
        cols["history_items"].append(fh.items[h].tolist())
        cols["history_titles"].append([plan.titles[j] for j in fh.items[h]])
        cols["history_domains"].append([plan.domain_names[d] for d in fh.domains[h]])
        cols["history_domain_idx"].append(fh.domains[h].tolist())
        cols["candidates"].append(candidates[i].tolist())
        cols["candidate_titles"].append([plan.titles[j] for j in candidates[i]])
        cols["candidate_popularity"].append([popularity[j] for j in candidates[i].tolist()])
        cols["candidate_votes"].append(votes[i][np.searchsorted(catalog.items, candidates[i])].tolist()
                                       if votes is not None else [0.0] * len(candidates[i]))

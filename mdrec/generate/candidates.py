"""Candidate retrieval: the target-domain items a backend may choose from, per user.

A user's candidates are `popular` items drawn (seeded, weighted by count) from the domain's
`popular_pool` most popular items, then up to `cooccurring` items with the most cross-domain
co-occurrence votes from the user's source items (see `cooccurrence.py`), and the rest the items
whose title embedding is closest to the mean embedding of the user's history. Items the user already has are never candidates, and
only titled items are (no backend can judge an item it cannot describe). The final order is
shuffled with the user's seed, so a position in the list says nothing about how it was found.
Everything is a function of (seed, protocol, user, target domain): reruns and resumes agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import scipy.sparse as sp

from mdrec.config import CandidatesConfig


@dataclass
class TargetCatalog:
    """One target domain's candidate pool under one protocol (counts are that protocol's)."""

    domain_idx: int
    items: np.ndarray  # titled items of the domain, item_idx, ascending
    popularity: np.ndarray  # training interactions of each of `items` under the protocol
    embeddings: np.ndarray | None  # (len(items), dim) unit vectors, or None without an encoder
    # (num_items, len(items)) votes of each source item for each of `items`, or None when unused
    cooccurrence: sp.csr_matrix | None = None

    def __post_init__(self):
        self.pool: np.ndarray = np.empty(0, dtype=np.int64)
        self.pool_p: np.ndarray = np.empty(0)

    def with_pool(self, size: int) -> "TargetCatalog":
        # Most popular first; ties go to the lower item index so the pool is reproducible.
        order = np.lexsort((self.items, -self.popularity))[:size]
        self.pool = order
        weights = self.popularity[order].astype(np.float64) + 1.0
        self.pool_p = weights / weights.sum()
        return self


def user_rng(seed: int, protocol_idx: int, user_idx: int, target_idx: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, protocol_idx, user_idx, target_idx, purpose])


def retrieve(catalog: TargetCatalog, query: np.ndarray | None, seen: list[np.ndarray], users: np.ndarray,
             cfg: CandidatesConfig, seed: int, protocol_idx: int,
             votes: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Candidate item indices (into `catalog.items` positions -> item_idx) for each user.

    `votes`: each user's co-occurrence votes per catalog position (needed when cfg.cooccurring)."""
    n_items = len(catalog.items)
    similar_order = None
    if query is not None and catalog.embeddings is not None and cfg.size > cfg.popular:
        sims = query @ catalog.embeddings.T  # (users, items)
        want = min(n_items, cfg.size + cfg.popular + max((len(s) for s in seen), default=0))
        top = np.argpartition(-sims, want - 1, axis=1)[:, :want] if want < n_items else np.tile(np.arange(n_items), (len(users), 1))
        rows = np.arange(len(users))[:, None]
        similar_order = np.take_along_axis(top, np.argsort(-sims[rows, top], axis=1, kind="stable"), axis=1)
    by_popularity = np.lexsort((catalog.items, -catalog.popularity)) if similar_order is None else None
    out = []
    for i, user in enumerate(users):
        blocked = np.isin(catalog.items, seen[i]) if len(seen[i]) else np.zeros(n_items, dtype=bool)
        chosen: list[int] = []
        if cfg.popular and len(catalog.pool):
            open_pool = ~blocked[catalog.pool]
            if open_pool.any():
                p = catalog.pool_p * open_pool
                take = min(cfg.popular, int(open_pool.sum()))
                rng = user_rng(seed, protocol_idx, int(user), catalog.domain_idx, 0)
                chosen.extend(rng.choice(catalog.pool, size=take, replace=False, p=p / p.sum()).tolist())
        taken = set(chosen)
        if cfg.cooccurring and votes is not None:
            # Most votes first, then the more popular, then the lower index: reproducible.
            voted = np.flatnonzero((votes[i] > 0) & ~blocked)
            voted = voted[np.lexsort((catalog.items[voted], -catalog.popularity[voted], -votes[i][voted]))]
            budget = len(chosen) + cfg.cooccurring
            for pos in voted:
                if len(chosen) >= min(budget, cfg.size):
                    break
                if int(pos) not in taken:
                    chosen.append(int(pos))
                    taken.add(int(pos))
        fill = similar_order[i] if similar_order is not None else by_popularity
        for pos in fill:
            if len(chosen) >= cfg.size:
                break
            if not blocked[pos] and pos not in taken:
                chosen.append(int(pos))
                taken.add(int(pos))
        positions = np.array(chosen, dtype=np.int64)
        user_rng(seed, protocol_idx, int(user), catalog.domain_idx, 1).shuffle(positions)
        out.append(catalog.items[positions])
    return out

"""Training examples and evaluation candidates as arrays, from the prepared tables.

Training: every real positive plus `negatives_per_positive` items drawn uniformly from the same
domain's item range, fresh each epoch. (A drawn negative may be an item the user did interact
with; at the catalog sizes here that is rare and is the usual trade for not looking up every
user's history per draw.) Evaluation: each stored case expands to its positive and its stored
negatives, padded to one width with a validity mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from mdrec.data.schema import Source
from mdrec.models.base import Batch


@dataclass
class Examples:
    user: np.ndarray
    item: np.ndarray
    domain: np.ndarray
    ts: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    synthetic: np.ndarray | None = None  # bool: a synthetic positive (what denoising may drop)

    def __len__(self) -> int:
        return len(self.user)

    def batches(self, batch_size: int, rng: np.random.Generator | None = None):
        order = rng.permutation(len(self)) if rng is not None else np.arange(len(self))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            yield Batch(
                user=torch.from_numpy(self.user[rows]),
                item=torch.from_numpy(self.item[rows]),
                domain=torch.from_numpy(self.domain[rows]),
                ts=torch.from_numpy(self.ts[rows]),
                label=torch.from_numpy(self.label[rows]),
                weight=torch.from_numpy(self.weight[rows]),
                synthetic=None if self.synthetic is None else torch.from_numpy(self.synthetic[rows]),
            )


def with_sampled_negatives(
    user: np.ndarray,
    item: np.ndarray,
    domain: np.ndarray,
    ts: np.ndarray,
    weight: np.ndarray,
    item_ranges: dict[int, tuple[int, int]],
    negatives_per_positive: int,
    rng: np.random.Generator,
    synthetic: np.ndarray | None = None,
) -> Examples:
    """Positives as given, plus uniform same-domain negatives for each (at the positive's time).
    `synthetic` marks synthetic positives; their negatives are never marked."""
    k = negatives_per_positive
    lo = np.array([item_ranges[int(d)][0] for d in range(max(item_ranges) + 1)])
    hi = np.array([item_ranges[int(d)][1] for d in range(max(item_ranges) + 1)])
    neg_domain = np.repeat(domain, k)
    neg_item = lo[neg_domain] + (rng.random(len(neg_domain)) * (hi - lo)[neg_domain]).astype(np.int64)
    return Examples(
        user=np.concatenate([user, np.repeat(user, k)]).astype(np.int64),
        item=np.concatenate([item, neg_item]).astype(np.int64),
        domain=np.concatenate([domain, neg_domain]).astype(np.int64),
        ts=np.concatenate([ts, np.repeat(ts, k)]).astype(np.int64),
        label=np.concatenate([np.ones(len(user)), np.zeros(len(neg_item))]).astype(np.float32),
        weight=np.concatenate([weight, np.repeat(weight, k)]).astype(np.float32),
        synthetic=None if synthetic is None else np.concatenate([synthetic, np.zeros(len(neg_item))]).astype(bool),
    )


def pad_rows(rows, fill, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length rows as one padded matrix (padding at the end) and its validity mask."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), fill, dtype=dtype)
    valid = np.zeros((len(rows), width), dtype=bool)
    for i, values in enumerate(rows):
        out[i, : len(values)] = values
        valid[i, : len(values)] = True
    return out, valid


@dataclass
class Candidates:
    """Cases as a matrix: column 0 the positive, then the stored negatives; `valid` masks padding."""

    user: np.ndarray  # (cases,)
    domain: np.ndarray  # (cases,)
    ts: np.ndarray  # (cases,) time of the positive: histories end before it
    items: np.ndarray  # (cases, width)
    valid: np.ndarray  # (cases, width)
    catalog: np.ndarray | None = None  # items these cases could show (for coverage and exposure)

    @classmethod
    def from_cases(cls, user, domain, ts, positive, negatives, catalog=None) -> "Candidates":
        negs, negs_valid = pad_rows(negatives, 0, np.int64)
        n = len(negs)
        items = np.hstack([np.asarray(positive, np.int64).reshape(n, 1), negs])
        valid = np.hstack([np.ones((n, 1), dtype=bool), negs_valid])
        return cls(np.asarray(user, np.int64), np.asarray(domain, np.int64), np.asarray(ts, np.int64), items, valid,
                   catalog)

    def flat(self) -> Batch:
        """Every (case, candidate) pair as one scoring batch, row-major."""
        width = self.items.shape[1]
        return Batch(
            user=torch.from_numpy(np.repeat(self.user, width)),
            item=torch.from_numpy(self.items.reshape(-1)),
            domain=torch.from_numpy(np.repeat(self.domain, width)),
            ts=torch.from_numpy(np.repeat(self.ts, width)),
        )


def synthetic_in_loss(epoch: int, synthetic_epochs: int | None) -> bool:
    """Whether synthetic positives train in `epoch` (0-based): always, or (the pretrain mode) only
    in the first `synthetic_epochs`."""
    return synthetic_epochs is None or epoch < synthetic_epochs


class SyntheticSpread:
    """Mixes synthetic positives into a stream of real batches, an even share into each.

    The rows are shuffled each epoch and cut into `expected_batches` parts; part i joins real batch
    i, so no batch is all synthetic and they are not the last thing an epoch teaches. Parts left
    when the stream ends early (a shard smaller than expected) make batches of their own.
    """

    def __init__(self, rows: dict[str, np.ndarray] | None, expected_batches: int, rng: np.random.Generator):
        self.parts: list[dict[str, np.ndarray]] = []
        if rows is not None and len(rows["user_idx"]):
            order = rng.permutation(len(rows["user_idx"]))
            self.parts = [{k: v[idx] for k, v in rows.items()}
                          for idx in np.array_split(order, max(1, expected_batches)) if len(idx)]

    @classmethod
    def none(cls) -> "SyntheticSpread":
        return cls(None, 1, np.random.default_rng(0))

    def mixed(self, batches: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        i = 0
        for batch in batches:
            if i < len(self.parts):
                part = self.parts[i]
                batch = {k: np.concatenate([batch[k], part[k].astype(batch[k].dtype, copy=False)]) for k in batch}
            i += 1
            yield batch
        yield from self.parts[i:]


def pair_batches(part: dict[str, np.ndarray] | None, positives: int, share: float, item_ranges: dict[int, tuple[int, int]],
                 rng: np.random.Generator) -> tuple[Batch, Batch] | None:
    """One step's (preferred, rejected) batches from a part of the pairs: at most `share` pairs per
    real positive of the step, drawn at random; a pair without a rejected item gets a uniform item
    of its domain."""
    if part is None or not len(part["user_idx"]):
        return None
    cap = int(positives * share)
    rows = np.arange(len(part["user_idx"]))
    if len(rows) > cap:
        rows = rng.choice(rows, size=cap, replace=False)
    if not len(rows):
        return None
    user, item, domain, ts = (part[k][rows].astype(np.int64) for k in ("user_idx", "item_idx", "domain_idx", "ts"))
    rejected = part["rejected_idx"][rows].astype(np.int64)
    missing = rejected < 0
    if missing.any():
        lo = np.array([item_ranges[int(d)][0] for d in domain[missing]])
        hi = np.array([item_ranges[int(d)][1] for d in domain[missing]])
        rejected[missing] = lo + (rng.random(int(missing.sum())) * (hi - lo)).astype(np.int64)

    def batch(items: np.ndarray) -> Batch:
        return Batch(user=torch.from_numpy(user), item=torch.from_numpy(items), domain=torch.from_numpy(domain),
                     ts=torch.from_numpy(ts))

    return batch(item), batch(rejected)

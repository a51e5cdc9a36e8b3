"""Cross-domain co-occurrence: which target items the users of a source item also have.

The classic collaborative bridge for a cold domain (item-to-item CF across domains): for every
pair (source item k, target item j), how many users have both among the training rows a protocol
may see. A user with no visible target history is then scored per target item by the sum over
their visible source items: the users who share their source taste vote for target items.

Counts come from training rows only (never a validation or test case), binary per user (a repeat
purchase is one vote), and under `cold_start` without the held-out users' target rows: a
held-out user's own target items can never vote for themselves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mdrec.data.schema import Protocol


def visible_rows(train: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """The training rows (user_idx, item_idx, held_out) a protocol's models may see."""
    return train if protocol is Protocol.warm else train[~train["held_out"].to_numpy()]


def cooccurrence_matrix(rows: pd.DataFrame, target_range: tuple[int, int], catalog_items: np.ndarray,
                        num_items: int) -> sp.csr_matrix:
    """(num_items, len(catalog_items)) counts: row k, column c is the number of users who have the
    non-target item k and the target item catalog_items[c]. Rows of target items stay empty."""
    start, end = target_range
    users = rows["user_idx"].to_numpy()
    items = rows["item_idx"].to_numpy()
    num_users = int(users.max()) + 1 if len(users) else 0
    in_target = (items >= start) & (items < end)
    column = np.full(num_items, -1, dtype=np.int64)
    column[catalog_items] = np.arange(len(catalog_items))
    target_cols = column[items[in_target]]
    keep = target_cols >= 0  # untitled target items are never candidates
    target = sp.csr_matrix((np.ones(int(keep.sum())), (users[in_target][keep], target_cols[keep])),
                           shape=(num_users, len(catalog_items)))
    source = sp.csr_matrix((np.ones(int((~in_target).sum())), (users[~in_target], items[~in_target])),
                           shape=(num_users, num_items))
    target.data[:] = 1.0  # duplicates were summed: one vote per user
    source.data[:] = 1.0
    return (source.T @ target).tocsr()


def user_scores(matrix: sp.csr_matrix, source_items: np.ndarray) -> np.ndarray:
    """Per catalog item, the co-occurrence votes of one user's distinct source items."""
    items = np.unique(np.asarray(source_items, dtype=np.int64))
    if not len(items):
        return np.zeros(matrix.shape[1])
    return np.asarray(matrix[items].sum(axis=0)).ravel()

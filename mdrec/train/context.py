"""The interaction context: every user's training rows in time order, for models that need more
than (user, item, domain).

SASRec reads the history before each example, LightGCN the user-item graph, EMCDR which domains
a user is active in, and full-catalog evaluation the items a user has already seen. All of them
come from the training rows of one protocol (held-out rows stay out under cold-start), so a
model can never look at what it is evaluated on.

Storage is CSR: rows sorted by (user, ts), with `offsets[u]:offsets[u + 1]` the rows of user u.
It is built once on the driver and shared through the object store (about 20 bytes a row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class InteractionContext:
    num_users: int
    num_items: int
    num_domains: int
    offsets: np.ndarray  # (num_users + 1,) int64
    items: np.ndarray  # (rows,) int64, sorted by (user, ts)
    domains: np.ndarray  # (rows,) int64
    ts: np.ndarray  # (rows,) int64
    _keys: np.ndarray  # (rows,) user * stride + rank of ts: one sorted key for vectorised lookups
    _times: np.ndarray  # distinct ts values, sorted
    _stride: int

    @classmethod
    def from_rows(cls, num_users: int, num_items: int, num_domains: int, user, item, domain, ts) -> "InteractionContext":
        user, item, domain, ts = (np.asarray(a, dtype=np.int64) for a in (user, item, domain, ts))
        order = np.lexsort((item, ts, user))  # item breaks ts ties, so the order is reproducible
        user, item, domain, ts = user[order], item[order], domain[order], ts[order]
        times, rank = np.unique(ts, return_inverse=True)
        stride = len(times) + 1
        offsets = np.concatenate([[0], np.cumsum(np.bincount(user, minlength=num_users))]).astype(np.int64)
        return cls(num_users, num_items, num_domains, offsets, item, domain, ts, user * stride + rank, times, stride)

    def __post_init__(self):
        self._row_users = np.repeat(np.arange(self.num_users, dtype=np.int64), np.diff(self.offsets))

    @property
    def pad_item(self) -> int:
        """The item index used for 'no item' in padded histories (one past the catalog)."""
        return self.num_items

    def row_users(self) -> np.ndarray:
        """The user of each row."""
        return self._row_users

    def history_ends(self, user: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Per query, one past its user's last row strictly before ts, or -1 when there is none.

        Equal ends mean equal histories, so callers can encode each distinct history once.
        """
        user = np.asarray(user, dtype=np.int64)
        before = np.searchsorted(self._times, np.asarray(ts, dtype=np.int64), side="left")
        end = np.searchsorted(self._keys, user * self._stride + before, side="left")
        return np.where(end > self.offsets[user], end, -1)

    def histories(self, ends: np.ndarray, length: int) -> np.ndarray:
        """The last `length` items before each end (from `history_ends`), oldest first, left-padded."""
        ends = np.asarray(ends, dtype=np.int64)
        has = ends > 0
        owner = self._row_users[np.clip(ends - 1, 0, None)] if len(self.items) else np.zeros_like(ends)
        start = np.where(has, self.offsets[owner], 0)
        end = np.where(has, ends, 0)
        idx = end[:, None] - length + np.arange(length)
        real = idx >= start[:, None]
        return np.where(real, self.items[np.clip(idx, 0, None)] if len(self.items) else 0, self.pad_item)

    def history_before(self, user: np.ndarray, ts: np.ndarray, length: int) -> np.ndarray:
        """Each query's last `length` items strictly before its ts, oldest first, left-padded."""
        return self.histories(self.history_ends(user, ts), length)

    def with_rows(self, user, item, domain, ts) -> "InteractionContext":
        """This context plus more rows (synthetic interactions), as a new context."""
        return InteractionContext.from_rows(
            self.num_users, self.num_items, self.num_domains,
            np.concatenate([self.row_users(), np.asarray(user, dtype=np.int64)]),
            np.concatenate([self.items, np.asarray(item, dtype=np.int64)]),
            np.concatenate([self.domains, np.asarray(domain, dtype=np.int64)]),
            np.concatenate([self.ts, np.asarray(ts, dtype=np.int64)]))

    def next_ts(self, user: np.ndarray) -> np.ndarray:
        """One past each user's last training row time (0 without rows): where synthetic rows go.

        Synthetic interactions are inferred from the whole training history, so they come after it;
        all of a user's synthetic rows share this time, so none reads another as history.
        """
        user = np.asarray(user, dtype=np.int64)
        end = self.offsets[user + 1]
        has = end > self.offsets[user]
        last = self.ts[np.clip(end - 1, 0, None)] if len(self.ts) else np.zeros(len(user), dtype=np.int64)
        return np.where(has, last + 1, 0)

    def user_domains(self) -> np.ndarray:
        """(num_users, num_domains) bool: which domains each user has training rows in."""
        active = np.zeros((self.num_users, self.num_domains), dtype=bool)
        active[self.row_users(), self.domains] = True
        return active

    def seen(self, user: int) -> np.ndarray:
        """Every item user has a training row for."""
        return self.items[self.offsets[user]:self.offsets[user + 1]]

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.num_items)

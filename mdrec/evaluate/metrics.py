"""Ranking, CTR and fairness metrics over stored evaluation candidates (numpy only).

Layout: one row per case, column 0 the positive item, columns 1.. its sampled negatives.
Rows may have fewer negatives than columns: `valid` masks the padding.

Ties are resolved by expectation: a positive tied with t negatives is ranked uniformly at
random among them, so a constant scorer gets the chance-level HR/NDCG instead of a perfect one.
"""

from __future__ import annotations

import numpy as np

KS = (5, 10, 20)
# Summary keys where larger is better: the ones early stopping may watch.
HIGHER_IS_BETTER = ("auc", "gauc", "case_auc", *(f"{m}@{k}" for k in KS for m in ("hr", "ndcg", "coverage")))


def _check(scores: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (cases, 1 + negatives), got shape {scores.shape}")
    if valid is None:
        return np.ones(scores.shape, dtype=bool)
    if valid.shape != scores.shape:
        raise ValueError(f"valid mask shape {valid.shape} differs from scores {scores.shape}")
    if not valid[:, 0].all():
        raise ValueError("column 0 (the positive) must be valid in every row")
    return valid


def rank_counts(scores: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per case: negatives scored above the positive, tied with it, and the number of negatives."""
    valid = _check(scores, valid)
    pos = scores[:, :1]
    neg_valid = valid[:, 1:]
    neg = scores[:, 1:]
    above = ((neg > pos) & neg_valid).sum(axis=1)
    ties = ((neg == pos) & neg_valid).sum(axis=1)
    return above, ties, neg_valid.sum(axis=1)


def _expected_gain(above: np.ndarray, ties: np.ndarray, gain_at_rank: np.ndarray) -> np.ndarray:
    """E[gain(rank)] with rank uniform on [above, above + ties]; gain_at_rank is 0 past its end."""
    prefix = np.concatenate([[0.0], np.cumsum(gain_at_rank)])
    top = len(gain_at_rank)
    lo = np.minimum(above, top)
    hi = np.minimum(above + ties + 1, top)
    return (prefix[hi] - prefix[lo]) / (ties + 1)


def hit_rate_at_k(scores: np.ndarray, k: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Per case: probability that the positive ranks in the top k."""
    above, ties, _ = rank_counts(scores, valid)
    return _expected_gain(above, ties, np.ones(k))


def ndcg_at_k(scores: np.ndarray, k: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Per case: expected 1 / log2(rank + 2) when the positive's 0-based rank is below k, else 0."""
    above, ties, _ = rank_counts(scores, valid)
    return _expected_gain(above, ties, 1.0 / np.log2(np.arange(k) + 2.0))


def case_auc(scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per case: share of its negatives scored below the positive (ties count half)."""
    above, ties, n = rank_counts(scores, valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (n - above - 0.5 * ties) / n, np.nan)


def _labels_and_scores(scores: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    valid = _check(scores, valid)
    labels = np.zeros(scores.shape, dtype=np.int8)
    labels[:, 0] = 1
    return labels[valid], scores[valid]


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of pooled samples (Mann-Whitney U with average ranks for ties)."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average rank of each tie group (1-based)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pooled_auc(scores: np.ndarray, valid: np.ndarray | None = None) -> float:
    """AUC over every (positive, negative) sample of every case, as a CTR model is judged."""
    return auc(*_labels_and_scores(scores, valid))


def gauc(scores: np.ndarray, users: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Group AUC: each user's AUC over their own samples, weighted by their number of samples.

    Users whose samples are all of one label carry no information and are left out.
    """
    valid = _check(scores, valid)
    users = np.asarray(users)
    total, weight = 0.0, 0
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    for rows in np.split(order, bounds):
        labels, s = _labels_and_scores(scores[rows], valid[rows])
        value = auc(labels, s)
        if not np.isnan(value):
            total += value * len(labels)
            weight += len(labels)
    return total / weight if weight else float("nan")


def logloss(scores: np.ndarray, valid: np.ndarray | None = None, *, logits: bool = True) -> float:
    """Binary cross-entropy over every sample; scores are logits unless `logits=False`."""
    labels, s = _labels_and_scores(scores, valid)
    s = s.astype(np.float64)
    if logits:
        # log(1 + e^-x) for positives, log(1 + e^x) for negatives, computed stably
        signed = np.where(labels == 1, -s, s)
        return float(np.mean(np.logaddexp(0.0, signed)))
    p = np.clip(s, 1e-15, 1 - 1e-15)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def top_k_items(scores: np.ndarray, items: np.ndarray, k: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Item ids of each case's top k candidates (padding sorts last; -1 where fewer than k)."""
    valid = _check(scores, valid)
    masked = np.where(valid, scores, -np.inf)
    k_eff = min(k, scores.shape[1])
    top = np.argpartition(-masked, k_eff - 1, axis=1)[:, :k_eff]
    order = np.take_along_axis(-masked, top, axis=1).argsort(axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    chosen = np.take_along_axis(items, top, axis=1)
    return np.where(np.take_along_axis(valid, top, axis=1), chosen, -1)


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 when equal, towards 1 when one holds everything."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2.0 * np.sum(np.arange(1, n + 1) * x)) / (n * total) - (n + 1.0) / n)


def exposure(top_items: np.ndarray, catalog: np.ndarray) -> np.ndarray:
    """How often each catalog item appears in the top-k lists (aligned with `catalog`)."""
    ids, counts = np.unique(top_items[top_items >= 0], return_counts=True)
    catalog = np.asarray(catalog)
    if len(ids) == 0:
        return np.zeros(len(catalog), dtype=np.int64)
    at = np.minimum(np.searchsorted(ids, catalog), len(ids) - 1)
    return np.where(ids[at] == catalog, counts[at], 0).astype(np.int64)


def coverage(top_items: np.ndarray, catalog: np.ndarray) -> float:
    """Share of the catalog that appears in at least one top-k list."""
    return float((exposure(top_items, catalog) > 0).mean()) if len(catalog) else float("nan")


def per_user_mean(values: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Mean of a per-case value over each user's cases (one value per user)."""
    _, inverse = np.unique(users, return_inverse=True)
    return np.bincount(inverse, weights=values) / np.bincount(inverse)


def summarize(
    scores: np.ndarray,
    items: np.ndarray,
    users: np.ndarray,
    catalog: np.ndarray,
    valid: np.ndarray | None = None,
    ks: tuple[int, ...] = KS,
    logits: bool = True,
) -> dict[str, float]:
    """Every metric for one group of cases (one domain under one protocol)."""
    out = {
        "cases": int(scores.shape[0]),
        "auc": pooled_auc(scores, valid),
        "gauc": gauc(scores, users, valid),
        "logloss": logloss(scores, valid, logits=logits),
        "case_auc": float(np.nanmean(case_auc(scores, valid))),
    }
    return {**out, **summarize_ranking(ranking_per_case(scores, items, valid, ks), users, catalog, ks)}


def ranking_per_case(scores: np.ndarray, items: np.ndarray, valid: np.ndarray | None = None,
                     ks: tuple[int, ...] = KS) -> dict[str, np.ndarray]:
    """Per case: hr@K and ndcg@K for each K, and `top` (the top max(K) item ids, -1 padded).

    Compact enough to send back from a scoring worker when each case ranks a whole catalog.
    """
    out = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate_at_k(scores, k, valid)
        out[f"ndcg@{k}"] = ndcg_at_k(scores, k, valid)
    out["top"] = top_k_items(scores, items, max(ks), valid)
    return out


def summarize_ranking(per_case: dict[str, np.ndarray], users: np.ndarray, catalog: np.ndarray,
                      ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Means of the per-case ranking values, and the item- and user-side fairness of the lists."""
    out = {}
    for k in ks:
        out[f"hr@{k}"] = float(np.mean(per_case[f"hr@{k}"]))
        out[f"ndcg@{k}"] = float(np.mean(per_case[f"ndcg@{k}"]))
        shown = exposure(per_case["top"][:, :k], catalog)
        out[f"coverage@{k}"] = float((shown > 0).mean()) if len(catalog) else float("nan")
        out[f"gini_exposure@{k}"] = gini(shown)
    out["gini_user_ndcg@10"] = gini(per_user_mean(per_case["ndcg@10"], users))
    return out

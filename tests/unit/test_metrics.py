"""Metric functions against scikit-learn and hand-computed values."""

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from mdrec.evaluate import metrics as m


def random_cases(n=200, negatives=30, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, 1 + negatives))
    scores[:, 0] += 0.8  # positives score higher on average
    if ties:
        scores = np.round(scores, 1)
    valid = np.ones_like(scores, dtype=bool)
    valid[: n // 4, -5:] = False  # some cases have fewer negatives
    return scores, valid


@pytest.mark.parametrize("ties", [False, True])
def test_pooled_auc_matches_sklearn(ties):
    scores, valid = random_cases(ties=ties)
    labels = np.zeros(scores.shape, dtype=int)
    labels[:, 0] = 1
    expected = roc_auc_score(labels[valid], scores[valid])
    assert m.pooled_auc(scores, valid) == pytest.approx(expected, abs=1e-12)


def test_gauc_is_sample_weighted_per_user_auc():
    scores, valid = random_cases(n=60, negatives=10)
    users = np.repeat(np.arange(20), 3)
    labels = np.zeros(scores.shape, dtype=int)
    labels[:, 0] = 1
    total = weight = 0
    for u in range(20):
        rows = users == u
        y, s = labels[rows][valid[rows]], scores[rows][valid[rows]]
        total += roc_auc_score(y, s) * len(y)
        weight += len(y)
    assert m.gauc(scores, users, valid) == pytest.approx(total / weight)


def test_logloss_matches_sklearn():
    scores, valid = random_cases()
    labels = np.zeros(scores.shape, dtype=int)
    labels[:, 0] = 1
    p = 1 / (1 + np.exp(-scores[valid]))
    assert m.logloss(scores, valid) == pytest.approx(log_loss(labels[valid], p), rel=1e-9)
    probabilities = 1 / (1 + np.exp(-scores))
    assert m.logloss(probabilities, valid, logits=False) == pytest.approx(log_loss(labels[valid], p), rel=1e-9)


def test_hit_rate_and_ndcg_by_hand():
    # positive ranks 0, 2 and 6 (0-based) among 7 candidates
    scores = np.array([
        [9.0, 1, 2, 3, 4, 5, 6],
        [5.0, 9, 8, 1, 2, 3, 4],
        [0.0, 1, 2, 3, 4, 5, 6],
    ])
    assert m.hit_rate_at_k(scores, 1).tolist() == [1, 0, 0]
    assert m.hit_rate_at_k(scores, 3).tolist() == [1, 1, 0]
    assert m.ndcg_at_k(scores, 5) == pytest.approx([1.0, 1 / math.log2(4), 0.0])
    assert m.case_auc(scores) == pytest.approx([1.0, 4 / 6, 0.0])


def test_ties_are_ranked_in_expectation():
    constant = np.zeros((4, 100))  # a constant scorer must not look perfect
    assert m.hit_rate_at_k(constant, 10) == pytest.approx(np.full(4, 10 / 100))
    expected_ndcg = sum(1 / math.log2(r + 2) for r in range(10)) / 100
    assert m.ndcg_at_k(constant, 10) == pytest.approx(np.full(4, expected_ndcg))
    assert m.pooled_auc(constant) == pytest.approx(0.5)
    assert m.case_auc(constant) == pytest.approx(np.full(4, 0.5))
    # one negative above, two tied: rank is 1, 2 or 3 with equal chance
    s = np.array([[1.0, 2.0, 1.0, 1.0, 0.0]])
    assert m.hit_rate_at_k(s, 2)[0] == pytest.approx(1 / 3)


def test_padding_is_ignored():
    scores = np.array([[1.0, 2.0, 0.0, 99.0]])
    valid = np.array([[True, True, True, False]])
    assert m.hit_rate_at_k(scores, 1, valid)[0] == 0
    assert m.hit_rate_at_k(scores, 2, valid)[0] == 1
    top = m.top_k_items(scores, np.array([[10, 11, 12, 13]]), 3, valid)
    assert top.tolist() == [[11, 10, 12]]
    assert m.top_k_items(scores, np.array([[10, 11, 12, 13]]), 4, valid).tolist() == [[11, 10, 12, -1]]


def test_gini_by_hand():
    assert m.gini([1, 1, 1, 1]) == pytest.approx(0.0)
    assert m.gini([0, 0, 0, 4]) == pytest.approx(0.75)  # (n - 1) / n for one holder of all
    assert m.gini([1, 2, 3, 4]) == pytest.approx(0.25)
    assert m.gini([0, 0]) == 0.0


def test_exposure_and_coverage():
    top = np.array([[1, 2], [1, 3], [1, -1]])
    catalog = np.array([0, 1, 2, 3, 4])
    assert m.exposure(top, catalog).tolist() == [0, 3, 1, 1, 0]
    assert m.coverage(top, catalog) == pytest.approx(3 / 5)


def test_summarize_has_every_metric():
    scores, valid = random_cases(n=40, negatives=20)
    items = np.tile(np.arange(21), (40, 1))
    out = m.summarize(scores, items, np.arange(40) // 2, np.arange(21), valid)
    for k in m.KS:
        for name in ("hr", "ndcg", "coverage", "gini_exposure"):
            assert f"{name}@{k}" in out
    assert {"auc", "gauc", "logloss", "gini_user_ndcg@10", "cases"} <= set(out)
    assert 0.5 < out["auc"] <= 1 and out["hr@20"] >= out["hr@10"] >= out["hr@5"]


def test_bad_shapes():
    with pytest.raises(ValueError, match="scores must be"):
        m.hit_rate_at_k(np.zeros(5), 1)
    with pytest.raises(ValueError, match="column 0"):
        m.hit_rate_at_k(np.zeros((1, 3)), 1, np.array([[False, True, True]]))


def test_candidates_pad_short_cases_and_mask_them():
    from mdrec.train.examples import Candidates, pad_rows

    c = Candidates.from_cases([7, 8], [0, 1], [5, 6], [10, 20], [np.array([11, 12, 13]), np.array([21])])
    assert c.items.tolist() == [[10, 11, 12, 13], [20, 21, 0, 0]]
    assert c.valid.tolist() == [[True, True, True, True], [True, True, False, False]]
    scores, valid = pad_rows([[0.5], [0.1, 0.2]], -np.inf, np.float64)
    assert scores[0, 1] == -np.inf and valid.tolist() == [[True, False], [True, True]]

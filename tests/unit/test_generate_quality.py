"""The generator-quality measures (mdrec/generate/quality.py) on hand-made contexts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mdrec.generate import quality
from mdrec.generate.quality import GroundTruth, score_context, summarize


def result(chosen, candidates, popularity, user=7, protocol="cold_start", target=1):
    return {"user_idx": user, "target_idx": target, "protocol": protocol, "chosen": chosen, "candidates": candidates,
            "candidate_popularity": popularity}


CANDS = [10, 11, 12, 13, 14, 15]
POP = [1, 50, 3, 40, 2, 30]  # by popularity: 11, 13, 15, 12, 14, 10


def measure(truth_items, chosen, *, per_user=2, ranks_all=True, truth=None):
    truth = truth or GroundTruth({(7, 1): set(truth_items)})
    tally: dict = {}
    score_context(tally, truth, result(chosen, CANDS, POP), per_user)
    return summarize(tally, ["A", "B"], per_user, ranks_all)["targets"]


def test_picks_popularity_and_random_against_the_held_out_items():
    [row] = measure({12, 99}, [12, 10, 11, 13, 14, 15])  # 99: a held-out item retrieval missed
    assert row["users"] == 1 and row["target"] == "B"
    assert row["backend"]["hit"] == 1.0 and row["backend"]["precision"] == 0.5
    # One relevant item at rank 1 of 2, two relevant items in all: DCG 1 / IDCG (1 + 1/log2 3).
    assert row["backend"]["ndcg"] == pytest.approx(1 / (1 + 1 / math.log2(3)), abs=1e-4)
    assert row["popularity"]["hit"] == 0.0  # 11 and 13 are the two best sellers
    assert row["popularity"]["hit@10"] == 1.0  # 12 is 4th by popularity
    assert row["candidates"] == {"recall": 0.5, "any": 1.0}
    # Two uniform picks of six with one relevant: 1 - C(5,2)/C(6,2) = 1/3.
    assert row["random"]["hit"] == pytest.approx(1 / 3, abs=1e-4)


def test_a_backend_that_only_picks_ranks_the_rest_in_list_order():
    [row] = measure({15}, [11])
    # Ranking: 11, then 10, 12, 13, 14, 15 in list order: 15 is 6th.
    assert row["backend"]["hit"] == 0.0
    assert row["backend"]["ndcg@10"] == pytest.approx(1 / math.log2(7), abs=1e-4)


def test_only_cold_start_validation_users_are_counted():
    truth = GroundTruth({(7, 1): {12}})
    tally: dict = {}
    score_context(tally, truth, result([12], CANDS, POP, user=8), 2)  # not a validation user
    score_context(tally, truth, result([12], CANDS, POP, protocol="warm"), 2)  # warm: no truth
    out = summarize(tally, ["A", "B"], 2, True)
    assert out["targets"] == [] and "not measured" in out["note"]


def test_taste_share_on_the_world():
    truth = GroundTruth({(7, 1): {12}}, taste={7: np.array([0.7, 0.2, 0.1, 0.0])},
                        item_theme=np.array([0] * 10 + [0, 1, 0, 3, 3, 2]))
    [row] = measure({12}, [10, 13], truth=truth)
    # Uniform share is 1/4: themes 0 (0.7) are in taste, 1 (0.2), 2 and 3 are not.
    assert row["taste"]["backend"] == 0.5  # 10 (theme 0) yes, 13 (theme 3) no
    assert row["taste"]["popularity"] == 0.0  # 11 (theme 1) and 13 (theme 3)
    assert row["taste"]["random"] == pytest.approx(2 / 6, abs=1e-4)  # 10 and 12


def test_merge_sums_shard_tallies():
    truth = GroundTruth({(7, 1): {12}, (8, 1): {11}})
    a, b = {}, {}
    score_context(a, truth, result([12], CANDS, POP, user=7), 1)
    score_context(b, truth, result([12], CANDS, POP, user=8), 1)
    [row] = summarize(quality.merge([a, b]), ["A", "B"], 1, True)["targets"]
    assert row["users"] == 2 and row["backend"]["hit"] == 0.5 and row["popularity"]["hit"] == 0.5


def test_paired_against_popularity_counts_users_only_one_side_hits():
    # Popularity's two picks are 11 and 13. User 7 holds 12 (only the backend hits), user 8 holds
    # 11 (both hit), user 9 holds 13 (only popularity hits), user 10 holds 14 (only the backend).
    truth = GroundTruth({(7, 1): {12}, (8, 1): {11}, (9, 1): {13}, (10, 1): {14}})
    tally: dict = {}
    score_context(tally, truth, result([12, 11], CANDS, POP, user=7), 2)
    score_context(tally, truth, result([12, 11], CANDS, POP, user=8), 2)
    score_context(tally, truth, result([12, 10], CANDS, POP, user=9), 2)
    score_context(tally, truth, result([14, 10], CANDS, POP, user=10), 2)
    [row] = summarize(tally, ["A", "B"], 2, True)["targets"]
    hit = row["vs_popularity"]["hit"]
    assert (hit["wins"], hit["losses"]) == (2, 1)
    assert hit["p"] == pytest.approx(1.0)  # 2 of 3 discordant users: no evidence either way
    assert hit["p_holm"] == hit["p"]  # one target: nothing to adjust
    ndcg = row["vs_popularity"]["ndcg@10"]
    assert ndcg["diff"] == pytest.approx(row["backend"]["ndcg@10"] - row["popularity"]["ndcg@10"], abs=2e-4)


def test_sum_based_paired_t_matches_scipy_and_mcnemar_is_exact():
    from scipy import stats

    from mdrec.significance import mcnemar_p, paired_t_p

    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 0.1, 50), rng.normal(0.25, 0.1, 50)
    d = a - b
    assert paired_t_p(len(d), d.sum(), (d * d).sum()) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-6)
    assert paired_t_p(5, 0.0, 0.0) == 1.0  # no difference at all
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(10, 0) == pytest.approx(2 * 0.5 ** 10)  # ten discordant users, all one way


def test_holm_adjusts_over_the_targets_of_one_table():
    # Two targets, 6 users each, all won by the backend: p = 2 / 2**6 each, and Holm doubles both.
    truth = GroundTruth({(u, t): {12} for u in range(6) for t in (0, 1)})
    tally: dict = {}
    for u in range(6):
        for t in (0, 1):
            score_context(tally, truth, result([12], CANDS, POP, user=u, target=t), 1)
    rows = summarize(tally, ["A", "B"], 1, True)["targets"]
    assert len(rows) == 2
    for row in rows:
        hit = row["vs_popularity"]["hit"]
        assert (hit["wins"], hit["losses"]) == (6, 0)
        assert hit["p"] == pytest.approx(2 / 2**6, abs=1e-4)
        assert hit["p_holm"] == pytest.approx(4 / 2**6, abs=1e-4)

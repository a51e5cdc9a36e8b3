"""The pieces of generation that need no Ray: answer parsing, selection, histories, candidates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mdrec.config import CandidatesConfig
from mdrec.data.schema import Protocol
from mdrec.generate.backends.answers import parse_choice
from mdrec.generate.candidates import TargetCatalog, retrieve
from mdrec.generate.contexts import HISTOGRAM_BINS, threshold_for
from mdrec.generate.histories import FlatHistories, user_histories_of

# ----------------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    "text, positions, problems",
    [
        ('{"items": [3, 1]}', [2, 0], []),
        ("", [], ["empty_answer"]),
        ("   \n", [], ["empty_answer"]),
        (None, [], ["empty_answer"]),
        ("I think 3 and 1", [], ["unparseable"]),
        ('{"items": [3, 1]', [], ["unparseable"]),  # cut off by max_tokens
        ('[3, 1]', [], ["unparseable"]),
        ('{"items": "3"}', [], ["unparseable"]),
        ('{"items": [3.5]}', [], ["unparseable"]),
        ('{"items": [true]}', [], ["unparseable"]),
        ('{"items": []}', [], ["no_items"]),
        ('{"items": [99, 2]}', [1], ["out_of_range"]),
        ('{"items": [0, -1]}', [], ["out_of_range"]),
        ('{"items": [2, 2, 4]}', [1, 3], ["repeat"]),
        ('{"items": [1, 2, 3, 4, 5]}', [0, 1, 2], ["too_many"]),
        ('{"items": [99, 1, 1]}', [0], ["out_of_range", "repeat"]),
        ("[[[[[[[[[[" * 1000, [], ["unparseable"]),
    ],
)
def test_parse_choice_keeps_only_positions_in_the_list(text, positions, problems):
    got, found = parse_choice(text, num_candidates=5, limit=3)
    assert got == positions
    assert found == problems
    assert all(0 <= p < 5 for p in got)


# ----------------------------------------------------------------------------- selection


def test_threshold_keeps_the_user_count_within_the_limit():
    rng = np.random.default_rng(0)
    bins = np.bincount((rng.random(10_000) * HISTOGRAM_BINS).astype(int), minlength=HISTOGRAM_BINS)
    threshold, selected, eligible = threshold_for(bins, 2_500)
    assert eligible == 10_000
    assert selected <= 2_500 and selected > 2_400  # at most one bin short
    assert selected == bins[: int(round(threshold * HISTOGRAM_BINS))].sum()
    assert threshold_for(bins, None) == (1.0, 10_000, 10_000)
    assert threshold_for(bins, 20_000)[1] == 10_000
    assert threshold_for(bins, 0)[1] == 0


# ----------------------------------------------------------------------------- histories


def _histories() -> pa.Table:
    import pandas as pd

    rows = pd.DataFrame({
        # user 7: domain 0 at ts 1..4, domain 1 at ts 5 (held out) and 6 (not)
        "user_idx": [7, 7, 7, 7, 7, 7, 3],
        "user_id": ["u7"] * 6 + ["u3"],
        "item_idx": [10, 11, 12, 13, 50, 51, 10],
        "domain_idx": [0, 0, 0, 0, 1, 1, 0],
        "ts": [4, 2, 3, 1, 5, 6, 9],
        "held_out": [False, False, False, False, True, True, False],
    })
    return user_histories_of(rows)


def test_user_histories_are_time_ordered_lists_per_user():
    table = _histories()
    assert table["user_idx"].to_pylist() == [3, 7]
    assert table["user_id"].to_pylist() == ["u3", "u7"]
    assert table["items"].to_pylist()[1] == [13, 11, 12, 10, 50, 51]
    assert table["ts"].to_pylist()[1] == [1, 2, 3, 4, 5, 6]


def test_cold_start_hides_held_out_rows_and_recent_keeps_the_last_n_per_domain():
    table = _histories()
    warm, cold = FlatHistories(table, Protocol.warm), FlatHistories(table, Protocol.cold_start)
    assert warm.counts(2).tolist() == [[1, 0], [4, 2]]
    assert cold.counts(2).tolist() == [[1, 0], [4, 0]]
    recent = warm.recent_mask(2)
    kept = warm.items[recent & (warm.parent == 1)].tolist()
    assert kept == [12, 10, 50, 51]  # the two latest of each domain, still in time order


def test_held_out_only_selects_the_cold_start_users_of_the_target_alone():
    from mdrec.config import CandidatesConfig as Candidates
    from mdrec.generate.contexts import ContextPlan, SelectionRule, eligible

    table = _histories()

    def plan(held_out_only):
        return ContextPlan(seed=0, protocols=[Protocol.cold_start], targets=[1], domain_names=["A", "B"],
                          rule=SelectionRule(0, 1, held_out_only), history_per_domain=5, candidates=Candidates(),
                          titles=np.array([]), embeddings=None)

    cold, warm = FlatHistories(table, Protocol.cold_start), FlatHistories(table, Protocol.warm)
    # u3 has no B rows at all, u7's are held out: both are eligible, only u7 is a cold-start user.
    assert eligible(cold, plan(False), 1).tolist() == [True, True]
    assert eligible(cold, plan(True), 1).tolist() == [False, True]
    assert eligible(warm, plan(True), 1).tolist() == [True, False]  # warm: unaffected (u7 sees 2 B rows)


# ----------------------------------------------------------------------------- candidates


def _catalog(with_embeddings: bool) -> TargetCatalog:
    items = np.arange(100, 130)
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(30, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return TargetCatalog(1, items, np.arange(30)[::-1] * 3, emb if with_embeddings else None).with_pool(10)


@pytest.mark.parametrize("with_embeddings", [True, False])
def test_candidates_exclude_seen_items_and_are_deterministic(with_embeddings):
    catalog = _catalog(with_embeddings)
    cfg = CandidatesConfig(size=8, popular=3, popular_pool=10)
    query = catalog.embeddings[[5, 20]] if with_embeddings else None
    seen = [np.array([100, 101, 105]), np.array([], dtype=np.int64)]
    first = retrieve(catalog, query, seen, np.array([4, 9]), cfg, seed=0, protocol_idx=0)
    again = retrieve(catalog, query, seen, np.array([4, 9]), cfg, seed=0, protocol_idx=0)
    other = retrieve(catalog, query, seen, np.array([4, 9]), cfg, seed=1, protocol_idx=0)
    for got, blocked in zip(first, seen):
        assert len(got) == 8 and len(set(got.tolist())) == 8
        assert set(got.tolist()) <= set(catalog.items.tolist())
        assert not set(got.tolist()) & set(blocked.tolist())
    assert [g.tolist() for g in first] == [g.tolist() for g in again]
    assert [g.tolist() for g in first] != [g.tolist() for g in other]
    if with_embeddings:
        # The closest unseen item to the user's query is a candidate.
        assert 120 in first[1].tolist()


def test_candidates_when_the_domain_has_fewer_items_than_asked():
    catalog = _catalog(True)
    cfg = CandidatesConfig(size=20, popular=5, popular_pool=10)
    seen = [catalog.items[:25]]
    got = retrieve(catalog, catalog.embeddings[[0]], seen, np.array([1]), cfg, seed=0, protocol_idx=0)[0]
    assert sorted(got.tolist()) == catalog.items[25:].tolist()


def test_popularity_prior_moves_popular_candidates_up_by_its_weight():
    from mdrec.generate.backends.base import ranking, with_popularity_prior

    candidates = [10, 11, 12, 13]
    popularity = [0, 100, 5, 1000]
    relevance = {10: 1.0, 11: 0.5, 12: 0.9, 13: 0.1}
    ranked, scores, _ = ranking(candidates, [relevance[c] for c in candidates], 2)
    # 0: the backend's own ranking, unchanged.
    assert with_popularity_prior(candidates, popularity, ranked, scores, 0.0, 2)[0] == [10, 12, 11, 13]
    # A small weight reorders close ones only: 0.9 + 0.1 log 6 = 1.08 passes 1.0 + 0.1 log 1 = 1.0;
    # 0.5 + 0.1 log 101 = 0.96 does not.
    chosen, new_scores, rejected = with_popularity_prior(candidates, popularity, ranked, scores, 0.1, 2)
    assert chosen == [12, 10, 11, 13] and new_scores[0] == pytest.approx(0.9 + 0.1 * np.log(6))
    assert rejected == 13 and rejected not in chosen[:2]
    # A large one is the popularity ranking.
    assert with_popularity_prior(candidates, popularity, ranked, scores, 10.0, 2)[0] == [13, 11, 12, 10]


# ----------------------------------------------------------------------------- co-occurrence


def test_cooccurrence_counts_users_once_and_hides_held_out_rows_under_cold_start():
    from mdrec.generate.cooccurrence import cooccurrence_matrix, user_scores, visible_rows

    # Source items 0-4, target items 10-13 (13 untitled: not in the catalog).
    train = pd.DataFrame({
        "user_idx": [0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3],
        "item_idx": [0, 1, 10, 10, 0, 11, 13, 1, 12, 0, 10],
        "held_out": [False, False, False, False, False, False, False, False, False, False, True],
    })
    catalog = np.array([10, 11, 12])
    warm = cooccurrence_matrix(visible_rows(train, Protocol.warm), (10, 14), catalog, 14)
    assert warm.shape == (14, 3)
    # item 0 is held by users 0, 1, 3: user 0 twice buys 10 (one vote), user 3's 10 is visible under warm.
    assert warm[0].toarray().ravel().tolist() == [2, 1, 0]
    assert warm[1].toarray().ravel().tolist() == [1, 0, 1]
    assert warm[10].nnz == 0  # target rows never vote
    cold = cooccurrence_matrix(visible_rows(train, Protocol.cold_start), (10, 14), catalog, 14)
    assert cold[0].toarray().ravel().tolist() == [1, 1, 0]  # user 3's held-out 10 is gone
    # a user's votes: the sum over their distinct source items
    assert user_scores(warm, np.array([0, 1, 1])).tolist() == [3, 1, 1]
    assert user_scores(warm, np.array([], dtype=np.int64)).tolist() == [0, 0, 0]


def test_cooccurring_slots_take_the_most_voted_unseen_items_then_similar_ones():
    catalog = _catalog(True)
    cfg = CandidatesConfig(size=8, popular=0, cooccurring=3)
    votes = np.zeros(30)
    votes[[3, 7, 11, 20]] = [5, 9, 2, 7]  # positions; item_idx = 100 + position
    seen = [np.array([107])]  # the most voted item is already the user's
    query = catalog.embeddings[[25]]
    got = retrieve(catalog, query, seen, np.array([4]), cfg, seed=0, protocol_idx=0, votes=[votes])[0].tolist()
    assert len(got) == 8 and 107 not in got
    assert {120, 103, 111} <= set(got)  # the three best unseen by votes
    assert 125 in got  # the rest by title similarity, the closest first
    few = CandidatesConfig(size=8, popular=0, cooccurring=6)  # only 3 unseen voted items: similar ones fill in
    assert len(retrieve(catalog, query, seen, np.array([4]), few, seed=0, protocol_idx=0, votes=[votes])[0]) == 8


def test_candidate_slots_must_fit_the_list():
    with pytest.raises(ValueError, match=r"popular \(5\) \+ cooccurring \(16\) must not exceed size \(20\)"):
        CandidatesConfig(size=20, popular=5, cooccurring=16)

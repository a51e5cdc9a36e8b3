"""The interaction context and what models read from it: histories, graph, active domains."""

from __future__ import annotations

import numpy as np
import torch

from mdrec.models import Batch, Dims, build_model
from mdrec.models.lightgcn import normalized_adjacency
from mdrec.train.context import InteractionContext

# user 0: items 5 (t=10, domain 0), 2 (t=30, domain 0), 7 (t=20, domain 1); user 2: item 1 (t=5)
CTX = InteractionContext.from_rows(3, 8, 2, user=[0, 0, 0, 2], item=[5, 2, 7, 1], domain=[0, 0, 1, 0], ts=[10, 30, 20, 5])
PAD = 8


def test_history_is_strictly_before_the_time_oldest_first_and_left_padded():
    got = CTX.history_before(np.array([0, 0, 0, 0, 1, 2]), np.array([10, 11, 25, 99, 50, 5]), length=2)
    assert got.tolist() == [
        [PAD, PAD],  # nothing before t=10 (the row at t=10 itself is not history)
        [PAD, 5],
        [5, 7],  # time order across domains
        [7, 2],  # only the last `length`
        [PAD, PAD],  # user 1 has no rows
        [PAD, PAD],  # user 2's only row is at t=5
    ]


def test_active_domains_seen_items_and_counts():
    assert CTX.user_domains().tolist() == [[True, True], [False, False], [True, False]]
    assert sorted(CTX.seen(0).tolist()) == [2, 5, 7] and CTX.seen(1).tolist() == []
    assert CTX.item_counts()[[1, 2, 5, 7, 0]].tolist() == [1, 1, 1, 1, 0]


def test_normalized_adjacency_matches_the_dense_formula():
    users, items = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])  # (1, 1) twice: counted once
    a = normalized_adjacency(2, 2, users, items).to_dense().numpy()
    dense = np.zeros((4, 4))
    for u, i in {(0, 0), (0, 1), (1, 1)}:
        dense[u, 2 + i] = dense[2 + i, u] = 1
    d = dense.sum(1)
    np.testing.assert_allclose(a, dense / np.sqrt(np.outer(d, d)), rtol=1e-6)


def _batch(user, item, domain, ts):
    return Batch(*(torch.tensor(x) for x in (user, item, domain, ts)))


def test_sasrec_buckets_give_the_same_scores_as_one_padded_pass():
    torch.manual_seed(0)
    model = build_model("sasrec", {"embedding_dim": 8, "max_len": 40, "num_heads": 2}, Dims(3, 8, 2), CTX).eval()
    history = torch.from_numpy(CTX.history_before(np.array([0, 0, 2, 1]), np.array([11, 99, 6, 1]), 40))
    with torch.no_grad():
        np.testing.assert_allclose(model.encode_bucketed(history).numpy(), model.encode(history).numpy(), atol=1e-5)
        # a user's score only moves when their history before ts changes
        s = model(_batch([0, 0, 0], [3, 3, 3], [1, 1, 1], [11, 15, 25])).numpy()
    assert s[0] == s[1] != s[2]


def test_emcdr_maps_users_without_rows_in_the_domain_and_keeps_own_factors_otherwise():
    torch.manual_seed(0)
    model = build_model("emcdr", {"embedding_dim": 4, "mapping_hidden": [4]}, Dims(3, 8, 2), CTX).eval()
    batch = _batch([0, 2], [6, 6], [1, 1], [0, 0])  # user 0 is active in domain 1, user 2 is not
    with torch.no_grad():
        before = model(batch).numpy()
        for p in model.mapping[1].parameters():
            p.add_(1.0)
        after = model(batch).numpy()
    assert before[0] == after[0]  # own factors: the mapping does not matter
    assert before[1] != after[1]  # cold in domain 1: scored through the mapping from domain 0
    loss = model.mapping_loss(_batch([0], [2], [0], [0]))  # user 0: active in 0 and elsewhere
    assert loss.item() > 0


def test_lightgcn_scores_are_cached_only_in_eval_mode():
    model = build_model("lightgcn", {"embedding_dim": 4}, Dims(3, 8, 2), CTX)
    model.train()
    model.propagate()
    assert model._cached is None
    model.eval()
    first = model.propagate()
    assert model.propagate() is first
    model.train()
    assert model._cached is None

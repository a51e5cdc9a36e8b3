"""Each filter function on hand-made synthetic rows (no Ray): what goes, what stays, and why."""

from __future__ import annotations

import typing

import numpy as np
import pandas as pd
import pytest

from mdrec.config import (BudgetFilter, DedupeFilter, FilterConfig, FilterStep, MinScoreFilter, PopularityCapFilter,
                          SeenFilter, TeacherFilter, TopKFilter, ValidityFilter, config_from_dict)
from mdrec.errors import ConfigError
from mdrec.filter import steps
from mdrec.filter.steps import FilterContext, step_for

# Items 0-3 are domain 0 ("a0".."a3"), items 4-7 domain 1 ("b0".."b3").
ITEM_IDS = np.array(["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3"], dtype=object)
ITEM_DOMAIN = np.array([0, 0, 0, 0, 1, 1, 1, 1])


def context(**overrides) -> FilterContext:
    base = dict(
        item_ids=ITEM_IDS, item_domain=ITEM_DOMAIN,
        # warm sees user 1's item 5; cold_start does not (that row is held out).
        seen={"warm": np.array(sorted([1 * 8 + 5, 2 * 8 + 4])), "cold_start": np.array([2 * 8 + 4])},
        real_rows={("warm", 0): 100, ("warm", 1): 20, ("cold_start", 0): 100, ("cold_start", 1): 10},
        domain_users={0: 50, 1: 10}, domain_items={0: 4, 1: 4}, rich_domains=[0],
    )
    base.update(overrides)
    return FilterContext(**base)


def rows(*records) -> pd.DataFrame:
    """(protocol, user, item_idx, score[, item_id[, domain_idx]]) tuples as live synthetic rows."""
    out = []
    for i, r in enumerate(records):
        protocol, user, item, score = r[:4]
        item_id = r[4] if len(r) > 4 else (ITEM_IDS[item] if 0 <= item < len(ITEM_IDS) else "zz")
        domain = r[5] if len(r) > 5 else (ITEM_DOMAIN[item] if 0 <= item < len(ITEM_DOMAIN) else 1)
        out.append({"protocol": protocol, "user_idx": user, "item_idx": item, "item_id": item_id,
                    "domain_idx": domain, "score": score, "tiebreak": float(i)})
    return pd.DataFrame(out)


def test_validity_drops_unknown_items_wrong_domains_and_mismatched_ids():
    live = rows(("warm", 1, 5, 0.9),  # fine
                ("warm", 1, 99, 0.9),  # no such item
                ("warm", 1, 5, 0.9, "b1", 0),  # item of domain 1 written as domain 0
                ("warm", 1, 6, 0.9, "b9"),  # id does not match the index
                ("warm", 1, -1, 0.9))
    assert steps.validity(live, ValidityFilter(), context()).tolist() == [False, True, True, True, True]


def test_dedupe_keeps_the_best_scored_copy_per_protocol_user_item():
    live = rows(("warm", 1, 5, 0.2), ("warm", 1, 5, 0.7), ("cold_start", 1, 5, 0.1), ("warm", 2, 5, 0.1))
    assert steps.dedupe(live, DedupeFilter(), context()).tolist() == [True, False, False, False]


def test_seen_uses_only_the_rows_the_protocol_can_see():
    live = rows(("warm", 1, 5, 0.5), ("cold_start", 1, 5, 0.5), ("warm", 2, 4, 0.5), ("cold_start", 2, 4, 0.5),
                ("warm", 3, 4, 0.5))
    # user 1 / item 5 is a held-out row under cold_start: dropping it there would read test data.
    assert steps.seen(live, SeenFilter(), context()).tolist() == [True, False, True, True, False]


def test_seen_with_an_empty_history():
    live = rows(("warm", 1, 5, 0.5))
    assert steps.seen(live, SeenFilter(), context(seen={"warm": np.array([], dtype=np.int64)})).tolist() == [False]


def test_min_score_threshold_drops_low_and_missing_scores():
    live = rows(("warm", 1, 4, 0.1), ("warm", 1, 5, 0.5), ("warm", 1, 6, float("nan")), ("warm", 1, 7, 0.3))
    cfg = MinScoreFilter(threshold=0.3)
    assert step_for(cfg).drop(live, cfg, context()).tolist() == [True, False, True, False]


def test_top_k_keeps_each_users_best_per_protocol_and_domain():
    live = rows(("warm", 1, 4, 0.1), ("warm", 1, 5, 0.9), ("warm", 1, 6, 0.5),  # user 1, domain 1
                ("warm", 1, 0, 0.05),  # user 1, domain 0: its own top-k
                ("cold_start", 1, 4, 0.1),  # another protocol
                ("warm", 2, 4, 0.2), ("warm", 2, 5, 0.2))  # a tie: the seeded hash decides
    drop = steps.top_k(live, TopKFilter(k=1), context())
    assert drop.tolist() == [True, False, True, False, False, True, False]


def counts_frame(records) -> pd.DataFrame:
    return pd.DataFrame(records, columns=["protocol", "domain_idx", "n"])


def test_teacher_and_quantile_limits_keep_the_complement_share():
    counts = counts_frame([("warm", 1, 10), ("cold_start", 1, 3)])
    assert steps.teacher_limits(counts, TeacherFilter(drop_fraction=0.2), context()).tolist() == [8, 3]
    assert steps.quantile_limits(counts, MinScoreFilter(quantile=0.5), context()).tolist() == [5, 2]


def test_popularity_cap_holds_after_capping_with_a_floor_of_one():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = rng.zipf(1.5, size=rng.integers(1, 60)).clip(max=500)
        share = float(rng.choice([0.01, 0.05, 0.1, 0.3]))
        cap = steps.share_cap(n, share)
        after = np.minimum(n, cap)
        assert cap >= 1
        # Every item is within the share of what is left, unless the floor of one row decides.
        assert cap == 1 or after.max() <= share * after.sum()
        # And the cap is the largest that holds: one more row would break it.
        assert after.max() < n.max() or after.max() <= share * after.sum()
        if cap < n.max():
            assert cap + 1 > share * np.minimum(n, cap + 1).sum()
    counts = pd.DataFrame({"protocol": ["warm"] * 12 + ["cold_start"], "domain_idx": 1,
                           "item_idx": list(range(12)) + [4], "n": [50, 30] + [5] * 10 + [5]})
    limits = steps.popularity_limits(counts, PopularityCapFilter(max_share=0.2), context())
    # warm: a cap of 16 leaves 16 + 16 + 50 = 82 rows and 16 <= 0.2 x 82; 17 would not hold (17 > 0.2 x 84).
    # cold_start: one item can never be within 20%: the floor of one row.
    assert limits.tolist() == [16] * 12 + [1]


def test_budget_by_ratio_and_by_relative_density():
    counts = counts_frame([("warm", 1, 1000), ("cold_start", 1, 1000)])
    assert steps.budget_limits(counts, BudgetFilter(ratio=0.5), context()).tolist() == [10, 5]
    # Rich density (warm) = 100 / (50 x 4) = 0.5; domain 1 may reach 0.5 x 0.5 x 10 users x 4 items = 10 rows.
    assert steps.budget_limits(counts, BudgetFilter(relative_density=0.5), context()).tolist() == [0, 0]
    assert steps.budget_limits(counts, BudgetFilter(relative_density=2.0), context()).tolist() == [20, 30]
    with pytest.raises(ValueError, match="rich"):
        steps.budget_limits(counts, BudgetFilter(relative_density=1.0), context(rich_domains=[]))


def test_every_filter_config_has_a_step():
    configs = typing.get_args(typing.get_args(FilterStep)[0])
    assert len(configs) == 8
    for cls in configs:
        cfg = cls(**({"threshold": 0.1} if cls is MinScoreFilter else {"ratio": 0.1} if cls is BudgetFilter else {}))
        step = step_for(cfg)
        assert (step.drop is None) != (step.limits is None), cls.__name__
        assert step.description


def test_filter_config_rejects_repeats_and_incomplete_rules():
    base = {"data": {"source": {"type": "world"}}}
    with pytest.raises(ConfigError, match="each filter may appear once"):
        config_from_dict({**base, "filter": {"steps": [{"name": "seen"}, {"name": "seen"}]}})
    with pytest.raises(ConfigError, match="filter.steps.0.*exactly one of 'threshold' or 'quantile'"):
        config_from_dict({**base, "filter": {"steps": [{"name": "min_score"}]}})
    with pytest.raises(ConfigError, match="unknown key 'filter.steps.0.share'"):
        config_from_dict({**base, "filter": {"steps": [{"name": "popularity_cap", "share": 0.1}]}})
    assert [s.name for s in FilterConfig().steps] == ["validity", "dedupe", "seen", "teacher", "popularity_cap"]


def test_variants_always_include_real_first():
    base = {"data": {"source": {"type": "world"}}}
    cfg = config_from_dict({**base, "train": {"variants": ["filtered", "real", "raw"]}})
    assert [v.value for v in cfg.train.variants] == ["real", "filtered", "raw"]
    with pytest.raises(ConfigError, match="must include real"):
        config_from_dict({**base, "train": {"variants": ["filtered"]}})

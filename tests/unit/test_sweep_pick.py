"""The sweep's choice (mdrec/sweep/pick.py): the best cold-domain validation value wins, real-only
keeps ties, an oracle arm is only ever the ceiling, and an arm that costs the other domains too much
is passed over."""

from __future__ import annotations

import pandas as pd

from mdrec.sweep.pick import arm_values, choose


def frame(rows: list[tuple]) -> pd.DataFrame:
    """rows: (arm, oracle, seed, domain, value) for warm sasrec."""
    return pd.DataFrame([{"protocol": "warm", "model": "sasrec", "arm": a, "oracle": o, "seed": s,
                          "metric": "ndcg@10", "domain": d, "value": v} for a, o, s, d, v in rows])


def test_the_best_cold_arm_is_picked_and_the_oracle_is_the_ceiling():
    values = arm_values(frame([
        ("real", False, 0, "Food", 0.20), ("real", False, 1, "Food", 0.22),
        ("cooc:raw", False, 0, "Food", 0.24), ("cooc:raw", False, 1, "Food", 0.23),  # mean 0.235
        ("cooc:raw+context", False, 0, "Food", 0.22), ("cooc:raw+context", False, 1, "Food", 0.22),
        ("oracle:raw", True, 0, "Food", 0.40), ("oracle:raw", True, 1, "Food", 0.40),
    ]), cold_domains=["Food"])
    [pick] = choose(values, max_other_drop=0.01)
    assert (pick.pick, round(pick.value, 4), round(pick.real, 4)) == ("cooc:raw", 0.235, 0.21)
    assert (pick.ceiling, pick.ceiling_value) == ("oracle:raw", 0.40)


def test_real_only_keeps_a_tie():
    values = arm_values(frame([("real", False, 0, "Food", 0.2), ("cooc:raw", False, 0, "Food", 0.2)]), ["Food"])
    [pick] = choose(values, max_other_drop=0.01)
    assert pick.pick == "real" and pick.ceiling is None and "no arm beats" in pick.why


def test_an_arm_that_costs_the_other_domains_too_much_is_not_picked():
    values = arm_values(frame([
        ("real", False, 0, "Food", 0.20), ("real", False, 0, "Kitchen", 0.100),
        ("a:raw", False, 0, "Food", 0.30), ("a:raw", False, 0, "Kitchen", 0.098),  # Kitchen -2%
        ("b:raw", False, 0, "Food", 0.25), ("b:raw", False, 0, "Kitchen", 0.0995),  # Kitchen -0.5%
    ]), ["Food"])
    [pick] = choose(values, max_other_drop=0.01)
    assert pick.pick == "b:raw" and "a:raw" in pick.why
    [loose] = choose(values, max_other_drop=0.05)
    assert loose.pick == "a:raw"


def test_a_gain_within_min_gain_or_not_in_every_seed_keeps_real_only():
    values = arm_values(frame([
        ("real", False, 0, "Food", 0.20), ("real", False, 1, "Food", 0.20),
        ("a:raw", False, 0, "Food", 0.26), ("a:raw", False, 1, "Food", 0.19),  # +0.025 in the mean, 1 of 2 seeds
        ("b:raw", False, 0, "Food", 0.205), ("b:raw", False, 1, "Food", 0.206),  # +0.0055, both seeds
    ]), ["Food"])
    assert values.set_index("arm").loc[["a:raw", "b:raw"], "seeds_better"].tolist() == [1, 2]
    [pick] = choose(values, max_other_drop=0.01)
    assert pick.pick == "b:raw" and "not in every validation seed: a:raw" in pick.why  # the larger mean
    [strict] = choose(values, max_other_drop=0.01, min_gain=0.01)
    assert strict.pick == "real" and "by no more than 0.01 or not in every validation seed: a:raw, b:raw" in strict.why

"""The test lift split by the rows a backend wrote: which group each case falls in, and each
group's part of the mean difference."""

import pandas as pd
import pytest

from mdrec.sweep.lift import CaseGroup, case_groups, lift_by_group


def test_each_case_is_grouped_by_the_rows_written_for_its_user():
    targets = pd.DataFrame({"case_id": [10, 11, 12, 13], "user_idx": [1, 2, 3, 1], "item_idx": [100, 200, 300, 101]})
    rows = pd.DataFrame({"user_idx": [1, 1, 2], "item_idx": [100, 105, 201]})
    groups = case_groups(targets, rows)
    assert groups.to_dict() == {10: CaseGroup.answer_written.value, 11: CaseGroup.other_rows.value,
                                12: CaseGroup.no_rows.value, 13: CaseGroup.other_rows.value}


def test_groups_are_averaged_over_seeds_and_their_parts_sum_to_the_mean_difference():
    def frame(variant, seed, values):
        return pd.DataFrame({"protocol": "cold_start", "model": "m", "variant": variant, "seed": seed,
                             "domain": "Food", "case_id": [1, 2, 3], "ndcg@10": values})
    cases = pd.concat([frame("real", 0, [0.5, 0.2, 0.0]), frame("real", 1, [0.7, 0.2, 0.0]),
                       frame("b:raw", 0, [1.0, 0.1, 0.3]), frame("b:raw", 1, [1.0, 0.3, 0.1])])
    groups = pd.Series([CaseGroup.answer_written.value, CaseGroup.other_rows.value, CaseGroup.other_rows.value],
                       index=[1, 2, 3])
    lift = lift_by_group(cases, {("b:raw", "cold_start"): groups}, real="real").set_index("group")
    assert lift.loc[CaseGroup.answer_written.value, ["cases", "real", "augmented"]].tolist() == [1, 0.6, 1.0]
    assert lift.loc[CaseGroup.other_rows.value, "delta"] == pytest.approx((0.2 + 0.2) / 2 - 0.1)
    whole = (1.0 + 0.2 + 0.2) / 3 - (0.6 + 0.2 + 0.0) / 3
    assert (lift["delta"] * lift["share"]).sum() == pytest.approx(whole)

"""Choosing on validation: per protocol and model, the arm with the best cold-domain validation value.

The value of an arm is the early-stopping metric at each run's best epoch, averaged over the cold
domains' validation cases and then over the validation seeds. real-only is a candidate too, and
wins ties (an arm must earn its place). An arm that lowers the other domains' validation value by
more than `max_other_drop` of real-only's is not picked. Oracle arms read held-out rows, so they
are never picked; the best of them is kept as the ceiling, scored on test beside the pick.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd

from mdrec.report.collect import best_validation
from mdrec.sweep.plan import REAL, SweepArm

COLUMNS = ["protocol", "model", "arm", "oracle", "seed", "metric", "domain", "value"]


def validation_frame(trained: list[tuple[SweepArm, dict]]) -> pd.DataFrame:
    """One row per (run, domain): the best-epoch validation values of every run of the sweep."""
    frames = []
    for arm, metrics in trained:
        frame = best_validation([metrics])
        frames.append(frame.assign(arm=arm.name, oracle=arm.oracle))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    out["protocol"] = out["protocol"].map(lambda p: getattr(p, "value", p))
    return out[COLUMNS]


def arm_values(validation: pd.DataFrame, cold_domains: list[str]) -> pd.DataFrame:
    """Per (protocol, model, arm): cold (mean over cold domains, then seeds), other (the same over the
    remaining domains; NaN when validation has none), seeds, oracle."""
    per_domain = validation[validation["domain"] != "all"].copy()
    per_domain["cold"] = per_domain["domain"].isin(cold_domains)
    by_seed = (per_domain.groupby(["protocol", "model", "arm", "oracle", "seed", "cold"])["value"].mean()
               .unstack("cold"))
    by_seed = by_seed.reindex(columns=[True, False])
    out = by_seed.groupby(level=["protocol", "model", "arm", "oracle"]).agg(["mean", "count"])
    values = pd.DataFrame({"cold": out[(True, "mean")], "other": out[(False, "mean")],
                           "seeds": out[(True, "count")]}).reset_index()
    # Seed by seed against real-only (same protocol, model and seed): the same seed draws the same
    # initial weights and batches, so this is the paired view of the spread.
    cold = by_seed[True].reset_index()
    real = cold[cold["arm"] == REAL][["protocol", "model", "seed", True]].rename(columns={True: "real"})
    paired = cold.merge(real, on=["protocol", "model", "seed"])
    better = (paired[True] > paired["real"]).groupby([paired["protocol"], paired["model"], paired["arm"]]).sum()
    values["seeds_better"] = [int(better.get((r.protocol, r.model, r.arm), 0)) for r in values.itertuples()]
    return values


@dataclass(frozen=True)
class Pick:
    protocol: str
    model: str
    pick: str  # an arm name, or real
    value: float  # its cold-domain validation value
    real: float
    ceiling: str | None  # the best oracle arm, when the sweep has one
    ceiling_value: float | None
    why: str

    def as_dict(self) -> dict:
        return asdict(self)


def choose(values: pd.DataFrame, max_other_drop: float, min_gain: float = 0.0) -> list[Pick]:
    """Per protocol and model: the eligible arm with the best cold value. Eligible: not an oracle,
    more than `min_gain` over real-only, better than real-only in every validation seed, and the
    other domains within `max_other_drop` of real-only's."""
    picks = []
    for (protocol, model), rows in values.groupby(["protocol", "model"], sort=True):
        rows = rows.set_index("arm")
        if REAL not in rows.index:
            continue
        real = rows.loc[REAL]
        order = [REAL] + [a for a in rows.index if a != REAL]  # real first: ties keep it
        best, skipped, unsure = REAL, [], []
        for arm in order[1:]:
            row = rows.loc[arm]
            if row["oracle"]:
                continue
            if not math.isnan(row["other"]) and not math.isnan(real["other"]) and \
                    row["other"] < real["other"] * (1 - max_other_drop):
                skipped.append(arm)
                continue
            if row["cold"] - real["cold"] <= min_gain or row["seeds_better"] < row["seeds"]:
                if row["cold"] > real["cold"]:
                    unsure.append(arm)
                continue
            if row["cold"] > rows.loc[best, "cold"]:
                best = arm
        oracle = rows[rows["oracle"].astype(bool)]
        ceiling = None if oracle.empty else str(oracle["cold"].idxmax())
        if best == REAL:
            why = "no arm beats real-only on the cold domains' validation cases"
        else:
            why = f"highest cold-domain validation value, {rows.loc[best, 'cold'] - real['cold']:+.4f} over real-only"
        if skipped:
            why += f"; not eligible (other domains more than {max_other_drop:.0%} worse): {', '.join(skipped)}"
        if unsure:
            rule = "not in every validation seed" if min_gain <= 0 else \
                f"by no more than {min_gain:g} or not in every validation seed"
            why += f"; above real-only but {rule}: {', '.join(unsure)}"
        picks.append(Pick(str(protocol), str(model), best, float(rows.loc[best, "cold"]), float(real["cold"]),
                          ceiling, None if ceiling is None else float(oracle.loc[ceiling, "cold"]), why))
    return picks

"""The oracle backend: how good synthetic rows could be, a diagnostic ceiling (issue 16).

It is refused unless `generate.backend.allow_oracle: true`, and its rows are marked `oracle`
wherever they appear. It knows what no generator can:

- **Real data, cold_start**: a selected held-out user's own held-out target rows, most recent
  first. They are read with a predicate that keeps only warm *training* rows (`split = train`), so
  the warm validation and test cases never reach this process. The cold-start case is the user's
  latest held-out row (prepare's rule): the warm test case when the user has warm cases, else the
  latest training row, which is dropped as soon as the rows are read.
- **Real data, warm** (or a user with no held-out row but the case): nothing honest to give. The
  context gets no rows and the problem `nothing_to_give`, which the report counts.
- **The `world` source**: items drawn without replacement from the user's true distribution in
  the target domain (taste over themes, the world's taste fidelity and in-theme popularity), the
  same process that wrote the user's real rows. No row of the data is read.

Unlike every other backend its picks need not be among the context's candidates: it does not
choose from the list, it reads the answer. The candidates stay in the result so the quality
table's popularity floor is measured on the same lists as the other backends'.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mdrec.data.schema import Protocol, Split
from mdrec.generate.backends.base import result_table
from mdrec.generate.candidates import user_rng
from mdrec.generate.contexts import protocol_index

NOTHING = "nothing_to_give"
RANKED = 50  # how much of the world oracle's draw is returned (the stage writes `per_user`)


def held_out_training_rows(prepared, targets: list[int]) -> dict[tuple[int, int], list[int]]:
    """(user_idx, target domain) -> the user's held-out target items other than their cases, most
    recent first. `prepared` is the prepared stage's Location."""
    in_targets = pc.field("domain_idx").isin(targets)
    table = prepared.join("interactions").read_table(
        columns=["user_idx", "item_idx", "domain_idx", "ts", "item_id"],
        filter=pc.field("held_out") & (pc.field("split") == Split.train.value) & in_targets)
    df = table.to_pandas().sort_values(["user_idx", "domain_idx", "ts", "item_id"], kind="stable")
    # The cold-start case is the user's latest held-out row. With a warm case (enough rows) that
    # row is the warm test case, already left out by the predicate; without one it is the latest
    # training row, dropped here. Which users have warm cases is read from the cases' user and
    # domain columns alone: no case's item is read.
    warm = prepared.join("cases").read_table(
        columns=["user_idx", "domain_idx"], filter=(pc.field("protocol") == Protocol.warm.value) & in_targets)
    with_warm_case = set(zip(warm["user_idx"].to_numpy().tolist(), warm["domain_idx"].to_numpy().tolist()))
    latest = ~df.duplicated(["user_idx", "domain_idx"], keep="last").to_numpy()
    no_warm_case = np.array([(u, d) not in with_warm_case for u, d in zip(df["user_idx"], df["domain_idx"])],
                            dtype=bool)
    df = df[~(latest & no_warm_case)]
    out: dict[tuple[int, int], list[int]] = {}
    for (user, domain), items in df.groupby(["user_idx", "domain_idx"], sort=False)["item_idx"]:
        out[(int(user), int(domain))] = items.to_numpy()[::-1].astype(int).tolist()
    return out


def world_item_model(source, seed: int, items: pd.DataFrame) -> dict:
    """What the world oracle needs per item_idx: its theme and its popularity inside that theme."""
    from mdrec.data import world

    catalog = world.make_catalog(source, seed)
    in_theme = np.zeros(catalog.items.num_rows)
    for d, per_theme in enumerate(catalog.theme_cdfs):
        for th, cdf in enumerate(per_theme):
            in_theme[catalog.theme_members[d][th]] = np.diff(np.concatenate([[0.0], cdf]))
    in_theme_of = dict(zip(catalog.items["item_id"].to_pylist(), in_theme.tolist()))
    return {"theme": world.item_themes(catalog, list(items["item_id"])),
            "in_theme": np.array([in_theme_of.get(i, 0.0) for i in items["item_id"]]),
            "fidelity": source.taste_fidelity, "themes": len(world.THEMES), "source": source, "seed": seed}


class OracleScorer:
    """Ray Data actor: each context's answer, read from the held-out rows or the world's tastes."""

    def __init__(self, seed: int, ranges: dict, held_out: dict | None = None, world_model: dict | None = None):
        self.seed, self.ranges, self.held_out, self.world = seed, ranges, held_out, world_model

    def __call__(self, batch: pa.Table) -> pa.Table:
        from mdrec.data import world

        user_ids = batch["user_id"].to_pylist()
        tastes = world.tastes_of(self.world["source"], self.world["seed"], user_ids) if self.world else None
        chosen, scores, problems = [], [], []
        for row, (protocol, user, target, history) in enumerate(zip(
                batch["protocol"].to_pylist(), batch["user_idx"].to_pylist(), batch["target_idx"].to_pylist(),
                batch["history_items"].to_pylist())):
            if tastes is not None:
                items, s = self._draw(Protocol(protocol), user, tastes[row], target, history)
            elif protocol == Protocol.cold_start.value:
                items = self.held_out.get((user, target), [])
                s = [1.0] * len(items)
            else:
                items, s = [], []
            chosen.append(items)
            scores.append(s)
            problems.append([] if items else [NOTHING])
        n = batch.num_rows
        return result_table(batch, chosen, scores, problems, ["oracle"] * n, [0] * n, [0] * n, [-1] * n)

    def _draw(self, protocol: Protocol, user: int, taste: np.ndarray, target: int,
              history) -> tuple[list[int], list[float]]:
        w = self.world
        start, end = self.ranges[target]
        theme, in_theme = w["theme"][start:end], w["in_theme"][start:end]
        weight_of_theme = w["fidelity"] * taste + (1 - w["fidelity"]) / w["themes"]
        p = np.where(theme >= 0, weight_of_theme[np.maximum(theme, 0)] * in_theme, 0.0)
        seen = np.asarray([i - start for i in history if start <= i < end], dtype=np.int64)
        p[seen] = 0.0
        open_items = np.flatnonzero(p > 0)
        if not len(open_items):
            return [], []
        # Gumbel top-k: the order of a draw without replacement, proportional to p.
        rng = user_rng(self.seed, protocol_index(protocol), user, target, 7)
        keys = np.log(p[open_items]) + rng.gumbel(size=len(open_items))
        order = open_items[np.argsort(-keys, kind="stable")[:RANKED]]
        return (order + start).tolist(), p[order].tolist()

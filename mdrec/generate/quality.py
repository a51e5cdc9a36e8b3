"""How often a generator is right, measured before any model trains on its rows.

Ground truth exists only for the cold-start protocol's held-out users: their whole target-domain
history left training, so a backend that reads their other domains is guessing items we know.
Only the **validation** half of those users is read (their cases are `split = valid`); the test
users' rows are filtered out when the table is read, so choosing a generator here never sees test.

Per (cold_start, target) and over the validation users that got a context:
- `picks`: the backend's chosen items (at most `per_user`): hit rate (any pick is a held-out item),
  precision (share of picks that are) and NDCG@per_user;
- `ranking`: the backend's order of all the candidates, hit@10 and NDCG@10 (a backend that only
  picks, like the LLM's choose mode, ranks its picks first and the rest in list order, which is a
  seeded shuffle: it says nothing about them);
- `popularity`: the same candidates ordered by training count, the same measures: the floor;
- `random`: the expected value of `per_user` picks drawn uniformly from the candidates;
- `candidates`: the share of held-out items among the candidates (`recall`) and of users with any
  (`any`): the ceiling retrieval leaves a backend.
- `vs_popularity`: is the backend more often right than the popularity floor *on the same users*?
  hit@per_user compares the picks paired user by user (McNemar's exact test: users only the
  backend hits against users only popularity hits); NDCG@10 compares the two rankings with a
  paired t-test on the per-user differences. `p_holm` adjusts each measure's p-values over the
  table's targets (Holm-Bonferroni). Both tests need only sums, so they merge across shards.
On the generated `world`, the user's true taste is known too: `taste` is the share of picks whose
theme weighs more than a uniform share (1 / themes) in the user's taste, for the backend, the
popularity picks and random picks.

The report also counts where in the shown list every pick sat (`pick_positions`, all users): the
list is a seeded shuffle, so a backend without position bias picks each position alike.

Tallies are sums kept per shard (in the shard's metadata), so a resumed run reports the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow.compute as pc

from mdrec.data.schema import Protocol, Split
from mdrec.significance import holm, mcnemar_p, paired_t_p

RANKING_K = 10


@dataclass
class GroundTruth:
    """Held-out target items of the cold-start validation users (and their taste on the world)."""

    items: dict[tuple[int, int], set[int]]  # (user_idx, target_idx) -> held-out item_idx
    taste: dict[int, np.ndarray] = field(default_factory=dict)  # user_idx -> theme weights (world only)
    item_theme: np.ndarray | None = None  # item_idx -> theme (world only)

    def in_taste(self, user: int, items) -> np.ndarray | None:
        weights = self.taste.get(user)
        if weights is None or self.item_theme is None:
            return None
        return weights[self.item_theme[np.asarray(items, dtype=np.int64)]] > 1.0 / len(weights)


def load_truth(prepared, targets: list[int], world_source=None, seed: int = 0) -> GroundTruth:
    """Reads the cold-start validation cases of `targets`, then those users' held-out target rows.

    `prepared` is the prepared stage's Location; `world_source` the WorldSourceConfig when the data
    is generated (then the true tastes are recomputed from the config and the seed).
    """
    cases = prepared.join("cases").read_table(
        columns=["user_idx", "domain_idx"],
        filter=(pc.field("protocol") == Protocol.cold_start.value) & (pc.field("split") == Split.valid.value)
        & pc.field("domain_idx").isin(targets))
    users = np.unique(cases["user_idx"].to_numpy())
    items: dict[tuple[int, int], set[int]] = {
        (int(u), int(d)): set() for u, d in zip(cases["user_idx"].to_numpy(), cases["domain_idx"].to_numpy())}
    if not len(users):
        return GroundTruth(items)
    # Every held-out target interaction of these users (the case itself included); the predicate
    # keeps only validation users, so no test user's row reaches this process.
    rows = prepared.join("interactions").read_table(
        columns=["user_idx", "item_idx", "domain_idx", "user_id"],
        filter=pc.field("held_out") & pc.field("domain_idx").isin(targets) & pc.field("user_idx").isin(users))
    user_ids = {}
    for u, i, d, uid in zip(rows["user_idx"].to_numpy(), rows["item_idx"].to_numpy(), rows["domain_idx"].to_numpy(),
                            rows["user_id"].to_pylist()):
        if (int(u), int(d)) in items:
            items[(int(u), int(d))].add(int(i))
            user_ids[int(u)] = uid
    truth = GroundTruth(items)
    if world_source is not None:
        _add_world_taste(truth, prepared, world_source, seed, user_ids)
    return truth


def validation_pick_hits(synthetic, prepared) -> "pd.DataFrame":
    """The committed cold_start synthetic rows (`synthetic`, a Location) of the cold-start
    validation users, with `hit`: whether the pick is one of their held-out items (in `prepared`).
    Test users' rows are dropped, never scored. Columns: user_idx, item_idx, domain_idx, score, hit."""
    rows = synthetic.read_table(columns=["user_idx", "item_idx", "domain_idx", "score"],
                                filter=pc.field("protocol") == Protocol.cold_start.value).to_pandas()
    targets = sorted(int(d) for d in rows["domain_idx"].unique())
    truth = load_truth(prepared, targets).items if targets else {}
    keys = list(zip(rows["user_idx"].astype(int), rows["domain_idx"].astype(int)))
    rows = rows[np.array([k in truth for k in keys], dtype=bool)].reset_index(drop=True)
    rows["hit"] = np.array([int(i) in truth[(int(u), int(d))] for u, i, d in
                            zip(rows["user_idx"], rows["item_idx"], rows["domain_idx"])], dtype=bool)
    return rows


def _add_world_taste(truth: GroundTruth, prepared, source, seed: int, user_ids: dict[int, str]) -> None:
    from mdrec.data import world

    items = prepared.join("items.parquet").read_table(columns=["item_idx", "item_id"])
    item_theme = np.full(items.num_rows, -1, dtype=np.int64)
    item_theme[items["item_idx"].to_numpy()] = world.item_themes(world.make_catalog(source, seed),
                                                                 items["item_id"].to_pylist())
    truth.item_theme = item_theme
    users = list(user_ids)
    truth.taste.update(zip(users, world.tastes_of(source, seed, [user_ids[u] for u in users])))


def _dcg(relevant: np.ndarray) -> float:
    return float((relevant / np.log2(np.arange(2, len(relevant) + 2))).sum())


def _ndcg(order_hits: np.ndarray, k: int, n_relevant: int) -> float:
    ideal = _dcg(np.ones(min(k, n_relevant)))
    return _dcg(order_hits[:k].astype(np.float64)) / ideal if ideal > 0 else 0.0


def _random_hit(n: int, m: int, k: int) -> float:
    """P(at least one of k uniform picks without replacement from n is among m relevant)."""
    k = min(k, n)
    if m <= 0 or k <= 0:
        return 0.0
    if n - m < k:
        return 1.0
    return 1.0 - math.comb(n - m, k) / math.comb(n, k)


MEASURES = ("users", "picks_hit", "picks_precision", "picks_ndcg", "ranking_hit", "ranking_ndcg",
            "popularity_hit", "popularity_precision", "popularity_ndcg", "popularity_ranking_hit",
            "popularity_ranking_ndcg", "random_hit", "random_precision", "candidates_recall", "candidates_any",
            "taste_users", "taste_picks", "taste_popularity", "taste_random",
            # paired against popularity: users only the backend hits / only popularity hits, and the
            # sum and sum of squares of the per-user NDCG@10 difference
            "hit_wins", "hit_losses", "ndcg_diff", "ndcg_diff_sq")


def score_context(tally: dict, truth: GroundTruth, result: dict, per_user: int) -> None:
    """Adds one context's measures to `tally` (sums; see MEASURES). Non-validation users are skipped."""
    key = (int(result["user_idx"]), int(result["target_idx"]))
    relevant = truth.items.get(key)
    if result["protocol"] != Protocol.cold_start.value or relevant is None:
        return
    candidates = np.asarray(result["candidates"], dtype=np.int64)
    picks = np.asarray(list(result["chosen"])[:per_user], dtype=np.int64)
    listed = set(map(int, result["chosen"]))
    ranking = np.concatenate([np.asarray(list(result["chosen"]), dtype=np.int64),
                              np.asarray([c for c in candidates if int(c) not in listed], dtype=np.int64)])
    popularity = np.asarray(result["candidate_popularity"], dtype=np.int64)
    by_popularity = candidates[np.argsort(-popularity, kind="stable")]  # ties keep the (shuffled) list order
    held_out = np.fromiter(relevant, dtype=np.int64, count=len(relevant))

    def is_rel(items: np.ndarray) -> np.ndarray:
        return np.isin(items, held_out)

    in_candidates = int(is_rel(candidates).sum())
    n = len(relevant)
    k = per_user
    add = {"users": 1, "candidates_recall": in_candidates / n if n else 0.0, "candidates_any": float(in_candidates > 0),
           "random_hit": _random_hit(len(candidates), in_candidates, k),
           "random_precision": in_candidates / len(candidates) if len(candidates) else 0.0}
    for name, order, top in (("picks", picks, k), ("popularity", by_popularity[:k], k)):
        hits = is_rel(order)
        add[f"{name}_hit"] = float(hits.any())
        add[f"{name}_precision"] = float(hits.mean()) if len(hits) else 0.0
        add[f"{name}_ndcg"] = _ndcg(hits, top, n)
    for name, order in (("ranking", ranking), ("popularity_ranking", by_popularity)):
        hits = is_rel(order)
        add[f"{name}_hit"] = float(hits[:RANKING_K].any())
        add[f"{name}_ndcg"] = _ndcg(hits, RANKING_K, n)
    add["hit_wins"] = float(add["picks_hit"] > add["popularity_hit"])
    add["hit_losses"] = float(add["picks_hit"] < add["popularity_hit"])
    diff = add["ranking_ndcg"] - add["popularity_ranking_ndcg"]
    add["ndcg_diff"], add["ndcg_diff_sq"] = diff, diff * diff
    liked = truth.in_taste(key[0], candidates)
    if liked is not None and len(candidates):
        add["taste_users"] = 1
        add["taste_picks"] = float(truth.in_taste(key[0], picks).mean()) if len(picks) else 0.0
        add["taste_popularity"] = float(truth.in_taste(key[0], by_popularity[:k]).mean())
        add["taste_random"] = float(liked.mean())
    bucket = tally.setdefault(f"{result['protocol']}/{int(result['target_idx'])}", {m: 0.0 for m in MEASURES})
    for m, v in add.items():
        bucket[m] += v


def merge(tallies: list[dict]) -> dict:
    out: dict = {}
    for tally in tallies:
        for key, sums in tally.items():
            bucket = out.setdefault(key, {m: 0.0 for m in MEASURES})
            for m, v in sums.items():
                bucket[m] = bucket.get(m, 0.0) + v
    return out


def _vs_popularity(s: dict, users: int) -> dict:
    wins, losses = int(s.get("hit_wins", 0)), int(s.get("hit_losses", 0))
    return {"hit": {"wins": wins, "losses": losses, "p": mcnemar_p(wins, losses)},
            f"ndcg@{RANKING_K}": {"diff": round(s.get("ndcg_diff", 0.0) / users, 4),
                                  "p": paired_t_p(users, s.get("ndcg_diff", 0.0), s.get("ndcg_diff_sq", 0.0))}}


def summarize(tally: dict, domain_names: list[str], per_user: int, ranks_all: bool) -> dict:
    """The report's `quality` block: means per (protocol, target) over the validation users."""
    rows = []
    for key, s in sorted(tally.items()):
        protocol, target = key.split("/")
        users = int(s["users"])
        if not users:
            continue

        def mean(m: str, over: float = users) -> float:
            return round(s[m] / over, 4) if over else None

        row = {
            "protocol": protocol, "target": domain_names[int(target)], "users": users,
            "backend": {"hit": mean("picks_hit"), "precision": mean("picks_precision"), "ndcg": mean("picks_ndcg"),
                        f"hit@{RANKING_K}": mean("ranking_hit"), f"ndcg@{RANKING_K}": mean("ranking_ndcg")},
            "popularity": {"hit": mean("popularity_hit"), "precision": mean("popularity_precision"),
                           "ndcg": mean("popularity_ndcg"), f"hit@{RANKING_K}": mean("popularity_ranking_hit"),
                           f"ndcg@{RANKING_K}": mean("popularity_ranking_ndcg")},
            "random": {"hit": mean("random_hit"), "precision": mean("random_precision")},
            "candidates": {"recall": mean("candidates_recall"), "any": mean("candidates_any")},
            "vs_popularity": _vs_popularity(s, users),
        }
        if s.get("taste_users"):
            t = s["taste_users"]
            row["taste"] = {"backend": mean("taste_picks", t), "popularity": mean("taste_popularity", t),
                            "random": mean("taste_random", t)}
        rows.append(row)
    for measure in ("hit", f"ndcg@{RANKING_K}"):
        for row, adjusted in zip(rows, holm(np.array([r["vs_popularity"][measure]["p"] for r in rows]))):
            test = row["vs_popularity"][measure]
            # three significant digits, so a strong result reads 2.1e-06 and not 0.0; adjust the unrounded p
            test["p"], test["p_holm"] = float(f"{test['p']:.3g}"), float(f"{float(adjusted):.3g}")
    note = None
    if not rows:
        note = ("not measured: no cold-start validation user got a context (quality needs the cold_start "
                "protocol, whose held-out users have target items to check against)")
    return {"measured_on": "cold_start validation users (held-out target items; test users are never read)",
            "k": per_user, "ranking_k": RANKING_K, "ranks_all_candidates": ranks_all, "targets": rows, "note": note}

"""Throughput of the `filter` stage: rows/s on synthetic events 1x and 10x the size of the shared
data's Food domain (98,316 interactions), with every filter on (the teacher included).

The shared data is prepared once into the work folder. Synthetic events are then made up for
Kitchen-only users (items of Food drawn by popularity, scores random, a few repeats and seen items
mixed in so that every local filter has work) and written as generate's raw shards, so the
filter stage reads exactly what it reads after `generate`. The teacher (STAR, real data only) is
trained once and reused by later runs. Prints one JSON line (`food_interactions`: the prepared
Food domain's interactions, the unit of the scales).

`--quick` checks the script end to end: a small generated world with a Food (cold) and a Kitchen
domain (`QUICK_WORLD`, about 600 Food interactions) stands in for the shared data, so its
figures are start-up costs, not throughput.

    python benchmarks/filter.py [--workdir DIR] [--scales 1,10] [--num-cpus N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data" / "amazon-food-kitchen").resolve()
ROWS_PER_SHARD = 1536  # what generate writes: 512 users x 3 interactions

# --quick: Food sparse and cold (as in the shared data), most Kitchen users without Food history.
QUICK_WORLD = {"type": "world", "users": 400, "users_per_chunk": 64, "domains": [
    {"name": "Food", "kind": "food", "items": 80, "participation": 0.3, "activity": 5},
    {"name": "Kitchen", "kind": "kitchen", "items": 160, "participation": 0.9, "activity": 8},
]}

STEPS = [
    {"name": "validity"}, {"name": "dedupe"}, {"name": "seen"},
    {"name": "min_score", "quantile": 0.05},
    {"name": "top_k", "k": 2},
    {"name": "teacher", "drop_fraction": 0.2},
    {"name": "popularity_cap", "max_share": 0.01},
    {"name": "budget", "ratio": 0.5},
]


def config(num_cpus: int | None, quick: bool = False):
    from mdrec.config import config_from_dict

    source = QUICK_WORLD if quick else {
        "type": "table",
        "interactions": str(SHARED / "interactions.parquet"), "items": str(SHARED / "items.parquet"),
        "interaction_columns": {"seq": "seq"},
    }
    return config_from_dict({
        "name": "bench-filter",
        "data": {"source": source, "domains": ["Food", "Kitchen"]},
        "prepare": {"cold_start": {"fraction": 0.2}},
        "train": {"models": [{"name": "star"}], "protocols": ["warm"], "epochs": 1, "batch_size": 4096,
                  "resources_per_worker": {"CPU": 0.5}},
        "filter": {"steps": STEPS},
        "ray": {"num_cpus": num_cpus, "progress_bars": False},
    })


def synthetic_events(run_dir, rows: int, seed: int = 0):
    """`rows` made-up Food events for Kitchen-only users, in the raw synthetic schema."""
    import pandas as pd
    import pyarrow as pa

    from mdrec.generate.stage import SYNTHETIC_SCHEMA

    loc = run_dir.stage("prepared").location
    items = loc.join("items.parquet").read_table().to_pandas().sort_values("item_idx")
    users = loc.join("users.parquet").read_table().to_pandas().sort_values("user_idx")
    domains = loc.join("domains.parquet").read_table().to_pandas()
    train = loc.join("train").read_table(columns=["user_idx", "item_idx", "domain_idx"]).to_pandas()
    food = int(domains.loc[domains["domain"] == "Food", "domain_idx"].iloc[0])
    start, end = [int(v) for v in domains.loc[domains["domain_idx"] == food, ["item_idx_start", "item_idx_end"]].iloc[0]]
    food_users = set(train.loc[train["domain_idx"] == food, "user_idx"])
    kitchen_only = np.array(sorted(set(train["user_idx"]) - food_users))
    rng = np.random.default_rng(seed)
    popularity = np.bincount(train.loc[train["domain_idx"] == food, "item_idx"] - start, minlength=end - start) + 1.0
    user = rng.choice(kitchen_only, rows)
    item = start + rng.choice(end - start, rows, p=popularity / popularity.sum())
    repeats = rng.random(rows) < 0.02  # a few exact repeats for dedupe
    item[repeats] = np.roll(item, 1)[repeats]
    user[repeats] = np.roll(user, 1)[repeats]
    frame = pd.DataFrame({
        "user_id": users["user_id"].to_numpy()[user], "item_id": items["item_id"].to_numpy()[item], "domain": "Food",
        "score": rng.random(rows), "rank": rng.integers(1, 4, rows).astype(np.int32), "backend": "bench",
        "model": "made-up", "prompt_sha": "", "protocol": "warm", "user_idx": user, "item_idx": item,
        "domain_idx": food, "rejected_item_id": None, "rejected_item_idx": None,
    })
    return pa.Table.from_pandas(frame, schema=SYNTHETIC_SCHEMA, preserve_index=False)


def write_raw(run_dir, table, tag: str) -> None:
    """Commit `table` as synthetic/raw, cut into generate-sized shards."""
    from mdrec.generate.stage import STAGE

    stage = run_dir.stage(STAGE)
    with stage.writing(f"bench-{tag}", meta={"report": {"protocols": ["warm"], "backend": "bench"}}) as out:
        for i, start in enumerate(range(0, table.num_rows, ROWS_PER_SHARD)):
            out.join(f"shard-{i:05d}.parquet").write_table(table.slice(start, ROWS_PER_SHARD))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="Work folder (kept between runs; default: a temp folder).")
    parser.add_argument("--scales", default="1,10", help="Sizes as multiples of the Food domain (comma separated).")
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--quick", action="store_true",
                        help="an end-to-end check: a small generated world instead of the shared data")
    args = parser.parse_args()
    # stdout carries the one JSON line and nothing else: Ray copies its workers' output (training logs
    # among it) to the driver's stdout, so file descriptor 1 goes to stderr from here on.
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.path.insert(0, str(REPO))
    from mdrec.filter.stage import run_filter
    from mdrec.prepare.stage import run_prepare
    from mdrec.ray_session import ensure_ray
    from mdrec.storage import RunDir

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mdrec-bench-filter-"))
    cfg = config(args.num_cpus, args.quick)
    ensure_ray(cfg.ray)
    # A quick run's prepared world never takes the place of the shared data's in a kept work folder.
    run_dir = RunDir(str(workdir / ("run-quick" if args.quick else "run")))
    food = run_prepare(cfg, run_dir).stats["domains"]["Food"]["interactions"]
    figures: dict = {"benchmark": "filter", "quick": args.quick, "food_interactions": food,
                     "steps": [s["name"] for s in STEPS]}
    for scale in [int(s) for s in args.scales.split(",")]:
        rows = scale * food
        write_raw(run_dir, synthetic_events(run_dir, rows), f"{scale}x")
        if scale == 1:  # the teacher's training is not filter time: train it (or reuse it) first
            first = time.perf_counter()
            run_filter(cfg, run_dir, force=True)
            figures["teacher_and_first_run_seconds"] = round(time.perf_counter() - first, 1)
        started = time.perf_counter()
        report = run_filter(cfg, run_dir, force=True)
        seconds = time.perf_counter() - started
        figures[f"rows_{scale}x"] = rows
        figures[f"kept_{scale}x"] = report["kept"]
        figures[f"seconds_{scale}x"] = round(seconds, 2)
        figures[f"rows_per_second_{scale}x"] = round(rows / seconds, 1)
        figures[f"step_seconds_{scale}x"] = {s["name"]: s["seconds"] for s in report["steps"]}
    figures.update(machine=platform.machine(), cpus=os.cpu_count(), python=platform.python_version())
    print(json.dumps(figures), file=answer, flush=True)


if __name__ == "__main__":
    main()

"""Throughput of `prepare`: rows/s on the shared data and on world data 1x and 10x its size.

The world data sets are generated once and written to Parquet first, so every run measures
the same thing: `prepare` reading a flat table and writing its outputs. Prints one JSON line
(`cases`: the warm and cold-start validation and test cases `prepare` wrote, from its stats).

`--quick` checks the script end to end on small data: the shared data's first users (about
`QUICK_ROWS` rows, with their items) stand in for the whole set, the world data is sized from
that slice, and there is no warm-up run, so the figures are start-up costs, not throughput.

    python benchmarks/prepare.py [--scale 10] [--num-cpus N] [--quick]
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

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data" / "amazon-food-kitchen").resolve()

# The demo world's three domains; users are scaled to reach a target number of interactions.
WORLD_DOMAINS = [
    {"name": "Books", "kind": "books", "participation": 0.9, "activity": 14},
    {"name": "Movies", "kind": "movies", "participation": 0.6, "activity": 8},
    {"name": "Music", "kind": "music", "participation": 0.3, "activity": 4},
]
INTERACTIONS_PER_USER = sum(d["participation"] * d["activity"] for d in WORLD_DOMAINS)
ITEMS_PER_INTERACTION = 36_298 / 436_127  # same catalog/interaction ratio as the shared data
QUICK_ROWS = 3_000  # --quick: rows of the shared data's slice, and so of the 1x world


def world_tables(target_rows: int, out: Path) -> Path:
    from mdrec.config import WorldSourceConfig
    from mdrec.data import world

    users = int(target_rows / INTERACTIONS_PER_USER)
    n_items = max(30, int(target_rows * ITEMS_PER_INTERACTION))
    shares = [d["participation"] * d["activity"] for d in WORLD_DOMAINS]
    domains = [{**d, "items": max(10, int(n_items * s / sum(shares)))} for d, s in zip(WORLD_DOMAINS, shares)]
    cfg = WorldSourceConfig(users=users, domains=domains)
    items, inter = world.generate(cfg, seed=0)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(items, out / "items.parquet")
    pq.write_table(inter, out / "interactions.parquet")
    return out


def shared_slice(rows: int, out: Path) -> Path:
    """The shared data's first users (whole histories, about `rows` rows) and their items, as Parquet."""
    import pyarrow.compute as pc

    inter = pq.read_table(SHARED / "interactions.parquet")
    users = pc.unique(inter.slice(0, rows)["user_id"])
    inter = inter.filter(pc.is_in(inter["user_id"], value_set=users))
    items = pq.read_table(SHARED / "items.parquet")
    items = items.filter(pc.is_in(items["item_id"], value_set=pc.unique(inter["item_id"])))
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(items, out / "items.parquet")
    pq.write_table(inter, out / "interactions.parquet")
    return out


def table_config(folder: Path, time_column: str):
    from mdrec.config import config_from_dict

    return config_from_dict({
        "name": "bench",
        "data": {"source": {
            "type": "table",
            "interactions": str(folder / "interactions.parquet"),
            "items": str(folder / "items.parquet"),
            "interaction_columns": {time_column: time_column if time_column == "seq" else "ts"},
        }},
        "ray": {"progress_bars": False},
    })


def timed_prepare(cfg, run_dir: str) -> dict:
    from mdrec.prepare.stage import run_prepare
    from mdrec.storage import RunDir

    rows = pq.ParquetFile(cfg.data.source.interactions).metadata.num_rows
    start = time.perf_counter()
    result = run_prepare(cfg, RunDir(run_dir), force=True)
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
            "cases": sum(d["splits"]["valid"] + d["splits"]["test"] + d["cold_start"]["valid"] + d["cold_start"]["test"]
                         for d in result.stats["domains"].values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10, help="size of the large world relative to the shared data")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a small end-to-end check: a slice of about {QUICK_ROWS:,} rows of the shared data")
    args = parser.parse_args()
    # stdout carries the one JSON line and nothing else: Ray copies its workers' output (training logs
    # among it) to the driver's stdout, so file descriptor 1 goes to stderr from here on.
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    from mdrec.config import RayConfig
    from mdrec.ray_session import cluster_cpus, ensure_ray

    ensure_ray(RayConfig(num_cpus=args.num_cpus, progress_bars=False))
    with tempfile.TemporaryDirectory(prefix="mdrec-bench-") as tmp:
        tmp = Path(tmp)
        shared = shared_slice(QUICK_ROWS, tmp / "shared-slice") if args.quick else SHARED
        shared_rows = pq.ParquetFile(shared / "interactions.parquet").metadata.num_rows
        if not args.quick:  # --quick: the first run's figures include the start-up
            timed_prepare(table_config(shared, "seq"), str(tmp / "warmup"))  # start workers, fill caches
        results = {"shared": timed_prepare(table_config(shared, "seq"), str(tmp / "shared"))}
        for name, factor in (("world_1x", 1), (f"world_{args.scale}x", args.scale)):
            folder = world_tables(shared_rows * factor, tmp / name)
            results[name] = timed_prepare(table_config(folder, "timestamp"), str(tmp / f"run-{name}"))
    big = results[f"world_{args.scale}x"]
    small = results["world_1x"]
    print(json.dumps({
        "benchmark": "prepare",
        "quick": args.quick,
        **{f"{k}_{m}": v[m] for k, v in results.items() for m in ("rows", "seconds", "rows_per_s", "cases")},
        # >1 means cost grows slower than the data (fixed overheads amortised); <1 means faster.
        f"world_{args.scale}x_vs_1x_rows_per_s_ratio": round(big["rows_per_s"] / small["rows_per_s"], 2),
        f"world_{args.scale}x_vs_1x_seconds_ratio": round(big["seconds"] / small["seconds"], 2),
        "ray_cpus": cluster_cpus(),
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cores",
    }), file=answer, flush=True)


if __name__ == "__main__":
    sys.exit(main())

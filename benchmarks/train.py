"""Training and evaluation speed on the shared data, against RecBole 1.2's SASRec in the same run.

For SASRec and STAR, with 1 and 2 Ray Train workers: one epoch of the warm protocol through
the real `train` stage (Ray Data feeding a TorchTrainer), timed inside the worker (the epoch,
not Ray's start-up). Then the `evaluate` pass over every warm test case, timed next to an
epoch. Then RecBole's SASRec with the same sizes (max_len 50, 64 dims, 2 layers, 2 heads,
batch 2048), installed into a venv of its own under the work folder (see recbole_peer.py).

Training samples are positives (interactions); mdrec adds 4 sampled negatives to each, RecBole
with loss BCE adds 1 and with CE scores the whole catalog. Throughput with 2 workers is the
sum over both (each rank trains on half the data). Prints one JSON line.

A full RecBole epoch of this data takes 8-30 minutes on 2 cores, so by default RecBole trains
its first `--recbole-batches` batches (of 136) and its epoch is that rate over its whole
training split; `--recbole-batches 0` trains the full epoch.

`--quick` checks the script end to end: a small generated world with a Food and a Kitchen domain
(`QUICK_WORLD`) instead of the shared data, a small SASRec (`QUICK_SASREC`), and no RecBole (as
`--skip-recbole`: RecBole needs its own venv, installed from the package index); its figures are
start-up costs, not speed.

    python benchmarks/train.py [--workdir DIR] [--skip-recbole] [--recbole-loss BCE] [--recbole-batches 10] [--quick]
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

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data" / "amazon-food-kitchen").resolve()
sys.path.insert(0, str(REPO / "benchmarks"))

SASREC = {"embedding_dim": 64, "max_len": 50, "num_layers": 2, "num_heads": 2}
SHARED_SOURCE = {"type": "table", "interactions": str(SHARED / "interactions.parquet"),
                 "items": str(SHARED / "items.parquet"), "interaction_columns": {"seq": "seq"}}
# --quick: a world shaped like the shared data (Food sparse, Kitchen rich), small enough for seconds.
QUICK_WORLD = {"type": "world", "users": 300, "users_per_chunk": 64, "domains": [
    {"name": "Food", "kind": "food", "items": 60, "participation": 0.3, "activity": 5},
    {"name": "Kitchen", "kind": "kitchen", "items": 120, "participation": 0.9, "activity": 8},
]}
QUICK_SASREC = {"embedding_dim": 16, "max_len": 10, "num_layers": 1, "num_heads": 1}
NEGATIVES = 4
BATCH = 2048


def bench_config(models: list[dict], workers: int, source: dict):
    from mdrec.config import config_from_dict

    # Two cores: one worker takes one CPU and both threads; two workers half a CPU and one thread
    # each. The rest of the CPU feeds them through Ray Data.
    per_worker = {"CPU": 1.0} if workers == 1 else {"CPU": 0.5}
    return config_from_dict({
        "name": "bench-train",
        "data": {"source": source, "domains": ["Food", "Kitchen"]},
        "train": {"models": models, "protocols": ["warm"], "epochs": 1, "batch_size": BATCH, "lr": 0.002,
                  "negatives_per_positive": NEGATIVES, "num_workers": workers, "resources_per_worker": per_worker,
                  "torch_threads": max(1, (os.cpu_count() or 2) // workers)},
        "evaluate": {"num_actors": 2, "cpus_per_actor": 0.5},
        "ray": {"progress_bars": False},
    })


def train_once(run_dir, model: dict, workers: int, source: dict) -> dict:
    from mdrec.experiment import RunKey
    from mdrec.data.schema import Protocol
    from mdrec.train.stage import load_prepared, train_model

    cfg = bench_config([model], workers, source)
    prepared = load_prepared(run_dir, Protocol.warm)
    key = RunKey(model["name"], "real", Protocol.warm, 0)
    # The fingerprint ignores the worker count: force, so each count really trains.
    result = train_model(cfg, run_dir, prepared, cfg.train.models[0], key, force=True)
    epoch = result["history"][0]
    positives = epoch["examples"] / (1 + NEGATIVES) * workers  # rank 0's share, times the ranks
    return {"epoch_seconds": round(epoch["train_seconds"], 2), "positives_per_s": round(positives / epoch["train_seconds"]),
            "validation_seconds": round(epoch["eval_seconds"], 2), "fit_seconds": result["seconds"]}


def evaluate_all(run_dir, models: list[dict], source: dict) -> dict:
    from mdrec.data.schema import Protocol
    from mdrec.evaluate.stage import evaluate_protocol
    from mdrec.experiment import grid

    cfg = bench_config(models, 1, source)
    keys = grid(cfg)
    out = {}
    for key in keys:  # one pass per model, so each time is that model's alone
        result = evaluate_protocol(cfg, run_dir, Protocol.warm, [key], force=True)[key]
        out[key.model] = {"score_seconds": result["score_seconds"], "test_cases": sum(
            d["cases"] for d in result["domains"].values()), "epoch_seconds": result["train_epoch_seconds"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="work folder (kept; its RecBole venv is reused)")
    parser.add_argument("--skip-recbole", action="store_true", help="measure mdrec only")
    parser.add_argument("--recbole-loss", default="BCE", choices=["BCE", "CE"],
                        help="RecBole SASRec loss (BCE runs as RecBole's BPR: one sampled negative)")
    parser.add_argument("--recbole-batches", type=int, default=10, help="RecBole batches to time (0: a whole epoch)")
    parser.add_argument("--quick", action="store_true",
                        help="an end-to-end check: a small generated world, a small SASRec, no RecBole")
    args = parser.parse_args()
    if args.quick:
        args.skip_recbole = True
    # stdout carries the one JSON line and nothing else: Ray copies its workers' output (training logs
    # among it) to the driver's stdout, so file descriptor 1 goes to stderr from here on.
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    source, sasrec = (QUICK_WORLD, QUICK_SASREC) if args.quick else (SHARED_SOURCE, SASREC)

    from mdrec.config import RayConfig
    from mdrec.prepare.stage import run_prepare
    from mdrec.ray_session import ensure_ray
    from mdrec.storage import RunDir

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mdrec-bench-train-"))
    ensure_ray(RayConfig(progress_bars=False))
    # A quick run's prepared world never takes the place of the shared data's in a kept work folder.
    run_dir = RunDir(str(workdir / ("run-quick" if args.quick else "run")))
    run_prepare(bench_config([{"name": "star"}], 1, source), run_dir)
    models = [{"name": "sasrec", "params": sasrec}, {"name": "star", "params": {}}]
    results: dict = {"benchmark": "train", "quick": args.quick,
                     "data": f"{'a small world' if args.quick else 'amazon-food-kitchen'} (warm protocol)"}
    for model in models:
        for workers in (1, 2):
            results[f"{model['name']}_{workers}w"] = train_once(run_dir, model, workers, source)
    # The last trained weights of each model (2 workers) are the ones scored.
    results["evaluation"] = evaluate_all(run_dir, models, source)
    for name, ev in results["evaluation"].items():
        ev["score_vs_epoch"] = round(ev["score_seconds"] / ev["epoch_seconds"], 2)

    if not args.skip_recbole:
        from recbole_peer import run_recbole_sasrec

        interactions = pd.read_parquet(SHARED / "interactions.parquet", columns=["user_id", "item_id", "seq"])
        started = time.perf_counter()
        peer = run_recbole_sasrec(interactions, str(workdir / "recbole"), epochs=1, max_seq_length=SASREC["max_len"],
                                  hidden_size=SASREC["embedding_dim"], n_layers=SASREC["num_layers"],
                                  n_heads=SASREC["num_heads"], batch_size=BATCH, loss_type=args.recbole_loss,
                                  threads=os.cpu_count() or 2, max_batches=args.recbole_batches or None)
        epoch = peer["train_samples"] / peer["samples_per_s"]  # the measured rate over its whole split
        results["recbole_sasrec"] = {"loss": args.recbole_loss, "timed_batches": args.recbole_batches or "all",
                                     "epoch_seconds": round(epoch, 1), "positives_per_s": round(peer["samples_per_s"]),
                                     "train_samples": peer["train_samples"],
                                     "wall_seconds_with_install": round(time.perf_counter() - started, 1)}
        ours = results["sasrec_1w"]
        # Goal: at most 0.5 (an mdrec SASRec epoch takes at most half of RecBole's).
        results["sasrec_epoch_vs_recbole"] = round(ours["epoch_seconds"] / epoch, 3)
        results["sasrec_positives_per_s_vs_recbole"] = round(ours["positives_per_s"] / peer["samples_per_s"], 2)
    results.update({"python": platform.python_version(), "machine": f"{os.cpu_count()} cores", "workdir": str(workdir)})
    print(json.dumps(results), file=answer, flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""RecBole 1.2's SASRec as a peer for mdrec's training-speed benchmark.

`benchmarks/train.py` compares mdrec's SASRec with RecBole's on the same data, on the same
machine, in the same run. RecBole is never a dependency of mdrec: its pins (numpy<2, colorlog,
tensorboard, ...) would fight mdrec's own, so it is installed into a virtual environment of its
own under the benchmark's work folder and driven through a subprocess. The venv is kept there,
so a reused work folder installs once.

Only the training epochs are timed (`Trainer._train_epoch`), on CPU, with no evaluation; the
dataset build (atomic file -> augmented sequences -> leave-one-out split -> dataloaders) is
timed separately.

    python benchmarks/recbole_peer.py --interactions ../shared/data/amazon-food-kitchen/interactions.parquet \
        [--workdir DIR] [--epochs 1] [--max-batches N]

prints one JSON line.

No `--quick`: every run needs RecBole, and so its venv, installed from the package index (minutes,
and the network), which no quick check can wait for. `train.py --quick` skips RecBole (as
`--skip-recbole`), and tests/integration/test_benchmarks.py checks only that this script's options
parse (`--help`) and that its runner compiles.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

RECBOLE_VERSION = "1.2.0"
# - torch: the local CPU wheel (found through PIP_FIND_LINKS); unpinned, pip would fetch CUDA builds.
# - numpy<2: RecBole's Config aliases np.float_ / np.unicode_, which numpy 2 removed.
# - pandas<3: under pandas 3's copy-on-write, RecBole's `feat[field].fillna(..., inplace=True)`
#   silently does nothing (it warns ChainedAssignmentError); 1.2.0 was written against pandas 1/2.
REQUIREMENTS = [f"recbole=={RECBOLE_VERSION}", "torch==2.13.0", "numpy<2", "pandas<3"]
DATASET = "mdrec"

# Runs inside the RecBole venv: argv[1] is a JSON file of settings; prints the result as JSON
# on its last stdout line (RecBole's own logging goes to stderr and to <workdir>/log).
RUNNER = r'''
import itertools, json, sys, time

settings = json.load(open(sys.argv[1]))
del sys.argv[1:]  # RecBole's Config parses the command line as config overrides

import torch
import recbole
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_logger, init_seed

p = settings["params"]
config = Config(
    # The class, not its name: looking the name up imports every model family, and LDiffRec's
    # import of kmeans_pytorch, which RecBole does not declare, fails.
    model=SASRec,
    dataset=settings["dataset"],
    config_dict={
        "data_path": settings["data_path"],
        "checkpoint_dir": settings["checkpoint_dir"],
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": p["max_seq_length"],
        "hidden_size": p["hidden_size"],
        "inner_size": p["inner_size"],
        "n_layers": p["n_layers"],
        "n_heads": p["n_heads"],
        "loss_type": p["recbole_loss_type"],
        # CE scores every item, so it trains without negatives; BPR takes one uniform negative.
        "train_neg_sample_args": (None if p["recbole_loss_type"] == "CE"
                                  else {"distribution": "uniform", "sample_num": 1}),
        # RecBole's default protocol for sequential models: leave-one-out in time order.
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "train_batch_size": p["batch_size"],
        "epochs": p["epochs"],
        "use_gpu": False,
        "show_progress": False,
        "seed": 2020,
        "reproducibility": True,
        "worker": 0,
    },
)
init_seed(config["seed"], config["reproducibility"])
init_logger(config)
torch.set_num_threads(p["threads"])

t0 = time.perf_counter()
dataset = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, dataset)
build_seconds = time.perf_counter() - t0

init_seed(config["seed"], config["reproducibility"])
model = SASRec(config, train_data.dataset).to(config["device"])
trainer = Trainer(config, model)
assert config["device"].type == "cpu", config["device"]


class Head:
    """The first `limit` batches of a RecBole dataloader, counting the rows it yields."""

    def __init__(self, loader, limit):
        self.loader, self.limit, self.rows = loader, limit, 0
        self.shuffle = loader.shuffle

    def __len__(self):
        return len(self.loader) if self.limit is None else min(self.limit, len(self.loader))

    def __iter__(self):
        for batch in itertools.islice(self.loader, self.limit):  # limit None: every batch
            self.rows += len(batch)
            yield batch


epoch_seconds, epoch_cpu_seconds, epoch_samples, losses = [], [], [], []
for epoch in range(p["epochs"]):
    loader = Head(train_data, p["max_batches"])
    t0, c0 = time.perf_counter(), time.process_time()
    loss = trainer._train_epoch(loader, epoch)
    epoch_seconds.append(time.perf_counter() - t0)
    # CPU time of all threads: a check on wall time when other work shares the cores.
    epoch_cpu_seconds.append(time.process_time() - c0)
    epoch_samples.append(loader.rows)
    losses.append(sum(loss) if isinstance(loss, tuple) else loss)

print(json.dumps({
    "recbole_version": recbole.__version__,
    "torch_version": torch.__version__,
    "torch_threads": torch.get_num_threads(),
    "epoch_seconds": epoch_seconds,
    "epoch_cpu_seconds": epoch_cpu_seconds,
    "epoch_samples": epoch_samples,
    "epoch_losses": losses,
    "build_seconds": build_seconds,
    "train_samples": len(train_data.dataset),
    "batches_per_epoch": len(train_data),
    "num_users": dataset.user_num - 1,  # RecBole counts its padding id
    "num_items": dataset.item_num - 1,
}), flush=True)
'''


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path) -> float | None:
    """Create the RecBole venv unless one with the same requirements is there; returns install seconds."""
    marker = venv / ".mdrec-recbole-requirements"
    wanted = "\n".join(REQUIREMENTS)
    if marker.exists() and marker.read_text() == wanted and _venv_python(venv).exists():
        return None
    t0 = time.perf_counter()
    # The interpreter running this script, so the venv matches the cp311 torch wheel.
    _check([sys.executable, "-m", "venv", "--clear", str(venv)], "creating the RecBole venv")
    _check([str(_venv_python(venv)), "-m", "pip", "install", "--quiet", *REQUIREMENTS], "installing RecBole")
    _check([str(_venv_python(venv)), "-c", "import recbole.config, torch, numpy"], "importing RecBole")
    marker.write_text(wanted)
    return time.perf_counter() - t0


def _check(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-4000:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


def write_atomic(interactions: pd.DataFrame, data_path: Path) -> Path:
    """RecBole's atomic `.inter` file; `seq` stands in for the timestamp (only its order matters)."""
    folder = data_path / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    out = pd.DataFrame({
        "user_id:token": interactions["user_id"].astype(str),
        "item_id:token": interactions["item_id"].astype(str),
        "timestamp:float": interactions["seq"].astype("int64"),
    })
    path = folder / f"{DATASET}.inter"
    out.to_csv(path, sep="\t", index=False)
    return path


def run_recbole_sasrec(interactions: pd.DataFrame, workdir: str, *, epochs: int = 1, max_seq_length: int = 50,
                       hidden_size: int = 64, n_layers: int = 2, n_heads: int = 2, batch_size: int = 2048,
                       loss_type: str = "CE", threads: int = 2, inner_size: int | None = None,
                       max_batches: int | None = None) -> dict:
    """Train RecBole's SASRec on `interactions` (user_id, item_id, seq) and time its epochs.

    `inner_size` (the feed-forward width) defaults to `hidden_size`, as in mdrec's SASRec
    (RecBole's own default is 256). RecBole's SASRec knows only CE and BPR, so `loss_type`
    "BCE" (one sampled negative per positive) runs as its BPR, which also scores one uniform
    negative per positive: the same work per example.

    `max_batches` cuts each epoch to its first batches, since a full epoch of the shared data
    takes RecBole 10-20 minutes on a 2-core machine; `samples_per_s` then counts the rows those
    batches held, and `train_samples` is still the whole training split.
    """
    if loss_type not in ("CE", "BCE", "BPR"):
        raise ValueError(f"loss_type must be CE, BCE or BPR, not {loss_type!r}")
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    install_seconds = ensure_venv(work / "venv")
    write_atomic(interactions, work / "data")

    params = {"epochs": epochs, "max_seq_length": max_seq_length, "hidden_size": hidden_size,
              "inner_size": inner_size or hidden_size, "n_layers": n_layers, "n_heads": n_heads,
              "batch_size": batch_size, "loss_type": loss_type,
              "recbole_loss_type": "CE" if loss_type == "CE" else "BPR", "threads": threads,
              "max_batches": max_batches}
    settings = {"dataset": DATASET, "data_path": str(work / "data"), "checkpoint_dir": str(work / "saved"),
                "params": params}
    (work / "settings.json").write_text(json.dumps(settings))
    (work / "run_sasrec.py").write_text(RUNNER)

    # Thread pools are sized at start-up, so the cap goes into the environment, not only set_num_threads.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONWARNINGS": "ignore"}
    proc = _check([str(_venv_python(work / "venv")), str(work / "run_sasrec.py"), str(work / "settings.json")],
                  "RecBole SASRec run", cwd=work, env=env)
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"RecBole SASRec run printed no result:\n{(proc.stdout + proc.stderr)[-4000:]}") from None

    seconds, samples = sum(result["epoch_seconds"]), sum(result["epoch_samples"])
    result.update({
        "epoch_seconds_mean": seconds / len(result["epoch_seconds"]) if result["epoch_seconds"] else float("nan"),
        "samples_per_s": samples / seconds if seconds else float("nan"),
        "install_seconds": install_seconds,  # None when the venv was reused
        "params": params,
    })
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--interactions", required=True, help="Parquet with user_id, item_id, seq")
    ap.add_argument("--workdir", help="keeps the RecBole venv between runs (default: a new temp folder)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-seq-length", type=int, default=50)
    ap.add_argument("--hidden-size", type=int, default=64)
    ap.add_argument("--n-layers", type=int, default=2)
    ap.add_argument("--n-heads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--loss-type", choices=["CE", "BCE", "BPR"], default="CE")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-batches", type=int, help="time only the first N batches of each epoch")
    args = ap.parse_args(argv)

    interactions = pd.read_parquet(args.interactions, columns=["user_id", "item_id", "seq"])
    workdir = args.workdir or tempfile.mkdtemp(prefix="recbole-peer-")
    result = run_recbole_sasrec(interactions, workdir, epochs=args.epochs, max_seq_length=args.max_seq_length,
                                hidden_size=args.hidden_size, n_layers=args.n_layers, n_heads=args.n_heads,
                                batch_size=args.batch_size, loss_type=args.loss_type, threads=args.threads,
                                max_batches=args.max_batches)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

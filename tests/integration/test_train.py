"""The train and evaluate stages on Ray Train and Ray Data: checkpoints, early stopping, DDP, both
protocols, seeds, full-catalog ranking and the report. A training worker killed on a cluster (and
resuming from its checkpoint) is tests/e2e/test_faults.py's."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from mdrec.config import config_from_dict
from mdrec.data.schema import Protocol
from mdrec.experiment import RunKey
from mdrec.models import build_model
from mdrec.prepare.stage import run_prepare
from mdrec.storage import RunDir
from mdrec.train.stage import load_prepared, run_train
from tests.conftest import run_cli
from tests.integration.conftest import world_config, write_config
from tests.tiny_models import TINY

TINY_STAR = {"name": "star", "params": TINY["star"]}
# EMCDR's mapping loss uses parameters its scores do not: DDP must still synchronise them.
TINY_EMCDR = {"name": "emcdr", "params": TINY["emcdr"]}


def train_config(epochs=3, workers=1, models=(TINY_STAR,), protocols=("warm",), **train):
    cfg = world_config(users=500)
    cfg["train"] = {"models": list(models), "epochs": epochs, "batch_size": 512, "lr": 0.005, "protocols": list(protocols),
                    "num_workers": workers, "resources_per_worker": {"CPU": 0.5}, **train}
    return cfg


def warm(model: str, seed: int = 0) -> RunKey:
    return RunKey(model, "real", Protocol.warm, seed)


@pytest.fixture(scope="module")
def prepared_run(ray_session, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train") / "run"
    run_prepare(config_from_dict(train_config()), RunDir(str(run_dir)))
    return run_dir


def test_train_commits_best_model_and_history(prepared_run):
    cfg = config_from_dict(train_config())
    result = run_train(cfg, RunDir(str(prepared_run)))[warm("star")]
    assert result["attempt_starts"] == [0]
    assert [h["epoch"] for h in result["history"]] == list(range(result["epochs_run"]))
    best = max(result["history"], key=lambda h: h["valid_ndcg@10"])
    assert result["best_epoch"] == best["epoch"] and result["best_value"] == best["valid_ndcg@10"]
    assert best["valid_auc"] > 0.6  # random scoring would be 0.5
    for k in (5, 10, 20):
        assert f"valid_hr@{k}" in best and f"valid_gini_exposure@{k}" in best
    # each domain's validation alone, by name; the cases split between them and the pooled NDCG is
    # their case-weighted mean
    by_domain = best["valid_by_domain"]
    assert sorted(by_domain) == sorted(pd.read_parquet(prepared_run / "prepared" / "domains.parquet")["domain"])
    assert sum(d["cases"] for d in by_domain.values()) == best["valid_cases"]
    pooled = sum(d["ndcg@10"] * d["cases"] for d in by_domain.values()) / best["valid_cases"]
    assert pooled == pytest.approx(best["valid_ndcg@10"], rel=1e-9)
    assert all(0 < d["coverage@10"] <= 1 for d in by_domain.values())
    out = prepared_run / "models" / "star" / "real" / "warm" / "seed-0"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["best_epoch"] == result["best_epoch"]
    # the committed weights load into a fresh model of the prepared data's size
    dims = load_prepared(RunDir(str(prepared_run)), Protocol.warm).dims
    model = build_model("star", TINY_STAR["params"], dims)
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    assert model.embed.item.weight.shape[0] == dims.num_items
    # a second run with the same config reuses the committed model
    again = run_train(cfg, RunDir(str(prepared_run)))[warm("star")]
    assert again == saved


def test_same_seed_same_metrics(prepared_run, tmp_path):
    cfg = config_from_dict(train_config(epochs=1))
    a = run_train(cfg, RunDir(str(prepared_run)), force=True)[warm("star")]["history"]
    b = run_train(cfg, RunDir(str(prepared_run)), force=True)[warm("star")]["history"]
    keys = ["loss", "valid_auc", "valid_ndcg@10"]
    assert [[h[k] for k in keys] for h in a] == [[h[k] for k in keys] for h in b]


def test_two_workers_with_ddp_and_the_cli(prepared_run, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", train_config(epochs=2, workers=2, models=(TINY_STAR, TINY_EMCDR)))
    code, out, err = run_cli("train", cfg, "--run-dir", str(prepared_run), "--force")
    assert code == 0, err
    lines = out.strip().splitlines()
    # Ray may print its workers' log lines to stdout too: find the table by its header.
    top = next(i for i, line in enumerate(lines) if line.split()[:3] == ["model", "variant", "protocol"])
    assert [line.split()[:4] for line in lines[top + 2:top + 4]] == [["star", "real", "warm", "0"],
                                                                     ["emcdr", "real", "warm", "0"]]
    metrics = json.loads((prepared_run / "models" / "emcdr" / "real" / "warm" / "seed-0" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["history"][-1]["valid_auc"] > 0.5


def test_train_needs_prepared_data(ray_session, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", train_config())
    code, _, err = run_cli("train", cfg, "--run-dir", str(tmp_path / "empty"))
    assert code == 2 and "not prepared yet (run `mdrec prepare` first)" in err


def test_unknown_model_is_a_config_error(prepared_run, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", train_config(models=({"name": "sasrecc"},)))
    code, _, err = run_cli("train", cfg, "--run-dir", str(prepared_run))
    assert code == 2 and "unknown model 'sasrecc'" in err


def test_cold_start_protocol_uses_its_own_rows_and_cases(prepared_run):
    import pandas as pd

    from mdrec.train.stage import _train_rows

    stats = json.loads((prepared_run / "prepared" / "stats.json").read_text())
    cold = load_prepared(RunDir(str(prepared_run)), Protocol.cold_start)
    warm = load_prepared(RunDir(str(prepared_run)), Protocol.warm)
    assert len(cold.valid.user) == sum(d["cold_start"]["valid"] for d in stats["domains"].values()) > 0
    assert len(warm.valid.user) == sum(d["splits"]["valid"] for d in stats["domains"].values())
    train = pd.read_parquet(prepared_run / "prepared" / "train")
    kept = _train_rows(train, protocol="cold_start")
    assert len(kept) == (~train["held_out"]).sum() < len(train)
    assert len(_train_rows(train, protocol="warm")) == len(train)


def test_evaluate_scores_test_cases_per_domain(prepared_run, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", train_config(epochs=2, workers=2, models=(TINY_STAR, TINY_EMCDR)))
    # The same training config as the DDP test: reused when that test ran first.
    assert run_cli("train", cfg, "--run-dir", str(prepared_run))[0] == 0
    code, out, err = run_cli("evaluate", cfg, "--run-dir", str(prepared_run))
    assert code == 0, err
    lines = out.strip().splitlines()
    top = next(i for i, line in enumerate(lines) if line.split()[:3] == ["model", "variant", "protocol"])
    table = [[c for i, c in enumerate(line.split()) if i in (0, 2, 4, 5)] for line in lines[top + 2:top + 6]]
    assert table == [["star", "warm", "Books", "rich"], ["star", "warm", "Music", "cold"],
                     ["emcdr", "warm", "Books", "rich"], ["emcdr", "warm", "Music", "cold"]]
    stats = json.loads((prepared_run / "prepared" / "stats.json").read_text())
    result = json.loads((prepared_run / "evaluation" / "star" / "real" / "warm" / "seed-0" / "metrics.json").read_text())
    for domain, m in result["domains"].items():
        assert m["cases"] == stats["domains"][domain]["splits"]["test"]
        for name in ("auc", "gauc", "logloss", "gini_user_ndcg@10", *(f"{x}@{k}" for k in (5, 10, 20)
                     for x in ("hr", "ndcg", "coverage", "gini_exposure"))):
            assert name in m
        assert m["auc"] > 0.55
    assert result["score_seconds"] > 0 and result["train_epoch_seconds"] > 0
    code, _, err = run_cli("evaluate", cfg, "--run-dir", str(prepared_run))
    assert code == 0 and err.count("reusing committed metrics") == 2


def test_evaluate_needs_a_trained_model(prepared_run, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", train_config(models=({"name": "mmoe"},)))
    code, _, err = run_cli("evaluate", cfg, "--run-dir", str(prepared_run))
    assert code == 2 and "mmoe real warm seed 0 is not trained yet (run `mdrec train` first)" in err

"""The `evaluate` stage: test metrics per domain for every trained model, scored on Ray Data.

Test cases of the protocol a model was trained for are scored by a pool of Ray actors, each
holding the model once; the driver gathers the (cases x candidates) scores and computes every
metric per domain (coverage and exposure over that domain's items). A model trained on the warm
split is not scored on cold-start cases: their users' held-out rows were in its training data.

Output: `<run-dir>/evaluation/<model>/real/metrics.json`.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import ray
import ray.data
import torch

from mdrec.config import MdrecConfig
from mdrec.data.schema import Split
from mdrec.errors import DataError
from mdrec.evaluate import metrics
from mdrec.models import build_model
from mdrec.storage import RunDir
from mdrec.train.examples import Candidates, pad_rows
from mdrec.train.loop import score
from mdrec.train.stage import VARIANT, read_dims

Log = Callable[[str], None]


class _Scorer:
    """A Ray Data actor: builds the model once, then scores batches of cases."""

    def __init__(self, name: str, params: dict, dims, weights):
        self.model = build_model(name, params, dims)
        state = ray.get(weights) if isinstance(weights, ray.ObjectRef) else weights
        self.model.load_state_dict(torch.load(io.BytesIO(state), weights_only=False))
        self.model.eval()

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        cases = Candidates.from_cases(batch["user_idx"], batch["domain_idx"], batch["item_idx"], list(batch["negatives"]))
        scores = score(self.model, cases)
        # Padding sits at the end of each row: keep the valid prefix as variable-length lists.
        offsets = pa.array(np.concatenate([[0], np.cumsum(cases.valid.sum(axis=1))]).astype(np.int32))
        return pa.table({
            "case_id": pa.array(batch["case_id"].to_numpy()),
            "user_idx": pa.array(cases.user),
            "domain_idx": pa.array(cases.domain),
            "items": pa.ListArray.from_arrays(offsets, pa.array(cases.items[cases.valid])),
            "scores": pa.ListArray.from_arrays(offsets, pa.array(scores[cases.valid])),
        })


def _test_cases(batch: pd.DataFrame, *, protocol: str) -> pd.DataFrame:
    return batch[(batch["protocol"] == protocol) & (batch["split"] == Split.test.value)]


def evaluate_model(cfg: MdrecConfig, run_dir: RunDir, name: str, *, force: bool = False,
                   log: Log = lambda m: None) -> dict:
    trained = run_dir.stage(f"models/{name}/{VARIANT}")
    record = trained.commit_record()
    if record is None:
        raise DataError(f"{trained.location.uri}: model '{name}' is not trained yet (run `mdrec train` first)")
    stage = run_dir.stage(f"evaluation/{name}/{VARIANT}")
    fp = hashlib.sha256(json.dumps({"model": record["fingerprint"], "format": 1}).encode()).hexdigest()
    if not force and stage.is_current(fp):
        log(f"evaluate {name}: reusing committed metrics in {stage.location.uri}")
        return stage.location.join("metrics.json").read_json()

    summary = trained.location.join("metrics.json").read_json()
    protocol, params = summary["protocol"], summary["params"]  # as the committed model was trained
    dims, _ = read_dims(run_dir)
    domains = run_dir.stage("prepared").location.join("domains.parquet").read_table().to_pandas()
    cases_path = run_dir.stage("prepared").location.join("cases")
    cases = ray.data.read_parquet(cases_path.path, filesystem=cases_path.fs).map_batches(
        _test_cases, batch_format="pandas", fn_kwargs=dict(protocol=protocol)
    )
    weights = ray.put(trained.location.join("model.pt").read_bytes())
    started = time.perf_counter()
    scored = cases.map_batches(
        _Scorer,
        batch_format="pandas",
        batch_size=2048,
        fn_constructor_kwargs=dict(name=name, params=params, dims=dims, weights=weights),
        compute=ray.data.ActorPoolStrategy(size=cfg.evaluate.num_actors),
        num_cpus=cfg.evaluate.cpus_per_actor,
    ).to_pandas()
    score_seconds = time.perf_counter() - started
    if scored.empty:
        raise DataError(f"{cases_path.uri}: no {protocol} test cases to evaluate")
    items, valid = pad_rows(list(scored["items"]), 0, np.int64)
    scores, _ = pad_rows(list(scored["scores"]), -np.inf, np.float64)
    users, case_domains = scored["user_idx"].to_numpy(), scored["domain_idx"].to_numpy()
    per_domain = {}
    for row in domains.itertuples():
        rows = np.flatnonzero(case_domains == row.domain_idx)
        if len(rows) == 0:
            continue
        catalog = np.arange(row.item_idx_start, row.item_idx_end)
        per_domain[row.domain] = {"role": row.role, **metrics.summarize(
            scores[rows], items[rows], users[rows], catalog, valid[rows])}
    result = {
        "model": name,
        "variant": VARIANT,
        "protocol": protocol,
        "split": Split.test.value,
        "domains": per_domain,
        "score_seconds": round(score_seconds, 2),
        "metrics_seconds": round(time.perf_counter() - started - score_seconds, 2),
        "train_epoch_seconds": round(float(np.mean([h["train_seconds"] for h in summary["history"]])), 2),
    }
    with stage.writing(fp, meta={"model": name}) as out:
        out.join("metrics.json").write_json(result)
    log(f"evaluate {name}: {len(scored):,} {protocol} test cases scored in {score_seconds:.1f}s")
    return result


def run_evaluate(cfg: MdrecConfig, run_dir: RunDir, *, force: bool = False, log: Log = lambda m: None) -> dict:
    from mdrec.ray_session import ensure_ray

    ensure_ray(cfg.ray)
    return {spec.name: evaluate_model(cfg, run_dir, spec.name, force=force, log=log) for spec in cfg.train.models}

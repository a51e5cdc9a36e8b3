"""The `evaluate` stage: test metrics per domain for every trained run, scored on Ray Data.

Test cases of the protocol a model was trained for are scored by a pool of Ray actors, each
holding the model once. A model trained on the warm split is never scored on cold-start cases:
their users' held-out rows were in its training data.

- Sampled candidates (always): each case's positive against its stored negatives. The actors
  send back the scores; the driver computes every metric per domain.
- Full catalog (`evaluate.full_catalog`): a fixed sample of cases ranks its positive against
  every item of the domain the user has not trained on. That is thousands of scores a case, so
  the actors reduce them to per-case hr/ndcg and the top-K list; the driver only aggregates.
  These metrics carry a `full_` prefix.

Output: `<run-dir>/evaluation/<model>/<variant>/<protocol>/seed-<n>/metrics.json`.
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
from mdrec.data.schema import Protocol, Split
from mdrec.errors import DataError
from mdrec.evaluate import metrics
from mdrec.experiment import RunKey, grid
from mdrec.models import build_model
from mdrec.prepare.shards import unit_hash
from mdrec.storage import RunDir
from mdrec.train.examples import Candidates, pad_rows
from mdrec.train.loop import score
from mdrec.train.stage import load_context, read_dims

Log = Callable[[str], None]
FORMAT = 2  # bump when the metrics change, so committed evaluations are redone


def _list_column(values: np.ndarray, valid: np.ndarray) -> pa.ListArray:
    """Rows of a padded matrix as variable-length lists (padding sits at the end of each row)."""
    offsets = pa.array(np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values[valid]))


class _Scorer:
    """A Ray Data actor: builds the model once, then scores batches of cases."""

    def __init__(self, name: str, params: dict, dims, weights, context, item_ranges, full_catalog: bool):
        context = ray.get(context) if isinstance(context, ray.ObjectRef) else context
        self.model = build_model(name, params, dims, context)
        state = ray.get(weights) if isinstance(weights, ray.ObjectRef) else weights
        self.model.load_state_dict(torch.load(io.BytesIO(state), weights_only=True))
        self.model.eval()
        self.context, self.item_ranges, self.full_catalog = context, item_ranges, full_catalog

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        columns = {"case_id": pa.array(batch["case_id"].to_numpy()), "user_idx": pa.array(batch["user_idx"].to_numpy()),
                   "domain_idx": pa.array(batch["domain_idx"].to_numpy())}
        if self.full_catalog:
            cases = self._full_catalog(batch)
            per_case = metrics.ranking_per_case(score(self.model, cases), cases.items, cases.valid)
            top = per_case.pop("top")
            columns["top"] = _list_column(top, top >= 0)
            columns.update({k: pa.array(v) for k, v in per_case.items()})
        else:
            cases = Candidates.from_cases(batch["user_idx"], batch["domain_idx"], batch["ts"], batch["item_idx"],
                                          list(batch["negatives"]))
            columns["items"] = _list_column(cases.items, cases.valid)
            columns["scores"] = _list_column(score(self.model, cases), cases.valid)
        return pa.table(columns)

    def _full_catalog(self, batch: pd.DataFrame) -> Candidates:
        """Each case's positive, then every item of its domain the user has no training row for."""
        others = []
        for user, domain, positive in zip(batch["user_idx"], batch["domain_idx"], batch["item_idx"]):
            start, end = self.item_ranges[int(domain)]
            keep = np.ones(end - start, dtype=bool)
            seen = self.context.seen(int(user))
            keep[seen[(seen >= start) & (seen < end)] - start] = False
            keep[int(positive) - start] = False
            others.append(np.flatnonzero(keep) + start)
        return Candidates.from_cases(batch["user_idx"], batch["domain_idx"], batch["ts"], batch["item_idx"], others)


def _test_cases(batch: pd.DataFrame, *, protocol: str, full_sample: dict[int, float] | None) -> pd.DataFrame:
    keep = (batch["protocol"] == protocol) & (batch["split"] == Split.test.value)
    if full_sample is not None:  # a fixed sample: the same cases for every model, run and seed
        rate = batch["domain_idx"].map(full_sample).to_numpy()
        keep &= unit_hash(batch["case_id"], "full-catalog") < rate
    return batch[keep]


def _per_domain(frame: pd.DataFrame, domains: pd.DataFrame, summarize) -> dict:
    out = {}
    case_domains = frame["domain_idx"].to_numpy()
    for row in domains.itertuples():
        rows = np.flatnonzero(case_domains == row.domain_idx)
        if len(rows):
            out[row.domain] = summarize(frame.iloc[rows], np.arange(row.item_idx_start, row.item_idx_end))
    return out


def _sampled_summary(part: pd.DataFrame, catalog: np.ndarray) -> dict:
    items, valid = pad_rows(list(part["items"]), 0, np.int64)
    scores, _ = pad_rows(list(part["scores"]), -np.inf, np.float64)
    return metrics.summarize(scores, items, part["user_idx"].to_numpy(), catalog, valid)


def _full_summary(part: pd.DataFrame, catalog: np.ndarray) -> dict:
    top, _ = pad_rows(list(part["top"]), -1, np.int64)
    per_case = {c: part[c].to_numpy() for c in part.columns if c.startswith(("hr@", "ndcg@"))}
    summary = metrics.summarize_ranking({**per_case, "top": top}, part["user_idx"].to_numpy(), catalog)
    return {"cases": len(part), **summary}


def _score_cases(cfg: MdrecConfig, run_dir: RunDir, key: RunKey, params: dict, weights, context_ref,
                 full_sample: dict[int, float] | None) -> pd.DataFrame:
    dims, ranges = read_dims(run_dir)
    cases_path = run_dir.stage("prepared").location.join("cases")
    cases = ray.data.read_parquet(cases_path.path, filesystem=cases_path.fs).map_batches(
        _test_cases, batch_format="pandas", fn_kwargs=dict(protocol=key.protocol.value, full_sample=full_sample)
    )
    full = full_sample is not None
    return cases.map_batches(
        _Scorer,
        batch_format="pandas",
        batch_size=64 if full else 2048,  # a full-catalog case scores a whole domain
        fn_constructor_kwargs=dict(name=key.model, params=params, dims=dims, weights=weights, context=context_ref,
                                   item_ranges=ranges, full_catalog=full),
        compute=ray.data.ActorPoolStrategy(size=cfg.evaluate.num_actors),
        num_cpus=cfg.evaluate.cpus_per_actor,
    ).to_pandas()


def _full_sample_rates(cfg: MdrecConfig, run_dir: RunDir, protocol: Protocol) -> dict[int, float]:
    """Per domain_idx, the share of test cases ranked against the full catalog (about N per domain)."""
    wanted = cfg.evaluate.full_catalog_cases
    loc = run_dir.stage("prepared").location
    stats = loc.join("stats.json").read_json()["domains"]
    rates = {}
    for row in loc.join("domains.parquet").read_table().to_pandas().itertuples():
        d = stats[row.domain]
        count = d["splits"]["test"] if protocol is Protocol.warm else d["cold_start"]["test"]
        rates[int(row.domain_idx)] = 1.0 if wanted is None or count <= wanted else wanted / count
    return rates


def evaluate_run(cfg: MdrecConfig, run_dir: RunDir, key: RunKey, context_ref, *, force: bool = False,
                 log: Log = lambda m: None) -> dict:
    trained = run_dir.stage(f"models/{key.path}")
    record = trained.commit_record()
    if record is None:
        raise DataError(f"{trained.location.uri}: {key.label} is not trained yet (run `mdrec train` first)")
    stage = run_dir.stage(f"evaluation/{key.path}")
    ev = cfg.evaluate
    fp = hashlib.sha256(json.dumps({"model": record["fingerprint"], "format": FORMAT, "full": ev.full_catalog,
                                    "full_cases": ev.full_catalog_cases}).encode()).hexdigest()
    if not force and stage.is_current(fp):
        log(f"evaluate {key.label}: reusing committed metrics in {stage.location.uri}")
        return stage.location.join("metrics.json").read_json()

    summary = trained.location.join("metrics.json").read_json()
    params = summary["params"]  # as the committed model was trained
    domains = run_dir.stage("prepared").location.join("domains.parquet").read_table().to_pandas()
    weights = ray.put(trained.location.join("model.pt").read_bytes())
    started = time.perf_counter()
    scored = _score_cases(cfg, run_dir, key, params, weights, context_ref, None)
    score_seconds = time.perf_counter() - started
    if scored.empty:
        raise DataError(f"{run_dir.stage('prepared').location.uri}: no {key.protocol.value} test cases to evaluate")
    per_domain = _per_domain(scored, domains, _sampled_summary)
    for row in domains.itertuples():
        if row.domain in per_domain:
            per_domain[row.domain] = {"role": row.role, **per_domain[row.domain]}
    result = {
        "model": key.model, "variant": key.variant, "protocol": key.protocol.value, "seed": key.seed,
        "split": Split.test.value,
        "domains": per_domain,
        "score_seconds": round(score_seconds, 2),
        "train_epoch_seconds": round(float(np.mean([h["train_seconds"] for h in summary["history"]])), 2),
    }
    if ev.full_catalog:
        started = time.perf_counter()
        full = _score_cases(cfg, run_dir, key, params, weights, context_ref, _full_sample_rates(cfg, run_dir, key.protocol))
        for domain, values in _per_domain(full, domains, _full_summary).items():
            per_domain[domain].update({f"full_{k}": v for k, v in values.items()})
        result["full_catalog_seconds"] = round(time.perf_counter() - started, 2)
    with stage.writing(fp, meta={"model": key.model}) as out:
        out.join("metrics.json").write_json(result)
    log(f"evaluate {key.label}: {len(scored):,} {key.protocol.value} test cases scored in {score_seconds:.1f}s")
    return result


def run_evaluate(cfg: MdrecConfig, run_dir: RunDir, *, force: bool = False, log: Log = lambda m: None) -> dict[RunKey, dict]:
    from mdrec.ray_session import ensure_ray

    ensure_ray(cfg.ray)
    results = {}
    for protocol in cfg.train.protocols:
        context_ref = ray.put(load_context(run_dir, protocol))
        for key in (k for k in grid(cfg) if k.protocol == protocol):
            results[key] = evaluate_run(cfg, run_dir, key, context_ref, force=force, log=log)
    return results

"""The `evaluate` stage: test metrics per domain for every trained run, scored on Ray Data.

Test cases of the protocol a model was trained for are scored by a pool of Ray actors; one pass
per protocol scores every run of that protocol (each actor holds all its models). A model
trained on the warm split is never scored on cold-start cases: their users' held-out rows were
in its training data.

- Sampled candidates (always): each case's positive against its stored negatives. The actors
  send back the scores; the driver computes every metric per domain.
- Full catalog (`evaluate.full_catalog`): a fixed sample of cases ranks its positive against
  every item of the domain the user has not trained on. That is thousands of scores a case, so
  the actors reduce them to per-case hr/ndcg and the top-K list; the driver only aggregates.
  These metrics carry a `full_` prefix.

Output: `<run-dir>/evaluation/<model>/<variant>/<protocol>/seed-<n>/`: metrics.json (per domain)
and cases.parquet (NDCG@10, HR@10 and AUC of every test case, for the report's paired tests).
Runs of an augmented variant are scored with their own context (the synthetic rows are part of a
user's history and of the graph); full-catalog ranking still leaves out only real training items.
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
from mdrec.experiment import RunKey, arm_named, grid
from mdrec.models import Dims, build_model
from mdrec.prepare.shards import unit_hash
from mdrec.storage import RunDir
from mdrec.train.examples import Candidates, pad_rows
from mdrec.train.context import InteractionContext
from mdrec.train.loop import score
from mdrec.train.stage import load_context, read_shape, with_synthetic_context

Log = Callable[[str], None]
FORMAT = 3  # bump when the metrics change, so committed evaluations are redone


def _list_column(values: np.ndarray, valid: np.ndarray) -> pa.ListArray:
    """Rows of a padded matrix as variable-length lists (padding sits at the end of each row)."""
    offsets = pa.array(np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values[valid]))


class _Scorer:
    """A Ray Data actor: builds every model of the pass once, then scores batches of cases.

    All runs of one protocol share one pass (the cases are read once, and actor start-up, which
    dominates on small data, is paid once): run i's outputs are the columns prefixed `i/`.
    """

    def __init__(self, runs: list[tuple[str, dict, bytes]], dims, context, seen, item_ranges, full_catalog: bool):
        self.models = []
        for name, params, weights in runs:
            model = build_model(name, params, dims, context)
            model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
            self.models.append(model.eval())
        # `context` is what the models read (with a variant's synthetic rows); `seen` the user's real
        # training items, which full-catalog ranking leaves out.
        self.seen, self.item_ranges, self.full_catalog = seen, item_ranges, full_catalog

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        columns = {"case_id": pa.array(batch["case_id"].to_numpy()), "user_idx": pa.array(batch["user_idx"].to_numpy()),
                   "domain_idx": pa.array(batch["domain_idx"].to_numpy())}
        if self.full_catalog:
            cases = self._full_catalog(batch)
            for i, model in enumerate(self.models):
                per_case = metrics.ranking_per_case(score(model, cases), cases.items, cases.valid)
                top = per_case.pop("top")
                columns[f"{i}/top"] = _list_column(top, top >= 0)
                columns.update({f"{i}/{k}": pa.array(v) for k, v in per_case.items()})
        else:
            cases = Candidates.from_cases(batch["user_idx"], batch["domain_idx"], batch["ts"], batch["item_idx"],
                                          list(batch["negatives"]))
            columns["items"] = _list_column(cases.items, cases.valid)
            for i, model in enumerate(self.models):
                columns[f"{i}/scores"] = _list_column(score(model, cases), cases.valid)
        return pa.table(columns)

    def _full_catalog(self, batch: pd.DataFrame) -> Candidates:
        """Each case's positive, then every item of its domain the user has no training row for."""
        others = []
        for user, domain, positive in zip(batch["user_idx"], batch["domain_idx"], batch["item_idx"]):
            start, end = self.item_ranges[int(domain)]
            keep = np.ones(end - start, dtype=bool)
            seen = self.seen.seen(int(user))
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


def _sampled_summary(run: int):
    def summarize(part: pd.DataFrame, catalog: np.ndarray) -> dict:
        items, valid = pad_rows(list(part["items"]), 0, np.int64)
        scores, _ = pad_rows(list(part[f"{run}/scores"]), -np.inf, np.float64)
        return metrics.summarize(scores, items, part["user_idx"].to_numpy(), catalog, valid)

    return summarize


def _full_summary(run: int):
    prefix = f"{run}/"

    def summarize(part: pd.DataFrame, catalog: np.ndarray) -> dict:
        top, _ = pad_rows(list(part[f"{prefix}top"]), -1, np.int64)
        per_case = {c[len(prefix):]: part[c].to_numpy() for c in part.columns
                    if c.startswith(prefix) and c != f"{prefix}top"}
        return {"cases": len(part), **metrics.summarize_ranking({**per_case, "top": top}, part["user_idx"].to_numpy(),
                                                                 catalog)}

    return summarize


def _score_cases(cfg: MdrecConfig, run_dir: RunDir, protocol: Protocol, runs: list[tuple[str, dict, bytes]],
                 context: InteractionContext, seen: InteractionContext, dims: Dims, ranges: dict[int, tuple[int, int]],
                 full_sample: dict[int, float] | None) -> pd.DataFrame:
    cases_path = run_dir.stage("prepared").location.join("cases")
    cases = ray.data.read_parquet(cases_path.path, filesystem=cases_path.fs).map_batches(
        _test_cases, batch_format="pandas", fn_kwargs=dict(protocol=protocol.value, full_sample=full_sample)
    )
    full = full_sample is not None
    return cases.map_batches(
        _Scorer,
        batch_format="pandas",
        batch_size=64 if full else 2048,  # a full-catalog case scores a whole domain
        # Values, not object refs: Ray keeps constructor arguments alive for as long as actors start.
        fn_constructor_kwargs=dict(runs=runs, dims=dims, context=context, seen=seen, item_ranges=ranges,
                                  full_catalog=full),
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.evaluate.num_actors),
        num_cpus=cfg.evaluate.cpus_per_actor,
    ).to_pandas()


def _full_sample_rates(cfg: MdrecConfig, run_dir: RunDir, protocol: Protocol, domains: pd.DataFrame) -> dict[int, float]:
    """Per domain_idx, the share of test cases ranked against the full catalog (about N per domain)."""
    wanted = cfg.evaluate.full_catalog_cases
    stats = run_dir.stage("prepared").location.join("stats.json").read_json()["domains"]
    rates = {}
    for row in domains.itertuples():
        d = stats[row.domain]
        count = d["splits"]["test"] if protocol is Protocol.warm else d["cold_start"]["test"]
        rates[int(row.domain_idx)] = 1.0 if wanted is None or count <= wanted else wanted / count
    return rates


def _fingerprint(cfg: MdrecConfig, trained_fingerprint: str) -> str:
    ev = cfg.evaluate
    return hashlib.sha256(json.dumps({"model": trained_fingerprint, "format": FORMAT, "full": ev.full_catalog,
                                      "full_cases": ev.full_catalog_cases}).encode()).hexdigest()


def _per_case(frame: pd.DataFrame, run: int, domain_names: dict) -> pa.Table:
    """Each case's NDCG@10, HR@10 and AUC for one run: what the report's paired tests compare."""
    items, valid = pad_rows(list(frame["items"]), 0, np.int64)
    scores, _ = pad_rows(list(frame[f"{run}/scores"]), -np.inf, np.float64)
    return pa.table({"case_id": frame["case_id"].to_numpy(),
                     "domain": pa.array(frame["domain_idx"].map(domain_names).to_numpy(dtype=object)).dictionary_encode(),
                     "user_idx": frame["user_idx"].to_numpy(),
                     "ndcg@10": metrics.ndcg_at_k(scores, 10, valid), "hr@10": metrics.hit_rate_at_k(scores, 10, valid),
                     "case_auc": metrics.case_auc(scores, valid)})


def evaluate_protocol(cfg: MdrecConfig, run_dir: RunDir, protocol: Protocol, keys: list[RunKey], *,
                      force: bool = False, log: Log = lambda m: None) -> dict[RunKey, dict]:
    """Every run of one protocol and variant; the ones whose committed metrics are current are reused."""
    variants = {k.variant for k in keys}
    if len(variants) > 1:  # each variant's models read their own context: one pass each
        results = {}
        for variant in sorted(variants):
            results.update(evaluate_protocol(cfg, run_dir, protocol, [k for k in keys if k.variant == variant],
                                             force=force, log=log))
        return results
    results, todo = {}, []
    for key in keys:
        trained = run_dir.stage(f"models/{key.path}")
        record = trained.commit_record()
        if record is None:
            raise DataError(f"{trained.location.uri}: {key.label} is not trained yet (run `mdrec train` first)")
        stage = run_dir.stage(f"evaluation/{key.path}")
        fp = _fingerprint(cfg, record["fingerprint"])
        if not force and stage.is_current(fp):
            log(f"evaluate {key.label}: reusing committed metrics in {stage.location.uri}")
            results[key] = stage.location.join("metrics.json").read_json()
        else:
            todo.append((key, trained, stage, fp))
    if not todo:
        return results

    shape = read_shape(run_dir)
    dims, ranges, domains = shape.dims, shape.ranges, shape.domains
    seen = load_context(run_dir, protocol, dims)
    arm = arm_named(cfg, todo[0][0].variant)
    context = with_synthetic_context(run_dir, protocol, arm, seen)  # no second read of the training rows
    summaries = [trained.location.join("metrics.json").read_json() for _, trained, _, _ in todo]
    # Parameters as each committed model was trained, not as the config says now.
    runs = [(key.model, summary["params"], trained.location.join("model.pt").read_bytes())
            for (key, trained, _, _), summary in zip(todo, summaries)]
    started = time.perf_counter()
    scored = _score_cases(cfg, run_dir, protocol, runs, context, seen, dims, ranges, None)
    pass_seconds = time.perf_counter() - started
    if scored.empty:
        raise DataError(f"{run_dir.stage('prepared').location.uri}: no {protocol.value} test cases to evaluate")
    full, full_seconds = None, 0.0
    if cfg.evaluate.full_catalog:
        started = time.perf_counter()
        full = _score_cases(cfg, run_dir, protocol, runs, context, seen, dims, ranges,
                            _full_sample_rates(cfg, run_dir, protocol, domains))
        full_seconds = time.perf_counter() - started
    log(f"evaluate {protocol.value} {arm.name}: {len(scored):,} test cases x {len(runs)} runs scored in {pass_seconds:.1f}s"
        + (f", full catalog {len(full):,} cases in {full_seconds:.1f}s" if full is not None else ""))

    roles = dict(zip(domains["domain"], domains["role"]))
    for i, ((key, _, stage, fp), summary) in enumerate(zip(todo, summaries)):
        per_domain = {d: {"role": roles[d], **m} for d, m in _per_domain(scored, domains, _sampled_summary(i)).items()}
        if full is not None:
            for d, values in _per_domain(full, domains, _full_summary(i)).items():
                per_domain[d].update({f"full_{k}": v for k, v in values.items()})
        result = {
            "model": key.model, "variant": key.variant, "protocol": key.protocol.value, "seed": key.seed,
            "split": Split.test.value,
            "domains": per_domain,
            # The pass scored every run at once: each run's share, and the whole pass.
            "score_seconds": round(pass_seconds / len(runs), 2),
            "score_pass_seconds": round(pass_seconds, 2),
            "runs_in_pass": len(runs),
            "full_catalog_seconds": round(full_seconds / len(runs), 2),
            "train_epoch_seconds": round(float(np.mean([h["train_seconds"] for h in summary["history"]])), 2),
        }
        with stage.writing(fp, meta={"model": key.model}) as out:
            out.join("metrics.json").write_json(result)
            out.join("cases.parquet").write_table(_per_case(scored, i, shape.names))
        results[key] = result
    return results


def run_evaluate(cfg: MdrecConfig, run_dir: RunDir, *, force: bool = False, log: Log = lambda m: None) -> dict[RunKey, dict]:
    from mdrec.ray_session import ensure_ray

    ensure_ray(cfg.ray)
    results = {}
    for protocol in cfg.train.protocols:
        keys = [k for k in grid(cfg) if k.protocol == protocol]
        done = evaluate_protocol(cfg, run_dir, protocol, keys, force=force, log=log)
        results.update({k: done[k] for k in keys})
    return results

"""The `generate` stage: orchestration, budget, shards and the report.

1. histories: one row per user from `prepared/train` (Ray Data groupby, materialized);
2. selection: per (protocol, target), eligible users are counted in a histogram of their seeded
   hash, and the driver picks the hash threshold that keeps the user count within budget
   (`budget.ratio` of the domain's real rows, `budget.per_user` rows each, `users.max_users`);
3. contexts (Ray Data tasks) for the selected users of the shards not yet written;
4. the backend's Ray Data stage scores or chooses candidates (actors; vLLM engines);
5. results stream back; each shard is written whole as soon as all its contexts are back;
6. when every shard exists, they are committed as `synthetic/raw/` and the report is written,
   with the generator's quality on the cold-start validation users (see quality.py).

Only counts, the catalog and results in flight pass through the driver; user histories and
contexts stay in Ray's object store.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import time
from collections import Counter, defaultdict
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import ray
import ray.data

from mdrec import faults, placement
from mdrec.config import (CooccurrenceBackendConfig, LLMMode, MdrecConfig, Role, SemanticBackendConfig, VllmBackendConfig,
                          WorldSourceConfig)
from mdrec.data.schema import Protocol
from mdrec.errors import ConfigError, DataError
from mdrec.generate import quality
from mdrec.generate.backends import BackendInputs, build_backend
from mdrec.generate.backends.base import ranking, with_popularity_prior
from mdrec.generate.candidates import TargetCatalog
from mdrec.generate.cooccurrence import cooccurrence_matrix, visible_rows
from mdrec.generate.contexts import (ContextPlan, SelectionRule, build_contexts, selection_histograms,
                                     threshold_for)
from mdrec.generate.histories import build_histories
from mdrec.generate.titles import check_titles, title_similar_slots
from mdrec.generate.shard_store import ShardStore
from mdrec.storage import RunDir
from mdrec.tally import tally_counts

Log = Callable[[str], None]
STAGE = "synthetic/raw"
REPORT = "synthetic/generate_report.json"
FORMAT = 3  # bump when the output or the shard files change: old outputs and work folders are redone

SYNTHETIC_SCHEMA = pa.schema([
    ("user_id", pa.string()), ("item_id", pa.string()), ("domain", pa.string()),
    ("score", pa.float64()), ("rank", pa.int32()),
    ("backend", pa.string()), ("model", pa.string()), ("prompt_sha", pa.string()),
    ("protocol", pa.string()), ("user_idx", pa.int64()), ("item_idx", pa.int64()), ("domain_idx", pa.int64()),
    # The candidate of the same list the backend found least likely: with item_idx, a (preferred,
    # rejected) pair for pairwise training (LLMRec). Null when the backend named none.
    ("rejected_item_id", pa.string()), ("rejected_item_idx", pa.int64()),
])


# --------------------------------------------------------------------------- what the config asks


def resolve_protocols(cfg: MdrecConfig) -> list[Protocol]:
    return list(cfg.generate.protocols or cfg.train.protocols)


def resolve_targets(cfg: MdrecConfig, domains: pd.DataFrame) -> list[int]:
    names = list(domains["domain"])
    if cfg.generate.targets is not None:
        for d in cfg.generate.targets:
            if d not in names:
                raise ConfigError(f"generate.targets: unknown domain '{d}' (domains: {', '.join(names)})")
        return [names.index(d) for d in cfg.generate.targets]
    cold = [int(i) for i, role in zip(domains["domain_idx"], domains["role"]) if role == Role.cold.value]
    if not cold:
        raise ConfigError("generate.targets: no domain has the cold role; name the target domains")
    return cold


def needs_encoder(cfg: MdrecConfig) -> bool:
    return title_similar_slots(cfg) or isinstance(cfg.generate.backend, SemanticBackendConfig)


def needs_votes(cfg: MdrecConfig) -> bool:
    """Co-occurrence votes: for the candidates' co-occurring slots or the backend that ranks by them."""
    return cfg.generate.candidates.cooccurring > 0 or isinstance(cfg.generate.backend, CooccurrenceBackendConfig)


def fingerprint(cfg: MdrecConfig, prepared_fp: str) -> str:
    # Output depends on these; not on how many actors run, where, or how batches are cut.
    resources = {"num_actors", "cpus_per_actor", "gpus_per_actor", "resources", "label_selector", "batch_size", "env",
                 "model_cache"}
    generate = cfg.generate.model_dump(mode="json", exclude={"backend": resources,
                                                             "encoder": {"batch_size", "num_actors", "cpus_per_actor"}})
    if generate["backend"].get("min_score", 0) is None:
        del generate["backend"]["min_score"]  # unset: the rows committed before the option existed stay current
    payload = {
        "format": FORMAT, "prepared": prepared_fp, "seed": cfg.seed,
        "protocols": [p.value for p in resolve_protocols(cfg)],
        "model_content": _model_content(cfg),
        "generate": generate,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _model_content(cfg: MdrecConfig) -> str | None:
    """A packaged model's content (its file's hash): a new package version redoes the stage."""
    model = getattr(cfg.generate.backend, "model", None)
    from mdrec.packaged.registry import is_packaged

    if model is None or not is_packaged(model):
        return None
    from mdrec.packaged.cache import expected_folder_name

    return expected_folder_name(model)


# --------------------------------------------------------------------------- driver-side tallies


def _visible_counts(counts: pd.DataFrame, protocol: Protocol, num_items: int) -> np.ndarray:
    rows = counts if protocol is Protocol.warm else counts[~counts["held_out"]]
    return np.bincount(rows["item_idx"], weights=rows["n"], minlength=num_items).astype(np.int64)


def _real_rows(counts: pd.DataFrame, protocols, targets, ranges) -> dict[tuple[str, int], int]:
    """Each target domain's real training rows under each protocol: what the budget ratio is of."""
    n = max(end for _, end in ranges.values())
    return {(p.value, t): int(_visible_counts(counts, p, n)[slice(*ranges[t])].sum()) for p in protocols for t in targets}


def _catalogs(titled: np.ndarray, counts: pd.DataFrame, protocols, targets, ranges, embeddings, pool: int,
              train_rows: pd.DataFrame | None = None) -> dict:
    """Each (protocol, target)'s candidate pool; with `train_rows`, its co-occurrence votes too."""
    catalogs = {}
    for protocol in protocols:
        per_item = _visible_counts(counts, protocol, len(titled))
        visible = visible_rows(train_rows, protocol) if train_rows is not None else None
        for t in targets:
            start, end = ranges[t]
            idx = np.arange(start, end)[titled[start:end]]
            votes = cooccurrence_matrix(visible, ranges[t], idx, len(titled)) if visible is not None else None
            catalogs[(protocol.value, t)] = TargetCatalog(
                t, idx, per_item[idx], embeddings[idx] if embeddings is not None else None, votes).with_pool(pool)
    return catalogs


def _select(cfg: MdrecConfig, histories: ray.data.Dataset, plan: ContextPlan, real: dict, log: Log) -> dict:
    """Per (protocol, target): the hash threshold below which users are selected, exactly
    min(max_users, cap // per_user) of the eligible ones (or all of them). Sets plan.thresholds."""
    from mdrec.generate.contexts import HISTOGRAM_BINS, boundary_hashes

    g = cfg.generate
    plan_ref = ray.put(plan)
    histograms = _histogram_totals(histories, plan_ref)
    budget, boundary = {}, {}
    for key, bins in histograms.items():
        cap = int(math.floor(g.budget.ratio * real[key]))
        limit = cap // g.budget.per_user
        if g.users.max_users is not None:
            limit = min(limit, g.users.max_users)
        threshold, selected, eligible = threshold_for(bins, limit)
        plan.thresholds[key] = threshold
        if selected < min(limit, eligible):  # the boundary bin holds the rest: place the threshold inside it
            boundary[key] = (int(round(threshold * HISTOGRAM_BINS)), limit - selected)
        budget[key] = {"protocol": key[0], "target": plan.domain_names[key[1]], "real_interactions": real[key],
                       "cap": cap, "per_user": g.budget.per_user, "eligible_users": eligible,
                       "selected_users": selected}
    if boundary:
        found = histories.map_batches(boundary_hashes, batch_format="pyarrow",
                                      fn_kwargs=dict(plan=plan_ref, bins={k: b for k, (b, _) in boundary.items()}))
        hashes = pd.concat([t.to_pandas() for t in found.iter_batches(batch_format="pyarrow", batch_size=None)])
        for key, (b, need) in boundary.items():
            h = np.sort(hashes.loc[(hashes["protocol"] == key[0]) & (hashes["target"] == key[1]), "hash"].to_numpy())
            plan.thresholds[key] = float(h[need]) if need < len(h) else (b + 1) / HISTOGRAM_BINS
            budget[key]["selected_users"] += min(need, len(h))
    for key, b in budget.items():
        log(f"generate: {key[0]} {b['target']}: {b['eligible_users']:,} eligible users, {b['selected_users']:,} selected "
            f"(cap {b['cap']:,} = {g.budget.ratio:g} x {b['real_interactions']:,} real rows, {b['per_user']} per user)")
    return budget


def _histogram_totals(histories: ray.data.Dataset, plan_ref) -> dict[tuple[str, int], np.ndarray]:
    parts = histories.map_batches(selection_histograms, batch_format="pyarrow", fn_kwargs=dict(plan=plan_ref))
    totals: dict = {}
    for batch in parts.iter_batches(batch_format="pyarrow", batch_size=None):
        for p, t, bins in zip(batch["protocol"].to_pylist(), batch["target"].to_pylist(), batch["bins"].to_pylist()):
            totals[(p, t)] = totals.get((p, t), 0) + np.asarray(bins, dtype=np.int64)
    return totals


# --------------------------------------------------------------------------- the stage


def run_generate(cfg: MdrecConfig, run_dir: RunDir, *, force: bool = False, log: Log = lambda m: None) -> dict:
    prepared = run_dir.stage("prepared")
    record = prepared.commit_record()
    if record is None:
        raise DataError(f"{prepared.location.uri}: not prepared yet (run `mdrec prepare` first)")
    stage = run_dir.stage(STAGE)
    fp = fingerprint(cfg, record["fingerprint"])
    report_loc = run_dir.file(REPORT)
    if not force and stage.is_current(fp):
        report = stage.commit_record()["report"]
        if not report_loc.exists():
            report_loc.write_json(report)
        log(f"generate: reusing committed output in {stage.location.uri}")
        return report
    from mdrec.ray_session import ensure_ray

    g = cfg.generate
    started = time.perf_counter()
    loc = prepared.location
    items = loc.join("items.parquet").read_table().to_pandas()
    domains = loc.join("domains.parquet").read_table().to_pandas()
    ranges = {int(r.domain_idx): (int(r.item_idx_start), int(r.item_idx_end)) for r in domains.itertuples()}
    protocols, targets = resolve_protocols(cfg), resolve_targets(cfg, domains)
    check_titles(cfg, items, domains, targets, loc.join("items.parquet").uri)  # before Ray and any work
    ensure_ray(cfg.ray)
    store = ShardStore(run_dir.file(".generate", fp[:16]))
    if force:
        store.location.delete()
    work_started = time.perf_counter()

    # 1. histories and counts
    from mdrec.ray_session import cluster_cpus

    histories = build_histories(loc.join("interactions"), parts=max(2, 2 * cluster_cpus()))
    train = loc.join("train")
    # Training interactions per (item, held_out): catalog-sized.
    counts = tally_counts(ray.data.read_parquet(train.path, filesystem=train.fs, columns=["item_idx", "held_out"]),
                          ["item_idx", "held_out"])

    # 2. selection within budget (needs counts only)
    real = _real_rows(counts, protocols, targets, ranges)
    plan = ContextPlan(
        seed=cfg.seed, protocols=protocols, targets=targets, domain_names=list(domains["domain"]),
        rule=SelectionRule(g.users.max_target_interactions, g.users.min_source_interactions, g.users.held_out_only),
        history_per_domain=g.context.history_per_domain, candidates=g.candidates,
        titles=np.array([t if isinstance(t, str) and t else None for t in items["title"]], dtype=object),
        embeddings=None,
    )
    budget = _select(cfg, histories, plan, real, log)

    # 3. item embeddings for retrieval and the semantic backend, then the candidate pools
    titled = np.array([t is not None for t in plan.titles])
    if needs_encoder(cfg):
        needed = _needed_items(cfg, histories, ray.put(plan), targets, ranges, titled)
        plan.embeddings = _embeddings(cfg, run_dir, record["fingerprint"], items, needed, log)
    train_rows = train.read_table(columns=["user_idx", "item_idx", "held_out"]).to_pandas() if needs_votes(cfg) else None
    plan.catalogs = _catalogs(titled, counts, protocols, targets, ranges, plan.embeddings, g.candidates.popular_pool,
                              train_rows)
    plan.num_shards = max(1, math.ceil(sum(b["selected_users"] for b in budget.values()) / g.users_per_shard))
    plan_ref = ray.put(plan)

    # 4. contexts of the shards still to do
    done = store.done()
    if done:
        log(f"generate: resuming, {len(done)}/{plan.num_shards} shards already written")
    contexts = histories.map_batches(build_contexts, batch_format="pyarrow",
                                     fn_kwargs=dict(plan=plan_ref, skip_shards=sorted(done))).materialize()
    per_shard = tally_counts(contexts.select_columns(["shard"]), ["shard"])
    expected = {int(s): int(n) for s, n in zip(per_shard["shard"], per_shard["n"])}
    if expected:
        # In shard order and cut into blocks about a shard each: shards then finish one after
        # another (what a resume skips), and every backend actor gets blocks to work on.
        blocks = max(len(expected), 2 * g.backend.num_actors)
        contexts = contexts.sort("shard").repartition(blocks).materialize()
    source = cfg.data.source
    truth = quality.load_truth(loc, targets, source if isinstance(source, WorldSourceConfig) else None, cfg.seed) \
        if Protocol.cold_start in protocols else quality.GroundTruth({})
    writer = _ShardWriter(store, plan, g.budget.per_user, g.backend.type, items, log, truth,
                          prior=getattr(g.backend, "popularity_prior", 0.0),
                          min_score=getattr(g.backend, "min_score", None))
    for shard in range(plan.num_shards):
        if shard not in done and shard not in expected:
            writer.write(shard, [])  # no selected user hashed here: an empty shard, still 'done'

    # 5. the backend
    timings = {}
    backend_started = time.perf_counter()
    model_name, details = "", {}
    if expected:
        built = build_backend(BackendInputs(cfg, histories, plan.embeddings, len(items), ranges, len(domains),
                                            protocols, targets, log, prepared=loc, items=items))
        model_name, details = built.model_name, built.details
        writer.model = model_name  # known once the backend is built
        # The backend's work needs its own selector: the CPU stages' one, which the contexts
        # carry, would otherwise reach the backend's actors too.
        writer.stream(built.apply(placement.on_nodes(contexts, placement.backend_selector(cfg))), expected)
    timings["backend_seconds"] = round(time.perf_counter() - backend_started, 2)
    missing = set(range(plan.num_shards)) - store.done()
    if missing:
        raise DataError(f"generate: shards {sorted(missing)[:10]} produced no output (backend lost results)")

    # 6. commit and report
    report = _report(cfg, store, plan, budget, details, writer, done, timings, time.perf_counter() - work_started)
    with stage.writing(fp, meta={"report": report}) as out:
        for f in store.files():
            f.fs.copy_file(f.path, out.join(f.path.rsplit("/", 1)[-1]).path)
    report_loc.write_json(report)
    store.location.delete()
    log(f"generate: committed {report['rows']:,} synthetic interactions to {stage.location.uri} in "
        f"{time.perf_counter() - started:.1f}s")
    return report


def _embeddings(cfg: MdrecConfig, run_dir: RunDir, prepared_fp: str, items: pd.DataFrame, needed: np.ndarray,
                log: Log) -> np.ndarray:
    """Unit title embeddings, (num_items, dim), with every `needed` (distinct, titled) item filled in.

    They are committed under `<run-dir>/embeddings/<encoder>/` per (prepared data, encoder) and
    grow as later runs need more items: on CPU, encoding is the slow part of a run, so no title
    is encoded twice and none that no context shows is encoded at all.
    """
    enc = cfg.generate.encoder
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", enc.model).strip("-")[-60:]
    stage = run_dir.stage(f"embeddings/{slug}")
    fp = hashlib.sha256(json.dumps({"prepared": prepared_fp, "model": enc.model, "format": 1}).encode()).hexdigest()
    emb, done = None, np.zeros(len(items), dtype=bool)
    if stage.is_current(fp):
        # allow_pickle=False: nothing from a run directory is ever unpickled.
        emb = np.load(io.BytesIO(stage.location.join("items.npy").read_bytes()), allow_pickle=False)
        done = np.load(io.BytesIO(stage.location.join("encoded.npy").read_bytes()), allow_pickle=False)
    missing = needed[~done[needed]]
    if not len(missing):
        return emb
    from mdrec.generate.encoder import embed_titles

    t0 = time.perf_counter()
    new = embed_titles(items.iloc[missing], enc.model, enc.batch_size, enc.num_actors, enc.cpus_per_actor)
    if emb is None:
        emb = np.zeros((len(items), new.shape[1]), dtype=np.float32)
    emb[missing], done[missing] = new, True
    with stage.writing(fp, meta={"model": enc.model, "items": len(items), "encoded": int(done.sum())}) as out:
        for name, array in (("items.npy", emb), ("encoded.npy", done)):
            buf = io.BytesIO()
            np.save(buf, array, allow_pickle=False)
            out.join(name).write_bytes(buf.getvalue())
    log(f"generate: encoded {len(missing):,} item titles with {enc.model} in {time.perf_counter() - t0:.1f}s "
        f"({enc.num_actors} actors; {int(done.sum()):,} kept in {stage.location.uri})")
    return emb


def _needed_items(cfg: MdrecConfig, histories: ray.data.Dataset, plan_ref, targets, ranges,
                  titled: np.ndarray) -> np.ndarray:
    """Titled items whose embeddings this run reads: the target domains' (candidates, semantic
    scores) and, when candidates are retrieved by similarity, the selected users' history items."""
    from mdrec.generate.contexts import selected_history_items

    needed = [np.arange(*ranges[t]) for t in targets]
    if cfg.generate.candidates.size > cfg.generate.candidates.popular:
        found = histories.map_batches(selected_history_items, batch_format="pyarrow", fn_kwargs=dict(plan=plan_ref))
        needed += [t["item_idx"].to_numpy() for t in found.iter_batches(batch_format="pyarrow", batch_size=None)]
    needed = np.unique(np.concatenate(needed)).astype(np.int64)
    return needed[titled[needed]]


class _ShardWriter:
    """Collects streamed results per shard and writes each shard once all its contexts are back."""

    def __init__(self, store: ShardStore, plan: ContextPlan, per_user: int, backend: str, items: pd.DataFrame,
                 log: Log, truth: quality.GroundTruth, prior: float = 0.0, min_score: float | None = None):
        self.store, self.plan, self.per_user, self.backend, self.log = store, plan, per_user, backend, log
        self.truth = truth
        self.item_ids = items["item_id"].to_numpy(object)
        self.model = ""
        self.prior = prior  # the backend's popularity_prior, where it has one
        self.min_score = min_score  # picks scoring lower are judged (quality) but not written
        self.buffers: dict[int, dict[int, dict]] = defaultdict(dict)
        self.partials: dict[int, dict[int, dict]] = {}
        self.written = 0
        self.contexts = 0
        self.last_log = time.perf_counter()
        self.started = time.perf_counter()

    def stream(self, results: ray.data.Dataset, expected: dict[int, int]) -> None:
        total = len(expected)
        for batch in results.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                row = self._whole_context(row)
                if row is not None and self.prior:
                    row = self._with_prior(row)
                if row is not None:
                    # Keyed by context: a retried task can never add a row twice.
                    self.buffers[row["shard"]][row["context_id"]] = row
            for shard in [s for s, rows in self.buffers.items() if len(rows) >= expected.get(s, 0)]:
                rows = self.buffers.pop(shard)
                self.write(shard, list(rows.values()))
                self.contexts += len(rows)
                self._progress(total)

    def _whole_context(self, row: dict) -> dict | None:
        """A backend that scores one candidate per row (vLLM score mode) sends `parts` rows per
        context: hold them until all are here, then rank them as one context's result."""
        parts = row.pop("parts", 1) or 1
        part_item = row.pop("part_item", None)
        if parts <= 1:
            return row
        held = self.partials.setdefault(row["context_id"], {})
        held[part_item] = row  # keyed by candidate: a retried request replaces, never adds
        if len(held) < parts:
            return None
        del self.partials[row["context_id"]]
        pieces = list(held.values())
        # Ranked in the order of the candidate list, so ties keep its (seeded) order, as elsewhere.
        score_of = {i: s for p in pieces for i, s in zip(p["chosen"], p["scores"])}
        listed = [int(i) for i in row["candidates"] if int(i) in score_of]
        chosen, scores, rejected = ranking(listed, [score_of[i] for i in listed], self.per_user)
        return {**{k: row[k] for k in ("context_id", "shard", "protocol", "user_idx", "user_id", "target_idx",
                                        "prompt_sha", "candidates", "candidate_popularity")},
                "chosen": chosen, "scores": scores, "rejected": rejected,
                "problems": sorted({p for piece in pieces for p in piece["problems"]}),
                "prompt_tokens": sum(p["prompt_tokens"] for p in pieces), "generated_tokens": 0}

    def _with_prior(self, row: dict) -> dict:
        chosen, scores, rejected = with_popularity_prior(row["candidates"], row["candidate_popularity"], row["chosen"],
                                                         row["scores"], self.prior, self.per_user)
        return {**row, "chosen": chosen, "scores": scores, "rejected": rejected}

    def _progress(self, total: int) -> None:
        now = time.perf_counter()
        if now - self.last_log >= 5 or self.written == total:
            rate = self.contexts / max(now - self.started, 1e-9)
            self.log(f"generate: {self.written}/{total} shards written, {self.contexts:,} user contexts, {rate:,.1f} users/s")
            self.last_log = now

    def write(self, shard: int, results: list[dict]) -> None:
        cols: dict[str, list] = {name: [] for name in SYNTHETIC_SCHEMA.names}
        problems: Counter = Counter()
        answers_with_problems, tokens_in, tokens_out = 0, 0, 0
        tally: dict = {}
        positions: Counter = Counter()  # where in the shown list the picks were: an LLM's position bias
        for r in sorted(results, key=lambda r: r["context_id"]):
            quality.score_context(tally, self.truth, r, self.per_user)
            shown = {int(c): i for i, c in enumerate(r["candidates"], start=1)}
            positions.update(str(shown[int(c)]) for c in list(r["chosen"])[: self.per_user] if int(c) in shown)
            rejected = int(r.get("rejected", -1))
            problems.update(r["problems"])
            answers_with_problems += bool(r["problems"])
            tokens_in += r["prompt_tokens"]
            tokens_out += r["generated_tokens"]
            for rank, (item, score) in enumerate(zip(r["chosen"][: self.per_user], r["scores"]), start=1):
                if self.min_score is not None and score < self.min_score:
                    continue
                cols["user_id"].append(r["user_id"])
                cols["item_id"].append(self.item_ids[item])
                cols["domain"].append(self.plan.domain_names[r["target_idx"]])
                cols["score"].append(score)
                cols["rank"].append(rank)
                cols["backend"].append(self.backend)
                cols["model"].append(self.model)
                cols["prompt_sha"].append(r["prompt_sha"])
                cols["protocol"].append(r["protocol"])
                cols["user_idx"].append(r["user_idx"])
                cols["item_idx"].append(item)
                cols["domain_idx"].append(r["target_idx"])
                cols["rejected_item_idx"].append(rejected if rejected >= 0 else None)
                cols["rejected_item_id"].append(self.item_ids[rejected] if rejected >= 0 else None)
        contexts_by_key = Counter(f"{r['protocol']}/{r['target_idx']}" for r in results)
        rows_by_key = Counter(f"{p}/{t}" for p, t in zip(cols["protocol"], cols["domain_idx"]))
        meta = {"contexts": len(results), "problems": dict(problems), "answers_with_problems": answers_with_problems,
                "prompt_tokens": tokens_in, "generated_tokens": tokens_out,
                "contexts_by_key": dict(contexts_by_key), "rows_by_key": dict(rows_by_key), "quality": tally,
                "pick_positions": dict(positions)}
        self.store.write(shard, pa.table(cols, schema=SYNTHETIC_SCHEMA), meta)
        self.written += 1
        faults.hang_after_shards(self.written)  # tests kill the job here, between two shard writes


def _report(cfg, store: ShardStore, plan: ContextPlan, budget: dict, details: dict, writer: _ShardWriter,
            resumed: set[int], timings: dict, seconds: float) -> dict:
    problems: Counter = Counter()
    contexts = with_problems = tokens_in = tokens_out = 0
    per_key: Counter = Counter()
    written: Counter = Counter()
    tallies = []
    positions: Counter = Counter()
    for shard in sorted(store.done()):
        meta = store.meta(shard)
        tallies.append(meta.get("quality", {}))
        positions.update(meta.get("pick_positions", {}))
        problems.update(meta["problems"])
        contexts += meta["contexts"]
        with_problems += meta["answers_with_problems"]
        tokens_in += meta["prompt_tokens"]
        tokens_out += meta["generated_tokens"]
        per_key.update(meta["contexts_by_key"])
        written.update(meta["rows_by_key"])
    targets = []
    for (p, t), b in budget.items():
        key = f"{p}/{t}"
        targets.append({**b, "contexts": per_key.get(key, 0), "rows": written.get(key, 0),
                        "within_budget": written.get(key, 0) <= b["cap"]})
    this_run = writer.contexts
    backend = cfg.generate.backend
    ranks_all = not (isinstance(backend, VllmBackendConfig) and backend.mode is LLMMode.choose)
    quality_block = quality.summarize(quality.merge(tallies), plan.domain_names, cfg.generate.budget.per_user,
                                      ranks_all)
    quality_block["pick_positions"] = {p: positions[p] for p in sorted(positions, key=int)}
    return {
        "backend": cfg.generate.backend.type,
        "model": writer.model or None,
        "protocols": [p.value for p in plan.protocols],
        "targets": targets,
        "rows": sum(written.values()),
        "contexts": contexts,
        "answers_with_problems": with_problems,
        "problems": dict(sorted(problems.items())),
        "prompt_tokens": tokens_in,
        "generated_tokens": tokens_out,
        "shards": {"total": plan.num_shards, "resumed": len(resumed), "written_now": writer.written},
        "backend_details": details,
        "quality": quality_block,
        "timings": {**timings, "seconds": round(seconds, 2),
                    "users_per_second": round(this_run / timings["backend_seconds"], 2) if timings.get("backend_seconds") else None},
    }

"""The `filter` stage: the configured filters, in order, over the synthetic shards on Ray tasks.

Each task holds a few whole shards of `synthetic/raw` (a user's rows are always in one shard) as a
table in the object store, with a `dropped_by` column that stays empty while a row is live. Local
filters run inside the tasks; cut filters (budget, popularity cap, teacher, score quantile) take
two more round trips: live rows counted per group, then only the groups over their limit ranked
on the driver (see steps.py). Nothing is deleted until the end, so every dropped row keeps the
name of the filter that dropped it.

Output, committed together:
- `<run-dir>/synthetic/filtered/`: the kept rows (the schema of synthetic/raw, plus `teacher_score`);
- `<run-dir>/synthetic/dropped/`: the dropped rows, with `dropped_by` and `teacher_score`;
- `<run-dir>/synthetic/filter_report.json` and `filter_scores.png` (kept against dropped scores).
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
import pyarrow.parquet as pq
import ray

from mdrec import placement
from mdrec.config import MdrecConfig, Role, TeacherFilter, Variant
from mdrec.data.schema import Protocol
from mdrec.errors import ConfigError, DataError
from mdrec.experiment import RunKey, train_seeds
from mdrec.filter.steps import KEY, FilterContext, best_first, step_for
from mdrec.storage import Location, RunDir

Log = Callable[[str], None]
STAGE = "synthetic/filtered"
DROPPED = "synthetic/dropped"
REPORT = "synthetic/filter_report.json"
PLOT = "synthetic/filter_scores.png"
FORMAT = 2  # bump when the output changes, so committed outputs are redone
RAW = "synthetic/raw"
SAMPLE_PER_TASK = 4000  # rows per task sent back for the score plot


# --------------------------------------------------------------------------- tasks


def _tiebreak(df: pd.DataFrame, seed: int) -> np.ndarray:
    keys = df[["protocol", "user_idx", "item_idx"]].assign(seed=seed)
    return (pd.util.hash_pandas_object(keys, index=False).to_numpy(np.uint64) >> np.uint64(11)).astype(np.float64)


@ray.remote
def _load(files: list[Location], chunk: int, seed: int) -> pd.DataFrame:
    tables = []
    for f in files:
        with f.fs.open_input_file(f.path) as handle:
            tables.append(pq.read_table(handle))
    df = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame()
    df["row"] = (np.int64(chunk) << np.int64(32)) + np.arange(len(df), dtype=np.int64)
    df["tiebreak"] = _tiebreak(df, seed) if len(df) else np.array([], dtype=np.float64)
    df["teacher_score"] = np.nan
    df["dropped_by"] = pd.Series([None] * len(df), dtype=object)
    return df


def _live(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["dropped_by"].isna()]


@ray.remote
def _apply_local(df: pd.DataFrame, step_cfg, ctx: FilterContext) -> pd.DataFrame:
    df = df.copy()  # frames from the object store are read-only
    live = _live(df)
    if len(live):
        drop = step_for(step_cfg).drop(live, step_cfg, ctx)
        df.loc[live.index[drop], "dropped_by"] = step_cfg.name
    return df


@ray.remote
def _count(df: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    return _live(df).groupby(groups, sort=False).size().rename("n").reset_index()


@ray.remote
def _rows_of_groups(df: pd.DataFrame, groups: list[str], over: pd.DataFrame, order: str) -> pd.DataFrame:
    live = _live(df)
    picked = live.merge(over, on=groups, how="inner")
    return picked[[*groups, "row", order, "tiebreak"]]


@ray.remote
def _drop_rows(df: pd.DataFrame, rows: np.ndarray, name: str) -> pd.DataFrame:
    df = df.copy()
    df.loc[df["row"].isin(rows), "dropped_by"] = name
    return df


@ray.remote
def _teacher_scores(df: pd.DataFrame, teachers: dict) -> pd.DataFrame:
    """Every live row's logit under its protocol's teacher (a model trained on real data only)."""
    import torch

    from mdrec.models import Batch, build_model

    df = df.copy()
    live = _live(df)
    for protocol, rows in live.groupby("protocol"):
        name, params, weights, context, dims = teachers[protocol]
        model = build_model(name, params, dims, context)
        model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
        model.eval()
        users = rows["user_idx"].to_numpy(np.int64, copy=True)
        batch = Batch(user=torch.from_numpy(users), item=torch.from_numpy(rows["item_idx"].to_numpy(np.int64, copy=True)),
                      domain=torch.from_numpy(rows["domain_idx"].to_numpy(np.int64, copy=True)),
                      ts=torch.from_numpy(context.next_ts(users)))
        with torch.no_grad():
            scores = np.concatenate([model(part).float().numpy() for part in _parts(batch, 8192)])
        df.loc[rows.index, "teacher_score"] = scores
    return df


def _parts(batch, size: int):
    from mdrec.models import Batch

    for start in range(0, len(batch), size):
        end = start + size
        yield Batch(batch.user[start:end], batch.item[start:end], batch.domain[start:end], batch.ts[start:end])


@ray.remote
def _write(df: pd.DataFrame, chunk: int, kept_dir: Location, dropped_dir: Location, schema: pa.Schema) -> tuple:
    """Write the chunk's kept and dropped rows; return counts and a sample of scores for the plot."""
    name = f"part-{chunk:05d}.parquet"
    gone = df["dropped_by"].notna()
    kept_schema = schema.append(pa.field("teacher_score", pa.float64()))  # null without a teacher step
    kept = pa.Table.from_pandas(df.loc[~gone, kept_schema.names], schema=kept_schema, preserve_index=False)
    kept_dir.join(name).write_table(kept)
    dropped_schema = kept_schema.append(pa.field("dropped_by", pa.string()))
    dropped = pa.Table.from_pandas(df.loc[gone, dropped_schema.names], schema=dropped_schema, preserve_index=False)
    dropped_dir.join(name).write_table(dropped)
    status = df["dropped_by"].fillna("kept")
    counts = df.assign(status=status).groupby([*KEY, "status"]).size().rename("n").reset_index()
    rate = min(1.0, SAMPLE_PER_TASK / max(len(df), 1))
    sample = df.loc[df["tiebreak"] < rate * float(1 << 53), [*KEY, "score", "teacher_score"]].assign(
        status=status[df["tiebreak"] < rate * float(1 << 53)])
    return counts, sample


# --------------------------------------------------------------------------- driver


def _context(run_dir: RunDir, protocols: list[str]) -> FilterContext:
    loc = run_dir.stage("prepared").location
    items = loc.join("items.parquet").read_table(columns=["item_idx", "item_id", "domain_idx"]).to_pandas()
    items = items.sort_values("item_idx")
    domains = loc.join("domains.parquet").read_table().to_pandas()
    train = loc.join("train").read_table(columns=["user_idx", "item_idx", "domain_idx", "held_out"]).to_pandas()
    n_items = len(items)
    seen, real_rows, users = {}, {}, {}
    for protocol in protocols:
        rows = train if protocol == Protocol.warm.value else train[~train["held_out"]]
        seen[protocol] = np.unique(rows["user_idx"].to_numpy() * n_items + rows["item_idx"].to_numpy())
        per_domain = rows.groupby("domain_idx").size()
        for d in domains["domain_idx"]:
            real_rows[(protocol, int(d))] = int(per_domain.get(d, 0))
    for d, rows in train.groupby("domain_idx"):
        users[int(d)] = int(rows["user_idx"].nunique())
    return FilterContext(
        item_ids=items["item_id"].to_numpy(dtype=object), item_domain=items["domain_idx"].to_numpy(np.int64),
        seen=seen, real_rows=real_rows,
        domain_users={int(d): users.get(int(d), 0) for d in domains["domain_idx"]},
        domain_items={int(r.domain_idx): int(r.item_idx_end - r.item_idx_start) for r in domains.itertuples()},
        rich_domains=[int(r.domain_idx) for r in domains.itertuples() if r.role == Role.rich.value],
    )


def _teachers(cfg: MdrecConfig, run_dir: RunDir, step: TeacherFilter, protocols: list[str], log: Log) -> dict:
    """Per protocol, the teacher's (name, params, weights, context, dims); trained now if not yet."""
    from mdrec.train.stage import load_prepared, train_model

    specs = {s.name: s for s in cfg.train.models}
    name = step.model or cfg.train.models[0].name
    if name not in specs:
        raise ConfigError(f"filter.steps teacher.model: '{name}' is not in train.models ({', '.join(specs)})")
    out = {}
    for protocol in protocols:
        key = RunKey(name, Variant.real.value, Protocol(protocol), train_seeds(cfg)[0])
        prepared = load_prepared(run_dir, key.protocol)
        summary = train_model(cfg, run_dir, prepared, specs[name], key, log=log)
        trained = run_dir.stage(f"models/{key.path}")
        out[protocol] = (name, summary["params"], trained.location.join("model.pt").read_bytes(), prepared.context,
                         prepared.dims)
        log(f"filter: teacher for {protocol} is {key.label}")
    return out


def _teacher_fingerprints(teachers: dict) -> dict:
    return {p: hashlib.sha256(t[2]).hexdigest() for p, t in sorted(teachers.items())}


def fingerprint(cfg: MdrecConfig, raw_fp: str, teachers: dict) -> str:
    payload = {"format": FORMAT, "raw": raw_fp, "seed": cfg.seed, "teachers": teachers,
               "steps": [s.model_dump(mode="json") for s in cfg.filter.steps]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _chunks(files: list, tasks: int) -> list[list]:
    tasks = max(1, min(tasks, len(files)))
    return [files[i::tasks] for i in range(tasks)]


def _cut(states: list, step, step_cfg, ctx: FilterContext, options: dict) -> list:
    groups = list(step.groups)
    counts = pd.concat(ray.get([_count.options(**options).remote(s, groups) for s in states]), ignore_index=True)
    if counts.empty:
        return states
    counts = counts.groupby(groups, as_index=False)["n"].sum()
    counts["limit"] = step.limits(counts, step_cfg, ctx)
    over = counts[counts["n"] > counts["limit"]]
    if over.empty:
        return states
    ranked = pd.concat(ray.get([_rows_of_groups.options(**options).remote(s, groups, over[groups], step.order)
                                for s in states]), ignore_index=True)
    ranked = best_first(ranked, step.order)
    position = ranked.groupby(groups, sort=False).cumcount().to_numpy()
    limit = ranked.merge(over[[*groups, "limit"]], on=groups, how="left")["limit"].to_numpy()
    gone = ranked["row"].to_numpy()[position >= limit]
    chunk_of = gone >> np.int64(32)
    drop = _drop_rows.options(**options)
    return [drop.remote(s, gone[chunk_of == i], step_cfg.name) if np.any(chunk_of == i) else s
            for i, s in enumerate(states)]


def run_filter(cfg: MdrecConfig, run_dir: RunDir, *, force: bool = False, log: Log = lambda m: None) -> dict:
    raw = run_dir.stage(RAW)
    raw_record = raw.commit_record()
    if raw_record is None:
        raise DataError(f"{raw.location.uri}: no synthetic interactions yet (run `mdrec generate` first)")
    protocols = list(raw_record["report"]["protocols"])
    from mdrec.ray_session import cluster_cpus, ensure_ray

    ensure_ray(cfg.ray)
    teacher_steps = [s for s in cfg.filter.steps if isinstance(s, TeacherFilter)]
    teachers = _teachers(cfg, run_dir, teacher_steps[0], protocols, log) if teacher_steps else {}
    fp = fingerprint(cfg, raw_record["fingerprint"], _teacher_fingerprints(teachers))
    stage, dropped_stage = run_dir.stage(STAGE), run_dir.stage(DROPPED)
    if not force and stage.is_current(fp) and dropped_stage.is_current(fp):
        report = stage.commit_record()["report"]
        if not run_dir.file(REPORT).exists():
            run_dir.file(REPORT).write_json(report)
        log(f"filter: reusing committed output in {stage.location.uri}")
        return report

    started = time.perf_counter()
    ctx = _context(run_dir, protocols)
    ctx_ref = ray.put(ctx)
    files = raw.location.files()
    locations = [raw.location.join(f.path[len(raw.location.path) + 1:]) for f in files]
    from mdrec.generate.stage import SYNTHETIC_SCHEMA as schema
    options = placement.task_options(cfg.ray, num_cpus=cfg.filter.cpus_per_task)
    chunks = _chunks(locations, cfg.filter.tasks or 2 * cluster_cpus())
    states = [_load.options(**options).remote(c, i, cfg.seed) for i, c in enumerate(chunks)]
    teacher_ref = ray.put(teachers) if teachers else None
    step_seconds = {}
    for step_cfg in cfg.filter.steps:
        step_started = time.perf_counter()
        step = step_for(step_cfg)
        if step.needs_teacher:
            states = [_teacher_scores.options(**options).remote(s, teacher_ref) for s in states]
        if step.is_cut:
            states = _cut(states, step, step_cfg, ctx, options)
        else:
            states = [_apply_local.options(**options).remote(s, step_cfg, ctx_ref) for s in states]
        ray.wait(states, num_returns=len(states), fetch_local=False)
        step_seconds[step_cfg.name] = round(time.perf_counter() - step_started, 3)

    names = _domain_names(run_dir)
    meta: dict = {}  # filled before the commit: the report rides in the commit record, so a reuse reads no other file
    with dropped_stage.writing(fp) as dropped_out:
        with stage.writing(fp, meta=meta) as kept_out:
            written = ray.get([_write.options(**options).remote(s, i, kept_out, dropped_out, schema)
                               for i, s in enumerate(states)])
            counts = pd.concat([c for c, _ in written] or [pd.DataFrame(columns=[*KEY, "status", "n"])],
                               ignore_index=True).astype({"n": np.int64})
            sample = pd.concat([s for _, s in written] or [pd.DataFrame(columns=[*KEY, "score", "teacher_score",
                                                                                 "status"])], ignore_index=True)
            report = _report(cfg, counts, names, step_seconds, time.perf_counter() - started, raw_record)
            meta["report"] = report
    run_dir.file(REPORT).write_json(report)
    from mdrec.filter.plot import score_plot

    run_dir.file(PLOT).write_bytes(score_plot(sample, names))
    log(f"filter: kept {report['kept']:,} of {report['raw']:,} synthetic interactions in "
        f"{time.perf_counter() - started:.1f}s ({stage.location.uri})")
    return report


def _domain_names(run_dir: RunDir) -> dict[int, str]:
    domains = run_dir.stage("prepared").location.join("domains.parquet").read_table().to_pandas()
    return dict(zip(domains["domain_idx"].astype(int), domains["domain"]))


def _report(cfg: MdrecConfig, counts: pd.DataFrame, domain_names: dict[int, str], step_seconds: dict, seconds: float,
            raw_record: dict) -> dict:
    counts = counts.groupby([*KEY, "status"], as_index=False)["n"].sum()
    names = {}
    per_key = []
    for (protocol, domain), rows in counts.groupby(KEY):
        by = dict(zip(rows["status"], rows["n"].astype(int)))
        per_key.append({"protocol": protocol, "domain": domain_names[int(domain)], "raw": int(sum(by.values())),
                        "kept": by.get("kept", 0),
                        "dropped": {s.name: by.get(s.name, 0) for s in cfg.filter.steps}})
    for s in cfg.filter.steps:
        names[s.name] = step_for(s).description
    total = int(counts["n"].sum())
    kept = int(counts.loc[counts["status"] == "kept", "n"].sum())
    return {
        "backend": raw_record["report"].get("backend"),
        "raw": total,
        "kept": kept,
        "steps": [{"name": s.name, "why": names[s.name], "params": s.model_dump(mode="json", exclude={"name"}),
                   "dropped": int(counts.loc[counts["status"] == s.name, "n"].sum()),
                   "seconds": step_seconds.get(s.name)} for s in cfg.filter.steps],
        "by_protocol_and_domain": per_key,
        "seconds": round(seconds, 2),
        "rows_per_second": round(total / seconds, 1) if seconds > 0 else None,
    }

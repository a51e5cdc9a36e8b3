"""The `prepare` stage on Ray Data.

  source ─▶ tag rows (missing values, other domains, items not in the catalog, ratings)
         ─▶ shard pass 1 by user: exact duplicates
         ─▶ optional k-core per domain (rounds of counts and filters)
         ─▶ ids: items (domain-contiguous ranges), users, domains; roles
         ─▶ shard pass 2 by user: warm and cold-start splits, sampled negatives per case
         ─▶ prepared/: interactions, train, cases, items, users, domains, stats.json

Every count of dropped rows is kept with its reason and domain. Small things (the catalog,
id maps, counts) live on the driver; everything sized by interactions stays in Ray Data.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data

from mdrec.config import MdrecConfig, Role, RoleMeasure
from mdrec.data.schema import Protocol, Source, Split
from mdrec.data.sources import LoadedSource, load_source, source_inputs
from mdrec.errors import ConfigError, DataError
from mdrec.prepare import shards
from mdrec.prepare.roles import assign_roles
from mdrec.tally import tally_counts
from mdrec.storage import Location, RunDir, describe_inputs

STAGE = "prepared"
FORMAT_VERSION = 2  # bump when the output layout or semantics change: old outputs are redone

Log = Callable[[str], None]


@dataclass
class PrepareResult:
    location: Location
    stats: dict
    reused: bool


# --------------------------------------------------------------------------- fingerprint


def fingerprint(cfg: MdrecConfig) -> str:
    """Everything the output depends on: config, seed, and the size and SHA-256 of each input file.

    The shard count is left out on purpose: outputs do not depend on it.
    """
    payload = {
        "format": FORMAT_VERSION,
        "seed": cfg.seed,
        "data": cfg.data.model_dump(mode="json"),
        "prepare": cfg.prepare.model_dump(mode="json", exclude={"num_shards"}),
        "inputs": describe_inputs(source_inputs(cfg.data.source)),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def run_prepare(cfg: MdrecConfig, run_dir: RunDir, *, force: bool = False, log: Log = lambda m: None) -> PrepareResult:
    stage = run_dir.stage(STAGE)
    fp = fingerprint(cfg)
    if not force and stage.is_current(fp):
        log(f"prepare: reusing committed output in {stage.location.uri}")
        return PrepareResult(stage.location, stage.location.join("stats.json").read_json(), reused=True)
    from mdrec.ray_session import ensure_ray

    ensure_ray(cfg.ray)
    started = time.perf_counter()
    with stage.writing(fp, meta={"config": cfg.model_dump(mode="json")}) as out:
        stats = _build(cfg, out, log)
    log(f"prepare: committed {stage.location.uri} in {time.perf_counter() - started:.1f}s")
    return PrepareResult(stage.location, stats, reused=False)


# --------------------------------------------------------------------------- helpers


def _get(value):
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def _unique(batch: pd.DataFrame, *, column: str) -> pd.DataFrame:
    return pd.DataFrame({column: batch[column].unique()})


def _nested(counts: pd.DataFrame, outer: str, inner: str) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    for o, i, n in zip(counts[outer], counts[inner], counts["n"]):
        result.setdefault(str(o), {})[str(i)] = int(n)
    return result


def _add_drops(dropped: dict, reason: str, per_domain: dict[str, int]) -> None:
    for domain, n in per_domain.items():
        if n:
            dropped.setdefault(reason, {})
            dropped[reason][domain] = dropped[reason].get(domain, 0) + int(n)


# --------------------------------------------------------------------------- catalog


def _collect_catalog(src: LoadedSource, keep: set[str] | None, dropped_catalog: dict) -> tuple[pd.DataFrame, set[str]]:
    """The catalog of the kept domains, deduplicated, and the names of every domain it lists."""
    items = src.items.to_pandas()
    if items.empty:
        raise DataError(f"{src.items_uri}: items table is empty")
    all_domains = set(items["domain"].dropna().unique())
    missing = items["item_id"].isna() | items["domain"].isna()
    if missing.any():
        _add_drops(dropped_catalog, "missing_value", items.loc[missing, "domain"].fillna("").value_counts().to_dict())
        items = items[~missing]
    if keep is not None:
        items = items[items["domain"].isin(keep)]
    # A duplicated item keeps its first row with a title.
    items = items.sort_values(["domain", "item_id", "title"], na_position="last", kind="stable")
    dup = items.duplicated(["domain", "item_id"], keep="first")
    _add_drops(dropped_catalog, "duplicate_item", items.loc[dup, "domain"].value_counts().to_dict())
    return items[~dup].reset_index(drop=True), all_domains


# --------------------------------------------------------------------------- batch functions (run on workers)


def _tag(df: pd.DataFrame, *, keys, keep_domains, min_rating, num_shards: int) -> pd.DataFrame:
    """Label each row with why it is dropped ('' = kept) and with its user shard."""
    keys = _get(keys)
    drop = np.full(len(df), "", dtype=object)
    missing = (
        df["user_id"].isna() | df["item_id"].isna() | df["domain"].isna() | df["ts"].isna()
        | (df["user_id"].fillna("") == "") | (df["item_id"].fillna("") == "")
    ).to_numpy(dtype=bool, copy=True)
    drop[missing] = "missing_value"
    df["domain"] = df["domain"].fillna("")
    if keep_domains is not None:
        drop[(drop == "") & ~df["domain"].isin(keep_domains).to_numpy()] = "other_domain"
    in_catalog = shards.catalog_key(df["domain"], df["item_id"].fillna("")).isin(keys).to_numpy()
    drop[(drop == "") & ~in_catalog] = "item_not_in_catalog"
    if min_rating is not None:
        drop[(drop == "") & ~(df["rating"] >= min_rating).to_numpy()] = "below_min_rating"
    df["_drop"] = drop
    df["_shard"] = shards.shard_of(df["user_id"].fillna(""), num_shards)
    return df


def _kept(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.equal(batch["_drop"], "")).drop_columns(["_drop"])


def _dedupe(df: pd.DataFrame) -> pd.DataFrame:
    return shards.mark_duplicates(df)


def _not_duplicate(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.invert(batch["_dup"])).drop_columns(["_dup"])


def _drop_keys(df: pd.DataFrame, *, users, items) -> pd.DataFrame:
    users, items = _get(users), _get(items)
    gone = (df["domain"] + shards.KEY_SEP + df["user_id"]).isin(users) | shards.catalog_key(
        df["domain"], df["item_id"]
    ).isin(items)
    return df[~gone.to_numpy()]


NEGATIVES_TYPE = pa.list_(pa.int64())


def _list_array(values: np.ndarray) -> pa.Array:
    """Object array of int arrays (or None) -> Arrow list<int64>, without going through Python ints."""
    present = np.array([v is not None for v in values], dtype=bool)
    lengths = np.array([len(v) if v is not None else 0 for v in values], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate([v for v in values if v is not None]) if present.any() else np.zeros(0)
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(flat.astype(np.int64)), type=NEGATIVES_TYPE, mask=pa.array(~present)
    )


def _split(df: pd.DataFrame, *, plan) -> pa.Table:
    out = shards.split_shard(df, _get(plan))
    negatives = _list_array(out.pop("negatives").to_numpy())
    table = pa.Table.from_pandas(out.drop(columns=["_shard"]), preserve_index=False)
    # An all-None column would come out as Arrow's null type; every block must agree on string.
    table = table.set_column(table.schema.get_field_index("cold_case"), "cold_case", table["cold_case"].cast(pa.string()))
    return table.append_column("negatives", negatives)


INTERACTION_COLUMNS = [
    "user_idx", "item_idx", "domain_idx", "user_id", "item_id", "domain", "ts", "rating", "split", "held_out",
]
CASE_COLUMNS = ["case_id", "protocol", "split", "user_idx", "domain_idx", "item_idx", "ts", "negatives"]


def _train_rows(batch: pa.Table) -> pa.Table:
    rows = batch.filter(pc.equal(batch["split"], Split.train.value))
    n = rows.num_rows
    return pa.table(
        {
            "user_idx": rows["user_idx"],
            "item_idx": rows["item_idx"],
            "domain_idx": rows["domain_idx"],
            "ts": rows["ts"],
            "label": pa.array(np.ones(n, dtype=np.int8)),
            "source": pa.array([Source.real.value] * n, pa.string()),
            "weight": pa.array(np.ones(n, dtype=np.float32)),
            # The cold-start protocol trains on the rows with held_out = false.
            "held_out": rows["held_out"],
        }
    )


def _case_rows(batch: pa.Table, *, n_domains: int) -> pa.Table:
    """One row per case: warm cases (valid/test rows) and cold-start cases (latest held-out rows)."""
    parts = []
    for protocol, split_col in ((Protocol.warm, "split"), (Protocol.cold_start, "cold_case")):
        split = batch[split_col]
        rows = batch.filter(pc.is_in(split, pa.array([Split.valid.value, Split.test.value])))
        split = rows[split_col]
        ids = shards.case_id(
            rows["user_idx"].to_numpy(), rows["domain_idx"].to_numpy(), n_domains,
            pc.equal(split, Split.test.value).to_numpy(zero_copy_only=False), protocol is Protocol.cold_start,
        )
        parts.append(pa.table({
            "case_id": pa.array(ids, pa.int64()),
            "protocol": pa.array([protocol.value] * rows.num_rows, pa.string()),
            "split": split.cast(pa.string()),
            **{c: rows[c] for c in CASE_COLUMNS[3:]},
        }))
    return pa.concat_tables(parts)


# --------------------------------------------------------------------------- the stage


def _resolve_domains(
    cfg: MdrecConfig, src: LoadedSource, kept: dict[str, int], read: dict[str, int], dropped: dict, known: set[str]
) -> list[str]:
    """The ordered domain list, after checking every domain the config names."""

    def require_rows(d: str) -> None:
        if kept.get(d):
            return
        if not read.get(d):
            raise DataError(f"domain '{d}': no interactions in {src.interactions_uri}")
        why = ", ".join(f"{reason}={by[d]:,}" for reason, by in sorted(dropped.items()) if by.get(d))
        raise DataError(f"domain '{d}': none of its {read[d]:,} interactions is left after cleaning ({why})")

    named = cfg.data.domains
    if named is not None:
        for d in named:
            if d not in known:
                raise ConfigError(f"data.domains: unknown domain '{d}' (the data has: {', '.join(sorted(known))})")
            require_rows(d)
        domains = list(named)
    else:
        for d in src.declared_domains or []:
            require_rows(d)
        domains = sorted(d for d, n in kept.items() if n)
    if not domains:
        raise DataError(f"{src.interactions_uri}: no interactions left to prepare")
    for key, names in (("prepare.roles", cfg.prepare.roles), ("prepare.cold_start.domains", cfg.prepare.cold_start.domains or [])):
        for d in names:
            if d not in domains:
                raise ConfigError(f"{key}: unknown domain '{d}' (domains: {', '.join(domains)})")
    return domains


def _kcore(ds: ray.data.Dataset, k: int, max_rounds: int, log: Log) -> ray.data.Dataset:
    for round_ in range(1, max_rounds + 1):
        users = tally_counts(ds, ["domain", "user_id"])
        items = tally_counts(ds, ["domain", "item_id"])
        bad_users = users[users["n"] < k]
        bad_items = items[items["n"] < k]
        if bad_users.empty and bad_items.empty:
            return ds
        log(f"prepare: k-core round {round_}: dropping {len(bad_users)} user-domains, {len(bad_items)} items below {k}")
        ds = ds.map_batches(
            _drop_keys,
            batch_format="pandas",
            fn_kwargs=dict(
                users=ray.put(pd.Index(bad_users["domain"] + shards.KEY_SEP + bad_users["user_id"])),
                items=ray.put(pd.Index(shards.catalog_key(bad_items["domain"], bad_items["item_id"]))),
            ),
        ).materialize()
    raise DataError(f"prepare.kcore={k}: did not converge in {max_rounds} rounds (raise prepare.kcore_max_rounds)")


class _Progress:
    """Numbered step messages with the time since the stage started."""

    STEPS = 6

    def __init__(self, log: Log):
        self.log, self.step, self.t0 = log, 0, time.perf_counter()

    def __call__(self, message: str) -> None:
        self.step += 1
        self.log(f"prepare [{self.step}/{self.STEPS}, {time.perf_counter() - self.t0:.0f}s]: {message}")


def _tag_rows(cfg: MdrecConfig, src: LoadedSource, catalog: pd.DataFrame, keep, num_shards: int):
    """Every row labelled with its drop reason and user shard (materialized), and the counts."""
    tagged = src.interactions.map_batches(
        _tag,
        batch_format="pandas",
        fn_kwargs=dict(
            keys=ray.put(pd.Index(shards.catalog_key(catalog["domain"], catalog["item_id"]))),
            keep_domains=keep,
            min_rating=getattr(cfg.data.source, "min_rating", None),
            num_shards=num_shards,
        ),
    ).materialize()
    counts = tally_counts(tagged, ["domain", "_drop"])
    if int(counts["n"].sum()) == 0:
        raise DataError(f"{src.interactions_uri}: interactions table is empty")
    return tagged, counts


def _drop_duplicates(tagged: ray.data.Dataset, num_shards: int, dropped: dict) -> ray.data.Dataset:
    deduped = (
        tagged.map_batches(_kept, batch_format="pyarrow")
        .groupby("_shard", num_partitions=num_shards)
        .map_groups(_dedupe, batch_format="pandas")
        .materialize()
    )
    counts = tally_counts(deduped, ["domain", "_dup"])
    dups = counts[counts["_dup"].astype(bool)]
    _add_drops(dropped, "duplicate", dict(zip(dups["domain"], dups["n"])))
    return deduped.map_batches(_not_duplicate, batch_format="pyarrow").materialize()


def _apply_kcore(clean: ray.data.Dataset, p, dropped: dict, log: Log) -> ray.data.Dataset:
    before = tally_counts(clean, ["domain"]).set_index("domain")["n"]
    clean = _kcore(clean, p.kcore, p.kcore_max_rounds, log)
    after = tally_counts(clean, ["domain"]).set_index("domain")["n"].reindex(before.index, fill_value=0)
    _add_drops(dropped, "kcore", (before - after).to_dict())
    return clean


def _index_items(item_counts: pd.DataFrame, catalog: pd.DataFrame, domains: list[str]):
    """Items with at least one interaction, ordered by domain then id: each domain a contiguous range."""
    item_counts = item_counts.assign(domain_idx=pd.Index(domains).get_indexer(item_counts["domain"]))
    item_counts = item_counts[item_counts["domain_idx"] >= 0].sort_values(["domain_idx", "item_id"], ignore_index=True)
    items = item_counts.merge(catalog[["domain", "item_id", "title"]], on=["domain", "item_id"], how="left")
    items.insert(0, "item_idx", np.arange(len(items), dtype=np.int64))
    ranges = {}
    for d_idx in range(len(domains)):
        idx = items.loc[items["domain_idx"] == d_idx, "item_idx"]
        ranges[d_idx] = (int(idx.min()), int(idx.max()) + 1)
    return items, ranges


def _write_outputs(out: Location, final: ray.data.Dataset, items, users: pd.Index, domains, roles, ranges) -> None:
    final.select_columns(INTERACTION_COLUMNS).write_parquet(out.join("interactions").path, filesystem=out.fs)
    final.map_batches(_train_rows, batch_format="pyarrow").write_parquet(out.join("train").path, filesystem=out.fs)
    final.map_batches(_case_rows, batch_format="pyarrow", fn_kwargs=dict(n_domains=len(domains))).write_parquet(
        out.join("cases").path, filesystem=out.fs
    )
    out.join("items.parquet").write_table(
        pa.Table.from_pandas(items[["item_idx", "item_id", "domain", "domain_idx", "title"]], preserve_index=False)
    )
    out.join("users.parquet").write_table(
        pa.table({"user_idx": np.arange(len(users), dtype=np.int64), "user_id": pa.array(users.to_numpy(), pa.string())})
    )
    out.join("domains.parquet").write_table(
        pa.table(
            {
                "domain_idx": np.arange(len(domains), dtype=np.int64),
                "domain": domains,
                "role": [roles[d].value for d in domains],
                "item_idx_start": [ranges[i][0] for i in range(len(domains))],
                "item_idx_end": [ranges[i][1] for i in range(len(domains))],
            }
        )
    )


def _build(cfg: MdrecConfig, out: Location, log: Log) -> dict:
    from mdrec.ray_session import cluster_cpus

    p = cfg.prepare
    progress = _Progress(log)
    num_shards = p.num_shards or max(2, 2 * cluster_cpus())

    progress(f"reading the {cfg.data.source.type} source and its catalog")
    src = load_source(cfg.data.source, cfg.seed)
    keep = set(cfg.data.domains) if cfg.data.domains is not None else None
    dropped, dropped_catalog = {}, {}
    catalog, catalog_domains = _collect_catalog(src, keep, dropped_catalog)
    for reason, per_domain in src.dropped.items():
        _add_drops(dropped, reason, per_domain)

    progress("checking rows: missing values, domains, catalog, ratings")
    tagged, tag_counts = _tag_rows(cfg, src, catalog, keep, num_shards)
    for reason, per_domain in _nested(tag_counts[tag_counts["_drop"] != ""], "_drop", "domain").items():
        _add_drops(dropped, reason, per_domain)
    # Domain names the data knows, to tell an unknown domain from one without rows.
    known = catalog_domains | set(tag_counts["domain"]) | set(src.declared_domains or [])

    progress(f"removing exact duplicates in {num_shards} user shards" + (f", then {p.kcore}-core" if p.kcore else ""))
    clean = _drop_duplicates(tagged, num_shards, dropped)
    if p.kcore > 0:
        clean = _apply_kcore(clean, p, dropped, log)

    progress("indexing domains, items and users")
    item_counts = tally_counts(clean, ["domain", "item_id"])
    kept_rows = {str(d): int(n) for d, n in item_counts.groupby("domain")["n"].sum().items()}
    read_rows = {str(d): int(n) for d, n in tag_counts.groupby("domain")["n"].sum().items()}
    domains = _resolve_domains(cfg, src, kept_rows, read_rows, dropped, known)
    items, ranges = _index_items(item_counts, catalog, domains)
    user_ids = clean.map_batches(_unique, batch_format="pandas", fn_kwargs=dict(column="user_id")).to_pandas()
    users = pd.Index(np.unique(user_ids["user_id"].to_numpy(dtype=object)))
    measure = {d: float(kept_rows[d]) for d in domains}
    if p.role_measure is RoleMeasure.density:
        users_of = tally_counts(clean, ["domain", "user_id"]).groupby("domain").size().to_dict()
        measure = {d: kept_rows[d] / (users_of[d] * (ranges[i][1] - ranges[i][0])) for i, d in enumerate(domains)}
    roles = assign_roles(measure, p.roles, p.cold_ratio)

    cold_start_domains = p.cold_start.domains
    if cold_start_domains is None:
        cold_start_domains = [d for d in domains if roles[d] is Role.cold]
    plan = shards.SplitPlan(
        seed=cfg.seed,
        users=users,
        items=pd.Index(shards.catalog_key(items["domain"], items["item_id"])),
        domains=pd.Index(domains),
        item_ranges=ranges,
        cold_start_domains=frozenset(cold_start_domains),
        cold_start_fraction=p.cold_start.fraction,
        min_interactions_for_eval=p.min_interactions_for_eval,
        num_negatives=p.num_negatives,
    )
    progress(f"splitting {len(users):,} users, drawing {p.num_negatives} negatives per case")
    final = (
        clean.groupby("_shard", num_partitions=num_shards)
        .map_groups(_split, batch_format="pandas", fn_kwargs=dict(plan=ray.put(plan)))
        .materialize()
    )
    tally = tally_counts(final, ["domain", "split", "held_out", "cold_case"], sums=("user_first",))
    per_domain = tally.groupby("domain")[["n", "user_first"]].sum().rename(columns={"user_first": "users"})

    progress("writing interactions, train, cases, items, users, domains, stats")
    _write_outputs(out, final, items, users, domains, roles, ranges)
    stats = _stats(cfg, domains, roles, per_domain, items, catalog, tally, dropped, dropped_catalog,
                   int(tag_counts["n"].sum()), len(users), ranges, time.perf_counter() - progress.t0)
    out.join("stats.json").write_json(stats)
    return stats


def _protocol_counts(tally: pd.DataFrame, domain: str) -> tuple[dict, dict]:
    """Warm split sizes and cold-start sizes of one domain, from the split-pass tally."""
    t = tally[tally["domain"] == domain]
    warm = {s.value: int(t.loc[t["split"] == s.value, "n"].sum()) for s in Split}
    cold = {
        "held_out_users": int(t.loc[t["cold_case"].notna(), "n"].sum()),
        "held_out_interactions": int(t.loc[t["held_out"].astype(bool), "n"].sum()),
        "valid": int(t.loc[t["cold_case"] == Split.valid.value, "n"].sum()),
        "test": int(t.loc[t["cold_case"] == Split.test.value, "n"].sum()),
    }
    return warm, cold


def _stats(cfg, domains, roles, per_domain, items, catalog, tally, dropped, dropped_catalog,
           rows_read, n_users, ranges, seconds) -> dict:
    per = {}
    for d_idx, d in enumerate(domains):
        n_users_d = int(per_domain.loc[d, "users"])
        d_items = items[items["domain_idx"] == d_idx]
        n_inter = int(per_domain.loc[d, "n"])
        warm, cold = _protocol_counts(tally, d)
        per[d] = {
            "role": roles[d].value,
            "users": n_users_d,
            "items": len(d_items),
            "interactions": n_inter,
            "density": n_inter / (n_users_d * len(d_items)),
            "titles_missing": int(d_items["title"].isna().sum()),
            "catalog_items": int((catalog["domain"] == d).sum()),
            "item_idx_range": list(ranges[d_idx]),
            "splits": warm,
            "cold_start": cold,
            "dropped": {reason: int(by_domain.get(d, 0)) for reason, by_domain in sorted(dropped.items())},
        }
    total_dropped = {reason: int(sum(v.values())) for reason, v in sorted(dropped.items())}
    time_order = _time_order(cfg)
    return {
        "domains": per,
        "totals": {
            "users": n_users,
            "items": int(len(items)),
            "interactions": int(sum(v["interactions"] for v in per.values())),
            "rows_read": rows_read,
            "dropped": total_dropped,
            "dropped_catalog": {r: int(sum(v.values())) for r, v in sorted(dropped_catalog.items())},
        },
        "time_order": time_order,
        "seed": cfg.seed,
        "num_negatives": cfg.prepare.num_negatives,
        "kcore": cfg.prepare.kcore,
        "seconds": round(seconds, 2),
    }


def _time_order(cfg: MdrecConfig) -> str:
    src = cfg.data.source
    if src.type == "table":
        return "seq" if src.interaction_columns.seq else "timestamp"
    return "timestamp"

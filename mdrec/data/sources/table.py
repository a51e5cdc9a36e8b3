"""Flat interaction and item tables, Parquet or CSV, local or on S3, with mappable columns.

Columns and types are checked on the driver from the files' schema before any Ray work, so a
missing or mistyped column fails at once with the file and column named.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import ray.data

from mdrec.config import TableFormat, TableSourceConfig
from mdrec.data.schema import ColumnKind, check_columns, conform_interactions, conform_items
from mdrec.data.sources import LoadedSource
from mdrec.errors import ConfigError, DataError
from mdrec.storage import Location, resolve

_EXTENSIONS = {
    ".parquet": TableFormat.parquet,
    ".pq": TableFormat.parquet,
    ".csv": TableFormat.csv,
    ".csv.gz": TableFormat.csv,
}


def inputs(cfg: TableSourceConfig) -> list[str]:
    return [cfg.interactions, cfg.items]


def _files(uri: str) -> tuple[Location, list[str]]:
    loc = resolve(uri, must_exist=True)
    files = [f.path for f in loc.files()]
    if not files:
        raise DataError(f"{uri}: no data files found")
    return loc, files


def _format(cfg: TableSourceConfig, uri: str, files: list[str]) -> TableFormat:
    if cfg.format is not None:
        return cfg.format
    for ext, fmt in _EXTENSIONS.items():
        if files[0].lower().endswith(ext):
            return fmt
    raise DataError(f"{uri}: cannot tell the file format from '{files[0]}'; set data.source.format")


def _schema(loc: Location, files: list[str], fmt: TableFormat, uri: str) -> pa.Schema:
    try:
        return pads.dataset(files, filesystem=loc.fs, format=fmt.value).schema
    except (pa.ArrowInvalid, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{uri}: cannot read as {fmt.value} ({first})") from None


def _read(loc: Location, files: list[str], fmt: TableFormat, schema: pa.Schema, columns: list[str]) -> ray.data.Dataset:
    columns = list(dict.fromkeys(columns))
    if fmt is TableFormat.parquet:
        return ray.data.read_parquet(files, filesystem=loc.fs, columns=columns)
    # The types seen by the driver are imposed on every block, so blocks agree on a schema.
    convert = pacsv.ConvertOptions(
        column_types={c: schema.field(c).type for c in columns}, include_columns=columns
    )
    return ray.data.read_csv(files, filesystem=loc.fs, convert_options=convert)


def load(cfg: TableSourceConfig, seed: int) -> LoadedSource:
    icols, tcols = cfg.interaction_columns, cfg.item_columns
    if (icols.domain is None or tcols.domain is None) and cfg.domain is None:
        raise ConfigError("data.source.domain: required when the tables have no domain column")

    inter_loc, inter_files = _files(cfg.interactions)
    fmt = _format(cfg, cfg.interactions, inter_files)
    inter_schema = _schema(inter_loc, inter_files, fmt, cfg.interactions)
    wanted = {"user_id": (icols.user_id, ColumnKind.key), "item_id": (icols.item_id, ColumnKind.key)}
    if icols.domain:
        wanted["domain"] = (icols.domain, ColumnKind.key)
    if icols.timestamp:
        wanted["timestamp"] = (icols.timestamp, ColumnKind.time)
    if icols.seq:
        wanted["seq"] = (icols.seq, ColumnKind.order)
    if icols.rating:
        wanted["rating"] = (icols.rating, ColumnKind.number)
    check_columns(inter_schema, wanted, cfg.interactions)

    item_loc, item_files = _files(cfg.items)
    item_fmt = _format(cfg, cfg.items, item_files)
    item_schema = _schema(item_loc, item_files, item_fmt, cfg.items)
    item_wanted = {"item_id": (tcols.item_id, ColumnKind.key)}
    if tcols.domain:
        item_wanted["domain"] = (tcols.domain, ColumnKind.key)
    if tcols.title:
        item_wanted["title"] = (tcols.title, ColumnKind.text)
    check_columns(item_schema, item_wanted, cfg.items)

    interactions = _read(inter_loc, inter_files, fmt, inter_schema, [c for c, _ in wanted.values()])
    interactions = interactions.map_batches(
        conform_interactions,
        batch_format="pyarrow",
        fn_kwargs=dict(
            user_id=icols.user_id,
            item_id=icols.item_id,
            domain=icols.domain,
            timestamp=icols.timestamp,
            seq=icols.seq,
            rating=icols.rating,
            domain_value=cfg.domain,
            timestamp_unit=cfg.timestamp_unit.value,
        ),
    )
    items = _read(item_loc, item_files, item_fmt, item_schema, [c for c, _ in item_wanted.values()])
    items = items.map_batches(
        conform_items,
        batch_format="pyarrow",
        fn_kwargs=dict(item_id=tcols.item_id, domain=tcols.domain, title=tcols.title, domain_value=cfg.domain),
    )
    return LoadedSource(interactions, items, cfg.interactions, cfg.items)

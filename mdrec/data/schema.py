"""The data contracts: canonical Arrow schemas, and conversion of source tables into them.

Every source yields interactions as (user_id, item_id, domain, ts, rating) and items as
(item_id, domain, title). `ts` is the time order: epoch seconds when the source has
timestamps, the position in the user's history when it has only a sequence.
"""

from __future__ import annotations

import enum

import pyarrow as pa
import pyarrow.compute as pc

from mdrec.errors import DataError

INTERACTIONS = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("ts", pa.int64()),
        pa.field("rating", pa.float32()),
    ]
)

ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("title", pa.string()),
    ]
)


class Split(str, enum.Enum):
    """Where an interaction goes under a protocol. Cases are scored against sampled negatives."""

    train = "train"
    valid = "valid"  # warm: second-to-last interaction of a user in a domain; cold-start: validation users
    test = "test"  # warm: last interaction of a user in a domain; cold-start: test users


class Source(str, enum.Enum):
    """Where a training row comes from: the `source` column of training rows."""

    real = "real"
    synthetic = "synthetic"  # written by a generation backend; never in validation or test


class Protocol(str, enum.Enum):
    """warm: leave-last-out for every user. cold_start: held-out users lose a cold domain from training."""

    warm = "warm"
    cold_start = "cold_start"


class ColumnKind(enum.Enum):
    """What a contract column accepts from a source, and what it becomes."""

    key = "string or integer"  # ids and domain names: cast to string
    text = "string"
    order = "integer"  # sequence positions
    time = "integer or timestamp"
    number = "number"


def _type_ok(t: pa.DataType, kind: ColumnKind) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_null(t):
        return kind in (ColumnKind.text, ColumnKind.number)
    string = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
    integer = pa.types.is_integer(t)
    if kind is ColumnKind.key:
        return string or integer
    if kind is ColumnKind.text:
        return string
    if kind is ColumnKind.order:
        return integer
    if kind is ColumnKind.time:
        return integer or pa.types.is_timestamp(t) or pa.types.is_date(t)
    return integer or pa.types.is_floating(t) or pa.types.is_decimal(t)


def check_columns(schema: pa.Schema, wanted: dict[str, tuple[str, ColumnKind]], where: str) -> None:
    """Raise a DataError naming the file and column when a mapped column is missing or mistyped.

    `wanted` maps contract column -> (source column, kind).
    """
    for contract, (column, kind) in wanted.items():
        if column not in schema.names:
            hint = f" (mapped from '{contract}')" if column != contract else ""
            raise DataError(f"{where}: missing column '{column}'{hint}; columns are {', '.join(schema.names)}")
        t = schema.field(column).type
        if not _type_ok(t, kind):
            raise DataError(f"{where}: column '{column}' has type {_type_name(t)}, expected {kind.value}")


def _type_name(t: pa.DataType) -> str:
    """Arrow's type name, with its string storage variants shown as plain 'string'."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    return str(t)


def _as_string(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col.cast(pa.string())


def _as_seconds(col, unit: str) -> pa.Array:
    t = col.type
    if pa.types.is_timestamp(t):
        # Sub-second precision is dropped on purpose: the order key is whole seconds.
        return pc.cast(col, pa.timestamp("s", tz=t.tz), safe=False).cast(pa.int64())
    if pa.types.is_date(t):
        return col.cast(pa.date32()).cast(pa.timestamp("s")).cast(pa.int64())
    col = col.cast(pa.int64())
    return pc.divide(col, 1000) if unit == "ms" else col


def _blank_to_null(col: pa.Array) -> pa.Array:
    """Empty or whitespace-only titles are missing titles."""
    stripped = pc.utf8_trim_whitespace(col)
    return pc.if_else(pc.equal(stripped, ""), pa.scalar(None, pa.string()), col)


def conform_interactions(
    table: pa.Table,
    *,
    user_id: str,
    item_id: str,
    domain: str | None,
    timestamp: str | None,
    seq: str | None,
    rating: str | None,
    domain_value: str | None = None,
    timestamp_unit: str = "s",
) -> pa.Table:
    """Select and cast the mapped columns into the INTERACTIONS schema."""
    n = table.num_rows
    if domain is not None:
        dom = _as_string(table[domain])
    else:
        dom = pa.array([domain_value] * n, pa.string())
    ts = _as_seconds(table[timestamp], timestamp_unit) if timestamp else table[seq].cast(pa.int64())
    rate = table[rating].cast(pa.float32()) if rating else pa.nulls(n, pa.float32())
    return pa.table(
        [_as_string(table[user_id]), _as_string(table[item_id]), dom, ts, rate], schema=INTERACTIONS
    )


def conform_items(
    table: pa.Table, *, item_id: str, domain: str | None, title: str | None, domain_value: str | None = None
) -> pa.Table:
    """Select and cast the mapped columns into the ITEMS schema; blank titles become null."""
    n = table.num_rows
    dom = _as_string(table[domain]) if domain is not None else pa.array([domain_value] * n, pa.string())
    if title is not None:
        titles = _blank_to_null(_as_string(table[title]))
    else:
        titles = pa.nulls(n, pa.string())
    return pa.table([_as_string(table[item_id]), dom, titles], schema=ITEMS)

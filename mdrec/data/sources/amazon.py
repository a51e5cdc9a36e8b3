"""Amazon Review Data raw files on Ray Data: one category's reviews and metadata per domain.

Lines are read as text (gzip is recognised from the `.gz` extension), parsed in parallel, and
malformed lines are skipped and counted per file. The load fails only when a file's share of
malformed lines is above `max_error_rate`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from mdrec.config import AmazonRelease, AmazonSourceConfig
from mdrec.data.sources import LoadedSource
from mdrec.data.sources.amazon_format import metadata_table, reviews_table
from mdrec.errors import DataError
from mdrec.storage import resolve

_BAD = "_bad"


def inputs(cfg: AmazonSourceConfig) -> list[str]:
    return [p for files in cfg.domains.values() for p in (files.reviews, files.metadata)]


def _parse_batch(batch: pa.Table, *, parse, domain: str, release: AmazonRelease) -> pa.Table:
    table, n_bad = parse(batch["text"].to_pylist(), domain, release)
    table = table.append_column(_BAD, pa.array([False] * table.num_rows))
    if n_bad:
        # One placeholder row per malformed line, so the driver can count them per file.
        bad = pa.table({name: pa.nulls(n_bad, field.type) for name, field in zip(table.schema.names, table.schema)})
        bad = bad.set_column(bad.schema.get_field_index(_BAD), _BAD, pa.array([True] * n_bad))
        table = pa.concat_tables([table, bad])
    return table


def _read_lines(uri: str, parse, domain: str, cfg: AmazonSourceConfig) -> tuple[ray.data.Dataset, int]:
    """Parsed rows of one file (materialized) and the number of malformed lines in it."""
    loc = resolve(uri, must_exist=True)
    files = [f.path for f in loc.files()]
    if not files:
        raise DataError(f"{uri}: no data files found")
    lines = ray.data.read_text(files, filesystem=loc.fs)
    parsed = lines.map_batches(
        _parse_batch,
        batch_format="pyarrow",
        fn_kwargs=dict(parse=parse, domain=domain, release=cfg.release),
    ).materialize()
    total = parsed.count()
    if total == 0:
        raise DataError(f"{uri}: file is empty (domain '{domain}')")
    n_bad = int(parsed.sum(_BAD) or 0)
    if n_bad / total > cfg.max_error_rate:
        raise DataError(
            f"{uri}: {n_bad} of {total} lines are malformed ({n_bad / total:.1%}),"
            f" above data.source.max_error_rate={cfg.max_error_rate}"
        )
    good = parsed.map_batches(_good_rows, batch_format="pyarrow")
    return good, n_bad


def _good_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.invert(batch[_BAD])).drop_columns([_BAD])


def load(cfg: AmazonSourceConfig, seed: int) -> LoadedSource:
    interactions, items = [], []
    dropped: dict[str, dict[str, int]] = {"malformed_review_line": {}, "malformed_metadata_line": {}}
    for domain, files in cfg.domains.items():
        reviews, bad_reviews = _read_lines(files.reviews, reviews_table, domain, cfg)
        meta, bad_meta = _read_lines(files.metadata, metadata_table, domain, cfg)
        interactions.append(reviews)
        items.append(meta)
        dropped["malformed_review_line"][domain] = bad_reviews
        dropped["malformed_metadata_line"][domain] = bad_meta
    union = lambda parts: parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])  # noqa: E731
    names = ", ".join(cfg.domains)
    return LoadedSource(
        union(interactions),
        union(items),
        interactions_uri=f"Amazon reviews ({names})",
        items_uri=f"Amazon metadata ({names})",
        dropped=dropped,
        declared_domains=list(cfg.domains),
    )

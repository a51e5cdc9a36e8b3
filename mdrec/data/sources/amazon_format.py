"""Parsing of Amazon Review Data lines (2014, 2018, 2023 releases), without Ray.

2014/2018 reviews: {"reviewerID", "asin", "overall", "unixReviewTime" (seconds)}.
2023 reviews:      {"user_id", "parent_asin", "rating", "timestamp" (milliseconds)}.
2014 metadata is written as Python literals (single quotes), 2018 and 2023 as JSON;
2023 items are keyed by parent_asin. A line that cannot be read is reported as None so the
caller can count it; it never stops the job by itself.
"""

from __future__ import annotations

import ast
import json
from typing import Any

import pyarrow as pa

from mdrec.config import AmazonRelease
from mdrec.data.schema import INTERACTIONS, ITEMS


def _load(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        pass
    try:
        # 2014 metadata: one Python dict literal per line. literal_eval never runs code.
        return ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _is_2023(rec: dict, release: AmazonRelease) -> bool:
    if release is AmazonRelease.auto:
        return "parent_asin" in rec or "user_id" in rec
    return release is AmazonRelease.r2023


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def parse_review(line: str, release: AmazonRelease = AmazonRelease.auto) -> tuple[str, str, int, float] | None:
    """(user_id, item_id, time in seconds, rating), or None for a malformed line."""
    rec = _load(line)
    if not isinstance(rec, dict):
        return None
    if _is_2023(rec, release):
        user, item = _text(rec.get("user_id")), _text(rec.get("parent_asin") or rec.get("asin"))
        t, rating = _number(rec.get("timestamp")), _number(rec.get("rating"))
        t = None if t is None else t / 1000.0
    else:
        user, item = _text(rec.get("reviewerID")), _text(rec.get("asin"))
        t, rating = _number(rec.get("unixReviewTime")), _number(rec.get("overall"))
    if user is None or item is None or t is None or rating is None:
        return None
    return user, item, int(t), rating


def parse_metadata(line: str, release: AmazonRelease = AmazonRelease.auto) -> tuple[str, str | None] | None:
    """(item_id, title or None), or None for a malformed line."""
    rec = _load(line)
    if not isinstance(rec, dict):
        return None
    item = _text(rec.get("parent_asin")) if _is_2023(rec, release) else None
    item = item or _text(rec.get("asin"))
    if item is None:
        return None
    title = rec.get("title")
    return item, (title.strip() or None) if isinstance(title, str) else None


def reviews_table(lines: list[str], domain: str, release: AmazonRelease) -> tuple[pa.Table, int]:
    """Parse lines into the INTERACTIONS schema; also return the number of malformed lines."""
    parsed = [parse_review(line, release) for line in lines]
    good = [p for p in parsed if p is not None]
    table = pa.table(
        [
            pa.array([g[0] for g in good], pa.string()),
            pa.array([g[1] for g in good], pa.string()),
            pa.array([domain] * len(good), pa.string()),
            pa.array([g[2] for g in good], pa.int64()),
            pa.array([g[3] for g in good], pa.float32()),
        ],
        schema=INTERACTIONS,
    )
    return table, len(parsed) - len(good)


def metadata_table(lines: list[str], domain: str, release: AmazonRelease) -> tuple[pa.Table, int]:
    """Parse lines into the ITEMS schema; also return the number of malformed lines."""
    parsed = [parse_metadata(line, release) for line in lines]
    good = [p for p in parsed if p is not None]
    table = pa.table(
        [
            pa.array([g[0] for g in good], pa.string()),
            pa.array([domain] * len(good), pa.string()),
            pa.array([g[1] for g in good], pa.string()),
        ],
        schema=ITEMS,
    )
    return table, len(parsed) - len(good)

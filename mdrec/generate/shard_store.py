"""Synthetic rows written one shard of users at a time, so a killed run resumes where it stopped.

Each finished shard is one Parquet file, written whole (atomic rename locally, a single PUT on
S3), under `<run-dir>/.generate/<fingerprint>/`. Its problem and token counts ride in the file's
metadata, so the report after a resume counts every shard exactly once. A shard file either
exists complete or not at all; a re-run skips the shards that exist.
"""

from __future__ import annotations

import io
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq

from mdrec.storage import Location

SHARD_NAME = re.compile(r"^shard-(\d{5})\.parquet$")
META_KEY = b"mdrec.generate"


class ShardStore:
    def __init__(self, location: Location):
        self.location = location

    @staticmethod
    def name(shard: int) -> str:
        return f"shard-{shard:05d}.parquet"

    def done(self) -> set[int]:
        if not self.location.exists():
            return set()
        return {int(m.group(1)) for f in self.location.files() if (m := SHARD_NAME.match(f.base_name))}

    def write(self, shard: int, rows: pa.Table, meta: dict) -> None:
        schema = rows.schema.with_metadata({META_KEY: json.dumps(meta).encode()})
        buf = io.BytesIO()
        pq.write_table(rows.cast(schema), buf)
        self.location.join(self.name(shard)).write_bytes(buf.getvalue())

    def meta(self, shard: int) -> dict:
        loc = self.location.join(self.name(shard))
        with loc.fs.open_input_file(loc.path) as f:
            schema = pq.read_schema(f)
        return json.loads(schema.metadata[META_KEY])

    def files(self) -> list[Location]:
        return [self.location.join(self.name(s)) for s in sorted(self.done())]

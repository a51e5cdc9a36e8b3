"""Run directories and input locations on local disk or S3, through pyarrow.fs.

A stage writes its whole output into a staging folder, then commits it: the old output is
replaced and a `_COMMITTED.json` marker is written last. A stage counts as done only when the
marker exists, names the same fingerprint and every file it lists is there with its size, so
a killed job never leaves a table that a re-run would take as done, and a failed attempt never
touches what an earlier attempt committed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mdrec import __version__
from mdrec.errors import DataError, StorageError

MARKER = "_COMMITTED.json"
STAGING = ".staging"
# Attempts per S3 request, unless AWS_MAX_ATTEMPTS (or max_attempts in ~/.aws/config) says
# otherwise: the SDKs' default of 3 is thin for a job of thousands of requests on a throttled prefix.
# pyarrow gets the AWS SDK's "default" strategy (exponential backoff from 25 ms, 5xx and throttling
# retried), not its "standard" one: through pyarrow, standard's retry quota is spent and never
# refunded, so a filesystem stops retrying for good after ~100 retries (measured behind a proxy
# that fails 1 request in 10 twice: standard failed after 98 errors, default retried 450 of 450).
DEFAULT_S3_ATTEMPTS = 10


# --------------------------------------------------------------------------- S3


@functools.lru_cache(maxsize=1)
def _s3_settings() -> dict:
    """Endpoint, region and credentials as boto3 resolves them (env, ~/.aws/config, profiles, IMDS).

    pyarrow's own resolution misses profiles and AWS_ENDPOINT_URL on some versions; boto3 is the
    reference implementation of the AWS rules, so we ask it and hand the answer to pyarrow.
    """
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    session = boto3.session.Session(botocore_session=core)
    client = session.client("s3")
    settings: dict = {"region": client.meta.region_name or "us-east-1",
                      "max_attempts": int(core.get_config_variable("max_attempts") or DEFAULT_S3_ATTEMPTS)}
    creds = session.get_credentials()
    if creds is None:
        settings["anonymous"] = True
    else:
        frozen = creds.get_frozen_credentials()
        settings.update(access_key=frozen.access_key, secret_key=frozen.secret_key)
        if frozen.token:
            settings["session_token"] = frozen.token
    endpoint = urlparse(client.meta.endpoint_url or "")
    if endpoint.hostname and not endpoint.hostname.endswith("amazonaws.com"):
        # An S3-compatible server (MinIO, moto, Ceph): talk to it directly, http if it says so.
        settings["endpoint_override"] = endpoint.netloc
        settings["scheme"] = endpoint.scheme or "https"
    return settings


class RetryingS3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3 filesystem that keeps its retry strategy when sent to Ray workers.

    pyarrow pickles an S3FileSystem without its retry strategy, so every Ray task or Train worker
    that got ours would fall back to 3 attempts; this one is rebuilt from the same settings.
    """

    def __init__(self, settings: dict):
        self._settings = dict(settings)
        options = dict(settings)
        attempts = options.pop("max_attempts")
        super().__init__(retry_strategy=pafs.AwsDefaultS3RetryStrategy(max_attempts=attempts), **options)

    def __reduce__(self):
        return RetryingS3FileSystem, (self._settings,)

    @property
    def max_attempts(self) -> int:
        return self._settings["max_attempts"]


def s3_filesystem() -> pafs.S3FileSystem:
    return RetryingS3FileSystem(_s3_settings())


def reset_s3_settings() -> None:
    """Forget cached S3 settings (after the environment changed, e.g. in tests)."""
    _s3_settings.cache_clear()


def _s3_client():
    import boto3

    from botocore.config import Config

    s = _s3_settings()
    retries = Config(retries={"mode": "standard", "total_max_attempts": s["max_attempts"]})
    kwargs = {"region_name": s["region"], "config": retries}
    if "endpoint_override" in s:
        kwargs["endpoint_url"] = f"{s['scheme']}://{s['endpoint_override']}"
    return boto3.client("s3", **kwargs)


def check_bucket(bucket: str, uri: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _s3_client().head_bucket(Bucket=bucket)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"{uri}: S3 bucket '{bucket}' does not exist") from None
        raise StorageError(f"{uri}: cannot access S3 bucket '{bucket}' ({code or e})") from None
    except BotoCoreError as e:
        raise StorageError(f"{uri}: cannot reach S3 ({e})") from None


# --------------------------------------------------------------------------- locations


@dataclass(frozen=True)
class Location:
    """A file or folder on some filesystem, with the URI the user knows it by."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def join(self, *parts: str) -> "Location":
        suffix = "/".join(p.strip("/") for p in parts if p)
        return Location(self.fs, f"{self.path.rstrip('/')}/{suffix}", f"{self.uri.rstrip('/')}/{suffix}")

    def info(self) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path)
        except OSError as e:
            raise StorageError(f"{self.uri}: cannot read ({_short(e)})") from None

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def files(self) -> list[pafs.FileInfo]:
        """The file itself, or every file under the folder (sorted, hidden and staging files skipped)."""
        info = self.info()
        if info.type == pafs.FileType.File:
            return [info]
        if info.type != pafs.FileType.Directory:
            return []
        selector = pafs.FileSelector(self.path, recursive=True)
        try:
            found = self.fs.get_file_info(selector)
        except OSError as e:
            raise StorageError(f"{self.uri}: cannot list ({_short(e)})") from None
        base = self.path.rstrip("/") + "/"
        keep = []
        for f in found:
            rel = f.path[len(base):] if f.path.startswith(base) else f.path
            if f.type == pafs.FileType.File and not any(p.startswith((".", "_")) for p in rel.split("/")):
                keep.append(f)
        return sorted(keep, key=lambda f: f.path)

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return f.read()
        except OSError as e:
            raise StorageError(f"{self.uri}: cannot read ({_short(e)})") from None

    def write_bytes(self, data: bytes) -> None:
        """Write a whole file so that readers see the old content or the new, never a part."""
        try:
            if isinstance(self.fs, pafs.LocalFileSystem):
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                tmp = f"{self.path}.tmp-{uuid.uuid4().hex[:8]}"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.path)
            else:  # an S3 PUT is atomic per object
                with self.fs.open_output_stream(self.path) as f:
                    f.write(data)
        except OSError as e:
            raise StorageError(f"{self.uri}: cannot write ({_short(e)})") from None

    def read_json(self) -> dict:
        return json.loads(self.read_bytes())

    def write_json(self, obj) -> None:
        self.write_bytes(json.dumps(obj, indent=2, sort_keys=False).encode())

    def write_table(self, table: pa.Table) -> None:
        try:
            self.fs.create_dir(os.path.dirname(self.path), recursive=True)
            pq.write_table(table, self.path, filesystem=self.fs)
        except OSError as e:
            raise StorageError(f"{self.uri}: cannot write ({_short(e)})") from None

    def read_table(self, columns: list[str] | None = None, filter=None) -> pa.Table:
        """A Parquet file, or every Parquet file under a folder, as one table.

        `filter` is a pyarrow.compute expression, applied while reading.
        """
        import pyarrow.dataset as pads

        try:
            files = [f.path for f in self.files()]
            if not files:
                raise StorageError(f"{self.uri}: no such table")
            return pads.dataset(files, filesystem=self.fs, format="parquet").to_table(columns=columns, filter=filter)
        except OSError as e:
            raise StorageError(f"{self.uri}: cannot read ({_short(e)})") from None

    def delete(self) -> None:
        info = self.info()
        try:
            if info.type == pafs.FileType.Directory:
                self.fs.delete_dir(self.path)
            elif info.type == pafs.FileType.File:
                self.fs.delete_file(self.path)
        except OSError as e:
            raise StorageError(f"{self.uri}: cannot delete ({_short(e)})") from None


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:300]


def resolve(uri: str, *, must_exist: bool = False) -> Location:
    """A local path or s3://bucket/key as a Location. Local paths become absolute."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        bucket = parsed.netloc
        if not bucket:
            raise StorageError(f"{uri}: no bucket in S3 URI")
        check_bucket(bucket, uri)
        loc = Location(s3_filesystem(), f"{bucket}{parsed.path}".rstrip("/"), uri.rstrip("/"))
    elif "://" in uri:
        raise StorageError(f"{uri}: unsupported scheme (use a local path or s3://)")
    else:
        path = os.path.abspath(os.path.expanduser(uri))
        loc = Location(pafs.LocalFileSystem(), path, path)
    if must_exist and not loc.exists():
        raise StorageError(f"{uri}: no such file or directory")
    return loc


def describe_inputs(uris: list[str]) -> list[dict]:
    """Name, size and SHA-256 of every input file: a change in any content redoes the stage.

    Content, not modification time: data copied or synced anew (a fresh checkout, `aws s3 sync`,
    a re-provisioned volume) gets new times but is the same data, and must not redo every stage
    after it. Hashing reads each input once more, which is cheap next to preparing it.
    """
    described = []
    for uri in uris:
        loc = resolve(uri, must_exist=True)
        base = loc.path.rstrip("/") + "/"
        for f in loc.files():
            name = f.path[len(base):] if f.path.startswith(base) else os.path.basename(f.path)
            described.append({"uri": uri, "file": name, "size": f.size,
                              "sha256": _sha256(Location(loc.fs, f.path, uri))})
    return described


def _sha256(loc: Location, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    try:
        with loc.fs.open_input_stream(loc.path) as f:
            while block := f.read(chunk):
                digest.update(block)
    except OSError as e:
        raise StorageError(f"{loc.uri}: cannot read ({_short(e)})") from None
    return digest.hexdigest()


# --------------------------------------------------------------------------- stages


class Stage:
    """One stage's output folder in a run directory, committed atomically."""

    def __init__(self, run_dir: "RunDir", name: str):
        self.run_dir = run_dir
        self.name = name
        self.location = run_dir.location.join(name)
        self.marker = self.location.join(MARKER)

    def commit_record(self) -> dict | None:
        if not self.marker.exists():
            return None
        try:
            return self.marker.read_json()
        except (StorageError, ValueError):
            return None

    def is_current(self, fingerprint: str) -> bool:
        """Committed with this fingerprint, and every committed file still there with its size."""
        record = self.commit_record()
        if not record or record.get("fingerprint") != fingerprint:
            return False
        present = {f.path[len(self.location.path) + 1:]: f.size for f in self.location.files()}
        return all(present.get(f["path"]) == f["size"] for f in record.get("files", []))

    @contextlib.contextmanager
    def writing(self, fingerprint: str, meta: dict | None = None) -> Iterator[Location]:
        """Yield a staging folder; on success replace the stage output with it and mark it committed.

        On an exception the staging folder is removed and the committed output is left as it was.
        """
        self._remove_leftovers()
        staging = self.run_dir.location.join(STAGING, f"{self.name}-{uuid.uuid4().hex[:12]}")
        staging.fs.create_dir(staging.path, recursive=True)
        try:
            yield staging
        except BaseException:
            with contextlib.suppress(Exception):
                staging.delete()
            raise
        self._commit(staging, fingerprint, meta or {})

    def copy_from(self, source: "Stage") -> None:
        """Commit a copy of another run directory's committed stage here (same fingerprint), unless
        this one already holds it: run directories that share a stage's output each own a copy."""
        record = source.commit_record()
        if record is None:
            raise DataError(f"{source.location.uri}: not committed, nothing to copy")
        if self.is_current(record["fingerprint"]):
            return
        meta = {k: v for k, v in record.items() if k not in {"stage", "fingerprint", "committed_at", "mdrec_version",
                                                              "files"}}
        with self.writing(record["fingerprint"], meta) as out:
            for f in record["files"]:
                out.join(f["path"]).write_bytes(source.location.join(f["path"]).read_bytes())

    def _remove_leftovers(self) -> None:
        """Staging folders of this stage left by attempts that were killed (one run per run dir)."""
        parent = self.run_dir.location.join(STAGING, os.path.dirname(self.name))
        prefix = os.path.basename(self.name) + "-"
        if parent.info().type != pafs.FileType.Directory:
            return
        for entry in parent.fs.get_file_info(pafs.FileSelector(parent.path)):
            if entry.type == pafs.FileType.Directory and entry.base_name.startswith(prefix):
                parent.fs.delete_dir(entry.path)

    def _commit(self, staging: Location, fingerprint: str, meta: dict) -> None:
        base = staging.path.rstrip("/") + "/"
        files = [{"path": f.path[len(base):], "size": f.size} for f in staging.files()]
        # From here until the marker is written the stage reads as not done: a kill redoes it.
        self.marker.delete()
        self.location.delete()
        if isinstance(staging.fs, pafs.LocalFileSystem):
            os.makedirs(os.path.dirname(self.location.path), exist_ok=True)
            os.replace(staging.path, self.location.path)
        else:
            for f in files:
                staging.fs.copy_file(base + f["path"], f"{self.location.path}/{f['path']}")
            staging.delete()
        record = {
            "stage": self.name,
            "fingerprint": fingerprint,
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mdrec_version": __version__,
            "files": files,
            **meta,
        }
        self.marker.write_json(record)


class RunDir:
    """The run directory: one folder (local or S3) holding every stage's committed output."""

    def __init__(self, uri: str):
        self.location = resolve(uri)
        self.uri = self.location.uri
        try:
            self.location.fs.create_dir(self.location.path, recursive=True)
        except OSError as e:
            raise StorageError(f"{self.uri}: cannot create run directory ({_short(e)})") from None

    def stage(self, name: str) -> Stage:
        return Stage(self, name)

    def file(self, *parts: str) -> Location:
        return self.location.join(*parts)

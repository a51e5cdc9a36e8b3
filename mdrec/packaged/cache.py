"""Packaged models made usable, once per content: `<cache>/<name>-<sha16>/`.

The folder is named by the SHA-256 of the packaged file, so a new package version (new bytes)
gets a new folder and an old one is never served by mistake; it is written into a temporary
sibling, renamed into place, and counts only once its `_COMPLETE.json` marker (written last) is
there, so a killed conversion is redone. An fcntl lock per folder lets several processes of one
node (two engine actors) ask at once and convert once.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from typing import Callable, Iterator

from mdrec.errors import DataError, StorageError
from mdrec.packaged.registry import PackagedFormat, PackagedModel, find

COMPLETE = "_COMPLETE.json"
CACHE_ENV = "MDREC_MODEL_CACHE"
_HASHES = "_sha256.json"  # (path, size, mtime_ns) -> sha256: hashing 100 MB on every run costs a second

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def default_cache() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "mdrec", "models")


def file_sha256(path: str, cache_dir: str | None = None) -> str:
    """SHA-256 of PATH, streamed; remembered in CACHE_DIR while its size and mtime stay the same."""
    st = os.stat(path)
    key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    memo_path = os.path.join(cache_dir, _HASHES) if cache_dir else None
    memo = _read_json(memo_path) if memo_path else {}
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    sha = digest.hexdigest()
    if memo_path:
        with contextlib.suppress(OSError):  # a read-only cache only loses the shortcut
            _write_json(memo_path, {**memo, key: sha})
    return sha


def folder_name(model: PackagedModel, sha256: str) -> str:
    return f"{model.name}-{sha256[:16]}"


def expected_folder_name(name: str, cache: str | None = None) -> str:
    """`<name>-<sha16>` of the packaged file installed here (GGUF models: those with a cache folder)."""
    model = find(name)
    _needs_conversion(model)
    return folder_name(model, file_sha256(model.locate(), _local_cache(cache)))


def is_complete(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, COMPLETE))


def prepared_path(name: str, cache: str | None = None) -> str | None:
    """Where NAME is ready to use on this machine without converting, or None (for `mdrec llm list`)."""
    model = find(name)
    if model.installed_version() is None:
        return None
    if model.format is PackagedFormat.hf_folder:
        return model.locate()
    folder = os.path.join(_local_cache(cache), expected_folder_name(name, cache))
    return folder if is_complete(folder) else None


def prepare_packaged(name: str, cache: str | None = None, log: Log = _quiet) -> str:
    """A folder (or, for an s3:// CACHE, a URI) that vLLM or sentence-transformers loads NAME from.

    A GGUF model is converted into `<cache>/<name>-<sha16>/` unless that is already complete;
    an s3:// CACHE gets the locally prepared folder uploaded under the same name (skipped when
    its marker is there). A model that ships as a Hugging Face folder is used where it is.
    """
    model = find(name)
    source = model.locate()
    if model.format is PackagedFormat.hf_folder:
        return source
    local_cache = _local_cache(cache)
    folder = os.path.join(local_cache, folder_name(model, file_sha256(source, local_cache)))
    ensure_converted(model, source, folder, log)
    if cache and cache.startswith("s3://"):
        return upload(folder, cache, log)
    return folder


def ensure_converted(model: PackagedModel, source: str, folder: str, log: Log = _quiet) -> str:
    """Convert SOURCE into FOLDER unless it is complete; one process at a time per folder."""
    if is_complete(folder):
        return folder
    with _locked(folder + ".lock", log):
        if is_complete(folder):  # another process finished while this one waited
            return folder
        for stale in [folder, *glob.glob(glob.escape(folder) + ".tmp-*")]:
            shutil.rmtree(stale, ignore_errors=True)  # no marker: a killed attempt
        from mdrec.packaged.convert import convert_gguf

        sha = file_sha256(source, os.path.dirname(folder))
        tmp = f"{folder}.tmp-{uuid.uuid4().hex[:8]}"
        log(f"preparing packaged model {model.name}: converting {source} (once per content) into {folder}")
        start = time.monotonic()
        try:
            convert_gguf(source, tmp, log=log)
            _readable(tmp)
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = round(time.monotonic() - start, 1)
        _write_json(os.path.join(folder, COMPLETE), {
            "name": model.name, "sha256": sha, "package": model.package,
            "package_version": model.installed_version(), "seconds": seconds,
            "files": _files(folder),
        })
        log(f"prepared {model.name} in {seconds:.0f} s: {folder}")
    return folder


def upload(folder: str, cache_uri: str, log: Log = _quiet) -> str:
    """Copy a complete local FOLDER to `<cache_uri>/<its name>/`, marker last; the URI."""
    from mdrec.storage import resolve

    dest = resolve(cache_uri).join(os.path.basename(folder))
    marker = dest.join(COMPLETE)
    if marker.exists():
        return dest.uri
    log(f"uploading {folder} to {dest.uri}")
    for rel in _files(folder):
        if rel["path"] != COMPLETE:
            _upload_file(os.path.join(folder, rel["path"]), dest.join(rel["path"]))
    with open(os.path.join(folder, COMPLETE), "rb") as f:
        marker.write_bytes(f.read())
    return dest.uri


def _upload_file(path: str, loc) -> None:
    """Streamed: the weights are hundreds of MB."""
    try:
        with open(path, "rb") as src, loc.fs.open_output_stream(loc.path) as out:
            while block := src.read(16 << 20):
                out.write(block)
    except OSError as e:
        raise StorageError(f"{loc.uri}: cannot write ({' '.join(str(e).split())[:300] or type(e).__name__})") from None


def _needs_conversion(model: PackagedModel) -> None:
    if model.format is not PackagedFormat.gguf:
        raise DataError(f"packaged model '{model.name}' is used from its package folder; it has no cache folder")


def _local_cache(cache: str | None) -> str:
    """Where conversions happen: CACHE when it is a local folder, else the default local cache."""
    if cache and not cache.startswith("s3://"):
        if "://" in cache:
            raise StorageError(f"{cache}: unsupported scheme for a model cache (use a local folder or s3://)")
        return os.path.abspath(os.path.expanduser(cache))
    return default_cache()


def _files(folder: str) -> list[dict]:
    found = []
    for root, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            found.append({"path": os.path.relpath(p, folder), "size": os.path.getsize(p)})
    return sorted(found, key=lambda f: f["path"])


def _readable(folder: str) -> None:
    """safetensors writes its file 0600; a cache other users' workers share must be readable."""
    mask = os.umask(0)
    os.umask(mask)
    for f in _files(folder):
        os.chmod(os.path.join(folder, f["path"]), 0o666 & ~mask)


@contextlib.contextmanager
def _locked(path: str, log: Log) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process preparing {path.removesuffix('.lock')}")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(path: str, obj: dict) -> None:
    """Whole or not at all: a reader never sees half a marker."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def stderr_log(message: str) -> None:
    print(f"mdrec: {message}", file=sys.stderr, flush=True)

"""The pipeline as a Ray job on a cluster: what `mdrec submit`, `mdrec status` and `mdrec logs` do.

A job runs `python jobs/pipeline.py --config mdrec-job/<config> --run-dir DIR [--set ...]`, which
is `mdrec run` on the cluster, in a runtime_env (cluster/runtime_env.yaml) whose working_dir is
this checkout: the cluster runs the mdrec that was submitted, whatever is installed there. The
config travels inside the uploaded folder (`mdrec-job/`), as the user wrote it, wherever it lives
here; `--set` overrides travel on the job's command line, where `ray job list` shows them.

Credentials never travel. A job's entrypoint, runtime_env and metadata are stored in the cluster
and shown to anyone who can list its jobs, and the config is written to the run directory; the
nodes read S3 with their own credentials (instance role, IRSA, or their raylets' environment).
So a config key that looks like a credential (generate.backend.env.HF_TOKEN,
engine_kwargs.hf_token) is refused, and so is a job that would carry the value of any credential
variable of the submitting shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import yaml

from mdrec import __version__
from mdrec.errors import ClusterError, ConfigError, one_line

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = "jobs/pipeline.py"
RUNTIME_ENV = "cluster/runtime_env.yaml"
SHIPPED = "mdrec-job"  # the folder of the upload that holds the config
# Ray lets these override an address given in code; an explicit --address must win.
ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 1}

# --------------------------------------------------------------------------- credentials

_SECRET_WORDS = {"SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS", "APIKEY"}
_SECRET_PAIRS = ("ACCESS_KEY", "API_KEY", "PRIVATE_KEY", "SECRET_KEY", "AUTH_KEY")
_REFERENCES = {"PATH", "FILE", "DIR"}  # HF_TOKEN_PATH says where a secret is, not what it is


def looks_like_credential(name: str) -> bool:
    """AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, HF_TOKEN, hf_token, OPENAI_API_KEY; not TOKENIZERS_PARALLELISM."""
    upper = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")
    parts = upper.split("_")
    if parts[-1] in _REFERENCES:
        return False
    return bool(set(parts) & _SECRET_WORDS) or any(pair in upper for pair in _SECRET_PAIRS)


def credential_keys(cfg) -> list[str]:
    """Dotted keys of the config whose name looks like a credential and that hold a string."""
    found: list[str] = []

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                where = f"{path}.{key}" if path else str(key)
                if looks_like_credential(str(key)) and isinstance(value, str) and value:
                    found.append(where)
                else:
                    walk(value, where)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(cfg.model_dump(mode="json"), "")
    return found


def refuse_credentials_in(cfg) -> None:
    """Every run writes its config to the run directory (and a job's shows in `ray job list`): a
    credential in it would end up there, so no command accepts one."""
    keys = credential_keys(cfg)
    if keys:
        raise ConfigError(
            f"{', '.join(keys)}: looks like a credential, which a config must not hold (it is written to the run "
            "directory, and a job's settings show in `ray job list`): set it in the environment of the process or "
            "of the Ray nodes instead")


def local_secrets(env: dict[str, str] | None = None) -> dict[str, str]:
    """The submitting shell's credential values, by variable name: none of them may leave with a job."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if looks_like_credential(k) and len(v) >= 8}


def refuse_secrets(parts: dict[str, str], secrets: dict[str, str]) -> None:
    """Raise if any part of a job (entrypoint, runtime_env, metadata, config) holds a secret value."""
    for where, text in parts.items():
        for name, value in secrets.items():
            if value in text:
                raise ClusterError(f"refusing to submit: the job's {where} would carry the value of ${name} "
                                   "(credentials stay on the cluster's nodes)")


# --------------------------------------------------------------------------- what is sent


def checkout() -> Path:
    """The repository mdrec runs from: a job ships it, so a pip-installed mdrec cannot submit."""
    for name in (ENTRYPOINT, RUNTIME_ENV):
        if not (REPO / name).is_file():
            raise ClusterError(f"mdrec submit runs from a checkout of the mdrec repository: {REPO / name} not found")
    return REPO


def runtime_env_settings(repo: Path) -> dict:
    """cluster/runtime_env.yaml, less working_dir (the caller points it at the upload)."""
    path = repo / RUNTIME_ENV
    try:
        settings = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the job's runtime_env ({_one_line(e)})") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{path}: expected a mapping")
    settings.pop("working_dir", None)
    named = [k for k in settings.get("env_vars") or {} if looks_like_credential(k)]
    if named:
        raise ConfigError(f"{path}: env_vars {', '.join(named)} look like credentials; the nodes must hold them")
    return settings


def check_run_dir(run_dir: str) -> None:
    if "://" in run_dir or os.path.isabs(run_dir):
        return
    raise ConfigError(f"run directory '{run_dir}' is relative: on a cluster it would land in the job's temporary "
                      "working dir; pass --run-dir s3://bucket/prefix (or an absolute path every node mounts)")


def entrypoint(config: Path, run_dir: str, overrides: tuple[str, ...] | list[str], until: str | None = None) -> str:
    args = ["python", ENTRYPOINT, "--config", f"{SHIPPED}/{config.name}", "--run-dir", run_dir]
    for override in overrides:
        args += ["--set", override]
    if until:
        args += ["--until", until]
    return shlex.join(args)


def parse_env(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """--env NAME=VALUE pairs as a dict; a credential's name is refused (the nodes hold those)."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(f"--env {pair!r}: expected NAME=VALUE with NAME a variable name")
        if looks_like_credential(name):
            raise ConfigError(f"--env {name}: looks like a credential, which must not travel with a job "
                              "(a job's runtime_env shows in `ray job list`): set it on the cluster's nodes")
        env[name] = value
    return env


@contextlib.contextmanager
def staged_upload(repo: Path, config: Path, excludes: list[str]) -> Iterator[Path]:
    """A folder that is the checkout (its top-level entries, linked) plus CONFIG in mdrec-job/.

    Ray zips it following the links and applies the excludes and the checkout's .gitignore. Links,
    not a copy: an ignored folder of data is never read, and nothing is written into the checkout.
    """
    folder = Path(tempfile.mkdtemp(prefix="mdrec-submit-"))
    try:
        plain = {p.strip("/") for p in excludes if not any(c in p.strip("/") for c in "*?[/")}
        for entry in repo.iterdir():
            if entry.name not in plain | {SHIPPED}:
                (folder / entry.name).symlink_to(entry)
        (folder / SHIPPED).mkdir()
        shutil.copyfile(config, folder / SHIPPED / config.name)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # removes the links, never what they point to


# --------------------------------------------------------------------------- the job API


@contextlib.contextmanager
def _address_env_hidden() -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in ADDRESS_ENV if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(address: str | None):
    """A JobSubmissionClient for ADDRESS (http://HEAD:8265, or what Ray accepts), or a one-line error."""
    if not address:
        raise ClusterError("no Ray cluster given: pass --address http://HEAD:8265 or set RAY_API_SERVER_ADDRESS "
                           "(or RAY_ADDRESS)")
    from ray.job_submission import JobSubmissionClient

    # Ray's client narrates at INFO (package upload, .gitignore use, websocket closed): not ours to show.
    logging.getLogger("ray").setLevel(logging.WARNING)
    with _address_env_hidden():
        try:
            return JobSubmissionClient(address)
        except Exception as e:  # noqa: BLE001 - requests, aiohttp and Ray errors alike mean: not reachable
            raise ClusterError(f"cannot reach the Ray job API at {address} ({_one_line(e)})") from None


def _job_call(address: str, job_id: str, call: Callable):
    try:
        return call()
    except Exception as e:  # noqa: BLE001
        text = str(e)
        if "404" in text or "does not exist" in text:
            raise ClusterError(f"no job '{job_id}' on {address}") from None
        raise ClusterError(f"{address}: job '{job_id}': {_one_line(e)}") from None


def submit(address: str | None, config: str, run_dir: str | None, overrides: tuple[str, ...],
           job_id: str | None = None, *, until: str | None = None, env_vars: tuple[str, ...] = (),
           log: Callable[[str], None] = print):
    """Validate CONFIG here, then send the job; returns (client, job id). Nothing is sent on a refusal."""
    from mdrec.config import load_config
    from mdrec.pipeline import run_order

    repo = checkout()
    cfg = load_config(config, list(overrides))
    if run_dir:
        cfg.run_dir = run_dir
    refuse_credentials_in(cfg)
    run_order(cfg, until)  # a bad --until fails here, not on the cluster
    extra_env = parse_env(env_vars)
    resolved = cfg.resolved_run_dir()
    check_run_dir(resolved)
    config_path = Path(config)
    command = entrypoint(config_path, resolved, overrides, until)
    metadata = {"mdrec_config": str(config), "mdrec_run_dir": resolved, "mdrec_version": __version__}
    settings = runtime_env_settings(repo)
    if extra_env:  # over cluster/runtime_env.yaml's: this job's choice
        settings["env_vars"] = {**(settings.get("env_vars") or {}), **extra_env}
    refuse_secrets({"entrypoint": command, "metadata": json.dumps(metadata), "runtime_env": json.dumps(settings),
                    "config": config_path.read_text(errors="replace"), "job id": job_id or ""}, local_secrets())
    client = connect(address)
    with staged_upload(repo, config_path, list(settings.get("excludes") or [])) as upload:
        runtime_env = {**settings, "working_dir": str(upload)}
        try:
            job = client.submit_job(entrypoint=command, runtime_env=runtime_env, metadata=metadata,
                                    submission_id=job_id)
        except Exception as e:  # noqa: BLE001
            raise ClusterError(f"{address}: cannot submit the job ({_one_line(e)})") from None
    log(f"submitted job {job} to {address}: {command}")
    return client, job


def job_info(client, address: str, job_id: str):
    return _job_call(address, job_id, lambda: client.get_job_info(job_id))


def job_logs(client, address: str, job_id: str) -> str:
    return _job_call(address, job_id, lambda: client.get_job_logs(job_id))


def follow(client, address: str, job_id: str, write: Callable[[str], None]):
    """Stream the job's logs to WRITE until it ends; return its final JobInfo."""
    job_info(client, address, job_id)  # an unknown id: a clear error, not a failed websocket

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    try:
        asyncio.run(tail())
    except Exception as e:  # noqa: BLE001 - the stream broke (head restarted, network); the job may go on
        raise ClusterError(f"lost the log stream of job '{job_id}' ({_one_line(e)}); it may still be running: "
                           f"mdrec status {job_id}") from None
    return wait(client, address, job_id)


def wait(client, address: str, job_id: str, timeout: float = 60.0):
    """The job's JobInfo once its status is terminal; the log stream ends a moment before that."""
    deadline = time.monotonic() + timeout
    while True:
        info = job_info(client, address, job_id)
        if info.status.is_terminal():
            return info
        if time.monotonic() > deadline:
            raise ClusterError(f"job '{job_id}' is still {info.status.value} {timeout:.0f}s after its logs ended")
        time.sleep(0.5)


def headline(message: str | None) -> str:
    """A job message's first line: a failed job's message goes on with the tail of its logs."""
    lines = (message or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def exit_code(status: str) -> int:
    return EXIT_CODES.get(status, 1)


def _one_line(e: BaseException) -> str:
    return one_line(e)[:300]  # Ray's errors can carry whole tracebacks

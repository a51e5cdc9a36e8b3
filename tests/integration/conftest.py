"""Integration fixtures: one local Ray session per test session, and an S3 server on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tempfile

import pytest
import yaml

from tests.conftest import REPO


@pytest.fixture(scope="session")
def ray_session():
    """Ray for the whole test session (starting Ray costs seconds; tests share it)."""
    import ray

    from mdrec.config import RayConfig
    from mdrec.ray_session import ensure_ray

    tmp = tempfile.mkdtemp(prefix="mdrec-ray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    ensure_ray(RayConfig(num_cpus=2, progress_bars=False))
    yield ray
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1, found by mdrec through the standard AWS environment."""
    from moto.server import ThreadedMotoServer

    from mdrec.storage import reset_s3_settings

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_s3_settings()
    yield f"http://127.0.0.1:{port}"
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    reset_s3_settings()


@pytest.fixture
def s3_bucket(s3_server, request):
    import boto3

    name = "mdrec-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


def write_config(path, cfg: dict):
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def world_config(users=300, **prepare) -> dict:
    return {
        "name": "t",
        "seed": 0,
        "data": {
            "source": {
                "type": "world",
                "users": users,
                "users_per_chunk": 64,
                "domains": [
                    {"name": "Books", "kind": "books", "items": 120, "participation": 0.9, "activity": 10},
                    {"name": "Music", "kind": "music", "items": 80, "participation": 0.4, "activity": 4},
                ],
                "missing_title_rate": 0.05,
            }
        },
        "prepare": {"num_negatives": 20, **prepare},
        "ray": {"progress_bars": False},
    }


def kill_processes_using(marker: str) -> None:
    """SIGKILL every process whose command line names `marker` (a killed driver's own Ray outlives it)."""
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def run_cli_until(args: list[str], marker: str, timeout: float, env: dict | None = None,
                  ready=lambda: True) -> list[str]:
    """Run `mdrec ARGS` in a subprocess with a Ray of its own, SIGKILL it (and that Ray) once a line of
    its output contains `marker` and then `ready()` holds (or after `timeout` s); return its lines."""
    ray_tmp = tempfile.mkdtemp(prefix="mdrec-kill-", dir="/tmp")  # Ray's socket paths must stay short
    full_env = {**os.environ, **(env or {}), "RAY_TMPDIR": ray_tmp}
    full_env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "mdrec.cli", *args], cwd=REPO, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines, deadline = [], time.time() + timeout
    for line in proc.stdout:
        lines.append(line)
        if marker in line or time.time() > deadline:
            break
    while not ready() and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kill_processes_using(ray_tmp)  # the killed driver's own Ray outlives it
    return lines

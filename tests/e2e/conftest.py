"""End-to-end fixtures: a real two-node Ray cluster on loopback, an S3 server its nodes write to,
and helpers to run `mdrec` against the cluster and to wait for its jobs.

The cluster is `ray start --head` (2 CPUs, node label mdrec-node=cpu) plus `ray start --address`
(1 CPU, the custom resource `gpu_node` and the label mdrec-node=gpu, standing in for a GPU node),
each its own process group, started with the
S3 server's AWS_* variables: jobs find S3 through the nodes' environment, never through
`mdrec submit`, whose environment holds the secret key but no S3 endpoint. The cluster uses
Ray's token authentication with a token of its own, as a real cluster would.

Never `ray stop` here: it stops every Ray on the machine (other experiments, the integration
tests' local Ray). Teardown signals this cluster's own process groups, then kills whatever is left
of this cluster only: the processes whose environment holds its marker (MDREC_E2E_CLUSTER=<its
temp dir>), which every Ray worker inherits from its raylet. The pytest process never imports
Ray: it talks to the cluster over HTTP (job and state APIs), so it carries no Ray state into the
other suites.

Fault-injection tests can reuse `ray_cluster` (`add_node`, `Node.kill`, `node_ids`) and the
job helpers (`submit`, `wait_for_job`, `job_info`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from tests.conftest import REPO
from tests.integration.conftest import free_port, world_config, write_config
from tests.tiny_models import TINY

VENV_BIN = Path(sys.executable).parent
MARKER = "MDREC_E2E_CLUSTER"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# Settings of the shell running the tests that must not reach the cluster or the mdrec commands.
FOREIGN_ENV = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
               "RAY_TMPDIR", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
               "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION")


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` in a job's entrypoint: this venv's
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- S3


@dataclass
class S3:
    endpoint: str
    access_key: str
    secret_key: str  # unique per session: the leak checks search for it

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1")

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture(scope="session")
def e2e_s3():
    """A moto S3 server on 127.0.0.1; its settings go to the cluster's nodes, not to os.environ."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield S3(f"http://127.0.0.1:{port}", "AKIAE2E" + secrets.token_hex(6).upper(), "e2e-secret-" + secrets.token_hex(16))
    server.stop()


@pytest.fixture
def bucket(e2e_s3, request) -> str:
    name = "e2e-" + request.node.name.lower().replace("_", "-")[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    e2e_s3.client().create_bucket(Bucket=name)
    return name


# --------------------------------------------------------------------------- the cluster


class NodeExited(RuntimeError):
    """A `ray start` that gave up (on a loaded machine a raylet may miss Ray's 30 s start limit)."""

    def __init__(self, node: "Node"):
        super().__init__(f"ray start ({node.name}) exited {node.proc.returncode}:\n{node.log.read_text()[-3000:]}")
        self.node = node


@dataclass
class Node:
    """One `ray start --block` process group (its raylet, and on the head the GCS and dashboard)."""

    name: str
    proc: subprocess.Popen
    log: Path

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the node's process group: a node lost without warning. Its workers follow."""
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM `ray start`, which stops the node's processes in order; SIGKILL after `timeout`."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class RayCluster:
    root: Path  # Ray's temp dir; short, for Unix socket paths
    node_env: dict[str, str]
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The job API, what `mdrec submit --address` takes."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def token(self) -> str:
        return (self.root / "auth_token").read_text().strip()

    # -- nodes

    def _start(self, name: str, args: list[str], temp_dir: Path) -> Node:
        log = self.root / f"{name}.log"
        common = ["--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir), "--block", "--disable-usage-stats",
                  "--object-store-memory", str(150 * 1024 ** 2),
                  # Fixed defaults (52365, 10001) may be held by another Ray on this machine.
                  "--dashboard-agent-listen-port", str(free_port())]
        # RAY_ADDRESS: Ray's own actors that look the cluster up (Ray Train's placement group
        # cleaner) would otherwise find several Ray instances on this machine and give up.
        env = {**self.node_env, "RAY_ADDRESS": f"127.0.0.1:{self.gcs_port}"}
        proc = subprocess.Popen([str(VENV_BIN / "ray"), "start", *args, *common], env=env, cwd=self.root,
                                stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(name, proc, log)
        self.nodes.append(node)
        return node

    def start_head(self, num_cpus: int = 2, labels: dict | None = None) -> Node:
        return self._start("head", ["--head", "--port", str(self.gcs_port), "--num-cpus", str(num_cpus),
                                    "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
                                    "--ray-client-server-port", str(free_port()), *_labels(labels)], self.root)

    def add_node(self, num_cpus: int = 1, resources: dict | None = None, name: str | None = None,
                 labels: dict | None = None) -> Node:
        args = ["--address", f"127.0.0.1:{self.gcs_port}", "--num-cpus", str(num_cpus), *_labels(labels)]
        if resources:
            args += ["--resources", json.dumps(resources)]
        name = name or f"node{len(self.nodes)}"
        # A temp dir of its own, as a machine of its own would have: nodes sharing one unpack the
        # job's working_dir into the same folder, and a node that unpacks it later replaces the
        # folder the driver on the head is running in (its cwd vanishes mid-job).
        temp_dir = self.root / name
        temp_dir.mkdir(exist_ok=True)
        return self._start(name, args, temp_dir)

    # -- HTTP (job and state APIs), with the cluster's token

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(self.address + path, params=params, timeout=30,
                            headers={"Authorization": f"Bearer {self.token}"})

    def state(self, resource: str, **params) -> list[dict]:
        """Ray's state API (what ray.util.state.list_* call): nodes, actors, ... dead ones included."""
        r = self.get(f"/api/v0/{resource}", limit=10000, detail="true", **params)
        r.raise_for_status()
        return r.json()["data"]["result"]["result"]

    def alive_nodes(self) -> list[dict]:
        return [n for n in self.state("nodes") if n["state"] == "ALIVE"]

    def node_ids(self) -> dict[str, str]:
        """node_id -> 'head' or the custom resources that tell the node apart, e.g. 'gpu_node'."""
        out = {}
        for n in self.alive_nodes():
            custom = sorted(k for k in n["resources_total"] if k not in ("CPU", "GPU", "memory", "object_store_memory")
                            and not k.startswith("node:"))
            out[n["node_id"]] = "head" if n.get("is_head_node") else ",".join(custom) or "worker"
        return out

    def wait_ready(self, nodes: int, timeout: float = 180.0) -> None:
        """Until the job API answers and `nodes` nodes are alive; a node that died fails at once."""
        deadline, last = time.time() + timeout, None
        while time.time() < deadline:
            for node in self.nodes:
                if node.proc.poll() is not None:
                    raise NodeExited(node)
            try:
                if self.get("/api/jobs/").ok and len(self.alive_nodes()) >= nodes:
                    return
            except (requests.RequestException, KeyError, ValueError, OSError) as e:
                last = e
            time.sleep(1)
        raise TimeoutError(f"Ray cluster in {self.root} not ready after {timeout:.0f}s ({last})")

    # -- clients

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment of a client on this cluster: its token, no S3 endpoint, no Ray address."""
        return {**_base_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.root / "auth_token"), **extra}

    def mdrec(self, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        """`python -m mdrec ARGS` in a subprocess, from the repo root, as a user on a laptop would run it."""
        return subprocess.run([sys.executable, "-m", "mdrec", *args], cwd=REPO, env=env or self.client_env(),
                              capture_output=True, text=True, timeout=timeout)

    def job_info(self, job_id: str) -> dict:
        r = self.get(f"/api/jobs/{job_id}")
        r.raise_for_status()
        return r.json()

    def job_logs(self, job_id: str) -> str:
        r = self.get(f"/api/jobs/{job_id}/logs")
        r.raise_for_status()
        return r.json()["logs"]

    # -- teardown

    def processes(self) -> list[int]:
        """PIDs of this cluster's processes: those whose environment holds its marker."""
        mark = f"{MARKER}={self.root}".encode()
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if mark in f.read().split(b"\0"):
                        found.append(int(pid))
            except OSError:
                continue
        return found

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM our `ray start`s, then SIGKILL what is left of this cluster; verify nothing is.

        The grace is short: the cluster and its temp dir are thrown away, and a loaded machine can
        take tens of seconds over an orderly stop."""
        for node in reversed(self.nodes):
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + grace
        while time.time() < deadline and (any(n.proc.poll() is None for n in self.nodes) or self.processes()):
            time.sleep(0.5)
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for node in self.nodes:
            node.signal(signal.SIGKILL)
            node.proc.wait()
        deadline = time.time() + 10
        while (left := self.processes()) and time.time() < deadline:
            time.sleep(0.2)
        assert not left, f"processes of the Ray cluster in {self.root} outlived it: {left}"


def _labels(labels: dict | None) -> list[str]:
    return ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())] if labels else []


# Node labels of the two nodes: what `ray.cpu_label_selector` and the backend's selector name.
CPU_NODE = {"mdrec-node": "cpu"}
GPU_NODE = {"mdrec-node": "gpu"}


def start_cluster(extra_env: dict[str, str], worker_resources: dict | None = None) -> RayCluster:
    """A head (2 CPUs, CPU_NODE labels) and one worker node (1 CPU, `worker_resources`, GPU_NODE
    labels), ready to take jobs."""
    root = Path(tempfile.mkdtemp(prefix="mdrec-e2e-", dir="/tmp"))
    (root / "auth_token").write_text(secrets.token_hex(32))
    env = {**_base_env(), **extra_env, MARKER: str(root),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(root / "auth_token")}
    cluster = RayCluster(root, env)
    try:
        cluster.start_head(num_cpus=2, labels=CPU_NODE)
        cluster.wait_ready(nodes=1)
        for attempt in range(3):  # one node at a time, and again if a loaded machine made it miss the limit
            node = cluster.add_node(num_cpus=1, resources=worker_resources, name=f"worker{attempt or ''}",
                                    labels=GPU_NODE)
            try:
                cluster.wait_ready(nodes=2)
                break
            except NodeExited:
                node.kill()
                cluster.nodes.remove(node)
                if attempt == 2:
                    raise
    except BaseException:
        cluster.stop()  # its logs stay in `root`
        raise
    return cluster


_RUNNING: list[RayCluster] = []


@pytest.fixture(scope="session")
def ray_cluster(e2e_s3):
    """The two-node cluster: head (2 CPUs) and a `gpu_node` worker (1 CPU), S3 in their environment."""
    cluster = start_cluster(e2e_s3.env(), worker_resources={"gpu_node": 1})
    _RUNNING.append(cluster)
    yield cluster
    cluster.stop()  # again, if the hook below already did: stopping is idempotent
    if not os.environ.get("MDREC_E2E_KEEP"):  # set it to keep the cluster's logs for a look
        shutil.rmtree(cluster.root, ignore_errors=True)


def pytest_runtest_teardown(item, nextitem):
    """Session-scoped (two modules share it), but no test after tests/e2e uses the cluster: stop
    it after the last e2e test, so its idle processes do not slow the rest of the suite. (A
    package-scoped fixture would need tests/e2e to be a package, which the imports here are not.)"""
    if _RUNNING and (nextitem is None or Path(nextitem.path).parent != Path(__file__).parent):
        while _RUNNING:
            _RUNNING.pop().stop()


# --------------------------------------------------------------------------- jobs


def pipeline_config() -> dict:
    """A small whole pipeline: generated world, the popularity backend's actors pinned to the
    `gpu_node` worker by a custom resource, every CPU stage to the head by its node label, filtered,
    one tiny STAR epoch per variant (real, filtered), evaluated."""
    cfg = world_config(users=300, cold_start={"fraction": 0.4})
    cfg["generate"] = {"backend": {"type": "popularity", "cpus_per_actor": 0.5, "batch_size": 32,
                                   "resources": {"gpu_node": 1}},
                       "candidates": {"size": 10, "popular": 10}, "users_per_shard": 40,
                       "budget": {"per_user": 3, "ratio": 0.6}}
    cfg["filter"] = {"steps": [{"name": "validity"}, {"name": "dedupe"}, {"name": "top_k", "k": 2}], "tasks": 2}
    cfg["train"] = {"models": [{"name": "star", "params": TINY["star"]}], "protocols": ["cold_start"],
                    "variants": ["real", "filtered"], "epochs": 1, "batch_size": 256,
                    "resources_per_worker": {"CPU": 0.5}}
    cfg["evaluate"] = {"num_actors": 1}
    cfg["ray"] = {**cfg.get("ray", {}), "cpu_label_selector": CPU_NODE}
    return cfg


def user_env(cluster: RayCluster, s3: S3) -> dict[str, str]:
    """A user's shell: AWS credentials (which must not travel) but no S3 endpoint, so a job can
    only find the S3 server through the nodes' own environment."""
    return cluster.client_env(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key)


def submit(cluster: RayCluster, config: str, *args: str, follow: bool = True, timeout: float = 800,
           env: dict | None = None) -> tuple[subprocess.CompletedProcess, str]:
    """`mdrec submit CONFIG --address ... ARGS`; returns the finished command and the job id it printed."""
    flag = "--follow" if follow else "--no-follow"
    done = cluster.mdrec("submit", config, "--address", cluster.address, flag, *args, timeout=timeout, env=env)
    lines = done.stdout.splitlines()
    return done, (lines[0].strip() if lines else "")


def wait_for_job(cluster: RayCluster, job_id: str, timeout: float = 800, until=TERMINAL) -> dict:
    """Poll the job API until the job's status is in `until`; returns its info."""
    deadline = time.time() + timeout
    while True:
        info = cluster.job_info(job_id)
        if info["status"] in until:
            return info
        if time.time() > deadline:
            raise TimeoutError(f"job {job_id} still {info['status']} after {timeout:.0f}s")
        time.sleep(1)


@pytest.fixture(scope="session")
def pipeline_job(ray_cluster, e2e_s3, tmp_path_factory):
    """The pipeline submitted once, undisturbed (seed 1): what the submit tests read, and the
    reference the fault tests compare their runs with."""
    bucket = "e2e-pipeline-" + uuid.uuid4().hex[:8]
    e2e_s3.client().create_bucket(Bucket=bucket)
    # Outside the repo: the config must travel with the job.
    config = write_config(tmp_path_factory.mktemp("e2e") / "pipeline.yaml", pipeline_config())
    job_id = "mdrec-e2e-" + uuid.uuid4().hex[:8]
    started = time.time()
    done, printed = submit(ray_cluster, config, "--run-dir", f"s3://{bucket}/run", "--job-id", job_id,
                           "--set", "seed=1", env=user_env(ray_cluster, e2e_s3))
    return SimpleNamespace(done=done, printed=printed, job_id=job_id, bucket=bucket, config=config,
                           seconds=time.time() - started)


# --------------------------------------------------------------------------- fault reports

FAULT_REPORTS: list[str] = []


@pytest.fixture
def report_fault(request):
    """Record what a fault test lost (it must be nothing): shown in the session's summary."""

    def report(text: str) -> None:
        FAULT_REPORTS.append(f"{request.node.name}: {text}")
        print(text)

    return report


def pytest_terminal_summary(terminalreporter):
    if FAULT_REPORTS:
        terminalreporter.section("faults injected, and what was lost")
        for line in FAULT_REPORTS:
            terminalreporter.write_line(line)

"""Faults on the two-node cluster: each test kills a real process (or fails real S3 requests) in
the middle of a job and checks that nothing was lost or duplicated, against the undisturbed run of
the same config and seed (`pipeline_job`). What each lost is printed in the session's summary.

The jobs start from a copy of the reference run's committed stages where the fault is about a
later stage, so each test runs only what it needs (`--until`). Test hooks (mdrec/faults.py,
passed with `mdrec submit --env`) only hold a process still so that the kill lands mid-stage.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mdrec import faults
from tests.e2e.conftest import submit, user_env, wait_for_job
from tests.flaky_s3 import FlakyS3Proxy

ROW_KEY = ["protocol", "user_id", "item_id", "rank", "score", "prompt_sha"]


# --------------------------------------------------------------------------- helpers


def copy_run(s3, src_bucket: str, dst_bucket: str, stages: list[str]) -> int:
    """Copy committed stages (and nothing else) of one run directory to another bucket."""
    client, copied = s3.client(), 0
    for stage in stages:
        for key in s3.keys(src_bucket, f"run/{stage}/"):
            client.copy_object(Bucket=dst_bucket, Key=key, CopySource={"Bucket": src_bucket, "Key": key})
            copied += 1
    assert copied, stages
    return copied


def table(s3, bucket: str, prefix: str):
    """Every Parquet file under PREFIX, as one Arrow table."""
    client = s3.client()
    parts = [pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=k)["Body"].read()))
             for k in s3.keys(bucket, prefix) if k.endswith(".parquet")]
    return pa.concat_tables(parts)


def synthetic_rows(s3, bucket: str, variant: str = "raw") -> list[tuple]:
    rows = table(s3, bucket, f"run/synthetic/{variant}/").select(ROW_KEY).to_pylist()
    return sorted(tuple(r[c] for c in ROW_KEY) for r in rows)


def lost_and_duplicated(rows: list[tuple], reference: list[tuple]) -> tuple[int, int]:
    """Reference rows missing, and rows written more than once (rows the reference lacks fail
    the tests' `rows == reference`)."""
    return len(set(reference) - set(rows)), len(rows) - len(set(rows))


def read_json(s3, bucket: str, key: str) -> dict:
    return json.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def wait_until(what: str, check, timeout: float = 300, every: float = 0.3):
    deadline = time.time() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.time() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}")
        time.sleep(every)


def alive_actors(cluster, job_id: str, class_part: str) -> list[dict]:
    info = cluster.job_info(job_id)
    if not info.get("job_id"):  # the driver has not started yet
        return []
    return [a for a in cluster.state("actors") if a["job_id"] == info["job_id"] and class_part in a["class_name"]
            and a["state"] == "ALIVE" and a.get("pid")]


def kill(pid: int) -> None:
    """SIGKILL a process of the cluster (all nodes run on this machine): no warning, no cleanup."""
    os.kill(pid, signal.SIGKILL)


def start_job(cluster, s3, reference, bucket: str, *args: str) -> str:
    """Submit the reference job's config and seed on another run directory; returns the job id."""
    job_id = "mdrec-fault-" + uuid.uuid4().hex[:8]
    done, printed = submit(cluster, reference.config, "--run-dir", f"s3://{bucket}/run", "--set", "seed=1",
                           "--job-id", job_id, *args, follow=False, env=user_env(cluster, s3))
    assert done.returncode == 0 and printed == job_id, done.stderr
    return job_id


def finish(cluster, job_id: str, timeout: float = 800) -> dict:
    info = wait_for_job(cluster, job_id, timeout=timeout)
    assert info["status"] == "SUCCEEDED", info.get("message", "")[-3000:]
    return info


@pytest.fixture(autouse=True)
def _reference_succeeded(pipeline_job):
    assert pipeline_job.done.returncode == 0, pipeline_job.done.stderr[-3000:]


# Several shards of a few users each (the reference run has one): which shard a user's rows go
# to changes nothing about the rows, so they still equal the reference's.
USERS_PER_SHARD = 8
SMALL_SHARDS = ("--set", f"generate.users_per_shard={USERS_PER_SHARD}")


def _shards(s3, reference) -> int:
    contexts = read_json(s3, reference.bucket, "run/synthetic/generate_report.json")["contexts"]
    assert contexts > 2 * USERS_PER_SHARD, contexts
    return -(-contexts // USERS_PER_SHARD)


# --------------------------------------------------------------------------- the faults


def test_generation_actor_killed_mid_stage(ray_cluster, e2e_s3, bucket, pipeline_job, report_fault):
    """SIGKILL a backend actor while generation is under way: Ray restarts it and retries its
    batches; the stage's rows are exactly the undisturbed run's. The actors are pinned to the
    GPU node by its label this time (`generate.backend.label_selector`), not by a resource."""
    copy_run(e2e_s3, pipeline_job.bucket, bucket, ["prepared"])
    reference = synthetic_rows(e2e_s3, pipeline_job.bucket)
    total = _shards(e2e_s3, pipeline_job)
    job = start_job(ray_cluster, e2e_s3, pipeline_job, bucket, "--until", "generate", *SMALL_SHARDS,
                    "--set", "generate.backend.batch_size=4", "--set", "generate.backend.resources={}",
                    "--set", "generate.backend.label_selector={mdrec-node: gpu}",
                    "--env", f"{faults.BATCH_SECONDS}=2")

    def shards_written() -> int:
        return sum(k.endswith(".parquet") for k in e2e_s3.keys(bucket, "run/.generate/"))

    # Once the first shard is written and before the last: batches are in flight.
    scorers = wait_until("the first shard", lambda: 0 < shards_written() < total and alive_actors(
        ray_cluster, job, "PopularityScorer"))
    assert {ray_cluster.node_ids().get(a["node_id"]) for a in scorers} == {"gpu_node"}  # by the label alone
    victim = scorers[0]
    written = shards_written()
    kill(victim["pid"])
    finish(ray_cluster, job)
    rows = synthetic_rows(e2e_s3, bucket)
    lost, duplicated = lost_and_duplicated(rows, reference)
    after = {a["actor_id"]: a for a in ray_cluster.state("actors")}[victim["actor_id"]]
    retried = ray_cluster.job_logs(job).count("PopularityScorer)).submit failed")
    report_fault(f"killed backend actor {victim['actor_id'][:8]} (pid {victim['pid']}) with {written}/{total} shards "
                 f"written; it was restarted {after.get('num_restarts', '?')} time(s) and {retried} batch(es) in "
                 f"flight were retried; {len(rows)} rows "
                 f"(undisturbed run: {len(reference)}), lost {lost}, duplicated {duplicated}")
    assert 0 < written < total  # the kill landed mid-stage
    assert after["pid"] != victim["pid"] or after["state"] != "ALIVE"  # the process really died
    assert (lost, duplicated) == (0, 0) and rows == reference


def test_training_worker_killed_resumes_from_checkpoint(ray_cluster, e2e_s3, bucket, pipeline_job, report_fault):
    """SIGKILL a Ray Train worker after epoch 0's checkpoint: the worker group restarts and goes
    on from epoch 1. The workers ask for what the train config says (here, the `gpu_node`
    resource and the GPU node's label: without the label they would inherit the CPU stages')."""
    copy_run(e2e_s3, pipeline_job.bucket, bucket, ["prepared"])
    job = start_job(ray_cluster, e2e_s3, pipeline_job, bucket, "--until", "train", "--set", "train.variants=[real]",
                    "--set", "train.epochs=3", "--set", "train.early_stopping.patience=3",
                    "--set", "train.resources_per_worker={CPU: 0.5, gpu_node: 0.5}",
                    "--set", "train.label_selector={mdrec-node: gpu}",
                    "--env", f"{faults.PAUSE_AFTER_FIRST_CHECKPOINT}=60")
    wait_until("the pause after epoch 0's checkpoint", lambda: "pausing" in ray_cluster.job_logs(job))

    def registered() -> bool:
        """Ray Train's controller wrote the checkpoint down as the latest one (its snapshot file)."""
        keys = [k for k in e2e_s3.keys(bucket, "run/.train/") if k.endswith("/checkpoint_manager_snapshot.json")]
        return bool(keys) and read_json(e2e_s3, bucket, keys[0]).get("latest_checkpoint_result") is not None

    wait_until("Ray Train to register epoch 0's checkpoint", registered)
    checkpoints = [k for k in e2e_s3.keys(bucket, "run/.train/") if k.endswith("state.pt")]
    workers = alive_actors(ray_cluster, job, "RayTrainWorker")
    nodes = ray_cluster.node_ids()
    assert checkpoints and workers
    assert {nodes.get(w["node_id"]) for w in workers} == {"gpu_node"}  # where the train config sent them
    victim = workers[0]
    kill(victim["pid"])
    finish(ray_cluster, job)
    metrics = read_json(e2e_s3, bucket, "run/models/star/real/cold_start/seed-1/metrics.json")
    epochs = [h["epoch"] for h in metrics["history"]]
    report_fault(f"killed training worker (pid {victim['pid']}) after epoch 0's checkpoint; attempts began at epochs "
                 f"{metrics['attempt_starts']}; epochs recorded {epochs}: lost 0 epochs, redone "
                 f"{len(epochs) - len(set(epochs))}")
    assert metrics["attempt_starts"] == [0, 1]  # the second attempt began where the checkpoint left off
    assert epochs == [0, 1, 2] and metrics["epochs_run"] == 3
    assert any(k.endswith("model.pt") for k in e2e_s3.keys(bucket, "run/models/star/real/cold_start/seed-1/"))
    # Ray Train names checkpoint folders by time; three epochs, the last two kept (num_to_keep=2).
    kept = {k.split("/")[3] for k in e2e_s3.keys(bucket, "run/.train/") if re.match(r"run/\.train/[^/]+/checkpoint_\d{4}-", k)}
    assert len(kept) == 2, kept


def test_killed_job_resubmitted_resumes(ray_cluster, e2e_s3, bucket, pipeline_job, report_fault):
    """SIGKILL the job's driver mid-generation (two shards written): the job fails; the same job
    submitted again reuses the committed prepare stage, writes only the missing shards, and its
    rows are exactly the undisturbed run's."""
    reference = synthetic_rows(e2e_s3, pipeline_job.bucket)
    job = start_job(ray_cluster, e2e_s3, pipeline_job, bucket, "--until", "generate", *SMALL_SHARDS,
                    "--env", f"{faults.HANG_AFTER_SHARDS}=2")
    wait_until("the job to hang after two shards", lambda: "test hook: hanging" in ray_cluster.job_logs(job))
    prepared_marker = e2e_s3.client().get_object(Bucket=bucket, Key="run/prepared/_COMMITTED.json")["Body"].read()
    shards_before = sorted(k for k in e2e_s3.keys(bucket, "run/.generate/") if k.endswith(".parquet"))
    driver = ray_cluster.job_info(job)["driver_info"]
    kill(int(driver["pid"]))
    assert wait_for_job(ray_cluster, job, timeout=120)["status"] == "FAILED"
    assert "run/synthetic/raw/_COMMITTED.json" not in e2e_s3.keys(bucket, "run/synthetic/")

    again = start_job(ray_cluster, e2e_s3, pipeline_job, bucket, "--until", "generate", *SMALL_SHARDS)
    finish(ray_cluster, again)
    logs = ray_cluster.job_logs(again)
    rows = synthetic_rows(e2e_s3, bucket)
    lost, duplicated = lost_and_duplicated(rows, reference)
    report_fault(f"killed the driver (pid {driver['pid']}) with {len(shards_before)} shards written; resubmitted: "
                 f"prepare reused, generation resumed ({_line(logs, 'generate: resuming')}); {len(rows)} rows "
                 f"(undisturbed run: {len(reference)}), lost {lost}, duplicated {duplicated}")
    assert "prepare: reusing committed output" in logs
    assert f"generate: resuming, {len(shards_before)}/" in logs
    assert e2e_s3.client().get_object(Bucket=bucket, Key="run/prepared/_COMMITTED.json")["Body"].read() == prepared_marker
    assert (lost, duplicated) == (0, 0) and rows == reference


def _line(text: str, start: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.startswith(start)), "no such line")


@pytest.fixture
def flaky_s3(e2e_s3):
    proxy = FlakyS3Proxy(e2e_s3.endpoint, every=10, failures=2).start()
    yield proxy
    proxy.stop()


def test_transient_s3_errors_are_retried(ray_cluster, e2e_s3, bucket, pipeline_job, flaky_s3, report_fault):
    """Prepare, generate and filter (Ray Data tasks and actors, shard writes, stage commits) with the
    run directory behind a proxy that answers 1 request in 10 with 503 SlowDown or 500
    InternalError, twice in a row: the job succeeds and writes what the undisturbed run wrote.
    (Training's checkpoints go through the same filesystem: tests/unit/test_storage.py checks
    its retries reach Ray workers.)"""
    job = start_job(ray_cluster, e2e_s3, pipeline_job, bucket, "--until", "filter",
                    "--env", f"AWS_ENDPOINT_URL={flaky_s3.endpoint}")
    finish(ray_cluster, job)
    rows = synthetic_rows(e2e_s3, bucket)
    reference = synthetic_rows(e2e_s3, pipeline_job.bucket)
    lost, duplicated = lost_and_duplicated(rows, reference)
    ours = table(e2e_s3, bucket, "run/prepared/train/").to_pylist()
    theirs = table(e2e_s3, pipeline_job.bucket, "run/prepared/train/").to_pylist()
    filtered = synthetic_rows(e2e_s3, bucket, "filtered")
    report_fault(f"{flaky_s3.summary()}; job SUCCEEDED; {len(rows)} synthetic rows (undisturbed run: "
                 f"{len(reference)}), lost {lost}, duplicated {duplicated}")
    assert sum(flaky_s3.failed.values()) >= 20 and flaky_s3.failed_by_method.keys() >= {"GET", "PUT", "HEAD"}
    assert (lost, duplicated) == (0, 0) and rows == reference
    assert sorted(map(str, ours)) == sorted(map(str, theirs))
    assert filtered == synthetic_rows(e2e_s3, pipeline_job.bucket, "filtered") and filtered

"""`mdrec submit`, `status` and `logs` against a real two-node Ray cluster (see conftest.py).

One small pipeline job (`pipeline_job` in conftest.py: generated world, popularity backend pinned to
the `gpu_node` worker, one tiny STAR epoch, variants real and filtered) on an S3 run directory; the
tests read what it left: its status, its logs, where its actors ran, and that no credential went with it. What needs
no cluster (refusals, an unreachable address) is in tests/unit/test_jobs.py.
"""

from __future__ import annotations

import json

from tests.conftest import REPO


def test_submit_runs_the_pipeline_on_the_cluster(pipeline_job, ray_cluster, e2e_s3):
    done = pipeline_job.done
    print(f"the pipeline job took {pipeline_job.seconds:.0f}s from `mdrec submit` to its end")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert pipeline_job.printed == pipeline_job.job_id  # the first line of stdout, for scripts
    assert done.stderr.strip().splitlines()[-1] == f"job {pipeline_job.job_id} SUCCEEDED"
    # --follow streamed the job's own log lines; the job ran the shipped checkout, not /work/main.
    shipped = [line for line in done.stdout.splitlines() if line.startswith("mdrec 0.1.0 from ")]
    assert shipped and not shipped[0].split()[3].startswith(str(REPO)), shipped
    assert "generate: committed" in done.stdout and "filter: kept" in done.stdout
    keys = set(e2e_s3.keys(pipeline_job.bucket, "run/"))
    for name in ("report/report.md", "config.yaml", "synthetic/filtered/_COMMITTED.json",
                 "models/star/filtered/cold_start/seed-1/model.pt",
                 "evaluation/star/real/cold_start/seed-1/metrics.json", "report/ndcg@10.png"):
        assert f"run/{name}" in keys, name
    written = e2e_s3.client().get_object(Bucket=pipeline_job.bucket, Key="run/config.yaml")["Body"].read().decode()
    assert "seed: 1" in written and f"run_dir: s3://{pipeline_job.bucket}/run" in written  # --set and --run-dir went along
    info = ray_cluster.job_info(pipeline_job.job_id)
    assert info["entrypoint"] == (f"python jobs/pipeline.py --config mdrec-job/pipeline.yaml "
                                  f"--run-dir s3://{pipeline_job.bucket}/run --set seed=1")
    assert info["runtime_env"]["working_dir"].startswith("gcs://")


def test_generation_actors_ran_on_the_gpu_node(pipeline_job, ray_cluster):
    assert pipeline_job.done.returncode == 0
    nodes = ray_cluster.node_ids()
    gpu_node = [node for node, what in nodes.items() if what == "gpu_node"]
    head = [node for node, what in nodes.items() if what == "head"]
    info = ray_cluster.job_info(pipeline_job.job_id)
    job_actors = [a for a in ray_cluster.state("actors") if a["job_id"] == info["job_id"]]
    scorers = [a for a in job_actors if "PopularityScorer" in a["class_name"]]
    assert scorers, sorted({a["class_name"] for a in job_actors})
    assert {a["node_id"] for a in scorers} == set(gpu_node), (scorers, nodes)
    # The driver and the rest of the job had the head to themselves: the pin is what put the scorers there.
    assert info["driver_node_id"] in head


def test_cpu_stages_ran_on_the_cpu_node(pipeline_job, ray_cluster):
    """`ray.cpu_label_selector: {mdrec-node: cpu}` kept every task and actor of the job on the head
    (the node with that label) but the backend's scorers: prepare's and generate's Ray Data work,
    the filter's tasks, the training workers and their data loading, evaluation."""
    assert pipeline_job.done.returncode == 0
    nodes = ray_cluster.node_ids()
    job = ray_cluster.job_info(pipeline_job.job_id)["job_id"]
    tasks = [t for t in ray_cluster.state("tasks", filter_keys="job_id", filter_predicates="=", filter_values=job)
             if t.get("node_id")]  # those that ran
    ran = {}
    for t in tasks:
        ran.setdefault(nodes.get(t["node_id"], t["node_id"]), set()).add(t["func_or_class_name"].split(".")[0])
    print({node: sorted(names) for node, names in ran.items()})
    assert set(ran) == {"head", "gpu_node"}
    # The one exception is Ray's, not mdrec's: Ray Data 2.60 starts its Parquet footer readers
    # (datasource v2 `FooterReader` actors, file metadata only) with scheduling_strategy="SPREAD"
    # and without the DataContext's label selector, so no setting of ours can place them.
    assert {name for name in ran["gpu_node"] if "PopularityScorer" not in name} <= {"FooterReader"}
    for stage_work in ("_map_task", "_load", "_apply_local", "_write", "RayTrainWorker", "SplitCoordinator",
                       "MapWorker(MapBatches(_Scorer))"):  # Ray Data, filter, train and its data, evaluate
        assert stage_work in ran["head"], stage_work
    assert "placement: CPU stages on nodes labelled {'mdrec-node': 'cpu'} (1 of 2 now)" in pipeline_job.done.stdout


def test_status_and_logs_of_the_job(pipeline_job, ray_cluster):
    job = pipeline_job.job_id
    status = ray_cluster.mdrec("status", job, "--address", ray_cluster.address)
    assert status.returncode == 0 and status.stdout.splitlines()[0] == "SUCCEEDED", status.stderr
    # The address may come from the environment, as with Ray's own CLI.
    env = ray_cluster.client_env(RAY_API_SERVER_ADDRESS=ray_cluster.address)
    logs = ray_cluster.mdrec("logs", job, env=env)
    assert logs.returncode == 0, logs.stderr
    assert "generate: committed" in logs.stdout and "mdrec 0.1.0 from " in logs.stdout
    followed = ray_cluster.mdrec("logs", job, "--follow", "--address", ray_cluster.address)
    assert followed.returncode == 0 and "generate: committed" in followed.stdout
    assert followed.stderr.strip().splitlines()[-1] == f"job {job} SUCCEEDED"


def _one_error_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_unknown_job_is_one_line(ray_cluster):
    for command in ("status", "logs"):
        line = _one_error_line(ray_cluster.mdrec(command, "no-such-job", "--address", ray_cluster.address))
        assert line == f"error: no job 'no-such-job' on {ray_cluster.address}"


def test_no_credential_leaves_with_the_job(pipeline_job, ray_cluster, e2e_s3):
    assert pipeline_job.done.returncode == 0
    secrets = {"secret key": e2e_s3.secret_key, "access key": e2e_s3.access_key, "cluster token": ray_cluster.token}
    info_text = ray_cluster.get(f"/api/jobs/{pipeline_job.job_id}").text
    listed = ray_cluster.get("/api/jobs/").text
    logs = ray_cluster.job_logs(pipeline_job.job_id)
    for what, value in secrets.items():
        for where, text in (("job info", info_text), ("job list", listed), ("job logs", logs),
                            ("submit output", pipeline_job.done.stdout + pipeline_job.done.stderr)):
            assert value not in text, f"the {what} is in the {where}"
    info = json.loads(info_text)
    assert not [k for k in info["runtime_env"].get("env_vars", {}) if k.startswith("AWS_")]
    assert set(info["metadata"]) == {"mdrec_config", "mdrec_run_dir", "mdrec_version"}
    s3 = e2e_s3.client()
    keys = e2e_s3.keys(pipeline_job.bucket, "run/")
    assert len(keys) > 20
    for key in keys:
        body = s3.get_object(Bucket=pipeline_job.bucket, Key=key)["Body"].read()
        for what, value in secrets.items():
            assert value.encode() not in body, f"the {what} is in s3://{pipeline_job.bucket}/{key}"

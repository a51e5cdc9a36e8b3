"""Transient S3 errors (503 SlowDown, 500 InternalError) are retried: a run directory behind a
proxy that fails 1 request in 10 twice in a row still commits and reads every stage."""

from __future__ import annotations

import boto3
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from mdrec.storage import RunDir, _s3_settings, reset_s3_settings
from tests.flaky_s3 import FlakyS3Proxy


@pytest.fixture
def flaky_endpoint(s3_server, monkeypatch):
    proxy = FlakyS3Proxy(s3_server, every=10, failures=2).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    reset_s3_settings()
    yield proxy
    proxy.stop()
    reset_s3_settings()


def test_run_dir_survives_transient_s3_errors(flaky_endpoint, s3_server):
    proxy = flaky_endpoint
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="mdrec-flaky")
    run = RunDir("s3://mdrec-flaky/run")
    stages = 15
    for i in range(stages):
        with run.stage(f"stage-{i}").writing(f"fp-{i}") as out:
            out.join("rows.parquet").write_table(pa.table({"x": list(range(i, i + 100))}))
            out.join("meta.json").write_json({"i": i})
    for i in range(stages):
        stage = run.stage(f"stage-{i}")
        assert stage.is_current(f"fp-{i}")
        assert stage.location.join("rows.parquet").read_table().column("x").to_pylist() == list(range(i, i + 100))
        assert stage.location.join("meta.json").read_json() == {"i": i}
    errors = sum(proxy.failed.values())
    print(f"{proxy.summary()}; {stages} stages committed and read back, nothing lost")
    # More retries than the AWS SDK's standard strategy allows a pyarrow filesystem (~100).
    assert errors > 120 and set(proxy.errors_sent) == {"SlowDown", "InternalError"}
    # The proxy really fails requests: without retries, reads fail.
    settings = dict(_s3_settings())
    settings.pop("max_attempts")
    once = pafs.S3FileSystem(retry_strategy=pafs.AwsDefaultS3RetryStrategy(max_attempts=1), **settings)
    failures = 0
    for i in range(30):
        try:
            once.get_file_info(f"mdrec-flaky/run/stage-{i % stages}/meta.json")
        except OSError:
            failures += 1
    assert failures >= 2

"""Atomic stage commits on local disk (the S3 path is exercised in tests/integration)."""

import os

import pyarrow as pa
import pytest

from mdrec.errors import StorageError
from mdrec.storage import (DEFAULT_S3_ATTEMPTS, MARKER, RetryingS3FileSystem, RunDir, _s3_client, describe_inputs,
                           reset_s3_settings, resolve, s3_filesystem)


def write_stage(run, fp, value):
    with run.stage("s").writing(fp) as out:
        out.join("t.parquet").write_table(pa.table({"x": [value]}))
        out.join("sub", "u.json").write_json({"v": value})


def test_commit_and_is_current(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    stage = run.stage("s")
    assert not stage.is_current("fp1")
    write_stage(run, "fp1", 1)
    assert stage.is_current("fp1")
    assert not stage.is_current("fp2")
    record = stage.commit_record()
    assert record["fingerprint"] == "fp1"
    assert {f["path"] for f in record["files"]} == {"t.parquet", "sub/u.json"}
    assert stage.location.join("t.parquet").read_table()["x"].to_pylist() == [1]


def test_failed_attempt_keeps_committed_output(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    write_stage(run, "fp1", 1)
    with pytest.raises(RuntimeError):
        with run.stage("s").writing("fp2") as out:
            out.join("t.parquet").write_table(pa.table({"x": [2]}))
            raise RuntimeError("killed half way")
    stage = run.stage("s")
    assert stage.is_current("fp1")
    assert stage.location.join("t.parquet").read_table()["x"].to_pylist() == [1]
    assert not list((tmp_path / "run" / ".staging").iterdir())  # the attempt cleaned up


def test_leftovers_of_killed_attempts_are_removed(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    killed = tmp_path / "run" / ".staging" / "s-deadbeef0000"
    killed.mkdir(parents=True)
    (killed / "half.parquet").write_bytes(b"partial")
    other = tmp_path / "run" / ".staging" / "other-stage-1234"
    other.mkdir()
    write_stage(run, "fp1", 1)
    assert not killed.exists()
    assert other.exists()  # another stage's staging is not this stage's business


def test_missing_marker_or_file_means_not_done(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    write_stage(run, "fp1", 1)
    (tmp_path / "run" / "s" / "sub" / "u.json").unlink()
    assert not run.stage("s").is_current("fp1")
    write_stage(run, "fp1", 1)
    (tmp_path / "run" / "s" / MARKER).unlink()  # as if killed between the move and the marker
    assert not run.stage("s").is_current("fp1")


def test_recommit_replaces_old_files(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    with run.stage("s").writing("a") as out:
        out.join("old.json").write_json({})
    write_stage(run, "b", 2)
    assert not (tmp_path / "run" / "s" / "old.json").exists()
    assert run.stage("s").is_current("b")


def test_describe_inputs_changes_with_content(tmp_path):
    f = tmp_path / "data.csv"
    f.write_text("a\n1\n")
    before = describe_inputs([str(f)])
    f.write_text("a\n1\n2\n")
    assert describe_inputs([str(f)]) != before
    # Same bytes again (but a new modification time, as after a fresh copy): same description.
    f.write_text("a\n1\n")
    os.utime(f, ns=(1, 1))
    assert describe_inputs([str(f)]) == before
    # Same length, one byte different: a size-and-time check would miss it.
    f.write_text("a\n7\n")
    os.utime(f, ns=(1, 1))
    assert describe_inputs([str(f)]) != before
    with pytest.raises(StorageError, match="no such file or directory"):
        describe_inputs([str(tmp_path / "missing.csv")])


def test_bad_uris():
    with pytest.raises(StorageError, match="unsupported scheme"):
        resolve("gs://bucket/x")


@pytest.mark.parametrize("configured, attempts", [(None, DEFAULT_S3_ATTEMPTS), ("4", 4)])
def test_s3_retries_are_configured_and_travel_to_ray_workers(monkeypatch, configured, attempts):
    """AWS_MAX_ATTEMPTS (the AWS SDKs' own setting) or our default, for pyarrow and boto3 alike;
    pyarrow pickles an S3FileSystem without its retry strategy, ours keeps it."""
    import cloudpickle

    for name in ("AWS_MAX_ATTEMPTS", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")  # no ~/.aws/config of this machine
    if configured:
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", configured)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    reset_s3_settings()
    try:
        fs = s3_filesystem()
        shipped = cloudpickle.loads(cloudpickle.dumps(fs))  # what a Ray task or Train worker gets
        assert isinstance(shipped, RetryingS3FileSystem) and shipped.max_attempts == attempts
        assert shipped.region == fs.region == "eu-west-1"
        assert _s3_client().meta.config.retries == {"mode": "standard", "total_max_attempts": attempts}
    finally:
        reset_s3_settings()


def test_copy_from_commits_the_same_stage_in_another_run_dir(tmp_path):
    from mdrec.errors import DataError

    source = RunDir(str(tmp_path / "a")).stage("prepared")
    with source.writing("fp1", meta={"rows": 3}) as out:
        out.join("t/x.parquet").write_table(pa.table({"a": [1, 2, 3]}))
    copy = RunDir(str(tmp_path / "a" / "backends" / "b")).stage("prepared")
    copy.copy_from(source)
    assert copy.is_current("fp1") and copy.commit_record()["rows"] == 3
    assert copy.location.join("t/x.parquet").read_table().column("a").to_pylist() == [1, 2, 3]
    with pytest.raises(DataError, match="not committed"):
        RunDir(str(tmp_path / "c")).stage("prepared").copy_from(RunDir(str(tmp_path / "d")).stage("prepared"))

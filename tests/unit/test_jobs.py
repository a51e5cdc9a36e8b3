"""`mdrec submit` and the job entry point without a cluster: what is sent, what is refused before
anything is sent, and one-line errors. The cluster side is in tests/e2e/."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys

import pytest
import yaml

from mdrec import jobs
from mdrec.config import config_from_dict
from mdrec.errors import ClusterError, ConfigError
from tests.conftest import REPO, run_cli

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"


def small_config(**extra) -> dict:
    cfg = {"name": "t", "data": {"source": {"type": "world", "users": 50}}}
    cfg.update(extra)
    return cfg


def write(tmp_path, cfg: dict, name="c.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture
def no_cluster_env(monkeypatch):
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)


def _one_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "HF_TOKEN",
                                  "hf_token", "OPENAI_API_KEY", "apiKey", "DB_PASSWORD", "RAY_AUTH_TOKEN"])
def test_credential_names(name):
    assert jobs.looks_like_credential(name)


@pytest.mark.parametrize("name", ["TOKENIZERS_PARALLELISM", "VLLM_CPU_KVCACHE_SPACE", "max_tokens", "HF_TOKEN_PATH",
                                  "RAY_AUTH_TOKEN_PATH", "PYTHONUNBUFFERED", "KEY_BY"])
def test_not_credential_names(name):
    assert not jobs.looks_like_credential(name)


def test_credential_keys_of_a_config():
    cfg = config_from_dict(small_config(generate={"backend": {
        "type": "vllm", "model": "m", "env": {"HF_TOKEN": "hf_x", "VLLM_LOGGING_LEVEL": "INFO"},
        "engine_kwargs": {"hf_token": "hf_y", "dtype": "bfloat16"}, "sampling": {"max_tokens": 8}}}))
    assert jobs.credential_keys(cfg) == ["generate.backend.engine_kwargs.hf_token", "generate.backend.env.HF_TOKEN"]
    assert jobs.credential_keys(config_from_dict(small_config())) == []
    with pytest.raises(ConfigError, match="generate.backend.engine_kwargs.hf_token, generate.backend.env.HF_TOKEN: "
                                          "looks like a credential"):
        jobs.refuse_credentials_in(cfg)


def test_secrets_of_the_shell_are_found_by_value_and_never_shown():
    found = jobs.local_secrets({"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ACCESS_KEY_ID": "short", "HOME": SECRET,
                                "HF_TOKEN_PATH": "/etc/hf-token-file"})
    assert found == {"AWS_SECRET_ACCESS_KEY": SECRET}  # by name; short values and paths are no secrets
    jobs.refuse_secrets({"entrypoint": "python jobs/pipeline.py --config x"}, found)
    with pytest.raises(ClusterError) as e:
        jobs.refuse_secrets({"entrypoint": f"python jobs/pipeline.py --set name={SECRET}"}, found)
    assert "entrypoint would carry the value of $AWS_SECRET_ACCESS_KEY" in str(e.value) and SECRET not in str(e.value)


def test_entrypoint_quotes_what_it_passes(tmp_path):
    command = jobs.entrypoint(tmp_path / "my config.yaml", "s3://b/run", ["name=a b", "train.epochs=1"])
    assert shlex.split(command) == ["python", "jobs/pipeline.py", "--config", "mdrec-job/my config.yaml",
                                    "--run-dir", "s3://b/run", "--set", "name=a b", "--set", "train.epochs=1"]


def test_entrypoint_carries_until():
    command = jobs.entrypoint(REPO / "c.yaml", "s3://b/run", [], until="generate")
    assert shlex.split(command)[-2:] == ["--until", "generate"]


def test_env_pairs_for_the_job():
    assert jobs.parse_env(["AWS_MAX_ATTEMPTS=20", "X=a=b", "EMPTY="]) == {"AWS_MAX_ATTEMPTS": "20", "X": "a=b",
                                                                        "EMPTY": ""}
    for bad, message in [("NOVALUE", "expected NAME=VALUE"), ("1X=2", "expected NAME=VALUE"),
                         ("HF_TOKEN=hf_abcdefghijk", "HF_TOKEN: looks like a credential")]:
        with pytest.raises(ConfigError, match=message) as e:
            jobs.parse_env([bad])
        assert "hf_abcdefghijk" not in str(e.value)


def test_until_choices_are_the_pipeline_stages():
    from mdrec.cli import run
    from mdrec.pipeline import RUN_ORDER

    until = next(p for p in run.params if p.name == "until")
    assert list(until.type.choices) == RUN_ORDER


def test_until_stops_after_the_stage_and_names_the_stages_of_the_run():
    from mdrec.pipeline import run_order

    augmented = config_from_dict(small_config(train={"variants": ["real", "filtered"]}))
    assert run_order(augmented, "generate") == ["prepare", "generate"]
    assert run_order(augmented) == ["prepare", "generate", "filter", "train", "evaluate", "report"]
    real_only = config_from_dict(small_config(train={"variants": ["real"]}))
    assert run_order(real_only, "train") == ["prepare", "train"]
    with pytest.raises(ConfigError, match=r"--until filter: not a stage of this run \(train.variants is real only"):
        run_order(real_only, "filter")


def test_run_dir_must_be_reachable_from_every_node():
    jobs.check_run_dir("s3://bucket/run")
    jobs.check_run_dir("/shared/runs/x")
    with pytest.raises(ConfigError, match="run directory 'runs/t' is relative"):
        jobs.check_run_dir("runs/t")


def test_runtime_env_of_the_repo():
    settings = jobs.runtime_env_settings(REPO)
    assert "working_dir" not in settings  # mdrec submit points it at the upload
    assert {".venv/", "runs/", ".git/"} <= set(settings["excludes"])
    assert not [k for k in settings.get("env_vars", {}) if jobs.looks_like_credential(k)]


def test_staged_upload_is_the_checkout_plus_the_config(tmp_path):
    repo = tmp_path / "repo"
    for name in ("mdrec", "jobs", ".venv", "runs"):
        (repo / name).mkdir(parents=True)
    (repo / "mdrec" / "cli.py").write_text("x")
    config = tmp_path / "elsewhere.yaml"
    config.write_text("name: t\n")
    with jobs.staged_upload(repo, config, [".venv/", "runs/", "**/__pycache__/"]) as upload:
        assert sorted(p.name for p in upload.iterdir()) == ["jobs", "mdrec", "mdrec-job"]
        assert (upload / "mdrec" / "cli.py").read_text() == "x"
        assert (upload / "mdrec-job" / "elsewhere.yaml").read_text() == "name: t\n"
    assert not upload.exists()
    assert (repo / "mdrec" / "cli.py").read_text() == "x"  # removing the upload leaves the checkout alone


def test_submit_needs_an_address(tmp_path, no_cluster_env):
    code, _, err = run_cli("submit", write(tmp_path, small_config()), "--run-dir", "s3://b/run")
    assert "no Ray cluster given: pass --address" in _one_line(code, err)


def test_unreachable_address_is_one_line(tmp_path, no_cluster_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket is closed
    for args in (["status", "some-job"], ["logs", "some-job"],
                 ["submit", write(tmp_path, small_config()), "--run-dir", "s3://b/run"]):
        code, _, err = run_cli(*args, "--address", nowhere)
        assert _one_line(code, err).startswith(f"error: cannot reach the Ray job API at {nowhere} ")


def test_submit_refuses_before_sending_anything(tmp_path, monkeypatch, no_cluster_env):
    # An address nothing listens on: a refusal must come before any connection is tried.
    nowhere = "http://127.0.0.1:9"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    token = small_config(generate={"backend": {"type": "vllm", "model": "m", "env": {"HF_TOKEN": "hf_abcdefghijk"}}})
    code, _, err = run_cli("submit", write(tmp_path, token), "--address", nowhere, "--run-dir", "s3://b/run")
    line = _one_line(code, err)
    assert line.startswith("error: generate.backend.env.HF_TOKEN: looks like a credential") and "hf_abc" not in line
    plain = write(tmp_path, small_config(), "plain.yaml")
    code, _, err = run_cli("submit", plain, "--address", nowhere, "--run-dir", "s3://b/run", "--set", f"name={SECRET}")
    line = _one_line(code, err)
    assert "entrypoint would carry the value of $AWS_SECRET_ACCESS_KEY" in line and SECRET not in line
    leaky = tmp_path / "leaky.yaml"  # the config file travels whole, comments included
    leaky.write_text(f"# aws key for later: {SECRET}\n" + yaml.safe_dump(small_config()))
    code, _, err = run_cli("submit", str(leaky), "--address", nowhere, "--run-dir", "s3://b/run")
    assert "config would carry the value of $AWS_SECRET_ACCESS_KEY" in _one_line(code, err)
    code, _, err = run_cli("submit", plain, "--address", nowhere)
    assert "run directory 'runs/t' is relative" in _one_line(code, err)
    code, _, err = run_cli("submit", plain, "--address", nowhere, "--run-dir", "s3://b/run", "--env",
                           f"MY_SECRET={SECRET}")
    line = _one_line(code, err)
    assert "--env MY_SECRET: looks like a credential" in line and SECRET not in line
    code, _, err = run_cli("submit", plain, "--address", nowhere, "--run-dir", "s3://b/run", "--env",
                           f"NOTE={SECRET}")  # a harmless name, but the value is this shell's secret
    assert "runtime_env would carry the value of $AWS_SECRET_ACCESS_KEY" in _one_line(code, err)
    code, _, err = run_cli("submit", plain, "--address", nowhere, "--run-dir", "s3://b/run", "--until", "filter",
                           "--set", "train.variants=[real]")
    assert "--until filter: not a stage of this run" in _one_line(code, err)


def test_job_entrypoint_refuses_a_credential_before_writing_the_run_dir(tmp_path):
    from mdrec.cli import job_entrypoint, main

    cfg = small_config(generate={"backend": {"type": "vllm", "model": "m", "env": {"HF_TOKEN": "hf_abcdefghijk"}}})
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["--config", write(tmp_path, cfg), "--run-dir", str(run_dir)], command=job_entrypoint,
             prog_name="jobs/pipeline.py")
    assert e.value.code == 2 and not run_dir.exists()


def test_no_command_writes_a_credential_to_the_run_dir(tmp_path, capsys):
    """A local run writes config.yaml too: the same refusal, before anything is written."""
    from mdrec.cli import main

    cfg = small_config(generate={"backend": {"type": "vllm", "model": "m", "env": {"HF_TOKEN": "hf_abcdefghijk"}}})
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["prepare", write(tmp_path, cfg), "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and not run_dir.exists()
    assert err.startswith("error: generate.backend.env.HF_TOKEN: looks like a credential") and "\n" not in err
    assert "hf_abcdefghijk" not in err


def test_pipeline_script_bad_input_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "jobs/pipeline.py", "--config", str(tmp_path / "missing.yaml")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.yaml'}: cannot read config "
                                                "(No such file or directory)"]
    done = subprocess.run([sys.executable, "jobs/pipeline.py"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Missing option '--config'" in done.stderr


def test_python_dash_m_mdrec():
    done = subprocess.run([sys.executable, "-m", "mdrec", "--version"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "mdrec, version 0.1.0"

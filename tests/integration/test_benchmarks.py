"""Every script in benchmarks/ runs: its `--quick` (a small end-to-end run) in a subprocess of its
own, which must exit 0 and print exactly one JSON line on stdout, with figures that make sense.

The scripts are found by globbing benchmarks/*.py, so a new script is tested from the day it lands
and fails here until it has a `--quick` (or an entry in NO_QUICK that says why it cannot have one).
Each run gets a Ray of its own (its own RAY_TMPDIR), killed with the script if it outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import REPO
from tests.integration.conftest import kill_processes_using

SCRIPTS = sorted(p.name for p in (REPO / "benchmarks").glob("*.py"))
# Measured on 2 cores that two other jobs shared (load average 7-20): --quick of prepare 46-140 s, filter
# 144-179 s, generator_quality 158-208 s, train 179-295 s (four Ray Train runs), generate 282 s.
TIMEOUT_S = 600

# Scripts that cannot run a quick check here, and why; every other script must have --quick.
NO_QUICK = {
    "recbole_peer.py": "every run needs RecBole's own venv, installed from the package index (minutes); "
                       "train.py --quick skips RecBole",
}


def run_script(script: str, *args: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """`python benchmarks/SCRIPT ARGS` in its own session with its own Ray; whatever it leaves is killed."""
    ray_tmp = tempfile.mkdtemp(prefix="mdrec-bench-", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)  # never the test session's Ray, nor a cluster's
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{script} {' '.join(args)} ran past {timeout} s; stderr ends:\n{err[-3000:]}")
    finally:
        kill_processes_using(ray_tmp)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def positive(figures: dict, *keys: str) -> None:
    for key in keys:
        assert isinstance(figures[key], (int, float)) and figures[key] > 0, (key, figures[key])


def check_prepare(result: dict) -> None:
    for data in ("shared", "world_1x", "world_10x"):
        positive(result, *(f"{data}_{m}" for m in ("rows", "seconds", "rows_per_s", "cases")))
        assert result[f"{data}_cases"] < result[f"{data}_rows"]
    assert result["world_10x_rows"] > 5 * result["world_1x_rows"]
    positive(result, "world_10x_vs_1x_rows_per_s_ratio", "world_10x_vs_1x_seconds_ratio", "ray_cpus")


def check_filter(result: dict) -> None:
    positive(result, "food_interactions", "teacher_and_first_run_seconds")
    for scale in (1, 10):
        assert result[f"rows_{scale}x"] == scale * result["food_interactions"]
        assert 0 < result[f"kept_{scale}x"] <= result[f"rows_{scale}x"]
        positive(result, f"seconds_{scale}x", f"rows_per_second_{scale}x")
        assert list(result[f"step_seconds_{scale}x"]) == result["steps"]
    assert "teacher" in result["steps"]


def check_train(result: dict) -> None:
    for run in ("sasrec_1w", "sasrec_2w", "star_1w", "star_2w"):
        positive(result[run], "epoch_seconds", "positives_per_s", "fit_seconds")
    assert set(result["evaluation"]) == {"sasrec", "star"}
    for figures in result["evaluation"].values():
        positive(figures, "score_seconds", "test_cases", "epoch_seconds")
    assert "recbole_sasrec" not in result  # --quick skips RecBole


def check_generate(result: dict) -> None:
    assert "semantic" not in result  # --quick skips the semantic backend
    choose = result["vllm"]["choose"]
    assert choose["same_work"], "the pipeline and the bare loop made different answers"
    for side in ("pipeline", "bare"):
        for size in ("small", "large"):
            run = choose["runs"][0][side][size]
            assert 0 < run["complete_contexts"] == run["contexts"], (side, size, run)
    positive(result, "seconds")


def check_generator_quality(result: dict) -> None:
    assert list(result["backends"]) == ["popularity"]
    popularity = result["backends"]["popularity"]
    positive(popularity, "contexts", "seconds")
    assert popularity["quality"]["targets"] and all(t["users"] > 0 for t in popularity["quality"]["targets"])


CHECKS = {"prepare.py": check_prepare, "filter.py": check_filter, "train.py": check_train,
          "generate.py": check_generate, "generator_quality.py": check_generator_quality}


def test_the_scripts_are_found():
    assert {"prepare.py", "train.py", "recbole_peer.py"} <= set(SCRIPTS)
    assert set(NO_QUICK) <= set(SCRIPTS), "NO_QUICK names a script that is gone"


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_quick(script, tmp_path):
    helped = run_script(script, "--help", timeout=120)
    assert helped.returncode == 0, helped.stderr[-3000:]
    if script in NO_QUICK:
        assert "--quick" not in helped.stdout, f"{script} has --quick now: take it out of NO_QUICK"
        return
    assert "--quick" in helped.stdout, f"benchmarks/{script} has no --quick (add one, or say in NO_QUICK why not)"

    args = ["--quick"] + (["--workdir", str(tmp_path / "work")] if "--workdir" in helped.stdout else [])
    proc = run_script(script, *args)
    assert proc.returncode == 0, f"{script} --quick exited {proc.returncode}; stderr ends:\n{proc.stderr[-4000:]}"
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"{script} --quick printed {len(lines)} lines on stdout, not one:\n{proc.stdout[-3000:]}"
    result = json.loads(lines[0])
    assert result["quick"] is True
    assert result["benchmark"] == script.removesuffix(".py")
    assert script in CHECKS, f"say here what benchmarks/{script} --quick must print"
    CHECKS[script](result)


def test_recbole_peer_options_and_runner(tmp_path):
    """What recbole_peer.py can show without RecBole: its options parse, and the runner compiles."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("recbole_peer", REPO / "benchmarks" / "recbole_peer.py")
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    compile(peer.RUNNER, "run_sasrec.py", "exec")
    helped = run_script("recbole_peer.py", "--help", timeout=120)
    assert helped.returncode == 0 and "--interactions" in helped.stdout and "--max-batches" in helped.stdout
    refused = run_script("recbole_peer.py", timeout=120)  # --interactions is required
    assert refused.returncode == 2 and "--interactions" in refused.stderr
    with pytest.raises(ValueError, match="loss_type"):
        peer.run_recbole_sasrec(None, str(tmp_path), loss_type="MSE")

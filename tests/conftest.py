"""Shared test helpers: repo paths, the shared data set, and running the CLI in-process."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data" / "amazon-food-kitchen").resolve()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "interactions.parquet").exists():
        pytest.fail(f"shared data not found at {SHARED_DATA} (it must sit beside the repo)")
    return SHARED_DATA


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run `mdrec ARGS` in this process; return (exit code, stdout, stderr)."""
    from mdrec.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def in_repo_root(monkeypatch):
    """Configs name paths relative to the repo root, as a user running from there would."""
    monkeypatch.chdir(REPO)
    return REPO


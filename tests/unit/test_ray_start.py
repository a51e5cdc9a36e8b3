"""A local Ray whose node misses Ray's fixed start-up wait on busy cores is started once more;
any other failure is not retried. (A node cannot be made slow on demand, so the start is a fake
that fails the way Ray's node.py does.)"""

from __future__ import annotations

import pytest

from mdrec import ray_session


class Starts:
    def __init__(self, failures: list[Exception]):
        self.failures, self.calls = list(failures), 0

    def __call__(self):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)


def test_a_node_that_timed_out_during_startup_is_started_again(monkeypatch):
    shutdowns = []
    monkeypatch.setattr("ray.shutdown", lambda: shutdowns.append(1))
    start = Starts([Exception("The current node timed out during startup. This could happen ...")])
    ray_session._start_local(start)
    assert start.calls == 2 and shutdowns == [1]


def test_other_failures_and_a_second_timeout_are_raised(monkeypatch):
    monkeypatch.setattr("ray.shutdown", lambda: None)
    other = Starts([ValueError("num_cpus must be positive")])
    with pytest.raises(ValueError):
        ray_session._start_local(other)
    assert other.calls == 1
    twice = Starts([TimeoutError("Timed out after 30 seconds while waiting for node to startup.")] * 2)
    with pytest.raises(TimeoutError):
        ray_session._start_local(twice)
    assert twice.calls == 2

"""Placement from config (mdrec/placement.py): which label selector each kind of work gets, and
when. Where the work then runs on a real two-node cluster is tests/e2e/test_submit.py's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mdrec import placement
from mdrec.config import load_config
from mdrec.config import Variant
from mdrec.data.schema import Protocol
from mdrec.experiment import RunKey
from mdrec.generate.stage import fingerprint as generate_fingerprint
from mdrec.train.stage import fingerprint as train_fingerprint

CPU = {"mdrec-node": "cpu"}


@pytest.fixture
def on_cluster(monkeypatch):
    monkeypatch.setattr(placement, "_started_here", False)


@pytest.fixture
def started_here(monkeypatch):
    monkeypatch.setattr(placement, "_started_here", True)


def config(tmp_path, *overrides: str):
    path = tmp_path / "c.yaml"
    path.write_text("data: {source: {type: world}}\nray: {cpu_label_selector: {mdrec-node: cpu}}\n")
    return load_config(path, list(overrides))


# Checked against Ray 2.60 on a node labelled mdrec-node=cpu: "!gpu" and a selector on a label the
# node lacks ("!x" of another key) schedule there; "gpu" and "!cpu" wait.
@pytest.mark.parametrize("selector, labels, expected", [
    ({"mdrec-node": "cpu"}, {"mdrec-node": "cpu"}, True),
    ({"mdrec-node": "gpu"}, {"mdrec-node": "cpu"}, False),
    ({"mdrec-node": "!cpu"}, {"mdrec-node": "cpu"}, False),
    ({"mdrec-node": "!gpu"}, {"mdrec-node": "cpu"}, True),
    ({"other": "!x"}, {"mdrec-node": "cpu"}, True),
    ({"other": "x"}, {"mdrec-node": "cpu"}, False),
    ({"mdrec-node": "in(cpu,gpu)"}, {"mdrec-node": "gpu"}, True),
    ({"mdrec-node": "!in(cpu, gpu)"}, {"mdrec-node": "gpu"}, False),
    ({"mdrec-node": "cpu", "zone": "a"}, {"mdrec-node": "cpu", "zone": "b"}, False),
    ({}, {}, True),
])
def test_matches_follows_rays_label_selectors(selector, labels, expected):
    assert placement.matches(selector, labels) is expected


def test_each_kind_of_work_gets_its_selector_on_a_cluster(tmp_path, on_cluster):
    cfg = config(tmp_path, "generate.backend.label_selector={mdrec-node: gpu}")
    assert placement.cpu_selector(cfg.ray) == CPU
    assert placement.backend_selector(cfg) == {"mdrec-node": "gpu"}
    assert placement.train_selector(cfg) == CPU  # null: the CPU stages'
    assert placement.task_options(cfg.ray, num_cpus=0.5) == {"num_cpus": 0.5, "label_selector": CPU}
    gpu_training = config(tmp_path, "train.use_gpu=true")
    assert placement.train_selector(gpu_training) == {}  # GPU workers go where the GPUs are
    pinned = config(tmp_path, "train.use_gpu=true", "train.label_selector={ray.io/accelerator-type: L4}")
    assert placement.train_selector(pinned) == {"ray.io/accelerator-type": "L4"}


def test_nothing_is_pinned_without_selectors(tmp_path, on_cluster):
    cfg = config(tmp_path, "ray.cpu_label_selector={}")
    assert placement.cpu_selector(cfg.ray) == {} and placement.train_selector(cfg) == {}
    assert placement.task_options(cfg.ray, num_cpus=1) == {"num_cpus": 1}  # no empty selector passed to Ray
    logged = []
    placement.describe(cfg, logged.append)
    assert logged == []


def test_a_ray_started_here_ignores_selectors_and_says_so(tmp_path, started_here):
    cfg = config(tmp_path, "generate.backend.label_selector={mdrec-node: gpu}")
    assert placement.cpu_selector(cfg.ray) == {} and placement.backend_selector(cfg) == {}
    assert placement.train_selector(cfg) == {}
    assert placement.task_options(cfg.ray, num_cpus=1) == {"num_cpus": 1}
    logged = []
    placement.describe(cfg, logged.append)
    assert len(logged) == 1 and logged[0].startswith("placement: one local Ray node: label selectors ignored")
    assert "{'mdrec-node': 'gpu'}" in logged[0] and "CPU stages {'mdrec-node': 'cpu'}" in logged[0]


def test_where_work_runs_does_not_change_what_it_writes(tmp_path):
    cfg = config(tmp_path)
    moved = config(tmp_path, "generate.backend.label_selector={mdrec-node: gpu}", "ray.cpu_label_selector={}",
                   "train.label_selector={mdrec-node: gpu}")
    assert generate_fingerprint(cfg, "p") == generate_fingerprint(moved, "p")
    prepared = SimpleNamespace(fingerprint="p", variant=Variant.real, mode=None)
    key = RunKey("star", "real", Protocol.warm, 0)
    spec = cfg.train.models[0]
    assert train_fingerprint(prepared, cfg, spec, key) == train_fingerprint(prepared, moved, spec, key)


def test_backend_overrides_without_a_backend_section_tune_the_default(tmp_path):
    cfg = config(tmp_path, "generate.backend.batch_size=8")
    assert cfg.generate.backend.type == "semantic" and cfg.generate.backend.batch_size == 8

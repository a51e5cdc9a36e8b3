"""Placement on the tests' local Ray (one node): what `placement.on_nodes` hands the backend, and
that the CPU selector reaches the DataContext only where it applies. Where the work lands on two
nodes is tests/e2e's."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mdrec import placement
from mdrec.config import RayConfig
from mdrec.ray_session import configure_data_context


def test_backend_dataset_gets_its_own_selector_and_runs_there(ray_session):
    import ray
    import ray.data

    def _node(batch: pa.Table) -> pa.Table:  # defined here: pickled by value for the workers
        return batch.append_column("node", pa.array([ray.get_runtime_context().get_node_id()] * batch.num_rows))

    node = ray.get_runtime_context().get_node_id()
    contexts = ray.data.from_items([{"user": i} for i in range(20)]).materialize()
    before = contexts.context.execution_options.label_selector
    backend = placement.on_nodes(contexts, {"ray.io/node-id": node})  # a label every node carries
    assert backend.context.execution_options.label_selector == {"ray.io/node-id": node}
    # Nobody else's context changed: the contexts', and the one new datasets are made under.
    assert contexts.context.execution_options.label_selector == before
    assert ray.data.DataContext.get_current().execution_options.label_selector == before
    out = backend.map_batches(_node, batch_format="pyarrow").take_all()
    assert sorted(r["user"] for r in out) == list(range(20)) and {r["node"] for r in out} == {node}
    assert placement.on_nodes(contexts, {}).context.execution_options.label_selector is None


@pytest.mark.parametrize("started_here, expected", [(False, {"mdrec-node": "cpu"}), (True, None)])
def test_cpu_selector_reaches_the_data_context_on_a_cluster_only(ray_session, monkeypatch, started_here, expected):
    import ray.data

    cfg = RayConfig(progress_bars=False, cpu_label_selector={"mdrec-node": "cpu"})
    monkeypatch.setattr(placement, "_started_here", started_here)
    try:
        configure_data_context(cfg)
        assert ray.data.DataContext.get_current().execution_options.label_selector == expected
    finally:
        monkeypatch.setattr(placement, "_started_here", True)
        configure_data_context(RayConfig(progress_bars=False))  # the other tests' settings
    assert ray.data.DataContext.get_current().execution_options.label_selector is None


def test_run_says_where_work_goes_and_warns_when_no_node_matches(ray_session, monkeypatch, tmp_path):
    import ray

    from mdrec.config import load_config

    node = ray.get_runtime_context().get_node_id()
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{source: {{type: world}}}}\nray: {{cpu_label_selector: {{ray.io/node-id: '{node}'}}}}\n"
                    "generate: {backend: {type: popularity, label_selector: {mdrec-node: gpu}}}\n")
    monkeypatch.setattr(placement, "_started_here", False)  # as if joined to a cluster
    logged = []
    placement.describe(load_config(path), logged.append)
    assert logged[0] == f"placement: CPU stages on nodes labelled {{'ray.io/node-id': '{node}'}} (1 of 1 now)"
    assert logged[1].startswith("placement: WARNING no live node has labels {'mdrec-node': 'gpu'} (generation backend)")
    assert logged[2].startswith("placement: training workers on nodes labelled {'ray.io/node-id'")  # the CPU one
    assert len(logged) == 3

"""Where each stage's Ray work may run, from config, with Ray's own node labels and label selectors.

- CPU stages (prepare; generate but its backend; filter; train's data loading; evaluate) need
  `ray.cpu_label_selector`: set on Ray Data's DataContext (every read, map, shuffle and actor pool
  of a dataset made under it) and on the filter's and translator's plain Ray tasks.
- The generation backend needs `generate.backend.label_selector` instead (its datasets are made
  with a DataContext holding that one), besides its GPUs or custom resources.
- Training workers need `train.label_selector`; null means the CPU selector, or none with use_gpu.

Nodes get labels from `ray start --labels k=v` (cluster/ shows them per node type). Selectors
apply on a cluster only: a Ray that mdrec starts on this machine is one node, which cannot be both
the CPU and the GPU node, so they are ignored there (and said so once).
"""

from __future__ import annotations

from typing import Callable

from mdrec.config import MdrecConfig, RayConfig

Log = Callable[[str], None]

# Whether this process started its own Ray (set by ray_session.ensure_ray).
_started_here = False


def mark_started_here(started: bool) -> None:
    global _started_here
    _started_here = started


def applies() -> bool:
    """Selectors apply unless mdrec started a one-node Ray in this process."""
    return not _started_here


def cpu_selector(ray_cfg: RayConfig) -> dict[str, str]:
    return dict(ray_cfg.cpu_label_selector) if applies() else {}


def backend_selector(cfg: MdrecConfig) -> dict[str, str]:
    return dict(cfg.generate.backend.label_selector) if applies() else {}


def train_selector(cfg: MdrecConfig) -> dict[str, str]:
    t = cfg.train
    if not applies():
        return {}
    if t.label_selector is not None:
        return dict(t.label_selector)
    return {} if t.use_gpu else cpu_selector(cfg.ray)


def task_options(ray_cfg: RayConfig, **options) -> dict:
    """`.options(...)` of a plain CPU task: `options` plus the CPU selector when there is one."""
    selector = cpu_selector(ray_cfg)
    return {**options, "label_selector": selector} if selector else options


def on_nodes(ds: "ray.data.Dataset", selector: dict[str, str]) -> "ray.data.Dataset":  # noqa: F821
    """The blocks of `ds` (materialized) as a dataset whose operators, and those applied to it,
    need `selector` instead of the CPU stages' one.

    A Dataset keeps a copy of the DataContext it was made under, and its descendants share that
    copy; `from_arrow_refs` makes a fresh one (its metadata tasks still run under the CPU
    selector), which is then changed for this dataset alone, as Ray Train does for its ingest."""
    import ray.data

    out = ray.data.from_arrow_refs(ds.to_arrow_refs())
    out.context.execution_options.label_selector = dict(selector) or None
    return out


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Ray's label-selector semantics: value, !value, in(a,b), !in(a,b); a missing label matches
    only the negated forms."""
    for key, condition in selector.items():
        negated = condition.startswith("!")
        condition = condition.lstrip("!")
        allowed = ({v.strip() for v in condition[3:-1].split(",")} if condition.startswith("in(")
                   else {condition})
        if (labels.get(key) in allowed) == negated:
            return False
    return True


def describe(cfg: MdrecConfig, log: Log) -> None:
    """One line per selector in use, and a warning for one no live node matches: its work would
    wait (for an autoscaler to add such a node, or forever)."""
    selectors = {"CPU stages": dict(cfg.ray.cpu_label_selector),
                 "generation backend": dict(cfg.generate.backend.label_selector),
                 "training workers": train_selector(cfg) if applies() else dict(cfg.train.label_selector or {})}
    used = {what: s for what, s in selectors.items() if s}
    if not used:
        return
    if not applies():
        log("placement: one local Ray node: label selectors ignored ("
            + "; ".join(f"{what} {s}" for what, s in used.items()) + ")")
        return
    import ray

    labels = [n.get("Labels") or {} for n in ray.nodes() if n.get("Alive")]
    for what, selector in used.items():
        count = sum(matches(selector, node) for node in labels)
        if count:
            log(f"placement: {what} on nodes labelled {selector} ({count} of {len(labels)} now)")
        else:
            log(f"placement: WARNING no live node has labels {selector} ({what}); their work waits for one "
                "(an autoscaler may add it)")

"""The generated `world` source on Ray Data: the catalog on the driver, users in parallel chunks."""

from __future__ import annotations

import pyarrow as pa
import ray
import ray.data

from mdrec.config import WorldSourceConfig
from mdrec.data import world
from mdrec.data.sources import LoadedSource


def inputs(cfg: WorldSourceConfig) -> list[str]:
    return []  # the config and the seed are the whole input


def _generate(batch: dict, *, cfg: WorldSourceConfig, seed: int, catalog) -> pa.Table:
    catalog = ray.get(catalog) if isinstance(catalog, ray.ObjectRef) else catalog
    return pa.concat_tables([world.generate_chunk(cfg, seed, catalog, int(c)) for c in batch["id"]])


def load(cfg: WorldSourceConfig, seed: int) -> LoadedSource:
    catalog = world.make_catalog(cfg, seed)
    n = world.num_chunks(cfg)
    interactions = ray.data.range(n, override_num_blocks=min(n, 64)).map_batches(
        _generate,
        batch_size=1,
        batch_format="numpy",
        fn_kwargs=dict(cfg=cfg, seed=seed, catalog=ray.put(catalog)),
    )
    return LoadedSource(
        interactions,
        ray.data.from_arrow(catalog.items),
        interactions_uri=f"world (seed {seed})",
        items_uri=f"world catalog (seed {seed})",
        declared_domains=[d.name for d in cfg.domains],
    )

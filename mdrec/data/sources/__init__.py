"""Data sources: a registry from source config type to the code that loads it.

A source turns its config into two Ray Datasets in the contract schemas (interactions and
items), and names the files it reads so that a change in them redoes the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import ray.data

from mdrec.config import AmazonSourceConfig, TableSourceConfig, WorldSourceConfig


@dataclass
class LoadedSource:
    interactions: ray.data.Dataset  # schema.INTERACTIONS
    items: ray.data.Dataset  # schema.ITEMS
    interactions_uri: str  # how to name the interactions in messages
    items_uri: str
    # Rows dropped while reading, reason -> domain -> count (e.g. malformed JSON lines).
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    # Domains the source itself declares (e.g. one per Amazon category); None when read from data.
    declared_domains: list[str] | None = None


@dataclass(frozen=True)
class SourceSpec:
    inputs: Callable  # (config) -> list of URIs whose files are the input
    load: Callable  # (config, seed) -> LoadedSource


def _registry() -> dict[type, SourceSpec]:
    from mdrec.data.sources import amazon, table, world

    return {
        TableSourceConfig: SourceSpec(table.inputs, table.load),
        AmazonSourceConfig: SourceSpec(amazon.inputs, amazon.load),
        WorldSourceConfig: SourceSpec(world.inputs, world.load),
    }


def source_spec(cfg) -> SourceSpec:
    try:
        return _registry()[type(cfg)]
    except KeyError:
        raise TypeError(f"no source registered for {type(cfg).__name__}") from None


def source_inputs(cfg) -> list[str]:
    return source_spec(cfg).inputs(cfg)


def load_source(cfg, seed: int) -> LoadedSource:
    return source_spec(cfg).load(cfg, seed)

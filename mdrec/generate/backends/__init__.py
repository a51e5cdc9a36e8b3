"""Backends by config type: each builder turns the backend config into a Ray Data stage.

A stage maps the contexts dataset to results (see `base.RESULT_SCHEMA`). Adding a backend is a
config class in `mdrec.config` plus a builder registered here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import ray
import ray.data

from mdrec import placement
from mdrec.data.schema import Protocol
from mdrec.config import (CooccurrenceBackendConfig, MdrecConfig, OracleBackendConfig, PopularityBackendConfig, SemanticBackendConfig,
                          TranslatorBackendConfig, VllmBackendConfig, WorldSourceConfig)
from mdrec.storage import Location


@dataclass
class BackendInputs:
    """What the stage hands a builder besides the config."""

    cfg: MdrecConfig
    histories: ray.data.Dataset  # one row per user (for learned backends)
    item_embeddings: object  # np.ndarray or None
    num_items: int
    item_ranges: dict[int, tuple[int, int]]
    num_domains: int
    protocols: list[Protocol]
    targets: list[int]  # domain_idx of each target domain
    log: Callable[[str], None]
    prepared: Location | None = None  # the prepared stage (the oracle reads held-out rows there)
    items: object = None  # pd.DataFrame of prepared/items.parquet


@dataclass
class BuiltBackend:
    model_name: str  # recorded as each synthetic row's `model`
    apply: Callable[[ray.data.Dataset], ray.data.Dataset]
    details: dict  # anything worth reporting (training losses, engine settings)


def actor_stage(backend, cls, constructor_kwargs: dict) -> Callable[[ray.data.Dataset], ray.data.Dataset]:
    """A pool of `backend.num_actors` actors running `cls` over batches of contexts."""

    def apply(ds: ray.data.Dataset) -> ray.data.Dataset:
        return ds.map_batches(
            cls, batch_size=backend.batch_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=backend.num_actors),
            fn_constructor_kwargs=constructor_kwargs, num_cpus=backend.cpus_per_actor,
            num_gpus=backend.gpus_per_actor or None, resources=backend.resources or None,
        )

    return apply


def _popularity(backend: PopularityBackendConfig, inputs: BackendInputs) -> BuiltBackend:
    from mdrec.generate.backends.popularity import PopularityScorer

    return BuiltBackend("popularity", actor_stage(backend, PopularityScorer, dict(per_user=inputs.cfg.generate.budget.per_user)), {})


def _cooccurrence(backend: CooccurrenceBackendConfig, inputs: BackendInputs) -> BuiltBackend:
    from mdrec.generate.backends.cooccurrence import CooccurrenceScorer

    scorer = actor_stage(backend, CooccurrenceScorer, dict(per_user=inputs.cfg.generate.budget.per_user))
    return BuiltBackend("cooccurrence", scorer, {})


def _semantic(backend: SemanticBackendConfig, inputs: BackendInputs) -> BuiltBackend:
    from mdrec.generate.backends.semantic import SemanticScorer

    enc = inputs.cfg.generate.encoder
    kwargs = dict(model=enc.model, batch_size=enc.batch_size, threads=max(1, int(backend.cpus_per_actor)),
                  item_embeddings=inputs.item_embeddings, per_user=inputs.cfg.generate.budget.per_user)
    return BuiltBackend(enc.model, actor_stage(backend, SemanticScorer, kwargs), {})


def _translator(backend: TranslatorBackendConfig, inputs: BackendInputs) -> BuiltBackend:
    from mdrec.generate.backends.translator import TranslatorScorer, train_translator, translator_examples

    cfg = inputs.cfg
    train = ray.remote(train_translator).options(**placement.task_options(cfg.ray, num_cpus=1))
    futures, sizes = {}, {}
    for protocol in inputs.protocols:
        for target in inputs.targets:
            start, end = inputs.item_ranges[target]
            examples = inputs.histories.map_batches(
                translator_examples, batch_format="pyarrow",
                fn_kwargs=dict(protocol=protocol.value, target=target, start=start, end=end,
                               history_per_domain=cfg.generate.context.history_per_domain,
                               num_domains=inputs.num_domains))
            key = (protocol.value, target)
            sizes[key] = end - start
            futures[key] = train.remote(examples.to_arrow_refs(), inputs.num_items, end - start, backend.embedding_dim,
                                        backend.epochs, backend.lr, backend.train_batch_size, cfg.seed)
    trained = {key: ray.get(f) for key, f in futures.items()}
    details = {f"{p}/{t}": {"users": r["users"], "losses": [round(x, 4) for x in r["losses"]]}
               for (p, t), r in trained.items()}
    trained_on = ", ".join(f"{k}: {v['users']} users" for k, v in details.items())
    inputs.log(f"generate: translator trained ({trained_on})")
    kwargs = dict(models={k: r["state"] for k, r in trained.items()}, num_items=inputs.num_items,
                  dim=backend.embedding_dim, ranges=inputs.item_ranges, target_sizes=sizes,
                  per_user=cfg.generate.budget.per_user)
    return BuiltBackend("two-tower", actor_stage(backend, TranslatorScorer, kwargs), details)


def _oracle(backend: OracleBackendConfig, inputs: BackendInputs) -> BuiltBackend:
    from mdrec.generate.backends.oracle import OracleScorer, held_out_training_rows, world_item_model

    cfg, source = inputs.cfg, inputs.cfg.data.source
    kwargs = dict(seed=cfg.seed, ranges=inputs.item_ranges)
    if isinstance(source, WorldSourceConfig):
        kwargs["world_model"] = world_item_model(source, cfg.seed, inputs.items)
        details = {"oracle": "draws from each user's true taste in the target domain (world source)"}
    else:
        held = held_out_training_rows(inputs.prepared, inputs.targets)
        kwargs["held_out"] = held
        details = {"oracle": "each cold-start held-out user's own held-out target rows, validation and test cases "
                             "excluded; warm users and users with no such row get nothing (nothing_to_give)",
                   "held_out_users_with_rows": len(held)}
    inputs.log("generate: ORACLE backend (a diagnostic ceiling, allowed by generate.backend.allow_oracle)")
    return BuiltBackend("oracle", actor_stage(backend, OracleScorer, kwargs), details)


def _vllm(backend: VllmBackendConfig, inputs: BackendInputs) -> BuiltBackend:
    from mdrec.generate.backends.vllm import build_vllm

    return build_vllm(backend, inputs)


BUILDERS: dict[type, Callable[..., BuiltBackend]] = {
    PopularityBackendConfig: _popularity,
    SemanticBackendConfig: _semantic,
    TranslatorBackendConfig: _translator,
    CooccurrenceBackendConfig: _cooccurrence,
    VllmBackendConfig: _vllm,
    OracleBackendConfig: _oracle,
}


def build_backend(inputs: BackendInputs) -> BuiltBackend:
    backend = inputs.cfg.generate.backend
    return BUILDERS[type(backend)](backend, inputs)

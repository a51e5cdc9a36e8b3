"""The `train` stage: one Ray Train (TorchTrainer, DDP) run per (model, variant, protocol, seed);
an augmented variant is trained once per synthetic mode (mdrec/train/synthetic, experiment.arms).

Checkpoints of a run live under `<run-dir>/.train/<model>-<variant>-<protocol>-<fingerprint>/`,
one per epoch, so a failed worker group or a re-submitted job goes on from the last epoch. When
training ends, the best epoch's weights and the per-epoch history are committed to
`<run-dir>/models/<model>/<variant>/<protocol>/seed-<n>/` (model.pt, metrics.json).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import ray
import ray.data
import torch

from mdrec import placement
from mdrec.config import MdrecConfig, ModelSpec, Variant, training_of
from mdrec.data.schema import Protocol, Source, Split
from mdrec.errors import DataError
from mdrec.experiment import Arm, RunKey, arms, grid
from mdrec.models import Dims, build_model
from mdrec.storage import RunDir
from mdrec.train.context import InteractionContext
from mdrec.train.examples import Candidates
from mdrec.train.synthetic import SyntheticMode, build_mode
from mdrec.train.synthetic.calibration import calibrate
from mdrec.train.synthetic.denoise import DenoiseConfig

Log = Callable[[str], None]


@dataclass
class PreparedData:
    """What training needs from `prepared/` (and, for augmented variants, `synthetic/`), read once."""

    protocol: Protocol
    dims: Dims
    item_ranges: dict[int, tuple[int, int]]
    train_path: str
    fs: object
    valid: Candidates
    context: InteractionContext
    fingerprint: str
    domain_names: dict[int, str]  # domain_idx -> name, for per-domain validation
    variant: Variant = Variant.real
    arm: str = Variant.real.value  # the variant under its mode, as the grid names it (raw, raw+context, ...)
    mode: SyntheticMode | None = None  # augmented variants: how the synthetic rows are used
    synthetic: pd.DataFrame | None = None  # synthetic rows in the loss (DATASET_COLUMNS); None when the mode keeps them out
    pairs: pd.DataFrame | None = None  # pairwise mode: (user, preferred, rejected) rows (PAIR_COLUMNS)
    synthetic_rows: int = 0  # the variant's synthetic rows of this protocol, wherever the mode puts them
    real_rows: int = 0  # real training rows of the protocol: how many batches the synthetic ones spread over
    synthetic_fingerprint: str | None = None
    denoise: DenoiseConfig | None = None  # T-CE on the synthetic positives in the loss (arms named +tce)
    calibration: dict | None = None  # soft mode: the Platt fit of the backend's scores (a, b, picks, hits)
    valid_ref: object = None  # object-store copies, shared by every run of the protocol and variant
    context_ref: object = None

    def shared(self) -> tuple:
        """Object-store refs of the validation cases and the context, put once."""
        if self.valid_ref is None:
            self.valid_ref, self.context_ref = ray.put(self.valid), ray.put(self.context)
        return self.valid_ref, self.context_ref


def _prepared_record(run_dir: RunDir) -> dict:
    stage = run_dir.stage("prepared")
    record = stage.commit_record()
    if record is None:
        raise DataError(f"{stage.location.uri}: not prepared yet (run `mdrec prepare` first)")
    return record


@dataclass(frozen=True)
class PreparedShape:
    """Sizes and domains of a prepared run directory, from its id tables (read once per protocol)."""

    dims: Dims
    ranges: dict[int, tuple[int, int]]  # domain_idx -> its [start, end) of item_idx
    domains: pd.DataFrame  # prepared/domains.parquet: domain_idx, domain, role, item range

    @property
    def names(self) -> dict[int, str]:
        return dict(zip(self.domains["domain_idx"].astype(int), self.domains["domain"]))


def read_shape(run_dir: RunDir) -> PreparedShape:
    _prepared_record(run_dir)
    loc = run_dir.stage("prepared").location
    domains = loc.join("domains.parquet").read_table().to_pandas()
    n_users = loc.join("users.parquet").read_table(columns=["user_idx"]).num_rows
    n_items = loc.join("items.parquet").read_table(columns=["item_idx"]).num_rows
    ranges = {int(r.domain_idx): (int(r.item_idx_start), int(r.item_idx_end)) for r in domains.itertuples()}
    return PreparedShape(Dims(n_users, n_items, len(domains)), ranges, domains)


TRAIN_COLUMNS = ["user_idx", "item_idx", "domain_idx", "ts", "weight"]
DATASET_COLUMNS = [*TRAIN_COLUMNS, "source"]  # what the workers read: `source` is real or synthetic
PAIR_COLUMNS = ["user_idx", "item_idx", "domain_idx", "ts", "rejected_idx"]  # rejected_idx -1: draw one


def _train_rows(batch: pd.DataFrame, *, protocol: str, columns: list[str] = TRAIN_COLUMNS) -> pd.DataFrame:
    """The rows a protocol trains on: under cold-start, the held-out users' cold-domain rows go."""
    if protocol == Protocol.cold_start.value:
        batch = batch[~batch["held_out"]]
    return batch[columns]


def load_context(run_dir: RunDir, protocol: Protocol, dims: Dims | None = None,
                 arm: Arm = Arm(Variant.real, None)) -> InteractionContext:
    """Every training row of the protocol (and the arm's synthetic rows), as histories and a graph."""
    dims = dims or read_shape(run_dir).dims
    train = run_dir.stage("prepared").location.join("train")
    table = train.read_table(columns=["user_idx", "item_idx", "domain_idx", "ts", "held_out"]).to_pandas()
    rows = _train_rows(table, protocol=protocol.value, columns=TRAIN_COLUMNS[:4])
    real = InteractionContext.from_rows(dims.num_users, dims.num_items, dims.num_domains, rows["user_idx"],
                                        rows["item_idx"], rows["domain_idx"], rows["ts"])
    return with_synthetic_context(run_dir, protocol, arm, real)


def mode_of(arm: Arm) -> SyntheticMode | None:
    return None if arm.mode is None else build_mode(arm.mode.name, arm.mode.params)


def with_synthetic_context(run_dir: RunDir, protocol: Protocol, arm: Arm,
                           real: InteractionContext) -> InteractionContext:
    """The context the arm's models read: the real one plus its synthetic rows when its mode puts
    them there (the real one itself for `real`)."""
    mode = mode_of(arm)
    if mode is None or not mode.in_context:
        return real
    synthetic, _ = synthetic_rows(run_dir, protocol, arm.variant, real)
    return real.with_rows(synthetic["user_idx"], synthetic["item_idx"], synthetic["domain_idx"], synthetic["ts"])


def synthetic_rows(run_dir: RunDir, protocol: Protocol, variant: Variant,
                   real: InteractionContext) -> tuple[pd.DataFrame, str]:
    """A variant's synthetic rows for one protocol, as training rows, and the fingerprint they come from.

    They never reach validation or test: those read only `prepared/cases`. Each row is placed
    just after its user's last real training row (see InteractionContext.next_ts).
    """
    # rejected_item_idx: the candidate the backend found least likely (pairwise mode's negative)
    rows, fingerprint = read_synthetic(run_dir, protocol, variant,
                                       ["user_idx", "item_idx", "domain_idx", "rejected_item_idx", "score"])
    rows["rejected_item_idx"] = rows["rejected_item_idx"].fillna(-1).astype(np.int64)  # null: the backend named none
    rows["ts"] = real.next_ts(rows["user_idx"].to_numpy())
    return rows, fingerprint


def read_synthetic(run_dir: RunDir, protocol: Protocol, variant: Variant, columns: list[str]) -> tuple[pd.DataFrame, str]:
    """The given columns of a variant's committed synthetic rows for one protocol, and the commit's
    fingerprint; one line naming the stage to run when there is none yet."""
    stage = run_dir.stage(f"synthetic/{variant.value}")
    record = stage.commit_record()
    if record is None:
        step = "generate" if variant is Variant.raw else "filter"
        raise DataError(f"{stage.location.uri}: no {variant.value} synthetic interactions yet (run `mdrec {step}` first)")
    if stage.location.files():
        table = stage.location.read_table(columns=[*columns, "protocol"], filter=pc.field("protocol") == protocol.value)
        return table.select(columns).to_pandas(), record["fingerprint"]
    return pd.DataFrame({c: np.array([], dtype=np.float64 if c == "score" else np.int64) for c in columns}), \
        record["fingerprint"]


def with_variant(prepared: PreparedData, run_dir: RunDir, arm: Arm) -> PreparedData:
    """The protocol's data for an arm: real rows, plus synthetic ones where its mode puts them
    (the loss, with their weight; the context)."""
    mode = mode_of(arm)
    if mode is None:
        return prepared
    rows, fp = synthetic_rows(run_dir, prepared.protocol, arm.variant, prepared.context)
    calibration = None
    if mode.calibrated:
        stage = run_dir.stage(f"synthetic/{arm.variant.value}")
        calibration = calibrate(stage.location, run_dir.stage("prepared").location, stage.location.uri)
    in_loss = None
    if mode.loss_weight() is not None:
        probability = None if calibration is None else calibration.probability(rows["score"].to_numpy())
        weights = mode.row_weights(probability, len(rows)).astype(np.float32)
        in_loss = rows.assign(weight=weights, source=Source.synthetic.value)[DATASET_COLUMNS]
    pairs = None
    if mode.pair_weight() is not None:
        pairs = rows.rename(columns={"rejected_item_idx": "rejected_idx"})[PAIR_COLUMNS]
    context = prepared.context
    if mode.in_context:
        context = context.with_rows(rows["user_idx"], rows["item_idx"], rows["domain_idx"], rows["ts"])
    return replace(prepared, variant=arm.variant, arm=arm.name, mode=mode, synthetic=in_loss, pairs=pairs,
                   synthetic_rows=len(rows), denoise=arm.denoise if in_loss is not None else None,
                   calibration=None if calibration is None else calibration.as_dict(),
                   real_rows=len(prepared.context.items),
                   synthetic_fingerprint=fp, context=context, valid_ref=None, context_ref=None)


def load_prepared(run_dir: RunDir, protocol: Protocol) -> PreparedData:
    record = _prepared_record(run_dir)
    shape = read_shape(run_dir)
    loc = run_dir.stage("prepared").location
    # Only this protocol's validation cases: test cases and their negatives stay on disk.
    only = (pc.field("protocol") == protocol.value) & (pc.field("split") == Split.valid.value)
    cases = loc.join("cases").read_table(filter=only).to_pandas()
    if cases.empty:
        raise DataError(f"{loc.join('cases').uri}: no {protocol.value} validation cases (is the protocol enabled in "
                        "prepare, e.g. prepare.cold_start.fraction > 0?)")
    valid = Candidates.from_cases(cases["user_idx"], cases["domain_idx"], cases["ts"], cases["item_idx"],
                                  list(cases["negatives"]), catalog=np.arange(shape.dims.num_items))
    return PreparedData(protocol, shape.dims, shape.ranges, loc.join("train").path, loc.fs, valid,
                        load_context(run_dir, protocol, shape.dims), record["fingerprint"], shape.names)


def fingerprint(prepared: PreparedData, cfg: MdrecConfig, spec: ModelSpec, key: RunKey) -> str:
    # What changes the trained weights; not how many workers or seeds/protocols/variants sit beside it.
    # The settings the model trains with (train's, the model's own over them), however they are written.
    payload = {"prepared": prepared.fingerprint, "key": key.path, "spec": spec.model_dump(mode="json", exclude={"train"}),
               "train": training_of(cfg.train, spec).model_dump(mode="json", exclude={"models", "protocols", "seeds", "num_workers",
                                                                   "use_gpu", "resources_per_worker", "label_selector",
                                                                   "max_failures",
                                                                   "torch_threads", "variants", "synthetic"})}
    if prepared.mode is not None:
        # "spread": synthetic positives are mixed into every batch (before, they were the epoch's last batches)
        payload["synthetic"] = {"from": prepared.synthetic_fingerprint, "order": "spread", **prepared.mode.fingerprint()}
        if prepared.denoise is not None:
            payload["synthetic"]["denoise"] = prepared.denoise.model_dump(mode="json")
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def train_model(cfg: MdrecConfig, run_dir: RunDir, prepared: PreparedData, spec: ModelSpec, key: RunKey, *,
                force: bool = False, log: Log = lambda m: None) -> dict:
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from mdrec.train.worker import STATE_FILE, train_loop

    stage = run_dir.stage(f"models/{key.path}")
    fp = fingerprint(prepared, cfg, spec, key)
    if not force and stage.is_current(fp):
        log(f"train {key.label}: reusing committed model in {stage.location.uri}")
        return stage.location.join("metrics.json").read_json()
    t = training_of(cfg.train, spec)
    dataset = ray.data.read_parquet(prepared.train_path, filesystem=prepared.fs).map_batches(
        _train_rows, batch_format="pandas", fn_kwargs=dict(protocol=key.protocol.value, columns=DATASET_COLUMNS)
    )
    # Synthetic positives travel beside the dataset, not in it: a block after the real rows would
    # make them the last batches of every epoch. Each worker spreads its share over its batches.
    synthetic = None
    if prepared.synthetic is not None and len(prepared.synthetic):
        synthetic = ray.put({c: prepared.synthetic[c].to_numpy() for c in DATASET_COLUMNS})
    pairs = None
    if prepared.pairs is not None and len(prepared.pairs):
        pairs = ray.put({c: prepared.pairs[c].to_numpy() for c in PAIR_COLUMNS})
    valid_ref, context_ref = prepared.shared()
    storage = run_dir.location.join(".train")
    run_name = f"{key.model}-{key.variant}-{key.protocol.value}-{fp[:16]}"
    if force:
        storage.join(run_name).delete()  # Ray Train would resume from the old checkpoints
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "spec": spec.model_dump(mode="json"),
            "train": t.model_dump(mode="json"),
            "seed": key.seed,
            "label": key.label,
            "dims": prepared.dims,
            "item_ranges": prepared.item_ranges,
            "domain_names": prepared.domain_names,
            "valid": valid_ref,
            "context": context_ref,
            "synthetic": synthetic,
            "pairs": pairs,
            "pair_weight": None if prepared.mode is None else prepared.mode.pair_weight(),
            "pair_share": None if prepared.mode is None else prepared.mode.pair_share(),
            "real_rows": prepared.real_rows,
            # pretrain: synthetic positives leave the loss after this many epochs (None: never)
            "synthetic_epochs": None if prepared.mode is None else prepared.mode.loss_epochs(),
            "denoise": None if prepared.denoise is None else prepared.denoise.model_dump(mode="json"),
        },
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker=dict(t.resources_per_worker),
                                     label_selector=placement.train_selector(cfg) or None),
        datasets={"train": dataset},
        # Blocks in read order, so one worker with one seed sees the same batches every run. These
        # options replace the dataset's own: the CPU stages' selector must be said again.
        dataset_config=DataConfig(execution_options=ExecutionOptions(
            preserve_order=True, label_selector=placement.cpu_selector(cfg.ray) or None)),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage.path,
            storage_filesystem=storage.fs,
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    log(f"train {key.label}: {t.num_workers} worker(s), up to {t.epochs} epochs")
    started = time.perf_counter()
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        state = torch.load(f"{folder}/{STATE_FILE}", weights_only=True)
    history = state["history"]
    best = state["best"]
    summary = {
        "model": key.model,
        "variant": key.variant,
        "protocol": key.protocol.value,
        "seed": key.seed,
        "params": spec.params,
        "synthetic_rows": prepared.synthetic_rows,
        "synthetic_mode": None if prepared.mode is None else prepared.mode.name,
        "synthetic_weight": None if prepared.mode is None else prepared.mode.loss_weight(),
        "synthetic_denoise": None if prepared.denoise is None else prepared.denoise.model_dump(mode="json"),
        "synthetic_calibration": prepared.calibration,
        "best_epoch": best["epoch"],
        "early_stopping_metric": t.early_stopping.metric,
        "best_value": best["value"],
        "stopped_early": state["stopped_early"],
        "epochs_run": len(history),
        # The epoch each worker-group attempt began at: [0] for an uninterrupted run.
        "attempt_starts": state["starts"],
        "seconds": round(time.perf_counter() - started, 2),
        "history": history,
    }
    with stage.writing(fp, meta={"model": key.model}) as out:
        buffer = io.BytesIO()
        torch.save(best["model"], buffer)
        out.join("model.pt").write_bytes(buffer.getvalue())
        out.join("metrics.json").write_json(summary)
    log(f"train {key.label}: best {t.early_stopping.metric}={best['value']:.4f} at epoch {best['epoch']}")
    return summary


def run_train(cfg: MdrecConfig, run_dir: RunDir, *, force: bool = False, log: Log = lambda m: None) -> dict[RunKey, dict]:
    from mdrec.ray_session import ensure_ray

    ensure_ray(cfg.ray)
    dims = read_shape(run_dir).dims
    specs = {spec.name: spec for spec in cfg.train.models}
    for spec in cfg.train.models:
        # Fail on the driver, in one line, before any worker starts: unknown names, bad params.
        build_model(spec.name, spec.params, dims)
    results: dict[RunKey, dict] = {}
    for protocol in cfg.train.protocols:
        real = load_prepared(run_dir, protocol)
        for arm in arms(cfg):
            prepared = with_variant(real, run_dir, arm)
            for key in (k for k in grid(cfg) if k.protocol == protocol and k.variant == arm.name):
                results[key] = train_model(cfg, run_dir, prepared, specs[key.model], key, force=force, log=log)
    return results

"""What each Ray Train worker runs: epochs over its data shard, validation, checkpoints, resume.

Every worker validates on the same cases and so takes the same early-stopping decision; rank 0
writes the checkpoint. A checkpoint holds everything needed to go on (model, optimizer, epoch,
history, best weights), so a restarted worker group continues where the last one stopped.
"""

from __future__ import annotations

import math
import os
import tempfile
import time

import numpy as np
import ray
import ray.train
import torch

from mdrec import faults
from mdrec.evaluate import metrics
from mdrec.models import build_model
from mdrec.data.schema import Source
from mdrec.train.examples import SyntheticSpread, pair_batches, synthetic_in_loss, with_sampled_negatives
from mdrec.train.loop import LossOf, Pairs, make_optimizer, score, train_step
from mdrec.train.synthetic.denoise import DenoiseConfig, TruncatedLoss

STATE_FILE = "state.pt"


def _load_state() -> dict | None:
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(os.path.join(folder, STATE_FILE), weights_only=True)


def _resolve(value):
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def train_loop(config: dict) -> None:
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    spec, train_cfg, label = config["spec"], config["train"], config["label"]
    torch.manual_seed(config["seed"])
    if train_cfg.get("torch_threads"):
        torch.set_num_threads(train_cfg["torch_threads"])
    context = _resolve(config["context"])
    model = build_model(spec["name"], spec["params"], config["dims"], context)
    state = _load_state()
    if state:
        model.load_state_dict(state["model"])
    expected_batches = max(1, math.ceil(config.get("real_rows", 0) / world / train_cfg["batch_size"]))
    denoise = None
    if config.get("denoise"):
        denoise = TruncatedLoss(DenoiseConfig(**config["denoise"]), expected_batches,
                                start_epoch=state["epoch"] + 1 if state else 0)
    wrapped = LossOf(model, denoise)
    if world > 1:
        from ray.train.torch import prepare_model

        # Domain-specific parameters are unused when a batch lacks their domain.
        wrapped = prepare_model(wrapped, parallel_strategy_kwargs={"find_unused_parameters": True})
    optimizer = make_optimizer(model, train_cfg["lr"], train_cfg.get("weight_decay", 0.0))
    if state:
        optimizer.load_state_dict(state["optimizer"])
    history = state["history"] if state else []
    best = state["best"] if state else {"value": -np.inf, "epoch": -1, "model": None}
    start = state["epoch"] + 1 if state else 0
    starts = (state["starts"] if state else []) + [start]  # the epoch each attempt began at
    valid = _resolve(config["valid"])
    stop_metric, patience = train_cfg["early_stopping"]["metric"], train_cfg["early_stopping"]["patience"]
    shard = ray.train.get_dataset_shard("train")
    # This worker's share of the synthetic positives, and about how many batches its shard makes.
    own_synthetic = _resolve(config.get("synthetic"))
    if own_synthetic is not None:
        own_synthetic = {k: v[rank::world] for k, v in own_synthetic.items()}
    own_pairs = _resolve(config.get("pairs"))
    if own_pairs is not None:
        own_pairs = {k: v[rank::world] for k, v in own_pairs.items()}

    for epoch in range(start, train_cfg["epochs"]):
        rng = np.random.default_rng([config["seed"], epoch, rank])
        wrapped.train()
        started, total, seen, synthetic, pairs_used = time.perf_counter(), 0.0, 0, 0, 0
        if denoise is not None:
            denoise.dropped = 0
        spread = SyntheticSpread(own_synthetic, expected_batches, rng) if synthetic_in_loss(
            epoch, config.get("synthetic_epochs")) else SyntheticSpread.none()
        pair_parts = SyntheticSpread(own_pairs, expected_batches, rng).parts
        batches = shard.iter_batches(batch_size=train_cfg["batch_size"], batch_format="numpy")
        for step, b in enumerate(spread.mixed(batches)):
            synthetic += int(np.count_nonzero(b["source"] == Source.synthetic.value))
            examples = with_sampled_negatives(
                b["user_idx"], b["item_idx"], b["domain_idx"], b["ts"], b["weight"],
                config["item_ranges"], train_cfg["negatives_per_positive"], rng,
                synthetic=None if denoise is None else b["source"] == Source.synthetic.value,
            )
            drawn = pair_batches(pair_parts[step] if step < len(pair_parts) else None, len(b["user_idx"]),
                                 config.get("pair_share") or 0.0, config["item_ranges"], rng)
            step_pairs = None if drawn is None else Pairs(*drawn, config["pair_weight"])
            pairs_used += 0 if drawn is None else len(drawn[0])
            for batch in examples.batches(len(examples), rng):
                total += train_step(wrapped, batch, optimizer, step_pairs) * len(batch)
                seen += len(batch)
            if denoise is not None:
                denoise.advance()
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        scores = score(model, valid)
        summary = metrics.summarize(scores, valid.items, valid.user, valid.catalog, valid.valid)
        eval_seconds = time.perf_counter() - started
        value = summary[stop_metric]
        if value > best["value"]:
            best = {"value": value, "epoch": epoch, "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        record = {"epoch": epoch, "loss": total / max(seen, 1), "examples": seen, "synthetic_positives": synthetic,
                  "synthetic_pairs": pairs_used,
                  "synthetic_dropped": 0 if denoise is None else denoise.dropped,
                  "train_seconds": train_seconds,
                  "eval_seconds": eval_seconds, **{f"valid_{k}": v for k, v in summary.items()}}
        # Per domain too: the cold domain's validation is what augmentation is tuned on, and the
        # pooled value is dominated by the rich domains' cases.
        history.append({**record, "valid_by_domain": _per_domain(scores, valid, config["item_ranges"],
                                                                  config.get("domain_names") or {})})
        stop = epoch - best["epoch"] >= patience
        if rank == 0:  # progress, on the driver's console through Ray's log forwarding
            print(f"[{label}] epoch {epoch + 1}/{train_cfg['epochs']}: loss {record['loss']:.4f}, "
                  f"valid {stop_metric} {value:.4f} (best {best['value']:.4f} at epoch {best['epoch'] + 1}), "
                  f"{seen / max(train_seconds, 1e-9):,.0f} examples/s, validation {eval_seconds:.1f}s", flush=True)
        _report(record, rank, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                               "history": history, "best": best, "stopped_early": stop, "starts": starts})
        faults.pause_after_first_checkpoint(epoch, resumed=state is not None, rank=rank)
        if stop:
            break


PER_DOMAIN_KEYS = ("cases", "auc", "case_auc", "hr@10", "ndcg@10", "coverage@10")


def _per_domain(scores: np.ndarray, valid, item_ranges: dict, names: dict) -> dict[str, dict[str, float]]:
    """A few validation metrics for each domain's cases alone, keyed by domain name."""
    out = {}
    for d in np.unique(valid.domain):
        rows = valid.domain == d
        start, end = item_ranges[int(d)]
        summary = metrics.summarize(scores[rows], valid.items[rows], valid.user[rows], np.arange(start, end),
                                    valid.valid[rows])
        out[str(names.get(int(d), int(d)))] = {k: summary[k] for k in PER_DOMAIN_KEYS}
    return out


def _report(record: dict, rank: int, state: dict) -> None:
    if rank != 0:
        ray.train.report(record, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, os.path.join(folder, STATE_FILE))
        ray.train.report(record, checkpoint=ray.train.Checkpoint.from_directory(folder))

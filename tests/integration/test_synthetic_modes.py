"""Training modes for synthetic rows (mdrec/train/synthetic): where each puts the rows, that each
trains every model it claims, and that under `context` a synthetic item is never a target."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from mdrec.config import SyntheticModeSpec, Variant, config_from_dict
from mdrec.data.schema import Protocol, Source
from mdrec.experiment import Arm
from mdrec.models import build_model
from mdrec.prepare.stage import run_prepare
from mdrec.storage import RunDir
from mdrec.train.examples import SyntheticSpread, pair_batches, synthetic_in_loss, with_sampled_negatives
from mdrec.train.loop import LossOf, Pairs, make_optimizer, train_step
from mdrec.train.stage import load_prepared, with_variant
from mdrec.train.synthetic import MODES
from tests.conftest import run_cli
from tests.integration.conftest import world_config, write_config
from tests.tiny_models import TINY

PER_USER = 3
FAMILIES = ["star", "sasrec", "lightgcn", "emcdr"]  # the families every mode claims (README "Training modes")


def modes_config(modes: list[dict], models=("sasrec",), epochs=2) -> dict:
    cfg = world_config(users=400, cold_start={"fraction": 0.4})
    cfg["train"] = {"models": [{"name": m, "params": TINY[m]} for m in models], "protocols": ["cold_start"],
                    "variants": ["real", "raw"], "synthetic": {"modes": modes}, "epochs": epochs, "batch_size": 512,
                    "lr": 0.005, "resources_per_worker": {"CPU": 0.5},
                    "early_stopping": {"metric": "ndcg@10", "patience": epochs}}
    cfg["evaluate"] = {"num_actors": 1}
    return cfg


@pytest.fixture(scope="module")
def modes_run(ray_session, tmp_path_factory):
    """A prepared run with hand-written synthetic rows: for every cold-start held-out user, one of
    their own held-out items (score 2) and the cold domain's first two other items (score 0), as a
    generator that is sometimes right would write them, without spending a generator here."""
    run_dir = tmp_path_factory.mktemp("modes") / "run"
    run_prepare(config_from_dict(modes_config([{"name": "label"}])), RunDir(str(run_dir)))
    prepared = RunDir(str(run_dir)).stage("prepared").location
    held = prepared.join("interactions").read_table(columns=["user_idx", "domain_idx", "item_idx"],
                                                    filter=pc.field("held_out")).to_pandas()
    own = held.groupby(["user_idx", "domain_idx"])["item_idx"].min()
    domains = prepared.join("domains.parquet").read_table().to_pandas().set_index("domain_idx")
    users, items, targets, scores = [], [], [], []
    for (user, domain), mine in own.items():
        start = int(domains.loc[domain, "item_idx_start"])
        others = [i for i in range(start, start + PER_USER) if i != mine][:PER_USER - 1]
        users += [user] * PER_USER
        items += [int(mine), *others]
        targets += [domain] * PER_USER
        scores += [2.0] + [0.0] * (PER_USER - 1)
    table = pa.table({"user_idx": np.array(users, np.int64), "item_idx": np.array(items, np.int64),
                      "domain_idx": np.array(targets, np.int64), "protocol": [Protocol.cold_start.value] * len(users),
                      "score": np.array(scores, np.float64),
                      # as the generator writes it where a backend names no rejected candidate (the oracle)
                      "rejected_item_idx": pa.nulls(len(users), pa.int64())})
    with RunDir(str(run_dir)).stage("synthetic/raw").writing("hand-written") as out:
        out.join("part-0.parquet").write_table(table)
    return run_dir, len(users)


def arm(name: str, **params) -> Arm:
    return Arm(Variant.raw, SyntheticModeSpec(name=name, params=params))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_each_mode_puts_the_rows_where_it_says(modes_run, mode):
    run_dir, n = modes_run
    real = load_prepared(RunDir(str(run_dir)), Protocol.cold_start)
    data = with_variant(real, RunDir(str(run_dir)), arm(mode))
    assert data.arm == ("raw" if mode == "label" else f"raw+{mode}") and data.synthetic_rows == n
    # Every mode so far reads the rows as context: n more rows than real, the synthetic items among them.
    assert len(data.context.items) == len(real.context.items) + n
    if mode in ("context", "pairwise"):
        assert data.synthetic is None  # no positives for the loss
        assert (data.pairs is not None) == (mode == "pairwise")
    else:
        assert len(data.synthetic) == n and (data.synthetic["source"] == Source.synthetic.value).all()
        if mode == "soft":
            # weight = P(right), calibrated on the validation users: the score-2 picks (their own items) weigh
            # far more than the guesses, and every weight is a probability
            weight = data.synthetic["weight"].to_numpy().reshape(-1, PER_USER)
            assert (weight[:, 0] > 0.9).all() and (weight[:, 1:] < 0.1).all()
            assert data.calibration["a"] > 0 and data.calibration["hits"] < data.calibration["picks"]
        else:
            assert (data.synthetic["weight"] == 1.0).all()


@pytest.mark.parametrize("history", [0, 5])
def test_star_reads_the_context_modes_items_through_its_behaviour_feature_only(modes_run, history):
    """STAR's user side (`history: N`) pools the user's last items: the same weights score a cold
    user's items differently once the context holds their synthetic rows, and a user without
    synthetic rows the same. Without the behaviour feature STAR reads no context at all."""
    from mdrec.models import Batch

    run_dir, _ = modes_run
    real = load_prepared(RunDir(str(run_dir)), Protocol.cold_start)
    data = with_variant(real, RunDir(str(run_dir)), arm("context"))
    params = {**TINY["star"], "history": history}
    torch.manual_seed(0)
    plain = build_model("star", params, real.dims, real.context)
    torch.manual_seed(0)
    read = build_model("star", params, real.dims, data.context)
    plain.eval(), read.eval()
    rows = RunDir(str(run_dir)).stage("synthetic/raw").location.read_table().to_pandas()
    with_rows = np.unique(rows["user_idx"])[:20]
    without = np.setdiff1d(np.arange(real.dims.num_users), rows["user_idx"])[:20]
    users = np.concatenate([with_rows, without])
    late = np.full(len(users), np.iinfo(np.int64).max // 2)  # after every row, synthetic ones included
    batch = Batch(user=torch.from_numpy(users), item=torch.full((len(users),), int(rows["item_idx"].iloc[0])),
                  domain=torch.full((len(users),), int(rows["domain_idx"].iloc[0])), ts=torch.from_numpy(late))
    with torch.no_grad():
        before, after = plain(batch).numpy(), read(batch).numpy()
    changed = ~np.isclose(before, after, atol=1e-6)
    if history:
        assert changed[: len(with_rows)].all() and not changed[len(with_rows):].any()
    else:
        assert not changed.any()


def test_pretrain_keeps_synthetic_positives_for_its_epochs_only():
    assert synthetic_in_loss(0, 1) and not synthetic_in_loss(1, 1) and synthetic_in_loss(7, None)


def test_synthetic_positives_are_spread_over_the_batches_not_appended():
    real = [{"user_idx": np.arange(i * 10, i * 10 + 10), "source": np.array(["real"] * 10, dtype=object)}
            for i in range(4)]
    synthetic = {"user_idx": np.arange(100, 108), "source": np.array(["synthetic"] * 8, dtype=object)}
    mixed = list(SyntheticSpread(synthetic, 4, np.random.default_rng(0)).mixed(iter(real)))
    assert len(mixed) == 4  # no batch of its own
    assert [int((b["source"] == "synthetic").sum()) for b in mixed] == [2, 2, 2, 2]
    seen = np.concatenate([b["user_idx"] for b in mixed])
    assert sorted(seen.tolist()) == list(range(40)) + list(range(100, 108))  # every row exactly once
    # A shard with fewer batches than expected: what is left trains as batches of their own.
    short = list(SyntheticSpread(synthetic, 4, np.random.default_rng(0)).mixed(iter(real[:1])))
    assert len(short) == 4 and sum(len(b["user_idx"]) for b in short) == 18
    assert list(SyntheticSpread.none().mixed(iter(real))) == real


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("family", FAMILIES)
def test_each_mode_trains_every_family(modes_run, family, mode):
    """The rows a worker would train on, epoch by epoch, through the shared loss, with the arm's context."""
    run_dir, _ = modes_run
    real = load_prepared(RunDir(str(run_dir)), Protocol.cold_start)
    data = with_variant(real, RunDir(str(run_dir)), arm(mode, **({"epochs": 1} if mode == "pretrain" else {})))
    train = RunDir(str(run_dir)).stage("prepared").location.join("train").read_table(
        columns=["user_idx", "item_idx", "domain_idx", "ts", "held_out"]).to_pandas()
    rows = train[~train["held_out"]].assign(weight=np.float32(1.0), source=Source.real.value).drop(columns="held_out")
    real_rows = {c: rows[c].to_numpy() for c in rows.columns}
    synthetic = None if data.synthetic is None else {c: data.synthetic[c].to_numpy() for c in data.synthetic.columns}
    pairs = None if data.pairs is None else {c: data.pairs[c].to_numpy() for c in data.pairs.columns}
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    params = {**TINY[family], **({"history": 5} if family == "star" else {})}  # STAR reads context through it
    model = build_model(family, params, real.dims, data.context)
    loss_of, optimizer = LossOf(model), make_optimizer(model, 5e-3)

    def margin() -> float:  # how much the model prefers each pair's preferred item to its rejected one
        drawn = pair_batches(pairs, len(pairs["user_idx"]), 1.0, real.item_ranges, np.random.default_rng(1))
        with torch.no_grad():
            model.eval()
            return float((model(drawn[0]) - model(drawn[1])).mean())

    before = margin() if pairs is not None else None
    losses, synthetic_seen, pairs_seen = [], [], []
    for epoch in range(3):
        model.train()
        use = synthetic if synthetic_in_loss(epoch, data.mode.loss_epochs()) else None
        total, seen, counted, paired = 0.0, 0, 0, 0
        for step, b in enumerate(SyntheticSpread(use, 5, rng).mixed(iter(_chunks(real_rows, 5)))):
            counted += int((b["source"] == Source.synthetic.value).sum())
            examples = with_sampled_negatives(b["user_idx"], b["item_idx"], b["domain_idx"], b["ts"], b["weight"],
                                              real.item_ranges, 2, rng)
            drawn = pair_batches(pairs, len(b["user_idx"]), data.mode.pair_share() or 0.0, real.item_ranges, rng)
            paired += 0 if drawn is None else len(drawn[0])
            for batch in examples.batches(len(examples), rng):
                total += train_step(loss_of, batch, optimizer, None if drawn is None else
                                    Pairs(*drawn, data.mode.pair_weight())) * len(batch)
                seen += len(batch)
        losses.append(total / seen)
        synthetic_seen.append(counted)
        pairs_seen.append(paired)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    n = data.synthetic_rows
    assert synthetic_seen == {"label": [n] * 3, "soft": [n] * 3, "context": [0] * 3, "pretrain": [n, 0, 0],
                              "pairwise": [0] * 3}[mode]
    if mode == "pairwise":
        # The cap holds (at most max_share pairs per real positive), and the BPR term moved the margins.
        assert 0 < pairs_seen[0] <= int(len(real_rows["user_idx"]) * data.mode.pair_share()) + 5
        assert margin() > before
    else:
        assert pairs_seen == [0] * 3


def _chunks(rows: dict, parts: int) -> list[dict]:
    return [{k: v[idx] for k, v in rows.items()} for idx in np.array_split(np.arange(len(rows["user_idx"])), parts)]


def test_context_mode_never_trains_on_a_synthetic_item_and_names_its_arms(modes_run, tmp_path):
    """Through `mdrec train`: the worker counts every synthetic positive it trains on (a row with
    source = synthetic in its batches); under context that count is zero in every epoch, under
    pretrain it is all of them in the first epoch and none after. Evaluate and report name the arms."""
    run_dir, n = modes_run
    config = write_config(tmp_path / "modes.yaml", modes_config(
        [{"name": "context"}, {"name": "pretrain", "params": {"epochs": 1}}]))
    for args in (("train", config, "--run-dir", str(run_dir)), ("evaluate", config, "--run-dir", str(run_dir)),
                 ("report", str(run_dir))):
        code, out, err = run_cli(*args)
        assert code == 0, err

    def history(variant):
        folder = run_dir / "models" / "sasrec" / variant / "cold_start" / "seed-0"
        return json.loads((folder / "metrics.json").read_text())

    context, pretrain = history("raw+context"), history("raw+pretrain")
    assert context["synthetic_mode"] == "context" and context["synthetic_rows"] == n
    assert [h["synthetic_positives"] for h in context["history"]] == [0, 0]
    assert [h["synthetic_positives"] for h in pretrain["history"]] == [n, 0]
    # The synthetic items shaped the context model: it is not the real-only model.
    assert context["history"][-1]["loss"] != history("real")["history"][-1]["loss"] or \
        context["best_value"] != history("real")["best_value"]
    comparison = pd.read_csv(run_dir / "report" / "comparison.csv")
    assert set(comparison["variant"]) == {"raw+context", "raw+pretrain"}
    assert "raw+context" in (run_dir / "report" / "report.md").read_text()


def test_tce_drops_a_rising_share_of_synthetic_positives_in_its_own_arm(modes_run, tmp_path):
    """Through `mdrec train` with train.synthetic.denoise: the label arm becomes raw+tce; the worker
    drops fewer synthetic positives in the first epoch (the rate grows from 0) than in the second
    (at max_rate: about half of them); no real row or negative is ever counted."""
    run_dir, n = modes_run
    cfg = modes_config([{"name": "label"}, {"name": "context"}])
    cfg["train"]["synthetic"]["denoise"] = {"name": "tce", "max_rate": 0.5, "warmup_epochs": 1}
    config = write_config(tmp_path / "tce.yaml", cfg)
    code, out, err = run_cli("train", config, "--run-dir", str(run_dir))
    assert code == 0, err
    folder = run_dir / "models" / "sasrec"
    assert (folder / "raw+tce").exists() and (folder / "raw+context").exists()  # context has no loss rows: no +tce
    assert not (folder / "raw+context+tce").exists()
    metrics = json.loads((folder / "raw+tce" / "cold_start" / "seed-0" / "metrics.json").read_text())
    assert metrics["synthetic_denoise"] == {"name": "tce", "max_rate": 0.5, "warmup_epochs": 1.0}
    dropped = [h["synthetic_dropped"] for h in metrics["history"]]
    assert [h["synthetic_positives"] for h in metrics["history"]] == [n, n]
    assert 0 <= dropped[0] < dropped[1] and 0.35 * n <= dropped[1] <= 0.5 * n


def test_a_pair_weighs_weight_real_examples_whatever_the_step_size():
    """The BPR term is summed over the pairs and divided by the step's examples: one pair counts as
    much as `weight` real examples, so a step with few pairs does not blow them up."""
    from mdrec.models import Batch, Dims

    torch.manual_seed(0)
    model = build_model("star", TINY["star"], Dims(10, 20, 2))
    n = 64
    batch = Batch(user=torch.randint(0, 10, (n,)), item=torch.randint(0, 10, (n,)), domain=torch.zeros(n, dtype=torch.long),
                  label=torch.ones(n), weight=torch.ones(n))
    preferred = Batch(user=torch.tensor([1, 2]), item=torch.tensor([3, 4]), domain=torch.zeros(2, dtype=torch.long))
    rejected = Batch(user=torch.tensor([1, 2]), item=torch.tensor([5, 6]), domain=torch.zeros(2, dtype=torch.long))
    model.eval()  # no dropout: the same logits in every call
    with torch.no_grad():
        base = LossOf(model)(batch)
        with_pairs = LossOf(model)(batch, Pairs(preferred, rejected, 2.0))
        margin = model(preferred) - model(rejected)
    expected = 2.0 * float(-torch.nn.functional.logsigmoid(margin).sum()) / n
    assert float(with_pairs - base) == pytest.approx(expected, rel=1e-5)


def test_soft_mode_without_cold_start_validation_picks_is_a_one_line_error(modes_run, tmp_path):
    from mdrec.errors import DataError
    from mdrec.storage import resolve
    from mdrec.train.synthetic.calibration import calibrate

    run_dir, _ = modes_run
    rows = resolve(str(tmp_path / "warm-only"))
    rows.join("part-0.parquet").write_table(pa.table({
        "user_idx": np.array([1, 2], np.int64), "item_idx": np.array([3, 4], np.int64),
        "domain_idx": np.array([1, 1], np.int64), "protocol": ["warm", "warm"], "score": [0.5, 0.7]}))
    with pytest.raises(DataError, match=r"warm-only: cannot calibrate the scores for mode soft: 0 picks"):
        calibrate(rows, RunDir(str(run_dir)).stage("prepared").location, str(tmp_path / "warm-only"))

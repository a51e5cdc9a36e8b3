"""Every registered model trains on tiny world data with the shared loop and beats random."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdrec.config import WorldDomainConfig, WorldSourceConfig
from mdrec.data import world
from mdrec.errors import ConfigError
from mdrec.evaluate import metrics
from mdrec.models import MODELS, Batch, Dims, build_model, load_all
from mdrec.prepare import shards
from mdrec.train.context import InteractionContext
from mdrec.train.examples import Candidates, with_sampled_negatives
from mdrec.train.loop import fit, score
from tests.tiny_models import TINY
from tests.unit.test_shards import plan_for

load_all()



@pytest.fixture(scope="module")
def tiny_world():
    cfg = WorldSourceConfig(
        users=800,
        users_per_chunk=200,
        domains=[
            WorldDomainConfig(name="Books", kind="books", items=150, participation=0.9, activity=12),
            WorldDomainConfig(name="Music", kind="music", items=80, participation=0.5, activity=6),
        ],
    )
    _, inter = world.generate(cfg, seed=0)
    df = inter.to_pandas()
    plan = plan_for(df, negatives=50)
    out = shards.split_shard(df, plan)
    dims = Dims(len(plan.users), len(plan.items), len(plan.domains))
    train = out[out["split"] == "train"]
    context = InteractionContext.from_rows(dims.num_users, dims.num_items, dims.num_domains, train["user_idx"],
                                           train["item_idx"], train["domain_idx"], train["ts"])
    return out, plan.item_ranges, dims, context


def test_registry_has_every_family_member():
    assert set(TINY) == set(MODELS), "every registered model needs a tiny config here"


@pytest.mark.parametrize("name", sorted(set(TINY) - {"random"}))
def test_model_trains_and_beats_random(name, tiny_world):
    out, ranges, dims, context = tiny_world
    train = out[out["split"] == "train"]
    valid = out[out["split"] == "valid"]
    rng = np.random.default_rng(0)

    def examples(epoch):
        return with_sampled_negatives(
            train["user_idx"].to_numpy(), train["item_idx"].to_numpy(), train["domain_idx"].to_numpy(),
            train["ts"].to_numpy(), np.ones(len(train), np.float32), ranges, 2, rng,
        )

    torch.manual_seed(0)
    model = build_model(name, TINY[name], dims, context)
    history = fit(model, examples, epochs=4, lr=5e-3, batch_size=512)
    assert history[-1].loss < history[0].loss
    candidates = Candidates.from_cases(valid["user_idx"], valid["domain_idx"], valid["ts"], valid["item_idx"],
                                       list(valid["negatives"]))
    scores = score(model, candidates)
    auc = metrics.pooled_auc(scores, candidates.valid)
    ndcg = metrics.ndcg_at_k(scores, 10, candidates.valid).mean()
    # random scoring gives AUC 0.5 and NDCG@10 about 0.085 with 50 negatives
    assert auc > 0.6, auc
    assert ndcg > 0.12, ndcg


def test_random_reference_is_chance_level_and_fixed_per_seed(tiny_world):
    out, ranges, dims, context = tiny_world
    valid = out[out["split"] == "valid"]
    candidates = Candidates.from_cases(valid["user_idx"], valid["domain_idx"], valid["ts"], valid["item_idx"],
                                       list(valid["negatives"]))
    torch.manual_seed(0)
    model = build_model("random", {}, dims, context)
    scores = score(model, candidates)
    assert abs(metrics.pooled_auc(scores, candidates.valid) - 0.5) < 0.05
    assert np.array_equal(scores, score(model, candidates))  # the same scores every time it scores
    again = build_model("random", {}, dims, context)
    again.load_state_dict(model.state_dict())  # a committed model scores as it trained
    assert np.array_equal(scores, score(again, candidates))
    torch.manual_seed(1)
    assert not np.array_equal(scores, score(build_model("random", {}, dims, context), candidates))


def test_popularity_reference_ranks_by_training_rows(tiny_world):
    _, _, dims, context = tiny_world
    model = build_model("popularity", {}, dims, context)
    counts = np.bincount(context.items, minlength=dims.num_items)
    items = torch.arange(dims.num_items)
    batch_scores = model(Batch(user=torch.zeros_like(items), item=items, domain=torch.zeros_like(items))).detach()
    order = np.argsort(-batch_scores.numpy(), kind="stable")
    assert (np.diff(counts[order]) <= 0).all()  # best sellers first


def test_unknown_model_and_bad_params():
    dims = Dims(3, 3, 1)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        build_model("nope", {}, dims)
    with pytest.raises(ConfigError, match="unknown key 'hiddn'"):
        build_model("star", {"hiddn": [3]}, dims)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_weight_decay_shrinks_only_when_asked(weight_decay):
    """The optimizer behind train.weight_decay: decoupled decay reaches embedding rows no batch
    touched (their gradient is zero), and 0 leaves them exactly as they were (plain Adam)."""
    from mdrec.train.loop import make_optimizer

    torch.manual_seed(0)
    table = torch.nn.Embedding(10, 4)
    before = table.weight.detach().clone()
    optimizer = make_optimizer(table, lr=0.1, weight_decay=weight_decay)
    for _ in range(5):
        optimizer.zero_grad()
        table(torch.tensor([0, 1])).sum().backward()
        optimizer.step()
    untouched = slice(2, 10)
    shrink = table.weight.detach()[untouched].norm() / before[untouched].norm()
    if weight_decay:
        assert shrink == pytest.approx((1 - 0.1 * weight_decay) ** 5, rel=1e-5)
    else:
        assert torch.equal(table.weight.detach()[untouched], before[untouched])
    assert not torch.equal(table.weight.detach()[:2], before[:2])  # the touched rows moved

"""T-CE denoising of synthetic positives (mdrec/train/synthetic/denoise.py) and its place in the loss."""

from __future__ import annotations

import pytest
import torch

from mdrec.models import Batch, Dims, build_model
from mdrec.train.loop import LossOf
from mdrec.train.synthetic.denoise import DenoiseConfig, TruncatedLoss
from tests.tiny_models import TINY


def test_rate_grows_linearly_to_max_over_the_warmup_and_a_resume_continues_it():
    tce = TruncatedLoss(DenoiseConfig(max_rate=0.2, warmup_epochs=2), steps_per_epoch=10)
    rates = []
    for _ in range(30):
        rates.append(tce.rate)
        tce.advance()
    assert rates[0] == 0 and rates[10] == pytest.approx(0.1) and rates[20] == rates[29] == pytest.approx(0.2)
    assert all(b >= a for a, b in zip(rates, rates[1:]))
    assert TruncatedLoss(DenoiseConfig(max_rate=0.2, warmup_epochs=2), 10, start_epoch=1).rate == pytest.approx(0.1)
    assert TruncatedLoss(DenoiseConfig(max_rate=0.3, warmup_epochs=0), 10).rate == pytest.approx(0.3)


def test_only_the_largest_loss_synthetic_positives_lose_their_weight():
    tce = TruncatedLoss(DenoiseConfig(max_rate=0.5, warmup_epochs=0), steps_per_epoch=1)
    losses = torch.tensor([9.0, 1.0, 5.0, 3.0, 8.0, 7.0, 0.5, 6.0])
    label = torch.tensor([1, 1, 1, 1, 1, 0, 1, 1], dtype=torch.float32)
    synthetic = torch.tensor([False, True, True, True, True, False, True, True])
    weight = torch.full((8,), 0.5)
    kept = tce.weights(losses, label, weight, synthetic)
    # synthetic positives: positions 1, 2, 3, 4, 6, 7 (losses 1, 5, 3, 8, 0.5, 6): half = 3 dropped, the 3 worst
    assert kept.tolist() == [0.5, 0.5, 0.0, 0.5, 0.0, 0.5, 0.5, 0.0]
    assert weight.tolist() == [0.5] * 8  # the batch's own weights are not changed in place
    assert tce.dropped == 3
    # the real positive with the largest loss (position 0) and the negative (5) always stay
    assert tce.weights(losses, label, None, torch.zeros(8, dtype=torch.bool)).tolist() == [1.0] * 8


def test_the_loss_is_the_weighted_loss_without_the_dropped_examples():
    torch.manual_seed(0)
    model = build_model("star", TINY["star"], Dims(10, 20, 2))
    batch = Batch(user=torch.arange(8) % 10, item=torch.arange(8) + 2, domain=torch.zeros(8, dtype=torch.long),
                  label=torch.tensor([1, 1, 1, 1, 0, 0, 1, 1], dtype=torch.float32), weight=torch.ones(8),
                  synthetic=torch.tensor([False, False, True, True, False, False, True, True]))
    tce = TruncatedLoss(DenoiseConfig(max_rate=0.5, warmup_epochs=0), steps_per_epoch=1)
    denoised = LossOf(model, tce)(batch)
    with torch.no_grad():
        losses = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.label, reduction="none")
    synthetic = [2, 3, 6, 7]
    worst = {synthetic[i] for i in torch.topk(losses[synthetic], 2).indices.tolist()}
    keep = [i for i in range(8) if i not in worst]
    assert float(denoised.detach()) == pytest.approx(float(losses[keep].mean()), rel=1e-5)
    without = LossOf(model)(batch).detach()  # without T-CE: every example counts
    assert float(without) == pytest.approx(float(losses.mean()), rel=1e-5)
    denoised.backward()  # gradients flow through the kept examples
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

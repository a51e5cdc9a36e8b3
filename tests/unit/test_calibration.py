"""Platt scaling of a backend's scores (mdrec/train/synthetic/calibration.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mdrec.train.synthetic.calibration import Calibration, platt


def test_platt_recovers_the_sigmoid_that_drew_the_outcomes():
    rng = np.random.default_rng(0)
    scores = rng.normal(3.0, 2.0, size=20_000)  # a backend's own scale, far from 0
    hits = rng.random(len(scores)) < 1 / (1 + np.exp(-(0.8 * scores - 4.0)))
    a, b = platt(scores, hits)
    assert a == pytest.approx(0.8, abs=0.05) and b == pytest.approx(-4.0, abs=0.2)
    p = Calibration(a, b, len(scores), int(hits.sum())).probability(np.array([0.0, 5.0, 10.0]))
    assert 0 < p[0] < p[1] < p[2] < 1


def test_platt_stays_finite_when_the_scores_separate_the_outcomes():
    a, b = platt(np.array([0.0, 0.1, 0.2, 1.0, 1.1, 1.2]), np.array([0, 0, 0, 1, 1, 1]))
    assert np.isfinite(a) and np.isfinite(b) and a > 0

"""A backend's scores as probabilities: Platt scaling fitted on the cold-start validation users.

SCALR reads a generator's output as a likelihood estimate, not a certainty. Scores of different
backends live on different scales (a cosine, log(1 + votes), an LLM's mean log-probability), so
each run's rows are calibrated on their own: P(pick is a held-out item) = sigmoid(a * score + b),
fitted on the picks written for the cold-start **validation** users, whose held-out target items
are known (test users are never read, as in the generator quality table). Two numbers are fitted,
as a tuning choice on validation would be; the fit then applies to every row of both protocols.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from mdrec.errors import DataError

MIN_PICKS = 20  # fewer calibration picks than this cannot place a sigmoid


@dataclass(frozen=True)
class Calibration:
    a: float
    b: float
    picks: int  # validation users' picks the fit saw
    hits: int  # of those, held-out items

    def probability(self, scores: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * np.asarray(scores, dtype=np.float64) + self.b)))

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def platt(scores: np.ndarray, hits: np.ndarray, iterations: int = 100, ridge: float = 1e-6) -> tuple[float, float]:
    """(a, b) maximising the Bernoulli likelihood of `hits` under sigmoid(a * score + b), by Newton's
    method on standardised scores (a tiny ridge keeps a separable set finite)."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(hits, dtype=np.float64)
    mean, std = x.mean(), x.std() or 1.0
    z = np.stack([(x - mean) / std, np.ones_like(x)], axis=1)
    w = np.array([0.0, np.log((y.mean() + 1e-9) / (1 - y.mean() + 1e-9))])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        gradient = z.T @ (y - p) - ridge * w
        hessian = -(z.T * (p * (1 - p))) @ z - ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    slope = w[0] / std
    return float(slope), float(w[1] - slope * mean)


def calibrate(synthetic, prepared, where: str) -> Calibration:
    """Fit on the committed synthetic rows (a Location) of the cold-start validation users, against
    their held-out items in `prepared` (a Location). `where` names the rows in errors."""
    from mdrec.generate.quality import validation_pick_hits

    rows = validation_pick_hits(synthetic, prepared)
    scores, hits = rows["score"].to_numpy(dtype=np.float64), rows["hit"].to_numpy()
    if len(scores) < MIN_PICKS or not hits.any() or hits.all() or np.ptp(scores) == 0:
        raise DataError(f"{where}: cannot calibrate the scores for mode soft: {len(scores)} picks of cold-start "
                        f"validation users, {int(hits.sum())} of them held-out items (needs at least {MIN_PICKS} "
                        "picks with both outcomes and varying scores; generate for the cold_start protocol)")
    a, b = platt(scores, hits)
    return Calibration(a, b, int(len(scores)), int(hits.sum()))

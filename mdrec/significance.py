"""Significance tests shared by the report and the generator-quality table.

The report compares per-case metrics it holds in memory; the quality table keeps only sums per
shard (so a resumed run reports the same), so its tests are the ones that need only sums.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def paired_test(augmented: np.ndarray, real: np.ndarray) -> float:
    """Two-sided paired t-test p-value; 1.0 when there is no difference at all (or too few cases)."""
    diff = augmented - real
    if len(diff) < 2 or np.allclose(diff, 0):
        return 1.0
    return float(stats.ttest_rel(augmented, real).pvalue)


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def mcnemar_p(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value: are discordant pairs split other than half and half?"""
    if wins + losses == 0:
        return 1.0
    return float(stats.binomtest(int(wins), int(wins + losses), 0.5).pvalue)


def paired_t_p(n: int, total: float, total_sq: float) -> float:
    """Two-sided paired t-test p-value from the count, sum and sum of squares of the differences."""
    if n < 2:
        return 1.0
    mean = total / n
    var = max(total_sq - n * mean * mean, 0.0) / (n - 1)
    if var <= 1e-24:
        return 1.0 if abs(mean) < 1e-12 else 0.0
    t = mean / math.sqrt(var / n)
    return float(2 * stats.t.sf(abs(t), n - 1))


def format_p(p: float) -> str:
    """A p-value as the tables print it: three decimals, or <0.001."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"

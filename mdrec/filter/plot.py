"""Kept against dropped score distributions, one panel per target domain (and teacher scores)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mdrec.report.plots import plt, png


def score_plot(sample: pd.DataFrame, domain_names: dict[int, str]) -> bytes:
    """Histograms of the backend score of kept rows and of the rows each filter dropped.

    With a teacher, a second row of panels shows the teacher's scores the same way.
    """
    columns = [c for c in ("score", "teacher_score") if c in sample and sample[c].notna().any()] or ["score"]
    domains = sorted(sample["domain_idx"].unique()) if len(sample) else []
    fig, axes = plt.subplots(len(columns), max(len(domains), 1), figsize=(5.5 * max(len(domains), 1), 3.6 * len(columns)),
                             squeeze=False, layout="constrained")
    for row, column in enumerate(columns):
        for col, domain in enumerate(domains):
            ax = axes[row][col]
            part = sample[(sample["domain_idx"] == domain) & sample[column].notna()]
            values = part[column].to_numpy(dtype=np.float64)
            finite = values[np.isfinite(values)]
            bins = np.linspace(finite.min(), finite.max(), 31) if len(finite) and finite.min() < finite.max() else 30
            for status, rows in part.groupby("status"):
                v = rows[column].to_numpy(dtype=np.float64)
                v = v[np.isfinite(v)]
                label = "kept" if status == "kept" else f"dropped: {status}"
                ax.hist(v, bins=bins, alpha=0.5, label=f"{label} ({len(v):,})", density=False)
            ax.set_title(f"{domain_names.get(int(domain), domain)}: {column.replace('_', ' ')} (sample)")
            ax.set_xlabel(column)
            ax.legend(fontsize=7)
    if not domains:
        axes[0][0].set_title("no synthetic rows")
    return png(fig)

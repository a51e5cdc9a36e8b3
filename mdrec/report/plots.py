"""PNG plots of the report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _panel_per_protocol(part: pd.DataFrame):
    """A figure with one panel per protocol, and (axis, protocol, that protocol's rows) for each."""
    protocols = sorted(part["protocol"].unique())
    fig, axes = plt.subplots(1, len(protocols), figsize=(6 * len(protocols), 4), squeeze=False)
    return fig, axes, [(ax, p, part[part["protocol"] == p]) for ax, p in zip(axes[0], protocols)]


def _grouped_bars(ax, rows: pd.DataFrame, value: str, error: str, label) -> list[tuple]:
    """Bars of `value` ± `error` per domain (groups) and (model, variant) (bars); returns, per bar
    series, its bars, its rows by domain and the domains, for annotations."""
    domains = list(dict.fromkeys(rows["domain"]))
    runs = sorted({(m, v) for m, v in zip(rows["model"], rows["variant"])})
    width = 0.8 / max(len(runs), 1)
    drawn = []
    for i, (model, variant) in enumerate(runs):
        sel = rows[(rows["model"] == model) & (rows["variant"] == variant)].set_index("domain")
        x = np.arange(len(domains)) + i * width
        bars = ax.bar(x, [sel[value].get(d, np.nan) for d in domains], width,
                      yerr=[sel[error].get(d, 0.0) for d in domains], capsize=2, label=label(model, variant))
        drawn.append((bars, sel, domains))
    ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2, domains)
    return drawn


def metric_bars(summary: pd.DataFrame, metric: str) -> bytes:
    """One panel per protocol: the metric per domain (groups) and model-variant (bars), ± std."""
    fig, axes, panels = _panel_per_protocol(summary[summary["metric"] == metric])
    for ax, protocol, rows in panels:
        _grouped_bars(ax, rows, "mean", "std", lambda model, variant: f"{model} ({variant})")
        ax.set_title(f"{metric}, {protocol} protocol")
        ax.set_ylabel(metric)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png(fig)


def accuracy_vs_fairness(summary: pd.DataFrame, accuracy: str = "ndcg@10", fairness: str = "gini_exposure@10") -> bytes:
    """Each run's accuracy against the concentration of its top-K lists, per domain and protocol."""
    wide = summary.pivot_table(index=["domain", "protocol", "model", "variant"], columns="metric", values="mean")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for (domain, protocol), rows in wide.groupby(level=[0, 1]):
        ax.scatter(rows[fairness], rows[accuracy], label=f"{domain}, {protocol}")
        for (_, _, model, variant), r in rows.iterrows():
            ax.annotate(model, (r[fairness], r[accuracy]), fontsize=7)
    ax.set_xlabel(f"{fairness} (lower: exposure spread more evenly)")
    ax.set_ylabel(accuracy)
    ax.legend(fontsize=7)
    return png(fig)


def training_curves(curves: pd.DataFrame, metric: str) -> bytes:
    """Validation metric per epoch, one line per run (seeds averaged), one panel per protocol."""
    fig, axes, panels = _panel_per_protocol(curves[curves["metric"] == metric])
    for ax, protocol, rows in panels:
        for (model, variant), run in rows.groupby(["model", "variant"]):
            mean = run.groupby("epoch")["value"].mean()
            ax.plot(mean.index + 1, mean.values, marker="o", label=f"{model} ({variant})")
        ax.set_title(f"{metric.removeprefix('valid_')} on validation, {protocol}")
        ax.set_xlabel("epoch")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png(fig)


def augmentation_deltas(table: pd.DataFrame, metric: str = "ndcg@10") -> bytes:
    """Augmented minus real-only per domain (groups) and model-variant (bars), ± std over seeds;
    a star marks p < 0.05 (paired over test cases), one panel per protocol."""
    fig, axes, panels = _panel_per_protocol(table)
    for ax, protocol, rows in panels:
        drawn = _grouped_bars(ax, rows, f"{metric}_delta", f"{metric}_delta_std",
                              lambda model, variant: f"{model} +{variant}")
        for bars, sel, domains in drawn:
            for bar, d in zip(bars, domains):
                if sel[f"{metric}_p"].get(d, 1.0) < 0.05:
                    up = bar.get_height() >= 0  # above a gain, below a loss, clear of the error bar
                    ax.annotate("*", (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(8, 6 if up else -14),
                                textcoords="offset points", ha="center", fontsize=12)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(f"{metric}: augmented - real only, {protocol}")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png(fig)

"""Figures drawn from the metrics table only, so every point can be traced to a row of metrics.csv."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .io import atomic_path  # noqa: E402

MODE_LABELS = {"normal": "normal training", "adversarial": "adversarial training"}
SUCCESS_LABELS = {"pgd_success": "PGD success rate (per restart)", "pgd_success_any": "PGD success rate (any restart)"}


def save_figure(fig: plt.Figure, pdf: str | os.PathLike, png: str | os.PathLike) -> None:
    """Save a figure as PDF and PNG, each atomically."""
    for path, fmt in ((pdf, "pdf"), (png, "png")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=200, bbox_inches="tight")
    plt.close(fig)


def fig4_regular_robustness(df: pd.DataFrame, pdf: str | os.PathLike, png: str | os.PathLike,
                            success_column: str = "pgd_success", dataset: str = "fonts") -> None:
    """Fig. 4: left, PGD success rate against test error for every model; right, test error against N."""
    data = df[(df["dataset"] == dataset) & df["mode"].isin(list(MODE_LABELS))].copy()
    if data.empty:
        raise ValueError(f"metrics table has no normal/adversarial rows for dataset '{dataset}'")
    data["training"] = data["mode"].map(MODE_LABELS)
    order = [MODE_LABELS[m] for m in MODE_LABELS if m in set(data["mode"])]
    sns.set_theme(style="whitegrid", context="paper", font_scale=0.9)
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.8, 2.6))
    sns.scatterplot(data=data, x="test_error", y=success_column, hue="training", hue_order=order,
                    size="n_train", sizes=(15, 70), style="training", style_order=order, ax=left, alpha=0.85)
    left.set(xlabel="test error", ylabel=SUCCESS_LABELS.get(success_column, success_column), ylim=(-0.03, 1.03),
             title=f"{dataset.upper()}: success rate vs. test error")
    left.legend(fontsize=6, title_fontsize=6, loc="lower left", markerscale=0.7)
    sns.lineplot(data=data, x="n_train", y="test_error", hue="training", hue_order=order, style="training",
                 style_order=order, markers=True, dashes=False, errorbar="sd", ax=right)
    right.set(xscale="log", xlabel="training images N", ylabel="test error",
              title=f"{dataset.upper()}: sample complexity")
    sizes = sorted(data["n_train"].unique())
    right.xaxis.set_major_locator(FixedLocator(sizes))
    right.xaxis.set_major_formatter(FixedFormatter([f"{n:,}" for n in sizes]))
    right.xaxis.set_minor_locator(NullLocator())
    right.legend(fontsize=6, title=None)
    fig.tight_layout()
    save_figure(fig, pdf, png)

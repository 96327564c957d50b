"""The PNG summary of a run: loss terms, kept fraction and accuracies over epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(row["epoch"], row[key]) for row in rows if row.get(key) is not None]
    return [epoch for epoch, _ in points], [value for _, value in points]


def plot_run(metrics: dict[str, Any], path: Path) -> Path:
    """Draw the histories found in ``metrics`` (``pretrain_history``, ``linear_history``) into one PNG."""
    pretrain = metrics.get("pretrain_history", [])
    linear = metrics.get("linear_history", [])
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    loss_ax, halp_ax, knn_ax, linear_ax = axes.flat
    for key in ("loss", "infonce", "halp"):
        loss_ax.plot(*_series(pretrain, key), marker=".", label=key)
    loss_ax.set(title="pretraining loss terms", xlabel="epoch")
    for key in ("kept_fraction", "mean_t"):
        halp_ax.plot(*_series(pretrain, key), marker=".", label=key)
    halp_ax.set(title="hallucinated positives", xlabel="epoch", ylim=(0, 1.05))
    knn_ax.plot(*_series(pretrain, "knn_top1"), marker="o", label="kNN top-1")
    knn_ax.set(title="kNN top-1 during pretraining", xlabel="epoch", ylim=(0, 1.0))
    for key in ("train_top1", "val_top1"):
        linear_ax.plot(*_series(linear, key), marker=".", label=key)
    linear_ax.set(title="linear evaluation", xlabel="epoch", ylim=(0, 1.0))
    if "num_classes" in metrics:
        for ax in (knn_ax, linear_ax):
            ax.axhline(1.0 / metrics["num_classes"], color="grey", linestyle=":", label="chance")
    halp_start = next((row["epoch"] for row in pretrain if row.get("phase") == "halp"), None)
    for ax in (loss_ax, halp_ax, knn_ax):
        if halp_start is not None:
            ax.axvline(halp_start - 0.5, color="grey", linestyle="--", linewidth=0.8)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    figure.suptitle(f"HaLP skeleton pretraining: {metrics.get('dataset', '')}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

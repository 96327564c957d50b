"""What a run leaves behind besides checkpoints: CSV logs, ``metrics.json``, the results table and ``summary.png``."""

from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path
from typing import Any, Optional

import matplotlib

from ..fileio import atomic_write

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Write the rows (one per epoch) with the union of their keys as columns; ``None`` becomes empty."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})


def update_metrics(path: Path, **entries: Any) -> dict[str, Any]:
    """Merge ``entries`` into the JSON object at ``path`` (created if missing) and return the result.

    Protocols run as separate commands on the same ``--out`` folder add up to one ``metrics.json``. The file is
    replaced atomically, so a kill never leaves it half-written. One that cannot be read all the same (edited by
    hand, or left half-written by an older version) is kept as ``metrics.json.corrupt`` with a warning, and a new
    one is started: the results of the command that is finishing are never lost to it.
    """
    metrics = _read_metrics(path)
    metrics.update(entries)
    atomic_write(path, lambda handle: handle.write((json.dumps(metrics, indent=2) + "\n").encode()))
    return metrics


def _read_metrics(path: Path) -> dict[str, Any]:
    """The JSON object at ``path``; ``{}`` if there is none, or if it is unreadable (moved aside, with a warning)."""
    if not path.exists():
        return {}
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(metrics, dict):
            return metrics
        problem = f"a JSON {type(metrics).__name__}, not an object"
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        problem = str(error)
    kept = path.with_name(path.name + ".corrupt")
    os.replace(path, kept)
    warnings.warn(f"{path} is unreadable ({problem}); moved to {kept}, starting a new one", stacklevel=3)
    return {}


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def results_table(metrics: dict[str, Any]) -> str:
    """A markdown table of the top-1 accuracies present in ``metrics``, with the baselines and chance level."""
    rows = [("protocol", "top-1")]
    if "knn_top1" in metrics:
        rows.append(("kNN (1-NN, cosine)", _percent(metrics["knn_top1"])))
    for name, label in (("linear", "linear"), ("transfer", "transfer"), ("supervised", "supervised from scratch")):
        if f"{name}_top1" in metrics:
            best, last = _percent(metrics[f"{name}_top1"]), _percent(metrics[f"{name}_top1_last"])
            rows.append((f"{label} (best / last)", f"{best} / {last}"))
    if "semi_top1" in metrics:
        label = f"semi-supervised {100 * metrics['semi_ratio']:g} % (mean best over {len(metrics['semi_runs'])})"
        rows.append((label, f"{_percent(metrics['semi_top1'])} ± {_percent(metrics['semi_top1_std'])}"))
    if "init_knn_top1" in metrics:
        rows.append(("baseline: kNN of the encoder at random init", _percent(metrics["init_knn_top1"])))
    if "raw_knn_top1" in metrics:
        rows.append(("baseline: 1-NN on the raw pre-normalized joints", _percent(metrics["raw_knn_top1"])))
    rows.append((f"chance ({metrics['num_classes']} classes)", _percent(1.0 / metrics["num_classes"])))
    width = max(len(label) for label, _ in rows)
    lines = [f"| {label:<{width}} | {value} |" for label, value in rows]
    lines.insert(1, f"|{'-' * (width + 2)}|---|")
    return "\n".join(lines)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(row["epoch"], row[key]) for row in rows if row.get(key) is not None]
    return [epoch for epoch, _ in points], [value for _, value in points]


BASELINES = (("raw_knn_top1", "raw joints 1-NN", "tab:red"), ("init_knn_top1", "random-init kNN", "tab:purple"))


def plot_run(metrics: dict[str, Any], path: Path) -> Path:
    """Draw the histories found in ``metrics`` (``pretrain_history``, ``linear_history``) into one PNG, with the
    baselines the run measured and chance as horizontal lines, and the first epoch of the HaLP term marked (the loss
    steps there because a term is added, not because training diverged)."""
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
    for key, label, color in BASELINES:
        if metrics.get(key) is not None:
            for ax in (knn_ax, linear_ax):
                ax.axhline(metrics[key], color=color, linestyle="-.", linewidth=1, label=f"{label} {metrics[key]:.3f}")
    if "num_classes" in metrics:
        for ax in (knn_ax, linear_ax):
            ax.axhline(1.0 / metrics["num_classes"], color="grey", linestyle=":", label="chance")
    halp_start = next((row["epoch"] for row in pretrain if row.get("phase") == "halp"), None)
    if halp_start is not None:
        for ax in (loss_ax, halp_ax, knn_ax):
            ax.axvline(halp_start - 0.5, color="grey", linestyle="--", linewidth=0.8, label="HaLP term starts")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    figure.suptitle(f"HaLP skeleton pretraining: {metrics.get('dataset', '')}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

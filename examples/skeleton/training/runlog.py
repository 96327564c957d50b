"""What a run leaves behind besides checkpoints: CSV logs, ``metrics.json`` and the results table."""

from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path
from typing import Any, Optional

from skeleton.fileio import atomic_write


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

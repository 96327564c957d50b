"""MoCo vs MoCo + HaLP on real skeletons with the small-data recipe: the README's datasets table and figure.

For each dataset, ``examples/skeleton_moco.py`` (pretrain -> kNN -> linear) runs once per variant and run unit, each
in its own process and run folder, then the supervised bound (``supervised``) on the same units. A unit is a seed
(NW-UCLA, MSR Action3D: seeds 0, 1, 2) or a fold (SBU Kinect Interaction: its 5 subject-pair folds, seed 0). The
study prints a markdown table of mean ± std over the units of the raw-joint 1-NN and random-init kNN baselines every
run measures, kNN and linear top-1 of both variants (the linear probe's best epoch, scored on the test split as in the
released protocol, and its last epoch, which selects nothing), HaLP's gain paired by unit (same seed and data, so the same
init and batches), the supervised bound and the wall time of a run, and draws the same numbers into a figure.
Finished runs (a ``metrics.json`` holding the result) are reused, so an interrupted study continues where it
stopped. Every run gets the dataset's default recipe (``small``); ``--flags`` adds flags to every run.

    python examples/skeleton_moco.py prepare --dataset nwucla --raw ../shared/data/nw-ucla/all_sqe --out data/nwucla
    python examples/skeleton_moco.py prepare --dataset msr-action3d --raw ../shared/data/msr-action3d --out data/msr-action3d
    for fold in 1 2 3 4 5; do
      python examples/skeleton_moco.py prepare --dataset sbu --raw ../shared/data/sbu-kinect-interaction --out data/sbu --fold $fold
    done
    python benchmarks/datasets_study.py --data-root data --figure docs/datasets_study.png
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "examples" / "skeleton_moco.py"

REFERENCE = "MoCo"
VARIANTS: dict[str, list[str]] = {REFERENCE: ["--halp-weight", "0"], "MoCo + HaLP": ["--halp-weight", "2"]}
SUPERVISED = "supervised"


@dataclass(frozen=True)
class Unit:
    """One run of a dataset: its CLI name and seed."""

    dataset: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.dataset}-seed{self.seed}"


DATASETS: dict[str, list[Unit]] = {
    "NW-UCLA": [Unit("nwucla", seed) for seed in (0, 1, 2)],
    "SBU Kinect Interaction": [Unit(f"sbu-fold{fold}", 0) for fold in range(1, 6)],
    "MSR Action3D": [Unit("msr-action3d", seed) for seed in (0, 1, 2)],
}


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"NAME=FLAGS"`` -> ``(NAME, shlex.split(FLAGS))``."""
    name, sep, flags = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=FLAGS, got {text!r}")
    return name.strip(), shlex.split(flags)


def run_once(command: list[str], out: Path, key: str) -> Optional[dict[str, Any]]:
    """Run one pipeline command into ``out`` unless ``out/metrics.json`` already holds ``key``; its metrics, with
    ``wall_time_s`` (the pipeline's own, or the process's, kept in ``out/wall_time.json``)."""
    metrics_file, wall_file = out / "metrics.json", out / "wall_time.json"
    if not (metrics_file.is_file() and key in json.loads(metrics_file.read_text())):
        if out.exists():  # an unfinished run: start it again from scratch
            for stale in (metrics_file, out / "config.json", out / "checkpoints" / "last.pt"):
                stale.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with open(out / "stdout.log", "w") as log:
            result = subprocess.run([sys.executable, str(PIPELINE), *command, "--out", str(out)], stdout=log,
                                    stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
        if result.returncode != 0:
            print(f"  failed (exit {result.returncode}), see {out / 'stdout.log'}", flush=True)
            return None
        wall_file.write_text(json.dumps({"wall_time_s": time.perf_counter() - started}))
    metrics = json.loads(metrics_file.read_text())
    if wall_file.is_file():
        metrics["process_time_s"] = json.loads(wall_file.read_text())["wall_time_s"]
    metrics.setdefault("wall_time_s", metrics.get("process_time_s"))
    return metrics


def mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def paired_gains(runs: Mapping[Hashable, dict[str, Any]], reference: Mapping[Hashable, dict[str, Any]],
                 key: str) -> list[float]:  # fmt: skip
    """Points gained over the reference's run of the same unit, for the units both have."""
    return [100.0 * (runs[unit][key] - reference[unit][key]) for unit in runs if unit in reference]


def paired_gain(runs: dict[Unit, dict[str, Any]], reference: dict[Unit, dict[str, Any]], key: str) -> str:
    """Mean and per-unit differences (points) from the reference's run of the same unit."""
    gains = paired_gains(runs, reference, key)
    if not gains:
        return "-"
    return f"{statistics.fmean(gains):+.1f} ({', '.join(f'{gain:+.1f}' for gain in gains)})"


HEADER = [
    "dataset",
    "runs",
    "raw 1-NN",
    "random-init kNN",
    "MoCo kNN",
    "MoCo linear",
    "MoCo linear, last epoch",
    "MoCo + HaLP kNN",
    "MoCo + HaLP linear",
    "MoCo + HaLP linear, last epoch",
    "HaLP gain kNN (paired)",
    "HaLP gain linear (paired)",
    "supervised bound",
    "wall time per run (s)",
]


def summarize(results: dict[str, dict[str, dict[Unit, dict[str, Any]]]]) -> str:
    """The markdown table; ``results[dataset][variant][unit]`` is a run's metrics (accuracies in %, mean ± std over
    the units)."""
    rows = []
    for dataset, variants in results.items():
        moco, halp = variants.get(REFERENCE, {}), variants.get("MoCo + HaLP", {})
        runs = [*moco.values(), *halp.values()]
        if not runs:
            continue
        per_unit = {unit: metrics for variant in (moco, halp) for unit, metrics in variant.items()}
        supervised = list(variants.get(SUPERVISED, {}).values())
        rows.append([
            dataset, str(len(per_unit)),
            mean_std([m["raw_knn_top1"] for m in per_unit.values()]),
            mean_std([r["init_knn_top1"] for r in runs]),
            mean_std([r["knn_top1"] for r in moco.values()]), mean_std([r["linear_top1"] for r in moco.values()]),
            mean_std([r["linear_top1_last"] for r in moco.values()]),
            mean_std([r["knn_top1"] for r in halp.values()]), mean_std([r["linear_top1"] for r in halp.values()]),
            mean_std([r["linear_top1_last"] for r in halp.values()]),
            paired_gain(halp, moco, "knn_top1"), paired_gain(halp, moco, "linear_top1"),
            mean_std([r["supervised_top1"] for r in supervised]),
            mean_std([r["wall_time_s"] for r in runs], scale=1.0, digits=0),
        ])  # fmt: skip
    return "\n".join("| " + " | ".join(row) + " |" for row in [HEADER, ["---"] * len(HEADER), *rows])


def draw(results: dict[str, dict[str, dict[Unit, dict[str, Any]]]], path: Path) -> None:
    """Bars of the table's accuracies per dataset (mean, with the std over units as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        ("raw 1-NN", REFERENCE, "raw_knn_top1"),
        ("random-init kNN", REFERENCE, "init_knn_top1"),
        ("MoCo kNN", REFERENCE, "knn_top1"),
        ("MoCo + HaLP kNN", "MoCo + HaLP", "knn_top1"),
        ("MoCo linear", REFERENCE, "linear_top1"),
        ("MoCo + HaLP linear", "MoCo + HaLP", "linear_top1"),
        ("supervised bound", SUPERVISED, "supervised_top1"),
    ]
    datasets = [name for name, variants in results.items() if variants.get(REFERENCE)]
    figure, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(bars)
    for i, (label, variant, key) in enumerate(bars):
        values = [[100 * r[key] for r in results[d].get(variant, {}).values()] for d in datasets]
        means = [statistics.fmean(v) if v else 0.0 for v in values]
        stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        positions = [index + (i - len(bars) / 2 + 0.5) * width for index in range(len(datasets))]
        ax.bar(positions, means, width, yerr=stds, capsize=2, label=label)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set(ylabel="top-1 (%)", ylim=(0, 100), title="small-data recipe: mean ± std over seeds (SBU: over folds)")
    ax.legend(fontsize=8, ncols=4, loc="lower center")
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="folder holding nwucla/, sbu/, msr-action3d/ (prepared)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), metavar="NAME")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "datasets-study")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[], metavar="NAME=FLAGS",
                        help="replace the variants by these: pipeline flags (repeatable)")  # fmt: skip
    parser.add_argument("--no-supervised", action="store_true", help="skip the supervised bound")
    parser.add_argument(
        "--supervised-runs", type=int, help="run the supervised bound on the first N units only (default: all)"
    )
    parser.add_argument("--flags", default="", help="flags added to every run, e.g. '--threads 2'")
    parser.add_argument("--figure", type=Path, help="also draw the table into this PNG")
    args = parser.parse_args(argv)

    variants = dict(args.variant) or VARIANTS
    results: dict[str, dict[str, dict[Unit, dict[str, Any]]]] = {}
    for dataset in args.datasets:
        results[dataset] = {name: {} for name in [*variants, SUPERVISED]}
        for position, unit in enumerate(DATASETS[dataset]):
            jobs = [(name, flags, "linear_top1") for name, flags in variants.items()]
            if not args.no_supervised and (args.supervised_runs is None or position < args.supervised_runs):
                jobs.append((SUPERVISED, ["supervised"], "supervised_top1"))
            for name, flags, key in jobs:
                command = [*flags, "--dataset", unit.dataset, "--data-root", args.data_root, "--seed", str(unit.seed)]
                folder = args.out / slug(name) / unit.label
                print(f"{dataset}, {name}, {unit.label}: {folder}", flush=True)
                metrics = run_once([*command, *shlex.split(args.flags)], folder, key)
                if metrics is not None:
                    results[dataset][name][unit] = metrics
    table = summarize(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "study.md").write_text(table + "\n")
    if args.figure:
        draw(results, args.figure)
    print(table)
    return 0


def slug(name: str) -> str:
    """A variant's folder name: ``"MoCo + HaLP"`` -> ``"moco--halp"``."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


if __name__ == "__main__":
    sys.exit(main())

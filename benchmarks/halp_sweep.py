"""HaLP's settings on real skeletons with the small-data recipe: does any of them do better than the default?

The recipe stays fixed (the small recipe's defaults). Each of HaLP's settings is changed alone from the default
(weight 2, from half of the epochs, lambda 0.8, 20 prototypes, the sampled estimator) and run on the same units as
``datasets_study.py`` (seeds, or SBU's folds): the HaLP phase from a quarter of the epochs, twice the weight, a
lambda of 0.4 (positives nearer the boundary), as many prototypes as the dataset has classes, and the expected
estimator. Every run's kNN and linear top-1 are paired by unit with the default's run; so is MoCo alone
(``--halp-weight 0``), which shows what HaLP's term itself adds. Those two are the datasets study's variants: run
with the same ``--out`` as the study, its finished runs are reused, and so are this script's own, so an interrupted
sweep continues where it stopped. A setting that resolves to the default's value on a dataset (20 prototypes for
MSR Action3D's 20 classes) is the default there: it is not run again, its cell says so, and its pooled cell leaves
that dataset out. Run from the repository root, as a module:

    .venv/bin/python -m benchmarks.halp_sweep --data-root data

The table (markdown, also written to ``OUT/halp_sweep.md``): per dataset, the setting's kNN / linear / linear at the
probe's last epoch (the best epoch is scored on the test split; the last selects nothing), means over the units and,
in brackets, their gains over the default paired by unit; the last column pools every unit of every dataset.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, Callable, Optional

from benchmarks.datasets_study import DATASETS, REFERENCE, ROOT, VARIANTS, paired_gains, run_once, slug

DEFAULT = "MoCo + HaLP"
SAME_AS_DEFAULT = "= default"

# A setting's flags, given the default's run of the same unit (its metrics and resolved config.json).
Setting = Callable[[dict[str, Any], dict[str, Any]], list[str]]
SETTINGS: dict[str, Setting] = {
    "from a quarter of the epochs": lambda metrics, config: [
        "--halp-start-epoch",
        str(max(1, round(config["pretrain"]["epochs"] / 4))),
    ],
    "weight 4": lambda metrics, config: ["--halp-weight", "4"],
    "lambda 0.4": lambda metrics, config: ["--lam", "0.4"],
    "prototypes = classes": lambda metrics, config: ["--num-prototypes", str(metrics["num_classes"])],
    "expected estimator": lambda metrics, config: ["--estimator", "expected"],
}

# The config.json keys a setting's flag changes: a setting that leaves them at the default's values is the default.
CHANGES = {"--halp-start-epoch": "halp_start_epoch", "--halp-weight": "halp_weight", "--lam": "lam",
           "--num-prototypes": "num_prototypes", "--estimator": "estimator"}  # fmt: skip
KEYS = ("knn_top1", "linear_top1", "linear_top1_last")

Runs = Mapping[Hashable, dict[str, Any]]


def is_default(flags: list[str], config: dict[str, Any]) -> bool:
    """Whether ``flags`` (``--name value`` pairs of loss settings) only restate ``config``'s values."""
    for name, value in zip(flags[::2], flags[1::2]):
        current = config["loss"][CHANGES[name]]
        if isinstance(current, str) and current != value:
            return False
        if not isinstance(current, str) and float(current) != float(value):
            return False
    return True


def cell(runs: Runs, reference: Optional[Runs]) -> str:
    """``kNN / linear / linear at its last epoch`` means, and the paired gains over ``reference`` in brackets."""
    if not runs:
        return "-"
    text = " / ".join(f"{statistics.fmean(100.0 * r[key] for r in runs.values()):.1f}" for key in KEYS)
    if reference is not None and any(unit in reference for unit in runs):
        text += " (" + " / ".join(f"{statistics.fmean(paired_gains(runs, reference, key)):+.1f}" for key in KEYS) + ")"
    return text


def summarize(results: dict[str, dict[str, dict[Hashable, dict[str, Any]]]], same: set[tuple[str, str]]) -> str:
    """The markdown table; ``results[dataset][row][unit]`` is a run's metrics, rows being MoCo, the default and the
    settings; ``same`` holds the (dataset, setting) pairs where the setting is the default."""
    header = ["HaLP setting", *(f"{d} ({len(v[DEFAULT])} runs)" for d, v in results.items()), "all runs, pooled"]
    lines = [header, ["---"] * len(header)]
    pooled_default = {(d, u): m for d, v in results.items() for u, m in v[DEFAULT].items()}
    for row in [REFERENCE, DEFAULT, *SETTINGS]:
        paired = row != DEFAULT
        cells = [
            SAME_AS_DEFAULT if (dataset, row) in same else cell(variants[row], variants[DEFAULT] if paired else None)
            for dataset, variants in results.items()
        ]
        pooled = {(d, u): m for d, v in results.items() for u, m in v[row].items()}
        cells.append(cell(pooled, pooled_default if paired else None))
        lines.append([{REFERENCE: "off (MoCo alone)", DEFAULT: "default"}.get(row, row), *cells])
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="folder holding nwucla/, sbu/, msr-action3d/ (prepared)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS), metavar="NAME")
    parser.add_argument("--units", type=int, help="the first N units (seeds, folds) of each dataset (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "datasets-study",
                        help="the datasets study's folder, whose MoCo and default runs are reused")  # fmt: skip
    parser.add_argument("--flags", default="", help="flags added to every run, e.g. '--threads 1'")
    args = parser.parse_args(argv)
    if args.units is not None and args.units < 1:
        parser.error(f"--units: expected at least 1, got {args.units}")

    results: dict[str, dict[str, dict[Hashable, dict[str, Any]]]] = {}
    same: set[tuple[str, str]] = set()
    for dataset in args.datasets:
        results[dataset] = {row: {} for row in [REFERENCE, DEFAULT, *SETTINGS]}
        for unit in DATASETS[dataset][: args.units]:
            common = ["--dataset", unit.dataset, "--data-root", args.data_root, "--seed", str(unit.seed),
                      *shlex.split(args.flags)]  # fmt: skip
            for row in (REFERENCE, DEFAULT):
                folder = args.out / slug(row) / unit.label
                print(f"{dataset}, {row}, {unit.label}: {folder}", flush=True)
                metrics = run_once([*VARIANTS[row], *common], folder, "linear_top1")
                if metrics is not None:
                    results[dataset][row][unit] = metrics
            default = results[dataset][DEFAULT].get(unit)
            if default is None:
                continue  # no default run to derive the settings from or pair them with
            config = json.loads((args.out / slug(DEFAULT) / unit.label / "config.json").read_text())
            for row, setting in SETTINGS.items():
                flags = setting(default, config)
                if is_default(flags, config):
                    same.add((dataset, row))
                    continue
                folder = args.out / slug(f"{DEFAULT}, {row}") / unit.label
                print(f"{dataset}, {row}, {unit.label}: {folder}", flush=True)
                metrics = run_once([*VARIANTS[DEFAULT], *flags, *common], folder, "linear_top1")
                if metrics is not None:
                    results[dataset][row][unit] = metrics
    table = summarize(results, same)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "halp_sweep.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

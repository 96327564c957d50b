"""MoCo vs MoCo + HaLP on real skeletons (NW-UCLA cross-view), several seeds: the README's NW-UCLA tables.

Runs ``examples/skeleton_moco.py`` (pretrain -> kNN -> linear) once per variant and seed with the ``cpu``
preset, plus the ``supervised`` upper bound, each in its own process and run folder, then prints a markdown
table of mean ± std (over seeds) of kNN and linear top-1, each variant's linear gain over MoCo alone paired by
seed (the same seed gives the same init and data), wall time, the HaLP diagnostics of the last epoch and the two
baselines every run measures (1-NN on the raw joints, kNN at random init). Finished runs (those
with a ``metrics.json`` holding the result) are reused, so an interrupted study continues where it stopped.

Suites of variants:

- ``halp`` (default): MoCo alone, MoCo + HaLP sampled, MoCo + HaLP expected, and the supervised bound;
- ``ablation``: from the ``cpu`` preset as it was before it learned on real data to the current one, one change
  at a time (why the old preset failed on NW-UCLA);
- ``regime``: where HaLP might help: its objective, lambda, prototypes, start, and twice the training (with MoCo
  alone as the reference: give it the ``halp`` suite's ``--out`` to reuse those runs).

    python examples/skeleton_moco.py prepare --dataset nwucla --raw ../shared/data/nw-ucla/all_sqe --out data/nwucla
    python benchmarks/nwucla_study.py --data-root data                       # 3 seeds x 3 variants + supervised
    python benchmarks/nwucla_study.py --data-root data --suite ablation --seeds 0 --no-supervised
    python benchmarks/nwucla_study.py --data-root data --suite none --variant "HaLP, lambda 0.4=--lam 0.4"

Every variant's flags go to the pipeline after ``--preset cpu``, so any preset value can be varied.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "examples" / "skeleton_moco.py"

# The cpu preset before it learned on real data: a 2 x 128 GRU, 12 epochs of batch 64, crops of at least 64
# frames, shear or joint corruption, T = 0.07, step schedules, a raw-feature linear probe.
OLD_PRESET = (
    "--encoder gru --hidden-size 128 --num-layers 2 --clip-frames 64 --epochs 12 --halp-start-epoch 5 "
    "--lr-milestones 10 --lr 0.05 --lr-schedule step --batch-size 64 --temperature 0.07 --knn-every 4 "
    "--augment-crop-min-ratio 0.1 --augment-crop-min-frames 64 --augment-corrupt-prob 0.5 --augment-rotate-degrees 0 "
    "--linear-epochs 20 --linear-lr-schedule step --linear-lr-milestones 12 17 --linear-feature-norm none"
).split()
LONGER = "--epochs 100 --halp-start-epoch 50 --lr-milestones 80 --knn-every 20".split()
NEW_AUGMENT = (
    "--augment-crop-min-ratio 0.5 --augment-crop-min-frames 1 --augment-corrupt-prob 0 --augment-rotate-degrees 17"
)

REFERENCE = "MoCo"  # other variants' gains are paired with its runs of the same seed
MOCO = ["--halp-weight", "0"]

SUITES: dict[str, dict[str, list[str]]] = {
    "none": {},
    "halp": {
        REFERENCE: MOCO,
        "MoCo + HaLP (sampled)": [],
        "MoCo + HaLP (expected)": ["--estimator", "expected"],
    },
    "ablation": {
        "old cpu preset": OLD_PRESET,
        "+ 100 epochs": [*OLD_PRESET, *LONGER],
        "+ relative crops, rotation, no corruption": [*OLD_PRESET, *LONGER, *NEW_AUGMENT.split()],
        "+ batch 128, cosine lr 0.1, T 0.1, 50 frames, standardized probe (= cpu preset, GRU)": (
            "--encoder gru --hidden-size 128 --num-layers 2".split()
        ),
        "+ temporal-conv encoder (= cpu preset)": [],
    },
    "regime": {
        REFERENCE: MOCO,
        "MoCo + HaLP, align objective": ["--objective", "align"],
        "MoCo + HaLP, lambda 0.4": ["--lam", "0.4"],
        "MoCo + HaLP, 10 prototypes": ["--num-prototypes", "10"],
        "MoCo + HaLP from epoch 20": ["--halp-start-epoch", "20"],
        "MoCo, 200 epochs": "--halp-weight 0 --epochs 200".split(),
        "MoCo + HaLP, 200 epochs (HaLP from 100)": "--epochs 200 --halp-start-epoch 100".split(),
    },
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
    if "wall_time_s" not in metrics and wall_file.is_file():
        metrics["wall_time_s"] = json.loads(wall_file.read_text())["wall_time_s"]
    return metrics


def last_halp_epoch(metrics: dict[str, Any]) -> dict[str, Any]:
    rows = [row for row in metrics.get("pretrain_history", []) if row.get("kept_fraction") is not None]
    return rows[-1] if rows else {}


def mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def paired_gain(runs: dict[int, dict[str, Any]], reference: dict[int, dict[str, Any]], key: str) -> str:
    """Mean and per-seed differences (points) from the reference's run of the same seed: same init, same data."""
    seeds = sorted(set(runs) & set(reference))
    if not seeds:
        return "-"
    gains = [100.0 * (runs[seed][key] - reference[seed][key]) for seed in seeds]
    return f"{statistics.fmean(gains):+.1f} ({', '.join(f'{gain:+.1f}' for gain in gains)})"


def summarize(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    """The markdown table of the study; ``results[variant][seed]`` is a run's metrics."""
    reference = results.get(REFERENCE, {})
    header = ["variant", "seeds", "kNN top-1 (%)", "linear top-1, best (%)", "linear, last (%)"]
    header += [f"linear gain over {REFERENCE}, paired by seed (points)"] if reference else []
    header += ["kept fraction", "mean t", "wall time (s)"]
    rows = []
    for name, by_seed in results.items():
        runs = list(by_seed.values())
        if not runs:
            continue
        wall = mean_std([r["wall_time_s"] for r in runs], scale=1.0, digits=0)
        if "supervised_top1" in runs[0]:
            best = mean_std([r["supervised_top1"] for r in runs])
            last = mean_std([r["supervised_top1_last"] for r in runs])
            rows.append([name, str(len(runs)), "-", best, last, *(["-"] if reference else []), "-", "-", wall])
            continue
        halp = [last_halp_epoch(r) for r in runs]
        kept = [h["kept_fraction"] for h in halp if h]
        mean_t = [h["mean_t"] for h in halp if h]
        gain = paired_gain(by_seed, reference, "linear_top1") if name != REFERENCE else "-"
        rows.append([
            name, str(len(runs)), mean_std([r["knn_top1"] for r in runs]), mean_std([r["linear_top1"] for r in runs]),
            mean_std([r["linear_top1_last"] for r in runs]), *([gain] if reference else []),
            mean_std(kept, 1.0, 3) if kept else "-", mean_std(mean_t, 1.0, 3) if mean_t else "-", wall,
        ])  # fmt: skip
    lines = ["| " + " | ".join(row) + " |" for row in [header, ["---"] * len(header), *rows]]
    baselines = [r for by_seed in results.values() for r in by_seed.values() if "raw_knn_top1" in r]
    if baselines:
        lines.append("")
        lines.append(
            f"Baselines measured by every run: 1-NN on the raw pre-normalized joints "
            f"{100 * baselines[0]['raw_knn_top1']:.1f} %, kNN of the encoder at random init "
            f"{mean_std([r['init_knn_top1'] for r in baselines])} % (over {len(baselines)} runs)."
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="folder holding nwucla/xview (the output of prepare)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "nwucla-study")
    parser.add_argument("--suite", choices=SUITES, default="halp", help="the set of variants (see above)")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[], metavar="NAME=FLAGS",
                        help="an extra variant: pipeline flags after --preset cpu (repeatable)")  # fmt: skip
    parser.add_argument("--no-supervised", action="store_true", help="skip the supervised upper bound")
    parser.add_argument("--flags", default="", help="flags added to every run, e.g. '--threads 2'")
    args = parser.parse_args(argv)

    variants = {**SUITES[args.suite], **dict(args.variant)}
    common = ["--dataset", "nwucla", "--data-root", args.data_root, "--preset", "cpu", *shlex.split(args.flags)]
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for name, flags in variants.items():
        results[name] = {}
        for seed in args.seeds:
            folder = args.out / f"{_slug(name)}-seed{seed}"
            print(f"{name}, seed {seed}: {folder}", flush=True)
            metrics = run_once([*common, "--seed", str(seed), *flags], folder, "linear_top1")
            if metrics is not None:
                results[name][seed] = metrics
    if not args.no_supervised:
        name = "supervised from scratch (upper bound)"
        results[name] = {}
        for seed in args.seeds:
            folder = args.out / f"supervised-seed{seed}"
            print(f"{name}, seed {seed}: {folder}", flush=True)
            metrics = run_once(["supervised", *common, "--seed", str(seed)], folder, "supervised_top1")
            if metrics is not None:
                results[name][seed] = metrics
    table = summarize(results)
    (args.out / "study.md").write_text(table + "\n")
    print(table)
    return 0


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


if __name__ == "__main__":
    sys.exit(main())

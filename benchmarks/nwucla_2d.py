"""NW-UCLA as 2-D keypoints: does the small recipe learn from 2-D data, with and without its planar view change?

Most users' skeletons are 2-D keypoints from a video pose estimator. This script makes such a dataset from NW-UCLA:
the raw files' camera coordinates (metres) projected through a pinhole camera like the Kinect's (f = 580 px, a
640 x 480 image, y pointing down) into custom folders of 2-D keypoints in pixels, with the samples, labels and frame
counts of the prepared dataset: ``cross-view``, its split (cameras 1 and 2 train, camera 3 tests), and
``cross-subject``, the same samples re-split by subject (odd subjects train, even ones test, every camera in both;
not a published protocol: it tells what 2-D costs apart from what an unseen camera costs). On each,
``examples/skeleton_moco.py --dataset custom`` (pretrain -> kNN -> linear, the small recipe's defaults) runs with the
planar view change (the default for 2-D data) and without it (``--augment-mirror-prob 0 --augment-foreshorten 0``),
once per seed, each in its own run folder; finished runs are reused. The table: mean ± std over the seeds of the
raw-joint 1-NN, random-init kNN, kNN, linear (its best epoch, scored on the test split, and its last epoch), the
view change's gains paired by seed, and the wall time of a run. Run from the repository root, as a module (it reads the raw files with the pipeline's reader):

    .venv/bin/python examples/skeleton_moco.py prepare --dataset nwucla --raw ../shared/data/nw-ucla/all_sqe --out data/nwucla
    .venv/bin/python -m benchmarks.nwucla_2d --data-root data --raw ../shared/data/nw-ucla/all_sqe
"""

from __future__ import annotations

import argparse
import pickle
import re
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from benchmarks.datasets_study import ROOT, Unit, mean_std, paired_gains, run_once, slug
from examples.skeleton.data.formats.nwucla import read_nwucla

FOCAL_PX, CENTRE_PX = 580.0, (320.0, 240.0)
SPLITS = ("cross-view", "cross-subject")
VARIANTS: dict[str, list[str]] = {
    "planar view change (default)": [],
    "no planar view change": ["--augment-mirror-prob", "0", "--augment-foreshorten", "0"],
}
REFERENCE = "no planar view change"
METRICS = ("knn_top1", "linear_top1", "linear_top1_last")
HEADER = ["split", "variant", "runs", "raw 1-NN", "random-init kNN", "kNN", "linear", "linear, last epoch",
          "gain kNN / linear / last (paired)", "s/run"]  # fmt: skip


def project(joints: np.ndarray) -> np.ndarray:
    """(T, V, 3) camera coordinates in metres -> (2, T, V) pixels; a joint the sensor lost (z <= 0) stays (0, 0)."""
    depth = joints[..., 2]
    seen = depth > 0
    safe = np.where(seen, depth, 1.0)
    pixels = np.stack(
        [CENTRE_PX[0] + FOCAL_PX * joints[..., 0] / safe, CENTRE_PX[1] - FOCAL_PX * joints[..., 1] / safe]
    )
    return np.where(seen, pixels, 0.0)


def write_2d_folders(prepared: Path, raw: Path, out: Path) -> dict[str, Path]:
    """Project every sample of a prepared NW-UCLA folder (``prepared/xview``) from its raw file; the folders of
    both splits, ``out/<split>``, each with ``{train,val}_data_joint.npy`` (N, 2, T, 20, 1), ``_num_frame.npy``
    and ``_label.pkl``. Folders already written are kept (delete ``out`` after changing the prepared or raw data).
    Raw files are found anywhere under ``raw``; a sequence longer than the prepared one (``prepare`` keeps the first
    frames of very long ones) is cut to it."""
    folders = {split: out / split for split in SPLITS}
    if all((folder / "val_label.pkl").is_file() for folder in folders.values()):
        return folders
    files = {path.stem: path for path in raw.rglob("*.json")}
    names: list[str] = []
    labels: list[int] = []
    frames: list[int] = []
    parts = []
    for split in ("train", "val"):
        with open(prepared / "xview" / f"{split}_label.pkl", "rb") as handle:
            split_names, split_labels = pickle.load(handle)
        counts = np.load(prepared / "xview" / f"{split}_num_frame.npy")
        length = np.load(prepared / "xview" / f"{split}_data_joint.npy", mmap_mode="r").shape[2]
        data = np.zeros((len(split_names), 2, length, 20, 1), dtype=np.float32)
        for i, (name, count) in enumerate(zip(split_names, counts)):
            if name not in files:
                raise FileNotFoundError(f"{raw}: no {name}.json (a sample of {prepared / 'xview'})")
            joints = read_nwucla(files[name])
            if len(joints) < count:
                raise ValueError(f"{files[name]}: {len(joints)} frames, the prepared folder has {count}")
            data[i, :, :count, :, 0] = project(joints[:count])
        parts.append(data)
        names += list(split_names)
        labels += [int(label) for label in split_labels]
        frames += [int(count) for count in counts]
    data = np.concatenate(parts)
    view_train = np.arange(len(names)) < len(parts[0])
    subject = np.array([int(re.search(r"_s(\d+)_", name).group(1)) for name in names])
    for split, train in (("cross-view", view_train), ("cross-subject", subject % 2 == 1)):
        folders[split].mkdir(parents=True, exist_ok=True)
        for part, chosen in (("train", np.flatnonzero(train)), ("val", np.flatnonzero(~train))):
            np.save(folders[split] / f"{part}_data_joint.npy", data[chosen])
            np.save(folders[split] / f"{part}_num_frame.npy", np.asarray(frames)[chosen])
            with open(folders[split] / f"{part}_label.pkl", "wb") as handle:
                pickle.dump(([names[i] for i in chosen], [labels[i] for i in chosen]), handle)
    return folders


def summarize(results: dict[tuple[str, str], dict[Unit, dict[str, Any]]]) -> str:
    """The markdown table; ``results[(split, variant)]`` maps each seed's unit to its metrics."""
    rows = [HEADER, ["---"] * len(HEADER)]
    for (split, variant), runs in results.items():
        reference = results.get((split, REFERENCE), {})
        gains = (
            "-"
            if variant == REFERENCE
            else " / ".join(f"{statistics.fmean(paired_gains(runs, reference, key)):+.1f}" for key in METRICS)
        )
        values = list(runs.values())
        rows.append([split, variant, str(len(values)),
                     *(mean_std([r[key] for r in values]) for key in ("raw_knn_top1", "init_knn_top1", *METRICS)),
                     gains, mean_std([r["wall_time_s"] for r in values], scale=1.0, digits=0)])  # fmt: skip
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True, help="folder holding nwucla/ (prepared)")
    parser.add_argument("--raw", type=Path, required=True, help="NW-UCLA's raw JSON files (all_sqe)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "nwucla-2d")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="distinct seeds (default: 0 1 2)")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--project-only", action="store_true", help="write the 2-D folders and stop")
    parser.add_argument("--flags", default="", help="flags added to every run, e.g. '--threads 2'")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds: expected distinct seeds, got {' '.join(map(str, args.seeds))}")

    folders = write_2d_folders(args.data_root / "nwucla", args.raw, args.out / "data")
    if args.project_only:
        print("\n".join(f"{split}: {folder}" for split, folder in folders.items()))
        return 0
    results: dict[tuple[str, str], dict[Unit, dict[str, Any]]] = {}
    for split in args.splits:
        for variant, flags in VARIANTS.items():
            results[(split, variant)] = {}
            for seed in args.seeds:
                folder = args.out / split / slug(variant) / f"seed{seed}"
                command = ["--dataset", "custom", "--data-root", str(folders[split]), "--seed", str(seed), *flags,
                           *shlex.split(args.flags)]  # fmt: skip
                print(f"{split}, {variant}, seed {seed}: {folder}", flush=True)
                metrics = run_once(command, folder, "linear_top1")
                if metrics is not None:
                    results[(split, variant)][Unit(split, seed)] = metrics
    table = summarize(results)
    (args.out / "nwucla_2d.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/nwucla_2d.py: NW-UCLA written as raw files, prepared, then projected to 2-D keypoints in pixels, in
its cross-view split and re-split by subject (the benchmark runs as a module from the repository root)."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
from raw_files import write_nwucla
from skeleton.cli import main
from skeleton.data.formats.nwucla import NwuclaSampleId
from test_skeleton_nwucla import _write_dataset

from benchmarks import nwucla_2d
from benchmarks.datasets_study import Unit

ROOT = Path(__file__).resolve().parent.parent


def _pixels(joints):
    """The pinhole projection, written out: u = 320 + 580 x / z, v = 240 - 580 y / z, float64 (a lost joint,
    z = 0, comes out NaN here and is compared with its zeros separately)."""
    x, y, z = joints[..., 0], joints[..., 1], joints[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([320.0 + 580.0 * x / z, 240.0 - 580.0 * y / z])


def test_projection_of_both_splits(tmp_path):
    raw = tmp_path / "raw"
    written = _write_dataset(raw / "all_sqe", subjects=(1, 2, 3))  # found below the folder given, as prepare does
    lost = written["a01_s01_e00_v03"].copy()
    lost[2, 4] = 0.0  # a joint the sensor lost in one frame: all zero
    lost[3, 5, 2] = -0.5  # and one behind the camera: no pixel either
    write_nwucla(raw / "all_sqe" / "a01_s01_e00_v03.json", lost)
    written["a01_s01_e00_v03"] = lost
    assert main(["prepare", "--dataset", "nwucla", "--raw", str(raw), "--out", str(tmp_path / "data" / "nwucla"),
                 "--quiet"]) == 0  # fmt: skip
    out = tmp_path / "2d"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.nwucla_2d", "--data-root", str(tmp_path / "data"), "--raw", str(raw),
         "--out", str(out), "--project-only"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    seen = {}
    for split, held_out in (("cross-view", lambda name: name.endswith("_v03")),
                            ("cross-subject", lambda name: int(name[5:7]) % 2 == 0)):  # fmt: skip
        for part in ("train", "val"):
            folder = out / "data" / split
            data = np.load(folder / f"{part}_data_joint.npy")
            frames = np.load(folder / f"{part}_num_frame.npy")
            with open(folder / f"{part}_label.pkl", "rb") as handle:
                names, labels = pickle.load(handle)
            assert data.shape[:2] == (len(names), 2) and data.shape[3:] == (20, 1)
            assert all(held_out(name) == (part == "val") for name in names)
            assert labels == [NwuclaSampleId.parse(name).label for name in names]
            for sample, count, name in zip(data, frames, names):
                joints = written[name]
                assert count == len(joints)
                expected = _pixels(joints)
                if name == "a01_s01_e00_v03":
                    assert (sample[:, 2, 4, 0] == 0).all() and (sample[:, 3, 5, 0] == 0).all()  # no pixel invented
                    expected[:, 2, 4] = expected[:, 3, 5] = 0.0
                np.testing.assert_allclose(sample[:, :count, :, 0], expected, rtol=1e-6, atol=1e-3)
                assert (sample[:, count:] == 0).all()
            seen.setdefault(split, set()).update(names)
    assert seen["cross-view"] == seen["cross-subject"] == set(written)  # the same samples, split two ways


def test_table_pairs_the_view_change_with_its_absence_by_seed():
    def run(knn, linear, last):
        return {"raw_knn_top1": 0.65, "init_knn_top1": 0.64, "knn_top1": knn, "linear_top1": linear,
                "linear_top1_last": last, "wall_time_s": 100.0}  # fmt: skip

    a, b = Unit("cross-view", 0), Unit("cross-view", 1)
    results = {
        ("cross-view", "planar view change (default)"): {a: run(0.74, 0.82, 0.81), b: run(0.72, 0.84, 0.83)},
        ("cross-view", nwucla_2d.REFERENCE): {a: run(0.58, 0.66, 0.64), b: run(0.56, 0.64, 0.62)},
    }
    rows = [line.split(" | ") for line in nwucla_2d.summarize(results).splitlines()[2:]]
    assert rows[0][5:9] == ["73.0 ± 1.4", "83.0 ± 1.4", "82.0 ± 1.4", "+16.0 / +18.0 / +19.0"]
    assert rows[1][8] == "-"

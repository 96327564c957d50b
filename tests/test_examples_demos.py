"""The drop-in demos run end to end: MoCo loop, SimCLR on digits (tiny configuration), the sphere picture."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path
from typing import Iterator

import moco_minimal
import pytest
import simclr_digits
import visualize_halp
from conftest import flushes_denormals
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def single_blas_thread() -> Iterator[None]:
    """One thread for the BLAS/OpenMP pools under scikit-learn too (torch's is set in conftest.py)."""
    with threadpool_limits(limits=1):
        yield


def test_moco_minimal_runs_as_a_script_and_turns_halp_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = ROOT / "examples" / "moco_minimal.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--steps", "12", "--print-every", "4"])
    runpy.run_path(str(script), run_name="__main__")  # the script's own entry point, without a new interpreter
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("kept" in line for line in lines)
    # The bank fits once it has seen 256 keys (4 batches of 64); from then on the HaLP term is on.
    assert "prototypes True" in lines[-1]


def test_moco_minimal_terms() -> None:
    terms = moco_minimal.main(["--steps", "8", "--print-every", "100"])
    assert set(terms) >= {"loss", "infonce", "halp", "kept_fraction", "mean_t"}
    assert all(math.isfinite(value) for value in terms.values())
    assert 0.5 < terms["kept_fraction"] <= 1.0
    assert math.isclose(terms["loss"], terms["infonce"] + terms["halp"], rel_tol=1e-5)  # halp_weight = 1


def test_simclr_digits_tiny_writes_the_metrics_schema(tmp_path: Path) -> None:
    returned = simclr_digits.main(
        ["--epochs", "1", "--halp-warmup-epochs", "0", "--seeds", "0", "1", "--out", str(tmp_path)]
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(returned))
    for method in ("baseline", "halp"):
        entry = metrics[method]
        for name in ("knn_top1", "linear_top1"):
            assert 0.0 <= entry[name] <= 1.0
            assert entry[f"{name}_std"] >= 0.0
            assert len(entry["per_seed"][name]) == 2
            assert math.isclose(entry[name], sum(entry["per_seed"][name]) / 2)
        # One epoch already separates the digits far better than chance (0.1).
        assert entry["knn_top1"] > 0.5
    # HaLP was really on during the last epoch, and the baseline never built a bank.
    terms = metrics["halp"]["last_epoch_terms"]
    assert 0.5 < terms["kept_fraction"] <= 1.0 and terms["halp"] < 0.0
    assert "last_epoch_terms" not in metrics["baseline"]
    assert metrics["raw_pixels"]["knn_top1"] > 0.95 and metrics["raw_pixels"]["linear_top1"] > 0.95
    assert metrics["config"]["seeds"] == [0, 1] and metrics["wall_time_s"] > 0
    assert flushes_denormals()


def test_simclr_digits_keeps_denormals_when_asked(tmp_path: Path) -> None:
    simclr_digits.main(["--epochs", "1", "--seeds", "0", "--no-flush-denormal", "--out", str(tmp_path)])
    assert not flushes_denormals()


def test_visualize_halp_writes_a_small_png(tmp_path: Path) -> None:
    out = visualize_halp.main(["--out", str(tmp_path / "sphere.png"), "--positives", "20", "--dpi", "40"])
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 10_000 < len(data) < 500_000


def test_committed_picture_is_small() -> None:
    picture = ROOT / "docs" / "halp_sphere.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size < 500_000

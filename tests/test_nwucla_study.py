"""benchmarks/nwucla_study.py: variant parsing, reuse of finished runs, and the table's statistics."""

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "nwucla_study", Path(__file__).resolve().parent.parent / "benchmarks" / "nwucla_study.py"
)
study = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(study)


def _run(knn, linear, kept=None, seconds=100.0):
    history = [{"epoch": 1, "kept_fraction": None}]
    if kept is not None:
        history.append({"epoch": 2, "kept_fraction": kept, "mean_t": 0.25})
    return {"knn_top1": knn, "linear_top1": linear, "linear_top1_last": linear - 0.01, "wall_time_s": seconds,
            "pretrain_history": history, "raw_knn_top1": 0.75, "init_knn_top1": 0.6}  # fmt: skip


def test_parse_variant():
    assert study.parse_variant("HaLP, lambda 0.4=--lam 0.4 --halp-weight 1") == (
        "HaLP, lambda 0.4",
        ["--lam", "0.4", "--halp-weight", "1"],
    )
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=FLAGS"):
        study.parse_variant("--lam 0.4")


def test_summary_statistics():
    table = study.summarize(
        {
            "MoCo": {0: _run(0.80, 0.84), 1: _run(0.82, 0.86)},
            "HaLP": {0: _run(0.81, 0.85, kept=0.8), 1: _run(0.83, 0.88, kept=0.9), 2: _run(0.9, 0.9)},
            "supervised": {0: {"supervised_top1": 0.9, "supervised_top1_last": 0.88, "wall_time_s": 50.0}},
        }
    )
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "81.0 ± 1.4" in rows["MoCo"] and "85.0 ± 1.4" in rows["MoCo"] and "| - | - |" in rows["MoCo"]
    assert "0.850 ± 0.071" in rows["HaLP"] and "0.250 ± 0.000" in rows["HaLP"]
    # Gains are paired by seed, and only over the seeds both have: +1 and +2 points.
    assert "| +1.5 (+1.0, +2.0) |" in rows["HaLP"] and "| - | - | - |" in rows["MoCo"]
    assert "90.0 ± 0.0" in rows["supervised"] and "88.0 ± 0.0" in rows["supervised"]
    assert "raw pre-normalized joints 75.0 %" in table and "60.0 ± 0.0 %" in table
    # Without MoCo among the variants there is nothing to pair with: no gain column.
    alone = study.summarize({"HaLP": {0: _run(0.81, 0.85, kept=0.8)}}).splitlines()
    assert "paired" not in alone[0] and alone[0].count("|") == alone[1].count("|") == alone[2].count("|") == 9


def test_finished_runs_are_reused(tmp_path, monkeypatch):
    (tmp_path / "metrics.json").write_text(json.dumps(_run(0.8, 0.84)))
    monkeypatch.setattr(study.subprocess, "run", lambda *a, **k: pytest.fail("a finished run was started again"))
    assert study.run_once(["--seed", "0"], tmp_path, "linear_top1")["knn_top1"] == 0.8

"""benchmarks/datasets_study.py: variant parsing, reuse of finished runs, the table's statistics and its figure."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "datasets_study", Path(__file__).resolve().parent.parent / "benchmarks" / "datasets_study.py"
)
study = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = study  # its dataclasses look their module up there
SPEC.loader.exec_module(study)


def _run(knn, linear, raw=0.75, init=0.6, seconds=100.0):
    return {"knn_top1": knn, "linear_top1": linear, "linear_top1_last": linear - 0.01, "raw_knn_top1": raw,
            "init_knn_top1": init, "wall_time_s": seconds}  # fmt: skip


def test_parse_variant():
    assert study.parse_variant("HaLP, lambda 0.4=--lam 0.4 --halp-weight 1") == (
        "HaLP, lambda 0.4",
        ["--lam", "0.4", "--halp-weight", "1"],
    )
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=FLAGS"):
        study.parse_variant("--lam 0.4")


def _results():
    a, b, c = (study.Unit("sbu-fold1", 0), study.Unit("sbu-fold2", 0), study.Unit("sbu-fold3", 0))
    return {
        "SBU": {
            "MoCo": {a: _run(0.80, 0.84, raw=0.70), b: _run(0.82, 0.86, raw=0.80)},
            # Gains are paired by unit and only over the units both variants have: +1 and +2 points linear.
            "MoCo + HaLP": {a: _run(0.81, 0.85, raw=0.70), b: _run(0.82, 0.88, raw=0.80), c: _run(0.9, 0.9)},
            "supervised": {a: {"supervised_top1": 0.9, "wall_time_s": 50.0}},
        }
    }


def test_summary_statistics():
    table = study.summarize(_results())
    header, rule, row = table.splitlines()
    assert header.count("|") == rule.count("|") == row.count("|") == len(study.HEADER) + 1
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    values = dict(zip(study.HEADER, cells))
    assert values["runs"] == "3"
    assert values["raw 1-NN"] == "75.0 ± 5.0"  # per unit: 70, 80, 75 (sample std)
    assert values["MoCo kNN"] == "81.0 ± 1.4" and values["MoCo linear"] == "85.0 ± 1.4"
    assert values["MoCo linear, last epoch"] == "84.0 ± 1.4"
    assert values["HaLP gain linear (paired)"] == "+1.5 (+1.0, +2.0)"
    assert values["HaLP gain kNN (paired)"] == "+0.5 (+1.0, +0.0)"
    assert values["supervised bound"] == "90.0 ± 0.0"


def test_figure_is_drawn(tmp_path):
    study.draw(_results(), tmp_path / "study.png")
    assert (tmp_path / "study.png").stat().st_size > 1000


def test_finished_runs_are_reused(tmp_path, monkeypatch):
    (tmp_path / "metrics.json").write_text(json.dumps(_run(0.8, 0.84)))
    monkeypatch.setattr(study.subprocess, "run", lambda *a, **k: pytest.fail("a finished run was started again"))
    assert study.run_once(["--seed", "0"], tmp_path, "linear_top1")["knn_top1"] == 0.8

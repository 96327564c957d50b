"""benchmarks/halp_sweep.py: settings derived from the default's run, settings equal to the default not rerun, and
the table's gains paired with the default's run of the same unit."""

import json

import pytest

from benchmarks import datasets_study as study
from benchmarks import halp_sweep as sweep

CONFIG = {"pretrain": {"epochs": 250}, "loss": {"halp_start_epoch": 125, "halp_weight": 2.0, "lam": 0.8,
                                               "num_prototypes": 20, "estimator": "sampled"}}  # fmt: skip


def _run(knn, linear):
    return {"knn_top1": knn, "linear_top1": linear, "linear_top1_last": linear - 0.02, "num_classes": 20}


def test_settings_follow_the_default_runs_schedule_and_classes():
    assert sweep.SETTINGS["from a quarter of the epochs"](_run(0.5, 0.5), CONFIG) == ["--halp-start-epoch", "62"]
    assert sweep.SETTINGS["prototypes = classes"]({"num_classes": 8}, CONFIG) == ["--num-prototypes", "8"]


def test_a_setting_that_restates_the_default_is_recognized():
    assert sweep.is_default(["--num-prototypes", "20"], CONFIG)  # MSR Action3D's 20 classes
    assert sweep.is_default(["--halp-weight", "2"], CONFIG) and sweep.is_default(["--lam", "0.80"], CONFIG)
    assert not sweep.is_default(["--num-prototypes", "8"], CONFIG)
    assert not sweep.is_default(["--halp-weight", "4"], CONFIG)
    assert not sweep.is_default(["--estimator", "expected"], CONFIG)
    assert all(
        flag in sweep.CHANGES for setting in sweep.SETTINGS.values() for flag in setting(_run(0, 0), CONFIG)[::2]
    )


def test_gains_are_paired_with_the_default_by_unit():
    a, b, c = (study.Unit("sbu-fold1", 0), study.Unit("sbu-fold2", 0), study.Unit("nwucla", 0))
    rows = [study.REFERENCE, sweep.DEFAULT, *sweep.SETTINGS]
    results = {dataset: {row: {} for row in rows} for dataset in ("SBU", "NW-UCLA")}
    results["SBU"][study.REFERENCE] = {a: _run(0.70, 0.80), b: _run(0.80, 0.90)}
    results["SBU"][sweep.DEFAULT] = {a: _run(0.72, 0.84), b: _run(0.80, 0.88)}
    results["SBU"]["weight 4"] = {a: _run(0.74, 0.84)}  # only fold 1: paired with fold 1's default alone
    results["NW-UCLA"][sweep.DEFAULT] = {c: _run(0.80, 0.86)}
    results["NW-UCLA"]["weight 4"] = {c: _run(0.78, 0.86)}
    lines = sweep.summarize(results, {("NW-UCLA", "prototypes = classes")}).splitlines()
    assert lines[0].startswith("| HaLP setting | SBU (2 runs) | NW-UCLA (1 runs) | all runs, pooled |")
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]] for line in lines[2:]}
    assert cells["default"] == ["76.0 / 86.0 / 84.0", "80.0 / 86.0 / 84.0", "77.3 / 86.0 / 84.0"]
    assert cells["off (MoCo alone)"][0] == "75.0 / 85.0 / 83.0 (-1.0 / -1.0 / -1.0)"  # kNN -2, 0; linear -4, +2
    assert cells["weight 4"] == [
        "74.0 / 84.0 / 82.0 (+2.0 / +0.0 / +0.0)",
        "78.0 / 86.0 / 84.0 (-2.0 / +0.0 / +0.0)",
        "76.0 / 85.0 / 83.0 (+0.0 / +0.0 / +0.0)",
    ]
    assert cells["lambda 0.4"] == ["-", "-", "-"]
    assert cells["prototypes = classes"] == ["-", "= default", "-"]


def test_units_must_be_positive(capsys):
    with pytest.raises(SystemExit) as stop:
        sweep.main(["--data-root", "data", "--units", "0"])
    assert stop.value.code == 2 and "--units: expected at least 1, got 0" in capsys.readouterr().err


def test_finished_setting_runs_are_reused_each_from_its_own_folder(tmp_path, monkeypatch):
    """A sweep over finished runs starts no process; every row reads its own folder, and a setting equal to the
    default (20 prototypes for 20 classes) is shown as the default, whatever its folder holds."""
    unit = study.DATASETS["MSR Action3D"][0]
    folders = [study.REFERENCE, sweep.DEFAULT, *(f"{sweep.DEFAULT}, {s}" for s in sweep.SETTINGS)]
    for index, row in enumerate(folders):
        folder = tmp_path / study.slug(row) / unit.label
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(_run(0.50 + index / 100, 0.70)))
    (tmp_path / study.slug(sweep.DEFAULT) / unit.label / "config.json").write_text(json.dumps(CONFIG))
    monkeypatch.setattr(study.subprocess, "run", lambda *a, **k: pytest.fail("a finished run was started again"))
    argv = ["--data-root", "data", "--out", str(tmp_path), "--datasets", "MSR Action3D", "--units", "1"]
    assert sweep.main(argv) == 0
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in
            (tmp_path / "halp_sweep.md").read_text().splitlines()[2:]}  # fmt: skip
    assert rows["off (MoCo alone)"] == "50.0 / 70.0 / 68.0 (-1.0 / +0.0 / +0.0)"
    assert rows["default"] == "51.0 / 70.0 / 68.0"
    for index, setting in enumerate(sweep.SETTINGS, start=2):
        expected = f"{50 + index:.1f} / 70.0 / 68.0 ({index - 1:+.1f} / +0.0 / +0.0)"
        assert rows[setting] == (sweep.SAME_AS_DEFAULT if setting == "prototypes = classes" else expected), setting

"""A run folder belongs to one run (issue 19, items 3 and 12): a new run or another run's evaluation is refused
there, a live lock keeps a second process out, a stale one is taken over, and writes never share a temporary file."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from skeleton.cli import main
from skeleton.commands import LOCK_FILE
from skeleton.fileio import atomic_write
from test_skeleton_cli import one_line_error
from test_skeleton_pipeline import TINY, TINY_FLAGS, TINY_PRETRAIN_FLAGS, pretrain_checkpoint


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished tiny runs (2 steps each), A and B."""
    root = tmp_path_factory.mktemp("runs")
    return pretrain_checkpoint(root / "A"), pretrain_checkpoint(root / "B", "--seed", "1")


def _snapshot(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain", *TINY, "--seed", "1"],  # pretrain --out R on a finished run
        [*TINY, "--seed", "2"],  # the pipeline rerun with another seed
        ["pretrain", *TINY_FLAGS, *TINY_PRETRAIN_FLAGS, "--init-from", "{other}"],
        ["supervised", *TINY_FLAGS],
    ],
)
def test_a_new_run_into_a_finished_runs_folder_is_refused(runs, argv, capsys):
    a, b = runs
    folder = a.parent.parent
    before = _snapshot(folder)
    argv = [arg.replace("{other}", str(b)) for arg in argv]
    err = one_line_error([*argv, "--out", str(folder)], capsys)
    assert f"--out {folder} holds a run already" in err and "--resume" in err
    assert _snapshot(folder) == before  # last.pt, config.json and metrics.json untouched


def test_an_evaluation_into_another_runs_folder_is_refused(runs, capsys):
    a, b = runs
    folder = a.parent.parent
    before = _snapshot(folder)
    err = one_line_error(["knn", "--device", "cpu", "--init-from", str(b), "--out", str(folder)], capsys)
    assert f"--out {folder} holds the results of another run ({a.resolve()})" in err
    assert _snapshot(folder) == before


def test_an_evaluation_into_a_stopped_pretrainings_folder_is_refused(runs, tmp_path, capsys):
    """A pretraining killed before it wrote metrics.json still owns its folder (its checkpoints and config)."""
    a, b = runs
    folder = tmp_path / "stopped"
    shutil.copytree(a.parent.parent, folder)
    (folder / "metrics.json").unlink()
    before = _snapshot(folder)
    err = one_line_error(["knn", "--device", "cpu", "--init-from", str(b), "--out", str(folder)], capsys)
    assert f"--out {folder} holds another run ({folder / 'checkpoints' / 'last.pt'})" in err
    assert _snapshot(folder) == before
    own = folder / "checkpoints" / "last.pt"
    assert main(["knn", "--device", "cpu", "--init-from", str(own), "--out", str(folder)]) == 0
    (folder / "metrics.json").unlink()
    shutil.rmtree(folder / "checkpoints")  # stopped before its first checkpoint: its config.json alone
    err = one_line_error(["knn", "--device", "cpu", "--init-from", str(b), "--out", str(folder)], capsys)
    assert f"--out {folder} holds a pretraining stopped before its first checkpoint; evaluate {b}" in err


def test_an_evaluation_of_the_runs_own_checkpoint_adds_to_its_metrics(runs, tmp_path):
    a, _ = runs
    folder = tmp_path / "A"
    shutil.copytree(a.parent.parent, folder)
    checkpoint = folder / "checkpoints" / "last.pt"
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["checkpoint"] = str(checkpoint.resolve())  # the copy's own
    (folder / "metrics.json").write_text(json.dumps(metrics))
    assert main(["knn", "--device", "cpu", "--init-from", str(checkpoint), "--out", str(folder)]) == 0
    after = json.loads((folder / "metrics.json").read_text())
    assert 0.0 <= after["knn_top1"] <= 1.0
    assert after["pretrain_history"] == metrics["pretrain_history"]  # the run's record is kept
    assert not (folder / LOCK_FILE).exists()


def test_a_live_lock_keeps_a_second_process_out_and_a_stale_one_is_taken_over(runs, tmp_path, capsys):
    a, _ = runs
    out = tmp_path / "eval"
    out.mkdir()
    (out / LOCK_FILE).write_text(str(os.getpid()))  # a live process: this one
    err = one_line_error(["knn", "--device", "cpu", "--init-from", str(a), "--out", str(out)], capsys)
    assert f"--out {out} is in use by another run (process {os.getpid()})" in err
    assert sorted(path.name for path in out.iterdir()) == [LOCK_FILE]  # nothing written beside the lock

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_FILE).write_text(finished.stdout.strip())  # its process has exited: a stale lock
    assert main(["knn", "--device", "cpu", "--init-from", str(a), "--out", str(out)]) == 0
    assert 0.0 <= json.loads((out / "metrics.json").read_text())["knn_top1"] <= 1.0
    assert not (out / LOCK_FILE).exists()  # released at the end


def test_a_second_pretraining_into_a_locked_fresh_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "fresh"
    out.mkdir()
    (out / LOCK_FILE).write_text(str(os.getpid()))
    err = one_line_error(["pretrain", *TINY, "--max-steps", "1", "--out", str(out)], capsys)
    assert "is in use by another run" in err
    assert sorted(path.name for path in out.iterdir()) == [LOCK_FILE]


def test_two_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    """Item 12: a write that starts while another is under way (another process saving last.pt into the same
    folder) uses its own temporary file; both renames succeed, the last one wins, nothing is left behind."""
    path = tmp_path / "last.pt"

    def outer(handle):
        handle.write(b"outer")
        atomic_write(path, lambda inner: inner.write(b"inner"))  # the other writer, finishing first
        assert path.read_bytes() == b"inner"

    atomic_write(path, outer)
    assert path.read_bytes() == b"outer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]

"""Reliability of the skeleton pipeline (issue 10, items 8-12; issue 11, items 5-6; issue 19, items 1, 14, 15): every
bad input gets a clear error naming its file, line or flag; nothing non-finite or out of range is ever written, and
no accuracy is computed from a non-finite model; interrupted writes leave nothing half-done; a SIGTERM to the process
group saves a checkpoint; logs stay small off a terminal."""

import argparse
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import skeleton.data.prepare as prepare_module
import torch
from conftest import flushes_denormals
from raw_files import write_ntu_skeleton_files, write_nwucla, write_pku_files
from skeleton.cli import main
from skeleton.data.datasets import load_dataset
from skeleton.data.formats.ntu import NtuSampleId, parse_skeleton
from skeleton.data.formats.nwucla import read_nwucla
from skeleton.data.formats.text import SkeletonFormatError
from skeleton.data.prenormalize import prenormalize
from skeleton.data.prepare import add_prepare_arguments, prepare_dataset, run_prepare
from skeleton.data.synthetic import SyntheticConfig, generate_synthetic
from skeleton.fileio import InputError
from skeleton.progress import ProgressBar
from skeleton.training.checkpoint import CHECKPOINT_KEYS, load_checkpoint
from skeleton.training.runlog import update_metrics
from test_skeleton_cli import one_line_error
from test_skeleton_pipeline import TINY, TINY_FLAGS, pretrain_checkpoint, write_custom_folder

ROOT = Path(__file__).resolve().parent.parent

CONFIG = SyntheticConfig(num_classes=4, num_performers=4, num_cameras=3, repetitions=2, max_frames=30, min_frames=12)
FIRST_JOINT_LINE = 5  # 1-based: frame count, body count, body line, joint count, then the first joint


@pytest.fixture(scope="module")
def samples():
    return generate_synthetic(CONFIG)


def _args(*argv):
    parser = argparse.ArgumentParser()
    add_prepare_arguments(parser)
    return parser.parse_args([*argv, "--quiet"])


def _prepare(dataset, raw, out, **options):
    return prepare_dataset(dataset, raw, out, log=lambda message: None, **options)


def _set_value(path, line, column, value):
    """Replace value ``column`` of 1-based line ``line`` of a text file."""
    lines = path.read_text().splitlines()
    fields = lines[line - 1].split()
    fields[column] = value
    lines[line - 1] = " ".join(fields)
    path.write_text("\n".join(lines) + "\n")


def _prepared_arrays(out):
    """Every data, num_frame and label array under a prepared folder, by file."""
    arrays = {}
    for path in sorted(out.rglob("*.npy")):
        arrays[path] = np.load(path)
    for path in sorted(out.rglob("*_label.pkl")):
        with open(path, "rb") as handle:
            arrays[path] = np.asarray(pickle.load(handle)[1])
    return arrays


# -- item 8: prepare validates every value and name it writes ------------------------------------------------


@pytest.mark.parametrize("value", ["1e39", "-1e300", "1e5000", "nan", "123456.7"])
def test_out_of_range_coordinates_are_reported_with_line_and_never_written(tmp_path, samples, value):
    paths = write_ntu_skeleton_files(samples, tmp_path / "raw")
    _set_value(paths[0], FIRST_JOINT_LINE + 3, 2, value)  # z of the fourth joint of frame 1
    summary = _prepare("ntu60", tmp_path / "raw", tmp_path / "out")
    assert len(summary.malformed) == 1 and not summary.empty  # 1e300 used to be reported as "no body"
    assert summary.malformed[0].startswith(f"{paths[0]}:{FIRST_JOINT_LINE + 3}: ")
    assert f"value {value!r}" in summary.malformed[0] and "magnitude <= 100000" in summary.malformed[0]
    assert samples.names[0] not in load_dataset("ntu60-xview", "train", tmp_path / "out").names
    for path, array in _prepared_arrays(tmp_path / "out").items():
        assert np.isfinite(array).all(), path


def test_out_of_range_values_on_body_lines_and_in_pku_files(tmp_path, samples):
    paths = write_ntu_skeleton_files(samples, tmp_path / "ntu")
    _set_value(paths[1], 3, 7, "4e38")  # leanX of the first body line
    with pytest.raises(SkeletonFormatError, match=r":3: out-of-range value '4e38'"):
        parse_skeleton(paths[1].read_text(), paths[1])
    write_pku_files(samples, tmp_path / "pku", samples_per_video=5)
    video = sorted((tmp_path / "pku" / "skeleton").glob("*.txt"))[0]
    _set_value(video, 2, 4, "1e39")
    summary = _prepare("pku2", tmp_path / "pku", tmp_path / "pku-out")
    assert summary.malformed and all(m.startswith(f"{video}:2: out-of-range value '1e39'") for m in summary.malformed)
    for path, array in _prepared_arrays(tmp_path / "pku-out").items():
        assert np.isfinite(array).all() and np.abs(array).max() < 100, path


@pytest.mark.parametrize(
    "name, message",
    [
        ("S001C001P001R001A000", "action A000 is outside NTU RGB+D's A001-A120"),
        ("S000C001P001R001A001", "setup S000 is outside NTU RGB+D's S001-S032"),
        ("S001C009P001R001A001", "camera C009 is outside NTU RGB+D's C001-C003"),
        ("S033C001P001R001A001", "setup S033"),
        ("S001C001P107R001A001", "performer P107"),
        ("S001C001P001R003A001", "replication R003"),
    ],
)
def test_sample_ids_outside_ntu_ranges_are_skipped(tmp_path, samples, name, message):
    paths = write_ntu_skeleton_files(samples, tmp_path / "raw")
    os.replace(paths[0], tmp_path / "raw" / f"{name}.skeleton")
    with pytest.raises(ValueError, match=re.escape(message)):
        NtuSampleId.parse(name)
    summary = _prepare("ntu120", tmp_path / "raw", tmp_path / "out")
    assert len(summary.malformed) == 1 and summary.malformed[0].startswith(f"{tmp_path / 'raw' / name}.skeleton: ")
    assert message in summary.malformed[0]
    for path, array in _prepared_arrays(tmp_path / "out").items():
        if path.name.endswith("_label.pkl"):
            assert array.min(initial=0) >= 0 and array.max(initial=0) < 120, path  # A000 used to be written as label -1


def test_unreadable_subfolder_is_reported_and_the_rest_prepared(tmp_path, samples, monkeypatch, capsys):
    write_ntu_skeleton_files(samples, tmp_path / "raw" / "readable")
    locked = tmp_path / "raw" / "locked"
    write_ntu_skeleton_files(generate_synthetic(CONFIG, np.arange(2)), locked)
    scandir = os.scandir

    def denied(path="."):
        # chmod 000 does not stop root (the tests may run as root), so the listing fails here instead
        if not isinstance(path, int) and os.fspath(path) == os.fspath(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    code = run_prepare(_args("--dataset", "ntu60", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out")))
    report = capsys.readouterr().out
    assert code == 0
    assert f"{locked}: folder not searched, it cannot be read (Permission denied)" in report
    assert "skipped, malformed: 1" in report and "xsub: train" in report
    strict = _args("--dataset", "ntu60", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "o2"), "--strict")
    assert run_prepare(strict) == 1


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("99999999999\n0\n", 1, "frame count 99999999999 exceeds the 1 lines after it"),
        ("1\n" + "9" * 30 + "\n", 3, "file ends early: expected body line of frame 1"),
    ],
)
def test_corrupt_counts_are_format_errors_not_memory_errors(tmp_path, samples, text, line, message):
    with pytest.raises(SkeletonFormatError, match=message) as error:
        parse_skeleton(text, "x.skeleton")
    assert error.value.line == line
    paths = write_ntu_skeleton_files(samples, tmp_path / "raw")
    paths[3].write_text(text)
    summary = _prepare("ntu60", tmp_path / "raw", tmp_path / "out")  # the run goes on past the bad file
    assert summary.malformed == [f"{paths[3]}:{line}: {error.value.message}"]
    assert sum(summary.counts["xsub"].values()) == len(samples.names) - 1


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"skeletons": [[[1e39, 0, 0]' + ", [0, 0, 0]" * 19 + "]]}", r"frame 1/1, joint 1: out-of-range value"),
        ('{"skeletons": [[[0, 0, 0]' + ", [0, 0, 0]" * 18 + ", [0, 1" + "0" * 400 + ", 0]]]}",
         r"frame 1/1, joint 20: out-of-range value '100000000000...\(401 characters\)'"),
        ('{"skeletons": [[[0, 0, 1e400]' + ", [0, 0, 0]" * 19 + "]]}", r"joint 1: non-finite value 'inf'"),
        ('{"skeletons": [[[0, 0, Infinity]' + ", [0, 0, 0]" * 19 + "]]}", "non-finite value 'inf'"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)  # fmt: skip
def test_nwucla_files_follow_the_same_contract(tmp_path, content, message):
    path = tmp_path / "a01_s01_e00_v01.json"
    path.write_text(content)
    with pytest.raises(SkeletonFormatError, match=message) as error:
        read_nwucla(path)
    assert str(error.value).startswith(f"{path}:1: ")


def test_nwucla_prepare_skips_bad_files_and_writes_only_finite_values(tmp_path):
    raw = tmp_path / "all_sqe"
    raw.mkdir()
    pose = np.tile(np.linspace(0.1, 1.0, 60).reshape(1, 20, 3), (6, 1, 1))
    for view in (1, 2, 3):
        write_nwucla(raw / f"a01_s01_e00_v0{view}.json", pose + view)
    write_nwucla(raw / "a02_s01_e00_v01.json", np.full_like(pose, 1e39))  # finite in float64, not in float32
    (raw / "a02_s01_e00_v02.json").write_bytes(b'{"skeletons": \xff}')
    summary = _prepare("nwucla", raw, tmp_path / "out")
    assert summary.malformed == [
        f"{raw / 'a02_s01_e00_v01.json'}:1: frame 1/6, joint 1: out-of-range value '1e+39' (expected a finite "
        "number of magnitude <= 100000)",
        f"{raw / 'a02_s01_e00_v02.json'}:1: not UTF-8 text (byte 14): invalid start byte",
    ]
    assert summary.counts["xview"] == {"train": 2, "val": 1}
    for path, array in _prepared_arrays(tmp_path / "out").items():
        assert np.isfinite(array).all(), path


# -- item 9: --out that cannot be written ----------------------------------------------------------------------


def _raw_folder(tmp_path, samples):
    write_ntu_skeleton_files(generate_synthetic(CONFIG, np.arange(4)), tmp_path / "raw")
    return str(tmp_path / "raw")


def test_out_is_a_file_or_below_a_file(tmp_path, samples, capsys):
    raw = _raw_folder(tmp_path, samples)
    (tmp_path / "file").write_text("not a folder")
    assert run_prepare(_args("--dataset", "ntu60", "--raw", raw, "--out", str(tmp_path / "file"))) == 2
    assert f"prepare: error: --out {tmp_path / 'file'} is a file; expected a folder" in capsys.readouterr().err
    assert run_prepare(_args("--dataset", "ntu60", "--raw", raw, "--out", str(tmp_path / "file" / "sub"))) == 2
    assert f"--out {tmp_path / 'file' / 'sub'}: cannot write there (Not a directory" in capsys.readouterr().err


def test_unwritable_out_and_a_write_failure_midway_exit_2(tmp_path, samples, monkeypatch, capsys):
    raw = _raw_folder(tmp_path, samples)

    def denied(*args, dir=None, **kwargs):
        # chmod does not stop root (the tests may run as root), so the probe file fails here instead
        raise PermissionError(13, "Permission denied", os.fspath(dir))

    with monkeypatch.context() as patch:
        patch.setattr(prepare_module.tempfile, "TemporaryFile", denied)
        assert run_prepare(_args("--dataset", "ntu60", "--raw", raw, "--out", str(tmp_path / "ro"))) == 2
    assert f"--out {tmp_path / 'ro'}: cannot write there (Permission denied: {tmp_path / 'ro'})" in (
        capsys.readouterr().err
    )

    def disk_full(path, *args, **kwargs):
        raise OSError(28, "No space left on device", os.fspath(path))

    monkeypatch.setattr(prepare_module.np.lib.format, "open_memmap", disk_full)
    assert run_prepare(_args("--dataset", "ntu60", "--raw", raw, "--out", str(tmp_path / "full"))) == 2
    assert "prepare: error: [Errno 28] No space left on device: " in capsys.readouterr().err


# -- item 10: progress state is one file, replaced atomically ------------------------------------------------


@pytest.fixture(scope="module")
def prepared(samples, tmp_path_factory):
    """A raw NTU folder of the synthetic samples and its uninterrupted preparation as ``ntu60`` (do not modify)."""
    folder = tmp_path_factory.mktemp("prepared")
    write_ntu_skeleton_files(samples, folder / "raw")
    _prepare("ntu60", folder / "raw", folder / "ntu60")
    return folder / "raw", folder / "ntu60"


@pytest.fixture(scope="module")
def uninterrupted(prepared):
    """The raw folder, and the arrays of its uninterrupted preparation by path relative to the output folder."""
    raw, out = prepared
    return raw, {path.relative_to(out): array for path, array in _prepared_arrays(out).items()}


@pytest.mark.parametrize("killed_at", [3, 5, 9, 14, 17])
def test_a_kill_at_any_file_replacement_then_a_rerun_gives_the_uninterrupted_outputs(
    tmp_path, uninterrupted, monkeypatch, killed_at
):
    """Kill at the ``killed_at``-th file replacement (4 progress saves, then 12 final files and the summary) and
    rerun: the outputs are exactly those of an uninterrupted run, and no sample is counted done without its frame
    count (with statuses and frame counts in separate files, a kill between their saves left num_frame 0)."""
    raw, expected = uninterrupted
    monkeypatch.setattr(prepare_module, "SAMPLES_PER_WORKER_BLOCK", 32)  # 96 samples: 3 blocks
    replace, calls = os.replace, []

    def killed(source, target):
        calls.append(target)
        if len(calls) == killed_at:
            raise KeyboardInterrupt  # as a kill: the temporary file is written, the rename never happens
        replace(source, target)

    monkeypatch.setattr(prepare_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _prepare("ntu60", raw, tmp_path / "out")
    monkeypatch.setattr(prepare_module.os, "replace", replace)
    _prepare("ntu60", raw, tmp_path / "out")
    resumed = {p.relative_to(tmp_path / "out"): a for p, a in _prepared_arrays(tmp_path / "out").items()}
    assert list(resumed) == list(expected)
    for path, array in expected.items():
        np.testing.assert_array_equal(resumed[path], array, err_msg=str(path))
        if path.name.endswith("_num_frame.npy"):
            assert resumed[path].min() >= 1


# -- item 11: another dataset's folder is refused -------------------------------------------------------------


def test_ntu120_named_on_prepared_ntu60_is_refused(prepared, tmp_path, capsys):
    _, out = prepared
    summary = re.escape(str(out / "prepare_summary.json"))
    with pytest.raises(InputError, match=f"dataset ntu120-xsub, but its folder was prepared from ntu60 \\(see {summary}\\)"):
        load_dataset("ntu120-xsub", "train", out)
    copied = tmp_path / "copied"
    shutil.copytree(out / "xsub", copied / "xsub")  # without prepare_summary.json: judged by its content
    with pytest.raises(InputError, match=r"holds NTU-60 data: labels 0-3 and setups up to S001 \(NTU-120 has 120"):
        load_dataset("ntu120-xsub", "val", copied)
    run = ["--device", "cpu", "--out", str(tmp_path / "run")]
    assert main(["pretrain", "--dataset", "ntu120-xsub", "--data-root", str(out), *run]) == 2
    assert "pretrain: error: dataset ntu120-xsub, but " in capsys.readouterr().err
    assert len(load_dataset("ntu60-xsub", "train", copied)) > 0  # the right name still loads


def test_other_layouts_and_label_ranges_are_refused(tmp_path, samples):
    raw = tmp_path / "all_sqe"
    raw.mkdir()
    for view in (1, 2, 3):
        write_nwucla(
            raw / f"a01_s01_e00_v0{view}.json", np.tile(np.linspace(0.1, 1.0, 60).reshape(1, 20, 3), (4, 1, 1))
        )
    _prepare("nwucla", raw, tmp_path / "nwucla")
    with pytest.raises(InputError, match="was prepared from nwucla"):
        load_dataset("ntu60-xview", "train", tmp_path / "nwucla")
    shutil.copytree(tmp_path / "nwucla" / "xview", tmp_path / "copied" / "xview")
    with pytest.raises(InputError, match=r"copied/xview/train_data_joint.npy.*20 joints, but layout kinect_v2 has 25"):
        load_dataset("ntu60-xview", "train", tmp_path / "copied")
    write_ntu_skeleton_files(
        samples._replace(names=[f"{n[:-3]}{60 + int(n[-3:]):03d}" for n in samples.names]), tmp_path / "raw120"
    )
    _prepare("ntu120", tmp_path / "raw120", tmp_path / "ntu120")
    shutil.copytree(tmp_path / "ntu120" / "xsub", tmp_path / "copied120" / "xsub")
    with pytest.raises(InputError, match=r"labels must be in \[0, 60\), got \[60, 63\]"):
        load_dataset("ntu60-xsub", "train", tmp_path / "copied120")


# -- issue 11, item 5: SkeletonCLR and AimCLR outputs -----------------------------------------------------------


def _write_pickle(path, content):
    with open(path, "wb") as handle:
        pickle.dump(content, handle)


def test_skeletonclr_gendata_output_in_camera_coordinates_is_prenormalized_on_read(tmp_path, samples):
    np.save(tmp_path / "train_data.npy", samples.data)  # ntu_gendata writes the raw positions, zero-padded
    _write_pickle(tmp_path / "train_label.pkl", ([f"{n}.skeleton" for n in samples.names], samples.labels.tolist()))
    with pytest.warns(
        UserWarning,
        match=r"train_data.npy holds 3-D data in camera coordinates, not pre-normalized .*; every sample is pre-normalized "
        "as it is read",
    ):
        dataset = load_dataset("ntu60-xview", "train", tmp_path)
    expected = prenormalize(samples.data)
    for i in range(0, len(dataset), 7):
        x, count, label = dataset[i]
        valid = np.flatnonzero(np.any(samples.data[i] != 0, axis=(0, 2, 3)))
        assert int(count) == valid[-1] + 1 and label == samples.labels[i]
        np.testing.assert_allclose(x.numpy(), expected[i], atol=1e-5)


def test_aimclr_preprocess_output_is_read(tmp_path, samples):
    spine_shoulder = 20
    relative = samples.data - samples.data[:, :, :, spine_shoulder : spine_shoulder + 1]  # AimCLR's "relative"
    np.save(tmp_path / "val_position.npy", relative)
    np.save(tmp_path / "val_motion.npy", np.zeros_like(relative))
    np.save(tmp_path / "val_label.npy", samples.labels.reshape(-1, 1))  # int64 (N, 1), no names, no pickle
    with pytest.warns(UserWarning, match=r"val_position.npy is centred, but not by the 2s-AGCN .* used as it is"):
        dataset = load_dataset("ntu60-xsub", "val", tmp_path)
    assert dataset.names[:2] == ["val_000000", "val_000001"] and len(dataset) == len(samples.names)
    np.testing.assert_array_equal(dataset.labels, samples.labels)
    np.testing.assert_array_equal(dataset[5][0].numpy(), relative[5])
    np.save(tmp_path / "val_label.npy", np.zeros((len(relative), 2), dtype=np.int64))
    with pytest.raises(InputError, match=r"val_label.npy: expected equally long names and integer labels"):
        load_dataset("ntu60-xsub", "val", tmp_path)


def test_prepared_data_loads_without_warnings(prepared):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_dataset("ntu60-xview", "val", prepared[1])) > 0


# -- item 12: flags, checkpoints, truncated files, metrics.json -----------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pretrain", "--pretrain-batch-size", "1"], "argument --pretrain-batch-size: expected an integer >= 2 or 'auto', got '1'"),
        (["pretrain", "--pretrain-epochs", "-3"], "argument --pretrain-epochs: expected an integer >= 1 or 'auto', got '-3'"),
        (["pretrain", "--pretrain-lr", "nan"], "argument --pretrain-lr: expected a finite number > 0, got 'nan'"),
        (["pretrain", "--pretrain-lr-milestones", "10", "-1"],
         "argument --pretrain-lr-milestones: expected an integer >= 0, got '-1'"),
        (["pretrain", "--memory-bank-size", "many"], "argument --memory-bank-size: expected an integer >= 1 or 'auto', got 'many'"),
        (["pretrain", "--lam", "x"], "argument --lam: expected a finite number, got 'x'"),
        (["--linear-batch-size", "0"], "argument --linear-batch-size: expected an integer >= 2, got '0'"),
        (["semi", "--semi-ratio", "0"], "argument --semi-ratio: expected a finite number in (0, 1], got '0'"),
        (["knn", "--num-workers", "-1"], "argument --num-workers: expected an integer >= 0, got '-1'"),
        (["pretrain", "--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
        (["supervised", "--max-steps", "0"], "argument --max-steps: expected an integer >= 1, got '0'"),
    ],
)  # fmt: skip
def test_nonsense_numeric_flags_are_argparse_errors_naming_the_flag(argv, message, capsys):
    assert message in one_line_error(argv, capsys)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--lam", "1.5"], "--lam"),
        (["--temperature", "0"], "--temperature"),
        (["--num-positives", "0"], "--num-positives"),
        (["--prototype-window", "2"], "--prototype-window"),  # fewer keys than the 4 prototypes
    ],
)
def test_loss_settings_the_criterion_refuses_are_one_line_naming_the_flag(argv, flag, tmp_path, capsys):
    """The loss's settings are validated by the criterion itself, before any work."""
    err = one_line_error(["pretrain", *TINY, *argv, "--out", str(tmp_path / "run")], capsys)
    assert f"error: {flag}: " in err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"is unreadable \(EOFError: "),
        (bytes(range(256)) * 4, "is unreadable"),
        ({"model": {}}, "lacks 'config', 'input', 'criterion'"),
        ([1, 2], "holds a list"),
    ],
)
def test_resume_or_init_from_a_bad_checkpoint_names_the_file(tmp_path, capsys, content, message):
    path = tmp_path / "last.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(InputError, match=f"checkpoint {re.escape(str(path))} {message}"):
        load_checkpoint(path)
    assert main(["pretrain", "--resume", str(path), "--device", "cpu"]) == 2
    assert f"pretrain: error: checkpoint {path} " in capsys.readouterr().err
    assert main(["knn", "--init-from", str(path), "--device", "cpu"]) == 2
    assert f"knn: error: checkpoint {path} " in capsys.readouterr().err


def test_checkpoint_with_an_unreadable_configuration(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({key: {} for key in CHECKPOINT_KEYS} | {"config": {"no_such_setting": 1}}, path)
    with pytest.raises(InputError, match="this version cannot read its configuration .*no_such_setting"):
        load_checkpoint(path)


def test_a_checkpoint_older_than_a_setting_loads_with_the_value_it_was_trained_with(tmp_path):
    """The 2-D view options came after the first checkpoints: those load, as trained (no mirror, no shrink)."""
    path = pretrain_checkpoint(tmp_path / "run")
    checkpoint = torch.load(path, weights_only=False)
    for name in ("mirror_prob", "foreshorten"):
        del checkpoint["config"]["augment"][name]
    torch.save(checkpoint, path)
    loaded = load_checkpoint(path)
    assert (loaded["config"]["augment"]["mirror_prob"], loaded["config"]["augment"]["foreshorten"]) == (0.0, 0.0)
    assert main(["knn", "--init-from", str(path), "--device", "cpu", "--out", str(tmp_path / "eval")]) == 0


@pytest.mark.parametrize(
    "name, message",
    [
        ("train_data_joint.npy", "truncated .npy file: "),
        ("train_num_frame.npy", "truncated .npy file: "),
        ("train_label.pkl", "unreadable label pickle"),
    ],
)
def test_truncated_files_are_errors_that_name_them(prepared, tmp_path, capsys, name, message):
    root = tmp_path / "ntu60"
    shutil.copytree(prepared[1], root)
    path = root / "xsub" / name
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(InputError, match=f"{re.escape(str(path))}: {message}"):
        load_dataset("ntu60-xsub", "train", root)
    run = ["--device", "cpu", "--out", str(tmp_path / "run")]
    assert main(["pretrain", "--dataset", "ntu60-xsub", "--data-root", str(root), *run]) == 2
    assert f"pretrain: error: {path}: {message}" in capsys.readouterr().err


def test_metrics_json_is_replaced_atomically_and_a_corrupt_one_set_aside(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    update_metrics(path, knn_top1=0.5)

    def killed(source, target):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", killed)
        with pytest.raises(KeyboardInterrupt):
            update_metrics(path, linear_top1=0.7)
    assert json.loads(path.read_text()) == {"knn_top1": 0.5}  # the kill left the previous file whole
    path.write_text('{"knn_top1": 0.5, "linear_hi')  # half-written, as the former in-place write could leave it
    with pytest.warns(UserWarning, match=r"metrics.json is unreadable \(.*\); moved to .*metrics.json.corrupt"):
        assert update_metrics(path, linear_top1=0.7) == {"linear_top1": 0.7}
    assert json.loads(path.read_text()) == {"linear_top1": 0.7}
    assert (tmp_path / "metrics.json.corrupt").read_text().startswith('{"knn_top1": 0.5, "linear_hi')


# -- issue 11, item 6: progress off a terminal ------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_on_a_terminal_lines_elsewhere(tmp_path, monkeypatch):
    for stream, drawn in ((FakeTerminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        bar = ProgressBar(range(4), 4, 8, "pretrain 1/1", enabled=True)
        for _ in bar:
            bar.update(loss=1.0)
        bar.close()
        assert ("\r" in stream.getvalue()) == drawn and bar.line_based == (not drawn)
        write_ntu_skeleton_files(generate_synthetic(CONFIG, np.arange(40)), tmp_path / f"raw{drawn}")
        lines = []
        prepare_dataset("ntu60", tmp_path / f"raw{drawn}", tmp_path / f"out{drawn}", progress=True, log=lines.append)
        progress = [line for line in lines if line.startswith("prepare ntu60: ")]
        assert ("\r" in stream.getvalue()) == drawn
        assert progress == ([] if drawn else [f"prepare ntu60: {n}/40 samples" for n in (8, 16, 24, 32, 40)])


def test_a_job_log_gets_one_line_per_epoch_and_a_resume_survives_a_corrupt_metrics_json(tmp_path):
    """The pipeline resumed with its output in a file, as in a batch job: no carriage-return flood, one line per
    epoch of pretraining and of the linear probe; the corrupt metrics.json of the first run is set aside."""
    run = tmp_path / "run"
    assert main(["pretrain", *TINY, "--halp-start-epoch", "1", "--pretrain-epochs", "1", "--out", str(run)]) == 0
    (run / "metrics.json").write_text('{"dataset": "synth')
    log = tmp_path / "job.log"
    with open(log, "w") as handle:
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "skeleton_moco.py"), "--resume", str(run / "checkpoints" / "last.pt"),
             "--pretrain-epochs", "3", "--linear-epochs", "2", "--linear-batch-size", "16"],
            stdout=handle, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    text = log.read_text()
    assert result.returncode == 0, text
    assert "\r" not in text and len(text) < 8_000, text
    assert [line.split()[0] for line in text.splitlines() if line.startswith("epoch=")] == ["epoch=2", "epoch=3"]
    assert [line.split()[:2] for line in text.splitlines() if line.startswith("linear ")] == [
        ["linear", "1/2"],
        ["linear", "2/2"],
    ]
    assert "metrics.json is unreadable" in text and (run / "metrics.json.corrupt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["pretrain_history"]) == 3 and 0.0 <= metrics["linear_top1"] <= 1.0


@pytest.mark.parametrize("flag, flushed", [([], True), (["--no-flush-denormal"], False)])
def test_pipeline_flushes_denormals_unless_asked(tmp_path: Path, flag: list[str], flushed: bool) -> None:
    assert main(["knn", "--init-from", str(tmp_path / "missing.pt"), *flag]) == 2
    assert flushes_denormals() is flushed


# -- issue 19, items 1 and 15: nothing computed from non-finite values is a result; SIGTERM saves a checkpoint -------


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory):
    """A tiny checkpoint with one NaN weight in its query encoder."""
    root = tmp_path_factory.mktemp("nan")
    checkpoint = torch.load(pretrain_checkpoint(root / "run"), weights_only=False)
    name = next(key for key in checkpoint["model"] if key.startswith("query.") and key.endswith("weight"))
    checkpoint["model"][name].view(-1)[0] = float("nan")
    torch.save(checkpoint, root / "nan.pt")
    return root / "nan.pt"


@pytest.mark.parametrize("command, extra", [("knn", []), ("linear", ["--linear-epochs", "1"])])
def test_a_nan_weight_exits_non_zero_and_writes_no_result(nan_checkpoint, tmp_path, capsys, command, extra):
    out = tmp_path / command
    capsys.readouterr()
    assert main([command, *TINY_FLAGS, "--init-from", str(nan_checkpoint), "--out", str(out), *extra]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not finite" in err, err
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    assert f"{command}_top1" not in metrics


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_custom_data_is_refused_when_loaded_naming_the_file(tmp_path, capsys, value):
    data = write_custom_folder(tmp_path / "data")
    path = data / "train_data_joint.npy"
    array = np.load(path)
    array[2, 1, 5, 7, 0] = value
    np.save(path, array)
    argv = ["pretrain", "--dataset", "custom", "--data-root", str(data), "--device", "cpu", "--out", str(tmp_path / "r")]
    err = one_line_error(argv, capsys)
    assert str(path) in err and "coordinates must be finite" in err, err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_sigterm_to_the_process_group_with_loader_workers_saves_a_checkpoint(tmp_path):
    """Issue 19, item 15: a scheduler's SIGTERM reaches the main process and its DataLoader workers; the run
    saves a checkpoint after the step in flight and exits 130, and no worker dies of the signal."""
    out = tmp_path / "run"
    argv = [sys.executable, str(ROOT / "examples" / "skeleton_moco.py"), "pretrain", *TINY, "--num-workers", "2",
            "--pretrain-epochs", "50", "--threads", "1", "--out", str(out)]  # fmt: skip
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, start_new_session=True
    )
    lines = []
    try:
        for line in process.stdout:  # the first epoch's line: the workers are up and serving batches
            lines.append(line)
            if line.startswith("epoch=1 "):
                os.killpg(process.pid, signal.SIGTERM)
                break
        text = "".join(lines) + process.stdout.read()
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert code == 130, text
    assert "DataLoader worker" not in text and "Traceback" not in text, text
    assert text.count("SIGTERM: stopping after this step") == 1, text  # once, not once per worker
    position = load_checkpoint(out / "checkpoints" / "last.pt")["position"]
    assert position["step"] > 6 and position["epoch"] == 1 and position["batch"] >= 1, position  # saved at the stop

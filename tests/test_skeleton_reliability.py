"""Reliability of the skeleton pipeline (issue 10, items 8-12; issue 11, items 5-6): every bad input gets a clear
error naming its file, line or flag; nothing non-finite or out of range is ever written; interrupted writes leave
nothing half-done; logs stay small off a terminal."""

import argparse
import os
import pickle
import re

import numpy as np
import pytest
import skeleton.data.prepare as prepare_module
from skeleton.data.datasets import load_dataset
from skeleton.data.ntu_format import NtuSampleId, parse_skeleton
from skeleton.data.nwucla_format import read_nwucla, write_nwucla
from skeleton.data.prepare import add_prepare_arguments, prepare_dataset, run_prepare
from skeleton.data.synthetic import SyntheticConfig, generate_synthetic
from skeleton.data.synthetic_files import write_ntu_skeleton_files, write_pku_files
from skeleton.data.text_parsing import SkeletonFormatError

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
def uninterrupted(samples, tmp_path_factory):
    """A raw NTU folder and the arrays of its uninterrupted preparation."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    write_ntu_skeleton_files(samples, folder / "raw")
    _prepare("ntu60", folder / "raw", folder / "out")
    return folder / "raw", {p.relative_to(folder / "out"): a for p, a in _prepared_arrays(folder / "out").items()}


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

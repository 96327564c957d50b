"""`prepare` end to end: synthetic samples -> real-format files -> prepared layout -> loader."""

import argparse
import fcntl
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skeleton.data.prepare as prepare_module
from raw_files import write_ntu_skeleton_files, write_pku_files, write_pku_labels, write_pku_skeleton, write_pku_split
from skeleton.data.datasets import load_dataset
from skeleton.data.formats import ntu
from skeleton.data.formats.ntu import NTU60_XSUB_TRAIN_PERFORMERS, read_ignore_list
from skeleton.data.formats.pku import SPLIT_FILES, PkuSegment, read_pku_split
from skeleton.data.prenormalize import prenormalize
from skeleton.data.prepare import PrepareError, add_prepare_arguments, prepare_dataset, run_prepare
from skeleton.data.synthetic import SyntheticConfig, generate_synthetic

ROOT = Path(__file__).resolve().parent.parent
CONFIG = SyntheticConfig(num_classes=4, num_performers=4, num_cameras=3, repetitions=2, max_frames=30, min_frames=12)


@pytest.fixture(scope="module")
def samples():
    return generate_synthetic(CONFIG)


def _quiet(_message):
    pass


def _prepare(dataset, raw, out, **options):
    return prepare_dataset(dataset, raw, out, log=_quiet, **options)


def _args(*argv):
    parser = argparse.ArgumentParser()
    add_prepare_arguments(parser)
    return parser.parse_args([*argv, "--quiet"])


def _check_against_synthetic(dataset, samples, bodies=2):
    """Every prepared sample equals the pre-normalized synthetic one on its valid frames."""
    index = {name: i for i, name in enumerate(samples.names)}
    expected = prenormalize(samples.data)
    for i in range(len(dataset)):
        x, count, label = dataset[i]
        j = index[dataset.names[i]]
        n = int(samples.num_frames[j])
        assert int(count) == n and label == samples.labels[j]
        np.testing.assert_allclose(x.numpy()[:, :n, :, :bodies], expected[j, :, :n, :, :bodies], atol=1e-4)
        assert np.any(x.numpy()[:, n:] != 0)  # the 300-frame axis is repeat-filled, never zero-padded


@pytest.mark.parametrize("crlf, exponent, extra_bodies", [(False, False, 0), (True, True, 2)])
def test_ntu60_round_trip(tmp_path, samples, crlf, exponent, extra_bodies):
    write_ntu_skeleton_files(samples, tmp_path / "raw", crlf=crlf, exponent=exponent, extra_bodies=extra_bodies)
    summary = _prepare("ntu60", tmp_path / "raw", tmp_path / "data" / "ntu60", num_workers=2)
    assert not summary.malformed and not summary.empty and summary.ignored == 0
    performers_train = np.isin(samples.performer, list(NTU60_XSUB_TRAIN_PERFORMERS))
    assert summary.counts["xsub"] == {"train": performers_train.sum(), "val": (~performers_train).sum()}
    cameras_train = np.isin(samples.camera, [2, 3])
    assert summary.counts["xview"] == {"train": cameras_train.sum(), "val": (~cameras_train).sum()}
    folder = tmp_path / "data" / "ntu60" / "xsub"
    data = np.load(folder / "train_data_joint.npy", mmap_mode="r")
    assert data.dtype == np.float32 and data.shape == (performers_train.sum(), 3, 300, 25, 2)
    with open(folder / "train_label.pkl", "rb") as handle:
        names, labels = pickle.load(handle)
    assert isinstance(names, list) and isinstance(labels, list) and names == sorted(names)
    assert np.load(folder / "train_num_frame.npy").shape == (len(names),)
    assert not (tmp_path / "data" / "ntu60" / ".prepare").exists()
    for split in ("train", "val"):
        for benchmark in ("ntu60-xsub", "ntu60-xview"):
            # with ghost bodies, a single performer's second body is a ghost: compare body 0 only then
            _check_against_synthetic(load_dataset(benchmark, split, tmp_path / "data"), samples, 1 + (not extra_bodies))


def test_ntu120_xset_and_ntu60_scope(tmp_path, samples):
    write_ntu_skeleton_files(samples, tmp_path / "raw" / "nturgb+d_skeletons")
    extra = generate_synthetic(CONFIG, np.arange(3))
    extra = extra._replace(names=["S018C001P001R001A001", "S001C001P001R001A061", "S032C001P050R001A120"])
    write_ntu_skeleton_files(extra, tmp_path / "raw" / "nturgb+d_skeletons120")
    summary = _prepare("ntu60", tmp_path / "raw", tmp_path / "ntu60")
    assert summary.outside == 3 and sum(summary.counts["xsub"].values()) == len(samples.names)
    summary = _prepare("ntu120", tmp_path / "raw", tmp_path / "ntu120")
    even = np.array([int(name[1:4]) % 2 == 0 for name in samples.names])
    assert summary.counts["xset"] == {"train": even.sum() + 2, "val": (~even).sum() + 1}
    assert load_dataset("ntu120-xset", "train", tmp_path).num_classes == 120


def test_ignore_list_with_header(tmp_path, samples):
    write_ntu_skeleton_files(samples, tmp_path / "raw")
    ignore = tmp_path / "missing.txt"
    ignore.write_text(
        "The following samples have missing or incomplete skeletons.\nPlease ignore them.\n\n"
        + "\n".join(samples.names[:5])
        + "\nS099C001P001R001A001\n\n"
    )
    assert read_ignore_list(ignore) == {*samples.names[:5], "S099C001P001R001A001"}
    summary = _prepare("ntu60", tmp_path / "raw", tmp_path / "out", ignore_list=ignore)
    assert summary.ignored == 5 and sum(summary.counts["xview"].values()) == len(samples.names) - 5
    assert not set(samples.names[:5]) & set(load_dataset("ntu60-xview", "val", tmp_path / "out").names)
    ignore.write_text("header\nS001C001P001R001A001\nnot a name\n")
    with pytest.raises(ValueError, match=r"missing.txt:3: expected a sample name"):
        read_ignore_list(ignore)
    ignore.write_text("only prose\n")
    with pytest.raises(ValueError, match="no sample name"):
        read_ignore_list(ignore)


def test_malformed_truncated_and_empty_files_are_reported_and_skipped(tmp_path, samples, capsys):
    raw = tmp_path / "raw"
    paths = write_ntu_skeleton_files(samples, raw)
    lines = paths[0].read_text().splitlines()
    lines[5] = "0.1 0.2"
    paths[0].write_text("\n".join(lines) + "\n")
    paths[1].write_text("\n".join(paths[1].read_text().splitlines()[:40]) + "\n")  # truncated
    paths[2].write_text("3\n0\n0\n0\n")  # three frames, no body in any
    (raw / "notes.skeleton").write_text("1\n0\n")
    code = run_prepare(
        _args("--dataset", "ntu60", "--raw", str(raw), "--out", str(tmp_path / "out"), "--num-workers", "2")
    )
    report = capsys.readouterr().out
    assert code == 0
    assert f"{paths[0]}:6: expected 12 values, got 2" in report  # line 6 is the second joint line
    assert f"{paths[1]}:41: file ends early" in report
    assert f"{raw / 'notes.skeleton'}: 'notes.skeleton' is not an NTU sample name" in report
    assert "skipped, malformed: 3" in report
    assert "dropped, no body in any frame: 1" in report and samples.names[2] in report
    summary = json.loads((tmp_path / "out" / "prepare_summary.json").read_text())
    assert len(summary["malformed"]) == 3 and summary["empty"] == [samples.names[2]]
    kept = set()
    for split in ("train", "val"):
        dataset = load_dataset("ntu60-xsub", split, tmp_path / "out")
        kept |= set(dataset.names)
        assert all(np.abs(dataset.data[i]).sum() > 0 for i in range(len(dataset)))  # never a zeroed sample
    assert kept == set(samples.names[3:])
    strict = _args("--dataset", "ntu60", "--raw", str(raw), "--out", str(tmp_path / "strict"), "--strict")
    assert run_prepare(strict) == 1


def test_input_errors(tmp_path, capsys):
    assert run_prepare(_args("--dataset", "ntu60", "--raw", str(tmp_path / "nowhere"), "--out", str(tmp_path))) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*.skeleton files"):
        _prepare("ntu120", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="cross_subject_v2.txt"):
        _prepare("pku2", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="--ignore-list applies to --dataset ntu60/ntu120 only, not pku2"):
        _prepare("pku2", tmp_path / "empty", tmp_path / "out", ignore_list=tmp_path / "x")


def test_interrupted_run_resumes(tmp_path, samples, monkeypatch):
    write_ntu_skeleton_files(samples, tmp_path / "raw")
    _prepare("ntu60", tmp_path / "raw", tmp_path / "whole")
    process, calls = prepare_module._process, []

    def interrupted(task, jobs):
        calls.append(len(jobs))
        if len(calls) == 11:  # in the second block of 64 samples (8 per batch)
            raise KeyboardInterrupt
        return process(task, jobs)

    monkeypatch.setattr(prepare_module, "_process", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _prepare("ntu60", tmp_path / "raw", tmp_path / "resumed")
    with np.load(tmp_path / "resumed" / ".prepare" / "state.npz") as state:
        status = state["status"]
    assert (status != 0).sum() == 80 and not (tmp_path / "resumed" / "xsub" / "train_data_joint.npy").exists()
    monkeypatch.setattr(prepare_module, "_process", process)
    messages = []
    prepare_dataset("ntu60", tmp_path / "raw", tmp_path / "resumed", log=messages.append)
    assert messages == ["resuming: 80 of 96 samples already done"]
    for benchmark in ("xsub", "xview"):
        for name in ("train_data_joint.npy", "val_data_joint.npy", "val_num_frame.npy"):
            whole = np.load(tmp_path / "whole" / benchmark / name)
            np.testing.assert_array_equal(np.load(tmp_path / "resumed" / benchmark / name), whole)
    messages.clear()
    again = prepare_dataset("ntu60", tmp_path / "raw", tmp_path / "resumed", log=messages.append)
    assert "already prepared" in messages[0] and again.counts["xsub"]["train"] > 0


def test_published_split_sizes_are_asserted_on_the_full_dataset(tmp_path, samples, monkeypatch):
    write_ntu_skeleton_files(samples, tmp_path / "raw")
    ignore = tmp_path / "missing.txt"
    ignore.write_text("Samples with missing skeletons:\n" + "\n".join(samples.names[:4]) + "\n")
    monkeypatch.setitem(ntu.FULL_FILE_COUNTS, "ntu60", len(samples.names))
    monkeypatch.setitem(ntu.MISSING_COUNTS, "ntu60", 4)
    xsub_train = np.isin(samples.performer[4:], list(NTU60_XSUB_TRAIN_PERFORMERS))
    xview_train = np.isin(samples.camera[4:], [2, 3])
    sizes = {"xsub": (xsub_train.sum(), (~xsub_train).sum()), "xview": (xview_train.sum(), (~xview_train).sum())}
    for benchmark, size in sizes.items():
        monkeypatch.setitem(ntu.NTU60.published_sizes, benchmark, size)
    assert _prepare("ntu60", tmp_path / "raw", tmp_path / "a", ignore_list=ignore).published_sizes_checked
    monkeypatch.setitem(ntu.NTU60.published_sizes, "xview", (sizes["xview"][0] + 1, 0))
    with pytest.raises(PrepareError, match=r"ntu60 xview: \d+ train / \d+ val samples, but the published split"):
        _prepare("ntu60", tmp_path / "raw", tmp_path / "b", ignore_list=ignore)
    partial = _prepare("ntu60", tmp_path / "raw", tmp_path / "c")  # no ignore list: not the official setting
    assert not partial.published_sizes_checked


@pytest.mark.parametrize("convention", ["reference", "inclusive"])
def test_pku2_round_trip(tmp_path, samples, convention):
    names = write_pku_files(samples, tmp_path / "raw", frame_convention=convention, samples_per_video=5, crlf=True)
    # two worker processes: the PKU reader is a partial that must reach them
    summary = _prepare("pku2", tmp_path / "raw", tmp_path / "pku2", pku_frames=convention, num_workers=2)
    assert not summary.malformed and sum(summary.counts["xsub"].values()) == len(samples.names)
    held_out = {"pku2-xsub": samples.performer % 4 == 0, "pku2-xview": samples.camera == 1}
    for benchmark in ("pku2-xsub", "pku2-xview"):
        for split in ("train", "val"):
            dataset = load_dataset(benchmark, split, tmp_path / "pku2")
            assert dataset.num_classes == 51
            assert len(dataset) == (held_out[benchmark] == (split == "val")).sum()
            dataset.names = [names[name] for name in dataset.names]
            _check_against_synthetic(dataset, samples)


def test_pku2_wrong_convention_and_bad_labels(tmp_path, samples):
    raw = tmp_path / "raw"
    names = write_pku_files(samples, raw, frame_convention="inclusive", samples_per_video=5)
    _prepare("pku2", raw, tmp_path / "shifted")  # 1-based inclusive rows read as [start, end): one frame less
    dataset = load_dataset("pku2-xsub", "val", tmp_path / "shifted")
    frames = dict(zip(samples.names, samples.num_frames.tolist()))
    assert [int(dataset[i][1]) for i in range(len(dataset))] == [frames[names[n]] - 1 for n in dataset.names]
    label = sorted((raw / "label").glob("*.txt"))[0]
    label.write_text(label.read_text().replace("\n", "\n1,2\n", 1))
    last = sorted((raw / "label").glob("*.txt"))[1]
    rows = last.read_text().splitlines()
    rows[-1] = "2,5,100000,1"
    last.write_text("\n".join(rows) + "\n")
    summary = _prepare("pku2", raw, tmp_path / "bad", pku_frames="inclusive", pku_odd_rows="skip")
    assert summary.malformed[0] == f"{label}:2: expected 4 comma-separated values, got 2"
    assert summary.malformed[1].startswith(f"{last}:{len(rows)}: frames [4, 100000) outside the video's")


def _odd_pku_folder(samples, raw):
    """A PKU-MMD II folder with the rows the released script keeps unchecked: the first video's last segment
    ends 40 frames beyond the video, two of its segments hold no frame, the second video is in neither x-view
    list, and a video of 20 frames without a body has one segment."""
    names = write_pku_files(samples, raw, samples_per_video=5)
    videos = sorted((raw / "skeleton").glob("*.txt"))
    frames = len(videos[0].read_text().splitlines())
    labels = raw / "label" / videos[0].name
    rows = labels.read_text().splitlines()
    action, start, end, confidence = rows[-1].split(",")
    assert int(end) == frames  # the last segment ends with the video
    rows[-1] = f"{action},{start},{frames + 40},{confidence}"
    rows += ["3,10,10,1", f"4,{frames + 5},{frames + 9},1"]
    labels.write_text("\n".join(rows) + "\n")
    unlisted = videos[1].stem
    train, test = read_pku_split(raw / SPLIT_FILES["xview"])
    write_pku_split(raw / SPLIT_FILES["xview"], [v for v in train if v != unlisted], [v for v in test if v != unlisted])
    write_pku_skeleton(raw / "skeleton" / "Z99N01-M.txt", np.zeros((20, 2, 25, 3)))
    write_pku_labels(raw / "label" / "Z99N01-M.txt", [PkuSegment(5, 0, 20, 1.0, 1)])
    for name in SPLIT_FILES.values():
        train, test = read_pku_split(raw / name)
        write_pku_split(raw / name, [*train, "Z99N01-M"], test)
    return names, videos, frames, int(start), len(rows)


def _prepared(out, name):
    """``(benchmark, split, data, frame count as written, label)`` of every copy of a prepared sample."""
    found = []
    for benchmark in ("xsub", "xview"):
        for split in ("train", "val"):
            with open(out / benchmark / f"{split}_label.pkl", "rb") as handle:
                names, labels = pickle.load(handle)
            if name in names:
                i = names.index(name)
                data = np.load(out / benchmark / f"{split}_data_joint.npy", mmap_mode="r")[i]
                frames = int(np.load(out / benchmark / f"{split}_num_frame.npy")[i])
                found.append((benchmark, split, np.array(data), frames, labels[i]))
    return found


def test_pku2_odd_rows_kept_as_released_or_skipped(tmp_path, samples):
    raw = tmp_path / "raw"
    names, videos, frames, start, rows = _odd_pku_folder(samples, raw)
    labels, unlisted, no_body = raw / "label" / videos[0].name, videos[1], raw / "label" / "Z99N01-M.txt"
    unlisted_rows = len((raw / "label" / unlisted.name).read_text().splitlines())
    skip = _prepare("pku2", raw, tmp_path / "skip", pku_odd_rows="skip")
    assert skip.malformed == [
        f"{unlisted}: video {unlisted.stem} missing from cross_view_v2.txt",
        f"{labels}:{rows - 2}: frames [{start}, {frames + 40}) outside the video's {frames} frames",
        f"{labels}:{rows - 1}: frames [10, 10) outside the video's {frames} frames",
        f"{labels}:{rows}: frames [{frames + 5}, {frames + 9}) outside the video's {frames} frames",
    ]
    assert skip.empty == ["Z99N01-M_001"] and not skip.notes
    assert sum(skip.counts["xsub"].values()) == len(samples.names) - 1 - unlisted_rows

    released = _prepare("pku2", raw, tmp_path / "released")  # the default
    assert not released.malformed and not released.empty
    assert released.notes == [
        f"{unlisted}: video {unlisted.stem} missing from cross_view_v2.txt: put into val there",
        f"{labels}:{rows - 2}: frames [{start}, {frames + 40}) end beyond the video's {frames}: cut to [{start}, "
        f"{frames})",
        f"{labels}:{rows - 1}: frames [10, 10) hold none of the video's {frames}: kept, 0 frames",
        f"{labels}:{rows}: frames [{frames + 5}, {frames + 9}) hold none of the video's {frames}: kept, 0 frames",
        f"{no_body}:1: no body in any frame: kept, all zero",
    ]
    assert "kept, with a note: 5" in released.report()
    assert sum(released.counts["xsub"].values()) == len(samples.names) + 3
    # The odd videos are performer 1's and camera L's (x-sub training, x-view val) but for the one without a body,
    # listed for training: skipping drops the cut row, the 2 empty rows, it and the unlisted video's rows.
    xsub, xview = skip.counts["xsub"], skip.counts["xview"]
    assert released.counts["xsub"] == {"train": xsub["train"] + 4 + unlisted_rows, "val": xsub["val"]}
    assert released.counts["xview"] == {"train": xview["train"] + 1, "val": xview["val"] + 3 + unlisted_rows}
    out = tmp_path / "released"
    for row in range(1, unlisted_rows + 1):  # no x-view list names it: val there, as in the released script
        assert [found[:2] for found in _prepared(out, f"{unlisted.stem}_{row:03d}")] == [
            ("xsub", "train"),
            ("xview", "val"),
        ]
    index = {name: i for i, name in enumerate(samples.names)}
    (_, _, cut, cut_frames, _), *_ = _prepared(out, f"{videos[0].stem}_{rows - 2:03d}")
    original = index[names[f"{videos[0].stem}_{rows - 2:03d}"]]
    assert cut_frames == samples.num_frames[original]  # the video's frames up to its end: the whole action
    np.testing.assert_allclose(
        cut[:, :cut_frames], prenormalize(samples.data[original : original + 1])[0, :, :cut_frames], atol=1e-4
    )
    for name, label, count in (
        (f"{videos[0].stem}_{rows - 1:03d}", 2, 0),
        (f"{videos[0].stem}_{rows:03d}", 3, 0),
        ("Z99N01-M_001", 4, 20),
    ):
        copies = _prepared(out, name)
        assert len(copies) == 2  # one per benchmark
        for _, _, data, written, written_label in copies:
            assert not data.any() and (written, written_label) == (count, label)
    dataset = load_dataset("pku2-xsub", "train", out)  # the loader reads a 0-frame sample as one frame
    assert int(dataset[dataset.names.index(f"{videos[0].stem}_{rows - 1:03d}")][1]) == 1


def test_pku2_odd_rows_flag_and_fingerprint(tmp_path, samples):
    raw = tmp_path / "raw"
    _odd_pku_folder(samples, raw)
    out = tmp_path / "out"
    parser = argparse.ArgumentParser()
    add_prepare_arguments(parser)
    assert "(default released)" in " ".join(parser.format_help().split())  # None when not given: the format's default
    assert run_prepare(_args("--dataset", "pku2", "--raw", str(raw), "--out", str(out), "--pku-odd-rows", "skip")) == 0
    assert not json.loads((out / "prepare_summary.json").read_text())["notes"]
    messages = []
    summary = prepare_dataset("pku2", raw, out, log=messages.append)  # other choices: prepared again
    assert len(summary.notes) == 5 and not any("already prepared" in message for message in messages)
    with pytest.raises(ValueError, match=r"--pku-odd-rows must be one of \('released', 'skip'\), got 'keep'"):
        _prepare("pku2", raw, out, pku_odd_rows="keep")


def test_peak_memory_does_not_grow_with_the_number_of_files(tmp_path):
    config = SyntheticConfig(num_classes=8, num_performers=8, num_cameras=1, repetitions=5, max_frames=8, min_frames=4)
    many = generate_synthetic(config)
    write_ntu_skeleton_files(many, tmp_path / "many")
    write_ntu_skeleton_files(generate_synthetic(config, np.arange(128)), tmp_path / "few")  # 2 blocks of 64
    script = (
        "import resource, sys;"
        "from skeleton.data.prepare import prepare_dataset;"
        "prepare_dataset('ntu60', sys.argv[1], sys.argv[2], log=lambda m: None);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    peaks = {}
    for name in ("few", "many"):
        result = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / name), str(tmp_path / f"out-{name}")],
            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "examples")},
        )  # fmt: skip
        peaks[name] = int(result.stdout.split()[-1]) / 1024  # MiB
    # The outputs grow by 192 samples x 2 benchmarks x 176 KiB = 66 MiB from "few" to "many"
    assert peaks["many"] - peaks["few"] < 16, peaks


def test_command_line_through_skeleton_moco(tmp_path, samples):
    write_ntu_skeleton_files(generate_synthetic(CONFIG, np.arange(0, 96, 10)), tmp_path / "raw")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "skeleton_moco.py"), "prepare", "--dataset", "ntu60",
         "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "ntu60"), "--num-workers", "2", "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "xsub: train" in result.stdout
    assert (
        len(load_dataset("ntu60-xsub", "train", tmp_path / "ntu60"))
        + len(load_dataset("ntu60-xsub", "val", tmp_path / "ntu60"))
        == 10
    )


def test_split_rules_and_published_sizes():
    ntu_is_training = ntu.is_training
    for fmt in (ntu.NTU60, ntu.NTU120):
        for train, val in fmt.published_sizes.values():
            assert train + val == ntu.FULL_FILE_COUNTS[fmt.family] - ntu.MISSING_COUNTS[fmt.family]
    assert ntu_is_training("ntu60", "xsub", 1, 1, 38) and not ntu_is_training("ntu60", "xsub", 1, 1, 3)
    assert ntu_is_training("ntu120", "xsub", 20, 1, 103) and not ntu_is_training("ntu60", "xsub", 1, 1, 45)
    assert ntu_is_training("ntu120", "xset", 32, 1, 1) and not ntu_is_training("ntu120", "xset", 31, 2, 1)
    assert ntu_is_training("ntu60", "xview", 1, 2, 3) and not ntu_is_training("ntu60", "xview", 1, 1, 1)
    with pytest.raises(ValueError, match="unknown NTU benchmark"):
        ntu_is_training("ntu60", "xset", 1, 1, 1)


def test_symlinked_subfolders_are_followed_and_loops_reported(tmp_path, samples):
    """Issue 19 item 4: os.walk does not follow links, so a linked subfolder of --raw was skipped silently."""
    paths = write_ntu_skeleton_files(samples, tmp_path / "elsewhere")
    raw = tmp_path / "raw"
    (raw / "real").mkdir(parents=True)
    for path in paths[: len(paths) // 2]:
        path.rename(raw / "real" / path.name)
    (raw / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (raw / "real" / "loop").symlink_to(raw, target_is_directory=True)  # back up into the folder being searched
    (raw / "gone.skeleton").symlink_to(tmp_path / "nothing.skeleton")
    summary = _prepare("ntu60", raw, tmp_path / "out")
    assert sum(summary.counts["xsub"].values()) == len(samples.names)  # both halves
    assert summary.malformed == [
        f"{raw / 'gone.skeleton'}: broken link to {tmp_path / 'nothing.skeleton'}, not read",
        f"{raw / 'real' / 'loop'}: link to {raw.resolve()}, a folder it is in: not searched (a loop)",
    ]


def test_a_corrupt_or_foreign_summary_is_prepared_again(tmp_path, samples):
    write_ntu_skeleton_files(generate_synthetic(CONFIG, np.arange(0, 96, 10)), tmp_path / "raw")
    out = tmp_path / "out"
    first = _prepare("ntu60", tmp_path / "raw", out)
    summary = out / "prepare_summary.json"
    for content in ("{not json", json.dumps({**json.loads(summary.read_text()), "extra": 1}), "[1, 2]"):
        summary.write_text(content)
        messages = []
        again = prepare_dataset("ntu60", tmp_path / "raw", out, log=messages.append)
        assert again == first and not any("already prepared" in message for message in messages)
    messages = []
    prepare_dataset("ntu60", tmp_path / "raw", out, log=messages.append)
    assert "already prepared" in messages[0]


def test_options_of_another_format_and_unknown_options(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(ValueError, match="--pku-frames applies to --dataset pku2 only, not ntu60"):
        _prepare("ntu60", tmp_path / "raw", tmp_path / "out", pku_frames="inclusive")
    with pytest.raises(ValueError, match="unknown prepare option 'frames'"):
        _prepare("ntu60", tmp_path / "raw", tmp_path / "out", frames=3)
    with pytest.raises(ValueError, match="--num-workers must be >= 1, got 0"):
        _prepare("ntu60", tmp_path / "raw", tmp_path / "out", num_workers=0)
    with pytest.raises(ValueError, match=r"--dataset must be one of \('ntu60', 'ntu120', 'pku2', 'nwucla', 'sbu'"):
        _prepare("ucla", tmp_path / "raw", tmp_path / "out")


def test_a_folder_without_any_sample_of_the_dataset_is_an_error(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "S001C001P001R001A099.skeleton").write_text("1\n0\n")  # NTU-120 only
    (raw / "notes.skeleton").write_text("1\n0\n")
    assert run_prepare(_args("--dataset", "ntu60", "--raw", str(raw), "--out", str(tmp_path / "out"))) == 2
    error = capsys.readouterr().err
    assert f"prepare: error: no ntu60 sample to prepare under --raw {raw}: 1 skipped, the first: " in error
    assert "'notes.skeleton' is not an NTU sample name" in error


def test_two_runs_into_one_out_are_refused(tmp_path, samples):
    write_ntu_skeleton_files(generate_synthetic(CONFIG, np.arange(0, 96, 10)), tmp_path / "raw")
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".prepare.lock", "a") as other:  # another run holds the folder
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match=f"--out {out} is being prepared by another process"):
            _prepare("ntu60", tmp_path / "raw", out)
    assert sum(_prepare("ntu60", tmp_path / "raw", out).counts["xsub"].values()) == 10  # released: it runs

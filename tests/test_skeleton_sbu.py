"""SBU Kinect Interaction: the reader (normalized coordinates back to metres, line errors), `prepare --dataset sbu`
with its five subject-pair folds, and loading the result."""

import argparse
import json
import pickle

import numpy as np
import pytest
import skeleton.data.prepare as prepare_module
from raw_files import write_sbu
from skeleton.data.datasets import load_dataset
from skeleton.data.formats import sbu
from skeleton.data.formats.sbu import FOLDS, SbuSampleId, read_sbu
from skeleton.data.formats.text import SkeletonFormatError
from skeleton.data.layouts import OPENNI15
from skeleton.data.prepare import PrepareError, add_prepare_arguments, prepare_dataset, run_prepare

# A standing person in metres, camera frame (x right, y up, z away), joints in the file's order.
REST_POSE = np.array([
    [0.0, 0.75, 0.0], [0.0, 0.55, 0.0], [0.0, 0.30, 0.0],          # head, neck, torso
    [-0.18, 0.52, 0.0], [-0.22, 0.25, 0.0], [-0.24, 0.02, 0.0],    # left shoulder, elbow, hand
    [0.18, 0.52, 0.0], [0.22, 0.25, 0.0], [0.24, 0.02, 0.0],       # right shoulder, elbow, hand
    [-0.10, 0.02, 0.0], [-0.10, -0.40, 0.0], [-0.10, -0.82, 0.0],  # left hip, knee, foot
    [0.10, 0.02, 0.0], [0.10, -0.40, 0.0], [0.10, -0.82, 0.0],     # right hip, knee, foot
])  # fmt: skip


def _pair(frames: int, seed: int) -> np.ndarray:
    """Two people (2, F, 15, 3) facing each other 2-3 m from the camera, one waving an arm."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None]
    people = np.repeat(np.repeat(REST_POSE[None, None], frames, axis=1), 2, axis=0)
    people[0, :, 4:6, 1] += 0.2 * np.sin(t / 4 + rng.uniform(0, 6))
    people[0] += [-0.5, 0.0, 2.5]
    people[1] += [0.5, 0.0, 2.8]
    return people + rng.normal(0, 0.003, people.shape)


def _write_dataset(raw, pairs=("s01s02", "s02s03", "s01s03", "s02s01", "s04s02"), classes=(1, 4, 8), takes=2):
    """One file per (pair, class, take); one pair from each fold. Returns {sample name: bodies}."""
    written = {}
    for p, pair in enumerate(pairs):
        for action in classes:
            for take in range(1, takes + 1):
                sample = SbuSampleId(pair, action, f"{take:03d}")
                bodies = _pair(10 + 3 * take + action, seed=100 * p + 10 * action + take)
                write_sbu(raw / pair / f"{action:02d}" / sample.take / "skeleton_pos.txt", bodies, first_frame=350 + p)
                written[sample.name] = bodies
    return written


def _args(*argv):
    parser = argparse.ArgumentParser()
    add_prepare_arguments(parser)
    return parser.parse_args([*argv, "--quiet"])


def test_coordinates_back_to_metres_by_the_datasets_inverse(tmp_path):
    # x = 0.5, y = 0.5 is the image centre (X = Y = 0); z = 0.3 is 0.3 * 10000 / 7.8125 mm = 0.384 m.
    person = ",".join(["0.5,0.5,0.3"] + ["0.25,0.75,0.5"] * 14)
    path = tmp_path / "skeleton_pos.txt"
    path.write_bytes(
        f"7,{person},{person}\r\n8, {person.replace('0.25', '2.5E-01')},{','.join(['0'] * 45)}\r\n".encode()
    )
    bodies = read_sbu(path)
    assert bodies.shape == (2, 2, 15, 3)
    np.testing.assert_allclose(bodies[0, 0, 0], [0.0, 0.0, 0.384], atol=1e-12)
    # x = 0.25: (1280 - 640) / 1000; y = 0.75: (960 - 1440) / 1000; z = 0.5: 0.64 m; exponent notation as well
    expected = np.broadcast_to([0.64, -0.48, 0.64], (14, 3))
    for person, frame in ((0, 0), (0, 1), (1, 0)):
        np.testing.assert_allclose(bodies[person, frame, 1:], expected, atol=1e-12)
    assert not bodies[1, 1].any()  # person 2 absent in the second frame: zeros, not (1.28, 0.96, 0)


def test_write_read_round_trip(tmp_path):
    bodies = _pair(24, seed=0)
    path = write_sbu(tmp_path / "s01s02" / "03" / "001" / "skeleton_pos.txt", bodies, first_frame=1687, number="%.9g")
    assert b"\r\n" in path.read_bytes()  # CRLF, as the released files
    np.testing.assert_allclose(read_sbu(path), bodies, atol=1e-6)


def _with_field(line: str, index: int, value: str) -> str:
    fields = line.split(",")
    fields[index] = value
    return ",".join(fields)


@pytest.mark.parametrize(
    "mutate, line, message",
    [
        (lambda lines: [], 1, "empty file: no frame"),
        (lambda lines: lines[:-1] + [lines[-1][: len(lines[-1]) // 2]], 6, "expected 91 values, got"),  # truncated
        (lambda lines: lines[:2] + [lines[2].replace(",", ",,", 1)] + lines[3:], 3, "expected 91 values, got 92"),
        (lambda lines: lines[:3] + [_with_field(lines[3], 5, "abc")] + lines[4:], 4, "non-numeric value 'abc'"),
        (lambda lines: lines[:3] + [lines[1]] + lines[4:], 4, r"frame number 351 does not increase \(after 352\)"),
        (lambda lines: lines[:1] + ["350.5" + lines[1][3:]] + lines[2:], 2, "frame number 350.5 is not an integer"),
        (lambda lines: lines[:4] + [_with_field(lines[4], 7, "1e9")] + lines[5:], 5, "out-of-range value '1e9'"),
        (lambda lines: lines[:4] + [_with_field(lines[4], 8, "nan")] + lines[5:], 5, "non-finite value 'nan'"),
    ],
)
def test_broken_files_name_file_and_line(tmp_path, mutate, line, message):
    path = write_sbu(tmp_path / "skeleton_pos.txt", _pair(6, seed=1), first_frame=350)
    lines = path.read_bytes().decode().split("\r\n")[:-1]
    path.write_bytes("".join(f"{text}\r\n" for text in mutate(lines)).encode())
    with pytest.raises(SkeletonFormatError, match=message) as error:
        read_sbu(path)
    assert (error.value.path, error.value.line) == (str(path), line)


def test_sample_ids_from_folders():
    sample = SbuSampleId.parse("/data/sbu/s05s02/08/002/skeleton_pos.txt")
    assert sample == SbuSampleId("s05s02", 8, "002") and sample.name == "s05s02_08_002"
    for bad in ("s05s02/09/002/skeleton_pos.txt", "s5s02/08/002/skeleton_pos.txt", "s05s02/08/skeleton_pos.txt"):
        with pytest.raises(ValueError, match="not an SBU file path"):
            SbuSampleId.parse(bad)


def test_folds_are_the_readmes_and_partition_the_pairs():
    pairs = [pair for fold in FOLDS.values() for pair in fold]
    assert len(pairs) == len(set(pairs)) == 21
    assert FOLDS[1] == {"s01s02", "s03s04", "s05s02", "s06s04"}
    assert FOLDS[5] == {"s04s02", "s04s03", "s04s06", "s06s02", "s06s03"}
    assert sum(sbu.FOLD_SIZES["fold1"]) == sbu.FULL_FILE_COUNT
    assert all(sum(size) == sbu.FULL_FILE_COUNT for size in sbu.FOLD_SIZES.values())
    assert sbu.FOLD_SIZES["fold1"] == (227, 55)


def test_prepare_sbu_folds(tmp_path):
    raw = tmp_path / "raw"
    written = _write_dataset(raw)
    broken = raw / "s01s02" / "04" / "001" / "skeleton_pos.txt"
    broken.write_bytes(broken.read_bytes()[:-40])  # truncated last line
    del written["s01s02_04_001"]
    empty = raw / "s02s03" / "08" / "003" / "skeleton_pos.txt"
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    stranger = write_sbu(raw / "s09s01" / "01" / "001" / "skeleton_pos.txt", _pair(12, seed=5))
    (raw / "s01s02" / "notes").mkdir()
    (raw / "s01s02" / "notes" / "skeleton_pos.txt").write_text("not a sample\n")
    out = tmp_path / "sbu"

    for fold in (1, 3):
        workers = str(fold - 1 or 1)  # fold 3 in two worker processes
        argv = ("--dataset", "sbu", "--raw", str(raw), "--out", str(out), "--fold", str(fold), "--num-workers", workers)
        code = run_prepare(_args(*argv))
        assert code == 0
        summary = json.loads((out / "prepare_summary.json").read_text())
        assert (summary["dataset"], summary["layout"]) == ("sbu", "openni15")
        val_pairs = FOLDS[fold]
        val = [name for name in written if name[:6] in val_pairs]
        counts = {"train": len(written) - len(val), "val": len(val)}
        assert summary["counts"][f"fold{fold}"] == counts
        assert list(summary["counts"]) == (["fold1"] if fold == 1 else ["fold1", "fold3"])  # the earlier fold's kept
        malformed = summary["malformed"]
        assert len(malformed) == 4
        assert any(m.startswith(f"{broken}:") and "expected 91 values" in m for m in malformed)
        assert f"{empty}:1: empty file: no frame" in malformed
        assert any(m.startswith(f"{stranger}: pair s09s01 is in none of the five folds") for m in malformed)
        assert any("notes" in m and "not an SBU file path" in m for m in malformed)
        for split in ("train", "val"):
            folder = out / f"fold{fold}"
            data = np.load(folder / f"{split}_data_joint.npy")
            with open(folder / f"{split}_label.pkl", "rb") as handle:
                names, labels = pickle.load(handle)
            assert sorted(names) == sorted(val if split == "val" else set(written) - set(val))
            assert labels == [int(name.split("_")[1]) - 1 for name in names]
            assert list(np.load(folder / f"{split}_num_frame.npy")) == [written[n].shape[1] for n in names]
            assert data.shape == (len(names), 3, 300, 15, 2)
            # Pre-normalized with the OpenNI anchors: person 1's torso at the origin in every frame, and at frame 0
            # the shoulders along +x; rigid, so person 2's bones keep their lengths.
            torso, left, right = (OPENNI15.index[j] for j in ("torso", "left_shoulder", "right_shoulder"))
            np.testing.assert_allclose(data[:, :, :, torso, 0], 0.0, atol=1e-6)
            across = data[:, :, 0, right, 0] - data[:, :, 0, left, 0]
            np.testing.assert_allclose(across[:, 1:], 0.0, atol=1e-5)
            assert (across[:, 0] > 0).all()
            for i, name in enumerate(names):
                bodies, n = written[name], written[name].shape[1]
                bone = np.linalg.norm(bodies[1, :, 10] - bodies[1, :, 9], axis=-1)  # left thigh of person 2
                np.testing.assert_allclose(np.linalg.norm(data[i, :, :n, 10, 1] - data[i, :, :n, 9, 1], axis=0), bone,
                                           rtol=1e-3)  # fmt: skip
    assert (out / "fold1" / "train_data_joint.npy").is_file()  # a later fold leaves the earlier one in place
    for root in (tmp_path, out):
        train = load_dataset("sbu-fold3", "train", root)
        assert (train.num_classes, train.num_joints, train.num_bodies, train.layout.name) == (8, 15, 2, "openni15")
    assert len(load_dataset("sbu", "val", tmp_path)) == len([n for n in written if n[:6] in FOLDS[1]])


def test_fold_option(tmp_path, capsys):
    raw = tmp_path / "raw"
    _write_dataset(raw, pairs=("s01s02", "s02s03"), classes=(2,), takes=1)
    with pytest.raises(SystemExit):
        _args("--dataset", "sbu", "--raw", str(raw), "--out", str(tmp_path / "o"), "--fold", "6")
    assert "--fold: invalid choice: 6" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"--fold must be one of \(1, 2, 3, 4, 5\), got 0"):
        prepare_dataset("sbu", raw, tmp_path / "o", fold=0, log=lambda _: None)
    assert (
        run_prepare(_args("--dataset", "nwucla", "--raw", str(raw), "--out", str(tmp_path / "o"), "--fold", "2")) == 2
    )
    assert "--fold applies to --dataset sbu only, not nwucla" in capsys.readouterr().err
    summary = prepare_dataset("sbu", raw, tmp_path / "default", log=lambda _: None)  # fold 1 by default
    assert summary.counts == {"fold1": {"train": 1, "val": 1}}
    no_val = prepare_dataset("sbu", raw, tmp_path / "fold3", fold=3, log=lambda _: None)  # neither pair in fold 3
    assert no_val.counts == {"fold3": {"train": 2, "val": 0}}
    assert "fold3 val holds no sample: it cannot be trained or evaluated on" in no_val.report()


def test_complete_release_checks_the_fold_sizes(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    written = _write_dataset(raw, classes=(1, 2), takes=1)
    val = sum(name[:6] in FOLDS[2] for name in written)
    monkeypatch.setattr(sbu, "FULL_FILE_COUNT", len(written))
    monkeypatch.setitem(sbu.SBU.published_sizes, "fold2", (len(written) - val, val))
    assert prepare_dataset("sbu", raw, tmp_path / "ok", fold=2, log=lambda _: None).published_sizes_checked
    monkeypatch.setitem(sbu.SBU.published_sizes, "fold2", (len(written) - val - 1, val + 1))
    with pytest.raises(PrepareError, match=rf"sbu fold2: {len(written) - val} train / {val} val samples"):
        prepare_dataset("sbu", raw, tmp_path / "bad", fold=2, log=lambda _: None)
    (raw / "s01s02" / "01" / "001" / "skeleton_pos.txt").write_text("")  # one malformed: not the complete release
    assert not prepare_dataset("sbu", raw, tmp_path / "partial", fold=2, log=lambda _: None).published_sizes_checked


def test_an_interrupted_fold_keeps_the_earlier_folds_counts(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    _write_dataset(raw, classes=(1,), takes=1)
    out = tmp_path / "sbu"
    quiet = {"log": lambda _: None}
    fold1 = prepare_dataset("sbu", raw, out, fold=1, **quiet).counts["fold1"]
    process = prepare_module._process

    def interrupted(task, jobs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "_process", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("sbu", raw, out, fold=2, **quiet)
    assert not (out / "prepare_summary.json").exists()  # removed when fold 2 started
    monkeypatch.setattr(prepare_module, "_process", process)
    resumed = prepare_dataset("sbu", raw, out, fold=2, **quiet)  # resumes from the saved progress
    assert resumed.counts == {"fold1": fold1, "fold2": {"train": 4, "val": 1}}

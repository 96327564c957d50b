"""NW-UCLA: the JSON reader, `prepare --dataset nwucla` on written files, and loading the result (also as `custom`)."""

import argparse
import json
import pickle

import numpy as np
import pytest
from raw_files import write_nwucla
from skeleton.data.datasets import load_dataset
from skeleton.data.formats import nwucla
from skeleton.data.formats.nwucla import NWUCLA_ACTIONS, NwuclaSampleId, read_nwucla
from skeleton.data.formats.text import SkeletonFormatError
from skeleton.data.layouts import KINECT_V1
from skeleton.data.prepare import PrepareError, add_prepare_arguments, prepare_dataset, run_prepare

# A standing Kinect v1 skeleton in camera coordinates (metres): x right, y up, z away from the camera.
REST_POSE = np.array([
    [0.0, 0.00, 3.0], [0.0, 0.25, 3.0], [0.0, 0.50, 3.0], [0.0, 0.65, 3.0],       # hip, spine, shoulders, head
    [-0.18, 0.45, 3.0], [-0.20, 0.20, 3.0], [-0.21, 0.00, 3.0], [-0.21, -0.07, 3.0],  # left arm
    [0.18, 0.45, 3.0], [0.20, 0.20, 3.0], [0.21, 0.00, 3.0], [0.21, -0.07, 3.0],      # right arm
    [-0.09, -0.05, 3.0], [-0.09, -0.45, 3.0], [-0.09, -0.85, 3.0], [-0.09, -0.90, 2.9],  # left leg
    [0.09, -0.05, 3.0], [0.09, -0.45, 3.0], [0.09, -0.85, 3.0], [0.09, -0.90, 2.9],      # right leg
])  # fmt: skip


def _args(*argv):
    parser = argparse.ArgumentParser()
    add_prepare_arguments(parser)
    return parser.parse_args([*argv, "--quiet"])


def _motion(frames: int, seed: int) -> np.ndarray:
    """A (T, 20, 3) sequence: the rest pose with waving arms and noise, turned by a random angle about y."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None]
    joints = np.repeat(REST_POSE[None], frames, axis=0)
    joints[:, 5:8, 1] += 0.2 * np.sin(t / 5 + rng.uniform(0, 6))
    joints[:, 9:12, 1] += 0.2 * np.sin(t / 7 + rng.uniform(0, 6))
    joints += rng.normal(0, 0.005, joints.shape)
    angle = rng.uniform(-0.8, 0.8)
    turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    return (joints - [0, 0, 3.0]) @ turn.T + [0, 0, 3.0]


def _write_dataset(folder, views=(1, 2, 3), subjects=(1, 2), frames=(5, 40)):
    """One file per (action, subject, view); returns {name: joints}."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for a, action in enumerate(NWUCLA_ACTIONS):
        for subject in subjects:
            for view in views:
                sample = NwuclaSampleId(action, subject, 0, view)
                count = int(np.random.default_rng(a * 100 + subject * 10 + view).integers(*frames))
                joints = _motion(count, seed=a * 100 + subject * 10 + view)
                write_nwucla(folder / f"{sample.name}.json", joints)
                written[sample.name] = joints
    return written


def test_sample_id():
    sample = NwuclaSampleId.parse("a12_s03_e04_v02.json")
    assert (sample.action, sample.subject, sample.repetition, sample.view) == (12, 3, 4, 2)
    assert sample.label == 9 and sample.name == "a12_s03_e04_v02"
    assert [NwuclaSampleId(a, 1, 0, 1).label for a in NWUCLA_ACTIONS] == list(range(10))
    for bad in ("a07_s01_e00_v01.json", "a01_s01_e00_v04.json", "a1_s01_e00_v01.json", "S001C001P001R001A001"):
        with pytest.raises(ValueError, match="NW-UCLA|not one of|not in"):
            NwuclaSampleId.parse(bad)


def test_read_round_trip(tmp_path):
    joints = _motion(17, seed=0)
    path = write_nwucla(tmp_path / "a03_s02_e01_v03.json", joints)
    content = json.loads(path.read_text())
    assert content["file_name"] == "a03_s02_e01_v03" and content["label"] == 3
    np.testing.assert_array_equal(read_nwucla(path), joints)
    one = write_nwucla(tmp_path / "a01_s01_e00_v01.json", joints[:1])
    assert read_nwucla(one).shape == (1, 20, 3)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda text, content: text[: len(text) // 2], r":1: invalid JSON"),
        (lambda text, content: json.dumps({"label": 1}), 'a "skeletons" array'),
        (lambda text, content: json.dumps({**content, "skeletons": []}), "non-empty list"),
        (lambda text, content: json.dumps({**content, "skeletons": content["skeletons"] + [[[0, 0, 0]] * 19]}),
         r"frame 4/4: expected 20 joints of 3"),
        (lambda text, content: text.replace("[", '["x", ', 1).replace('["x", ', "[", 1).replace("0.", '"0.', 1),
         "invalid JSON|expected 20 joints"),
        (lambda text, content: json.dumps({**content, "skeletons": [[[True, 0, 0]] * 20] * 2}), "expected 20 joints"),
        (lambda text, content: json.dumps({**content, "skeletons": [[[float("nan"), 0, 0]] * 20]}), "non-finite"),
        (lambda text, content: json.dumps({**content, "label": 7}), "label 7 disagrees"),
    ],
)  # fmt: skip
def test_read_rejects_malformed_files(tmp_path, mutate, message):
    path = write_nwucla(tmp_path / "a01_s01_e00_v01.json", _motion(3, seed=1))
    text = path.read_text()
    path.write_text(mutate(text, json.loads(text)))
    with pytest.raises(SkeletonFormatError, match=message) as error:
        read_nwucla(path)
    assert str(path) in str(error.value)


def test_write_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match=r"\(T, 20, 3\)"):
        write_nwucla(tmp_path / "a01_s01_e00_v01.json", np.zeros((4, 25, 3)))


def test_prepare_nwucla(tmp_path):
    written = _write_dataset(tmp_path / "all_sqe")
    single = NwuclaSampleId(2, 1, 0, 3).name
    write_nwucla(tmp_path / "all_sqe" / f"{single}.json", written[single][:1])  # a 1-frame sequence is kept
    written[single] = written[single][:1]
    truncated = tmp_path / "all_sqe" / "a04_s02_e00_v01.json"
    truncated.write_text(truncated.read_text()[:100])
    (tmp_path / "all_sqe" / "notes.json").write_text("{}")
    out = tmp_path / "data" / "nwucla"

    assert run_prepare(_args("--dataset", "nwucla", "--raw", str(tmp_path / "all_sqe"), "--out", str(out),
                             "--num-workers", "2")) == 0  # fmt: skip
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert summary["counts"] == {"xview": {"train": 10 * 2 * 2 - 1, "val": 10 * 2}}
    assert len(summary["malformed"]) == 2
    assert any(f"{truncated}:1: invalid JSON" in line for line in summary["malformed"])
    assert any("notes.json" in line and "NW-UCLA sample name" in line for line in summary["malformed"])

    for split, views in (("train", (1, 2)), ("val", (3,))):
        folder = out / "xview"
        data = np.load(folder / f"{split}_data_joint.npy")
        with open(folder / f"{split}_label.pkl", "rb") as handle:
            names, labels = pickle.load(handle)
        frames = np.load(folder / f"{split}_num_frame.npy")
        assert data.shape == (len(names), 3, 300, 20, 1) and data.dtype == np.float32
        assert all(NwuclaSampleId.parse(name).view in views for name in names)
        assert labels == [NwuclaSampleId.parse(name).label for name in names]
        assert list(frames) == [len(written[name]) for name in names]
        assert truncated.stem not in names
        # 2s-AGCN pre-normalization: the spine joint is the origin at every frame; at frame 0 left -> right
        # shoulder points along +x, and hip -> spine close to +z (exactly only for perpendicular shoulders).
        spine = KINECT_V1.index["spine"]
        np.testing.assert_allclose(data[:, :, :, spine, 0], 0.0, atol=1e-6)
        first = data[:, :, 0, :, 0].astype(np.float64)
        up = first[:, :, spine] - first[:, :, KINECT_V1.index["hip_center"]]
        across = first[:, :, KINECT_V1.index["right_shoulder"]] - first[:, :, KINECT_V1.index["left_shoulder"]]
        np.testing.assert_allclose(across[:, 1:], 0.0, atol=1e-5)
        assert (across[:, 0] > 0).all()
        assert np.degrees(np.arccos(up[:, 2] / np.linalg.norm(up, axis=1))).max() < 10.0
        # lengths are kept: the rotation is rigid
        for i, name in enumerate(names):
            raw = written[name]
            n = len(raw)
            bone = np.linalg.norm(raw[:, 3] - raw[:, 2], axis=-1)
            np.testing.assert_allclose(np.linalg.norm(data[i, :, :n, 3, 0] - data[i, :, :n, 2, 0], axis=0), bone,
                                       rtol=1e-4)  # fmt: skip
            assert np.any(data[i, :, n:] != 0) or n == 300  # repeat-filled after the valid frames

    assert run_prepare(_args("--dataset", "nwucla", "--raw", str(tmp_path / "all_sqe"), "--out", str(out),
                             "--strict")) == 1  # fmt: skip
    train = load_dataset("nwucla", "train", tmp_path / "data")
    assert (train.num_classes, train.num_joints, train.num_bodies) == (10, 20, 1)
    x, count, label = train[0]
    assert x.shape == (3, 300, 20, 1) and int(count) == len(written[train.names[0]])
    custom = load_dataset("custom", "val", out / "xview")
    assert custom.num_classes == 10 and len(custom) == 20


def test_prepare_nwucla_checks_published_sizes(tmp_path, monkeypatch):
    _write_dataset(tmp_path / "raw", subjects=(1,))
    monkeypatch.setattr(nwucla, "FULL_FILE_COUNT", 30)
    monkeypatch.setitem(nwucla.NWUCLA.published_sizes, "xview", (20, 10))
    summary = prepare_dataset("nwucla", tmp_path / "raw", tmp_path / "ok", log=lambda _: None)
    assert summary.published_sizes_checked
    monkeypatch.setitem(nwucla.NWUCLA.published_sizes, "xview", (21, 9))
    with pytest.raises(PrepareError, match="nwucla xview: 20 train / 10 val"):
        prepare_dataset("nwucla", tmp_path / "raw", tmp_path / "bad", log=lambda _: None)


def test_prepare_nwucla_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*\.json files"):
        prepare_dataset("nwucla", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="--ignore-list applies to --dataset ntu60/ntu120 only, not nwucla"):
        prepare_dataset("nwucla", tmp_path / "empty", tmp_path / "out", ignore_list=tmp_path / "list.txt")

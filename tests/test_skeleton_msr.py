"""MSR Action3D: the reader (the file's joint order into Kinect v1's, all-zero frames dropped, line errors),
`prepare --dataset msr-action3d` with its cross-subject split, and loading the result."""

import dataclasses
import json
import pickle

import numpy as np
import pytest
from raw_files import write_msr
from skeleton.data.datasets import load_dataset
from skeleton.data.formats import msr_action3d
from skeleton.data.formats.msr_action3d import FILE_TO_KINECT_V1, MsrSampleId, read_msr
from skeleton.data.formats.text import SkeletonFormatError
from skeleton.data.layouts import KINECT_V1
from skeleton.data.prepare import prepare_dataset
from skeleton.data.registry import FORMATS

FILE_ORDER = (
    "left shoulder", "right shoulder", "shoulder center", "spine", "left hip", "right hip", "hip center",
    "left elbow", "right elbow", "left wrist", "right wrist", "left hand", "right hand", "left knee", "right knee",
    "left ankle", "right ankle", "left foot", "right foot", "head",
)  # fmt: skip
"""The joints of an MSR Action3D file, as its documentation lists them."""

# A standing Kinect v1 skeleton in metres (x right, y up, z away from the camera), Kinect v1 order.
REST_POSE = np.array([
    [0.0, 0.00, 0.0], [0.0, 0.25, 0.0], [0.0, 0.50, 0.0], [0.0, 0.65, 0.0],
    [-0.18, 0.45, 0.0], [-0.20, 0.20, 0.0], [-0.21, 0.00, 0.0], [-0.21, -0.07, 0.0],
    [0.18, 0.45, 0.0], [0.20, 0.20, 0.0], [0.21, 0.00, 0.0], [0.21, -0.07, 0.0],
    [-0.09, -0.05, 0.0], [-0.09, -0.45, 0.0], [-0.09, -0.85, 0.0], [-0.09, -0.90, -0.1],
    [0.09, -0.05, 0.0], [0.09, -0.45, 0.0], [0.09, -0.85, 0.0], [0.09, -0.90, -0.1],
])  # fmt: skip


def _motion(frames: int, seed: int) -> np.ndarray:
    """(F, 20, 3) Kinect v1 joints 2.5 m from the camera, the right arm waving."""
    rng = np.random.default_rng(seed)
    joints = np.repeat(REST_POSE[None], frames, axis=0) + [0.0, 0.0, 2.5]
    joints[:, 9:12, 1] += 0.25 * np.sin(np.arange(frames)[:, None] / 3 + rng.uniform(0, 6))
    return joints + rng.normal(0, 0.003, joints.shape)


def test_joint_order_is_the_documented_one_mapped_by_name(tmp_path):
    kinect_v1 = [name.replace("_", " ") for name in KINECT_V1.joint_names]
    assert [FILE_ORDER[i] for i in FILE_TO_KINECT_V1] == kinect_v1
    # Each file joint k written with x = k: the reader puts file joint FILE_ORDER.index(name) at the name's place.
    frame = "".join(f"{k} {-(k + 0.5)} {k}e-1 1\n" for k in range(20))
    path = tmp_path / "a01_s01_e01_skeleton3D.txt"
    path.write_text(frame * 2)
    joints, dropped = read_msr(path)
    assert joints.shape == (2, 20, 3) and dropped == 0
    for v, name in enumerate(kinect_v1):
        k = FILE_ORDER.index(name)
        np.testing.assert_array_equal(joints[:, v], [[k, -k - 0.5, k / 10]] * 2)


def test_write_read_round_trip_drops_all_zero_frames(tmp_path):
    joints = _motion(30, seed=0)
    joints[:3] = 0.0  # tracking lost at the start
    joints[-2:] = 0.0  # and at the end
    joints[10, 4] = 0.0  # one joint at zero: the frame is kept
    path = write_msr(tmp_path / "a02_s03_e01_skeleton3D.txt", joints, number="%.9f")
    read, dropped = read_msr(path)
    assert dropped == 5
    np.testing.assert_allclose(read, joints[3:-2], atol=1e-9)


@pytest.mark.parametrize(
    "content, line, message",
    [
        ("", 1, "empty file: no frame"),
        ("\n\n", 1, "empty file: no frame"),
        ("0 0 0 1\n" * 40, 1, "no valid frame: all 2 frames are all zero"),
        ("0.1 0.2 0.3 1\n" * 39, 39, "39 joint lines, not a multiple of 20"),
        ("0.1 0.2 0.3 1\n" * 5 + "0.1 0.2 1\n" + "0.1 0.2 0.3 1\n" * 14, 6, "expected 4 values, got 3"),
        ("0.1 0.2 0.3 1\n" * 7 + "0.1 x 0.3 1\n" + "0.1 0.2 0.3 1\n" * 12, 8, "non-numeric value 'x'"),
        ("0.1 0.2 0.3 1\n" * 19 + "0.1 0.2 inf 1\n", 20, "non-finite value 'inf'"),
    ],
)
def test_broken_files_name_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "a01_s01_e01_skeleton3D.txt"
    path.write_text(content)
    with pytest.raises(SkeletonFormatError, match=message) as error:
        read_msr(path)
    assert (error.value.path, error.value.line) == (str(path), line)


def test_crlf_and_exponents(tmp_path):
    joints = _motion(3, seed=1)
    path = write_msr(tmp_path / "a01_s01_e01_skeleton3D.txt", joints, number="%.6E")
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    np.testing.assert_allclose(read_msr(path)[0], joints, atol=1e-6)


def test_sample_names():
    assert MsrSampleId.parse("/x/a20_s10_e03_skeleton3D.txt") == MsrSampleId(20, 10, 3)
    assert MsrSampleId(3, 4, 1).name == "a03_s04_e01"
    for bad, message in (
        ("a21_s01_e01_skeleton3D.txt", "action a21 is outside a01-a20"),
        ("a01_s11_e01_skeleton3D.txt", "subject s11 is outside s01-s10"),
        ("a01_s01_e01_skeleton.txt", "not an MSR Action3D file name"),
    ):
        with pytest.raises(ValueError, match=message):
            MsrSampleId.parse(bad)


def _write_dataset(raw, actions=(1, 7, 20), subjects=(1, 2, 3, 4), takes=(1, 2)):
    written = {}
    for action in actions:
        for subject in subjects:
            for take in takes:
                sample = MsrSampleId(action, subject, take)
                joints = _motion(12 + action + take, seed=100 * action + 10 * subject + take)
                write_msr(raw / f"{sample.name}_skeleton3D.txt", joints)
                written[sample.name] = joints
    return written


def test_prepare_msr_action3d(tmp_path):
    raw = tmp_path / "raw"
    written = _write_dataset(raw)
    lost = written["a07_s02_e01"]
    lost[:4] = 0.0
    write_msr(raw / "a07_s02_e01_skeleton3D.txt", lost)
    written["a07_s02_e01"] = lost[4:]
    (raw / "a01_s01_e02_skeleton3D.txt").write_text("0 0 0 0\n" * 60)  # no valid frame
    del written["a01_s01_e02"]
    write_msr(raw / "copy" / "a20_s03_e01_skeleton3D.txt", _motion(10, seed=9))  # a second file of one sample
    write_msr(raw / "a05_s12_e01_skeleton3D.txt", _motion(10, seed=9))  # no such subject
    summary = prepare_dataset("msr-action3d", raw, tmp_path / "msr-action3d", log=lambda _: None)

    assert (summary.dataset, summary.layout) == ("msr-action3d", "kinect_v1")
    train = [name for name in written if int(name[5:7]) % 2 == 1]
    assert summary.counts == {"xsub": {"train": len(train), "val": len(written) - len(train)}}
    assert summary.notes == [
        f"{raw / 'a07_s02_e01_skeleton3D.txt'}: 4 of {len(lost)} frames all zero (tracking lost), dropped"
    ]
    assert len(summary.malformed) == 3
    assert (
        summary.malformed[0]
        == f"{raw / 'a05_s12_e01_skeleton3D.txt'}: 'a05_s12_e01_skeleton3D.txt': subject s12 is outside s01-s10"
    )
    assert summary.malformed[1].startswith(f"{raw / 'copy' / 'a20_s03_e01_skeleton3D.txt'}: duplicate of")
    assert (
        summary.malformed[2]
        == f"{raw / 'a01_s01_e02_skeleton3D.txt'}:1: no valid frame: all 3 frames are all zero (tracking lost)"
    )
    saved = json.loads((tmp_path / "msr-action3d" / "prepare_summary.json").read_text())
    assert saved["notes"] == summary.notes and saved["layout"] == "kinect_v1"
    for split in ("train", "val"):
        folder = tmp_path / "msr-action3d" / "xsub"
        data = np.load(folder / f"{split}_data_joint.npy")
        with open(folder / f"{split}_label.pkl", "rb") as handle:
            names, labels = pickle.load(handle)
        assert sorted(names) == sorted(train if split == "train" else set(written) - set(train))
        assert labels == [int(name[1:3]) - 1 for name in names]
        assert list(np.load(folder / f"{split}_num_frame.npy")) == [len(written[name]) for name in names]
        assert data.shape == (len(names), 3, 300, 20, 1)
        spine = KINECT_V1.index["spine"]
        np.testing.assert_allclose(data[:, :, :, spine, 0], 0.0, atol=1e-6)  # pre-normalized
        for i, name in enumerate(names):
            n = len(written[name])
            forearm = np.linalg.norm(written[name][:, 10] - written[name][:, 9], axis=-1)
            np.testing.assert_allclose(np.linalg.norm(data[i, :, :n, 10, 0] - data[i, :, :n, 9, 0], axis=0), forearm,
                                       rtol=1e-4)  # fmt: skip
    dataset = load_dataset("msr-action3d", "val", tmp_path)
    assert (dataset.num_classes, dataset.num_joints, dataset.num_bodies) == (20, 20, 1)


def test_complete_release_with_its_known_broken_file(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    written = _write_dataset(raw, actions=(1, 2), subjects=(1, 2), takes=(1,))
    (raw / "a02_s02_e01_skeleton3D.txt").write_text("0 0 0 0\n" * 20)
    monkeypatch.setattr(msr_action3d, "FULL_FILE_COUNT", len(written))
    monkeypatch.setitem(msr_action3d.MSR_ACTION3D.published_sizes, "xsub", (2, 1))
    quiet = {"log": lambda _: None}
    # A broken file of the complete release that the release is not known to break: no size check.
    assert not prepare_dataset("msr-action3d", raw, tmp_path / "a", **quiet).published_sizes_checked
    known = dataclasses.replace(msr_action3d.MSR_ACTION3D, known_broken=frozenset({"a02_s02_e01"}))
    monkeypatch.setitem(FORMATS, "msr-action3d", known)
    assert prepare_dataset("msr-action3d", raw, tmp_path / "b", **quiet).published_sizes_checked

"""Dataset loading: synthetic splits, prepared and SkeletonCLR/AimCLR layouts, custom folders of any layout in 2-D
or 3-D, and the checks at load time (coordinates, labels, empty splits), each error naming its file."""

import json
import pickle

import numpy as np
import pytest
import torch
from skeleton.data import datasets
from skeleton.data.datasets import SkeletonDataset, load_dataset
from skeleton.data.layouts import COCO17, KINECT_V1, KINECT_V2, OPENNI15
from skeleton.data.synthetic import SyntheticConfig
from skeleton.fileio import InputError

TINY = SyntheticConfig(num_classes=4, num_performers=4, num_cameras=2, repetitions=2, max_frames=40, min_frames=20)


def _write_split(folder, split, data, labels, *, data_name=None, num_frames=None):
    """Write a split; ``data`` gets body 0's spine mid at the origin in frame 0 (in place), as pre-normalized data
    has it, so the loader uses it as it is."""
    data[:, :, 0, 1, 0] = 0.0
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / (data_name or f"{split}_data_joint.npy"), data)
    if num_frames is not None:
        np.save(folder / f"{split}_num_frame.npy", num_frames)
    with open(folder / f"{split}_label.pkl", "wb") as handle:
        pickle.dump(([f"sample{i}" for i in range(len(labels))], list(labels)), handle)


def test_synthetic_splits():
    train = load_dataset("synthetic", "train", synthetic=TINY)
    val = load_dataset("synthetic", "val", synthetic=TINY)
    assert len(train) + len(val) == TINY.num_samples and len(val) == TINY.num_samples // 4
    assert not set(train.names) & set(val.names)
    assert train.num_classes == 4 and train.max_frames == 40
    assert train.layout is KINECT_V2 and train.num_coords == 3
    x, count, label = train[0]
    assert x.shape == (3, 40, 25, 2) and x.dtype == torch.float32
    assert count.dtype == torch.long and count.ndim == 0 and 20 <= int(count) <= 40
    assert isinstance(label, int) and label == train.labels[0]
    # pre-normalized: body 0's spine mid at the origin in frame 0
    assert torch.allclose(x[:, 0, 1, 0], torch.zeros(3), atol=1e-5)
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=8)))
    assert batch[0].shape == (8, 3, 40, 25, 2) and batch[1].shape == (8,) and batch[2].dtype == torch.long


def test_custom_folder_takes_joints_bodies_and_classes_from_the_files(tmp_path):
    rng = np.random.default_rng(1)
    train = rng.normal(size=(4, 3, 50, 20, 1)).astype(np.float32)
    _write_split(tmp_path, "train", train, [0, 1, 2, 1], num_frames=np.array([10, 20, 30, 50]))
    _write_split(tmp_path, "val", train[:2], [3, 0])  # a class only the validation split has counts too
    dataset = load_dataset("custom", "train", tmp_path)
    assert (dataset.num_joints, dataset.num_bodies, dataset.num_classes) == (20, 1, 4)
    assert dataset.layout is KINECT_V1 and dataset.num_coords == 3 and dataset[3][0].shape == (3, 50, 20, 1)
    assert load_dataset("custom", "val", tmp_path).num_classes == 4
    with pytest.raises(FileNotFoundError, match="no custom 'train' split"):
        load_dataset("custom", "train", tmp_path / "missing")
    with pytest.raises(ValueError, match="the folder holding the split files"):
        load_dataset("custom", "train")
    odd = tmp_path / "odd"
    _write_split(odd, "train", rng.normal(size=(2, 3, 8, 18, 1)).astype(np.float32), [0, 1])
    with pytest.raises(InputError) as error:
        load_dataset("custom", "train", odd)
    message = str(error.value)
    assert message.startswith(f"{odd / 'train_data_joint.npy'}: no built-in skeleton layout has 18 joints")
    assert "layout.yaml / layout.yml / layout.json in the data folder" in message


@pytest.mark.parametrize("where", ["root", "family", "benchmark"])
def test_prepared_layout_memory_mapped(tmp_path, where):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 3, 300, 25, 2)).astype(np.float32)
    folder = tmp_path / "ntu60" / "xview"
    _write_split(folder, "val", data, [0, 59, 3, 4, 5], num_frames=np.array([10, 300, 0, 50, 60]))
    root = {"root": tmp_path, "family": tmp_path / "ntu60", "benchmark": folder}[where]
    dataset = load_dataset("ntu60-xview", "val", root)
    assert isinstance(dataset.data, np.memmap)
    assert len(dataset) == 5 and dataset.num_classes == 60 and dataset.names[1] == "sample1"
    x, count, label = dataset[1]
    assert torch.equal(x, torch.from_numpy(data[1])) and int(count) == 300 and label == 59
    assert int(dataset[2][1]) == 1  # a zero count is clamped to one frame
    pickled = pickle.dumps(dataset)  # as for spawned DataLoader workers: the file name, not the data
    assert len(pickled) < 10_000
    copy = pickle.loads(pickled)
    assert isinstance(copy.data, np.memmap) and torch.equal(copy[1][0], x) and copy.names == dataset.names


def test_skeletonclr_layout_derives_frame_counts(tmp_path):
    data = np.zeros((3, 3, 50, 25, 2), dtype=np.float32)
    data[0, :, :20] = 1.0
    data[1, :, [0, 30]] = 1.0  # a gap: counted up to the last non-zero frame
    _write_split(tmp_path, "train", data, [1, 2, 3], data_name="train_position.npy")
    dataset = load_dataset("pku2-xsub", "train", tmp_path)
    assert dataset.max_frames == 50 and dataset.num_classes == 51 and dataset.num_frames is None
    assert [int(dataset[i][1]) for i in range(3)] == [20, 31, 1]


def test_missing_folder_lists_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("ntu120-xset", "train", tmp_path)
    message = str(error.value)
    for expected in ("train_data_joint.npy", "train_num_frame.npy", "train_label.pkl", "train_position.npy",
                     str(tmp_path / "ntu120" / "xset")):  # fmt: skip
        assert expected in message


def test_inconsistent_files(tmp_path):
    _write_split(tmp_path, "val", np.zeros((3, 3, 300, 25, 2), np.float32), [0, 1], num_frames=np.ones(3))
    with pytest.raises(ValueError, match="inconsistent split files"):
        load_dataset("ntu60-xsub", "val", tmp_path)
    _write_split(tmp_path, "train", np.zeros((2, 3, 300, 25, 2), np.float32), [0, 60], num_frames=np.ones(2))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 60\)"):
        load_dataset("ntu60-xsub", "train", tmp_path)


def test_argument_errors():
    with pytest.raises(ValueError, match="data_root is required"):
        load_dataset("ntu60-xsub", "train")
    with pytest.raises(ValueError, match="split"):
        load_dataset("synthetic", "test", synthetic=TINY)
    with pytest.raises(ValueError, match="data has 24 joints, but layout kinect_v2 has 25"):
        SkeletonDataset(np.zeros((2, 3, 10, 24, 2)), np.zeros(2), ["a", "b"], 3, KINECT_V2)
    with pytest.raises(ValueError, match="shape"):
        SkeletonDataset(np.zeros((2, 3, 10, 25)), np.zeros(2), ["a", "b"], 3, KINECT_V2)
    with pytest.raises(ValueError, match=r"C in \(2, 3\)"):
        SkeletonDataset(np.zeros((2, 4, 10, 25, 1)), np.zeros(2), ["a", "b"], 3, KINECT_V2)
    with pytest.raises(ValueError, match="neither a built-in layout"):
        load_dataset("custom", "train", ".", layout="kinect_v3")


def _write_custom(folder, split, data, labels):
    """A custom split as a user writes it: raw values (nothing moved to the origin), frame counts derived."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{split}_data_joint.npy", data)
    with open(folder / f"{split}_label.pkl", "wb") as handle:
        pickle.dump(([f"{split}{i}" for i in range(len(labels))], list(labels)), handle)


YAML_LAYOUT = """\
# five keypoints of a hand-made 2-D pose
joints: [pelvis, chest, head, left_hand, right_hand]
parents: {pelvis: null, chest: pelvis, head: chest, left_hand: chest, right_hand: chest}
center: chest
origin: pelvis
up: [pelvis, chest]
across: [left_hand, right_hand]
"""


def test_custom_2d_folder_with_a_layout_file(tmp_path):
    rng = np.random.default_rng(2)
    keypoints = rng.uniform(100.0, 600.0, size=(6, 2, 12, 5, 1)).astype(np.float32)  # pixels
    keypoints[:, :, 9:] = 0.0  # 9 valid frames
    _write_custom(tmp_path, "train", keypoints[:4], [0, 1, 2, 1])
    _write_custom(tmp_path, "val", keypoints[4:], [2, 0])
    (tmp_path / "layout.yaml").write_text(YAML_LAYOUT)
    with pytest.warns(UserWarning, match="2-D keypoints in image coordinates.*pelvis"):
        train = load_dataset("custom", "train", tmp_path)
    assert train.layout.name == tmp_path.name and train.layout.joint_names[2] == "head"
    assert (train.num_coords, train.num_joints, train.num_bodies, train.num_classes) == (2, 5, 1, 3)
    x, count, label = train[1]
    assert x.shape == (2, 12, 5, 1) and int(count) == 9 and label == 1
    torch.testing.assert_close(x[:, :, 0, 0], torch.zeros(2, 12))  # pre-normalized as read: pelvis at 0
    up = x[:, :, 1, 0] - x[:, :, 0, 0]
    assert torch.allclose(up.sum(dim=1) / up.sum(dim=1).norm(), torch.tensor([0.0, 1.0]), atol=1e-5)
    # The layout argument (a built-in name, a file or a layout) beats the folder's file; V must fit it.
    other = tmp_path / "other.json"
    other.write_text(json.dumps(
        {"joints": ["a", "b", "c", "d", "e"], "parents": {"a": None, "b": "a", "c": "a", "d": "a", "e": "a"},
         "origin": "b", "up": ["b", "a"], "across": ["c", "d"]}
    ))  # fmt: skip
    with pytest.warns(UserWarning, match="body 0's b lies"):
        assert load_dataset("custom", "val", tmp_path, layout=other).layout.joint_names == ("a", "b", "c", "d", "e")
    with pytest.raises(InputError, match="data has 5 joints, but layout coco17 has 17"):
        load_dataset("custom", "val", tmp_path, layout="coco17")


def test_custom_built_in_layouts_by_joint_count(tmp_path):
    """15 joints x 2 bodies in 3-D is SBU's OpenNI skeleton, 17 keypoints in 2-D COCO's, without a layout file."""
    rng = np.random.default_rng(3)
    for folder, shape, layout in ((tmp_path / "sbu", (3, 3, 8, 15, 2), OPENNI15),
                                  (tmp_path / "coco", (3, 2, 8, 17, 1), COCO17)):  # fmt: skip
        data = rng.normal(size=shape).astype(np.float32)
        data[:, :, 0, layout.origin, 0] = 0.0  # already pre-normalized: used as it is
        _write_custom(folder, "train", data, [0, 1, 0])
        _write_custom(folder, "val", data[:1], [1])
        dataset = load_dataset("custom", "train", folder)
        assert dataset.layout is layout and dataset.num_coords == shape[1] and not dataset.prenormalize_on_read


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e30])
def test_non_finite_or_absurd_coordinates_are_refused_with_file_and_sample(tmp_path, monkeypatch, value):
    monkeypatch.setattr(datasets, "CHECK_CHUNK_BYTES", 3 * 2 * 4 * 15 * 2 * 4)  # three samples per chunk
    data = np.random.default_rng(4).normal(size=(10, 3, 4, 15, 2)).astype(np.float32)
    data[:, :, 0, OPENNI15.origin, 0] = 0.0
    data[7, 1, 2, 5, 1] = value  # in the third chunk
    data[8, 0, 0, 0, 0] = value  # a later one is not the first
    _write_custom(tmp_path, "train", data, [0, 1] * 5)
    _write_custom(tmp_path, "val", data[:2] * 0 + 1, [0, 1])
    with pytest.raises(InputError) as error:
        load_dataset("custom", "train", tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'train_data_joint.npy'}: sample 7 holds the coordinate")
    assert "(1, 2, 5, 1)" in message and "finite and within +-1e+06" in message
    assert f"holds the coordinate {float(np.float32(value))!r} at" in message


@pytest.mark.parametrize("dtype", [np.float16, np.int16, np.float64])
def test_coordinate_check_in_other_dtypes(dtype):
    """float16 cannot hold the bound (it would cast to inf and let inf pass); integer data has no NaN."""
    data = np.ones((4, 2, 3, 17, 1), dtype=dtype)
    datasets.check_coordinates(data, "ok.npy")
    if dtype == np.int16:
        data[2, 1, 0, 3, 0] = -32768  # within the bound: accepted
        datasets.check_coordinates(data, "ok.npy")
        return
    data[2, 1, 0, 3, 0] = np.inf
    with pytest.raises(InputError, match=r"bad.npy: sample 2 holds the coordinate inf at .* \(1, 0, 3, 0\)"):
        datasets.check_coordinates(data, "bad.npy")


def test_coordinate_check_reads_bounded_chunks(monkeypatch):
    """The check never asks the array for more than CHECK_CHUNK_BYTES at once."""
    reads = []

    class Recording(np.ndarray):
        def __getitem__(self, item):
            part = np.asarray(super().__getitem__(item))
            reads.append(part.nbytes)
            return part

    monkeypatch.setattr(datasets, "CHECK_CHUNK_BYTES", 10_000)
    data = np.zeros((50, 3, 10, 25, 1), dtype=np.float32).view(Recording)  # 3,000 bytes per sample
    datasets.check_coordinates(data, "memory")
    assert max(reads) <= 10_000 and sum(reads) == data.nbytes and len(reads) == 17


@pytest.mark.parametrize(
    "train_labels, val_labels, found",
    [
        ([1, 2, 3, 4], [5, 1], "from 1 to 5, missing 0 (numbered from 1? subtract 1); renumber them as 0..4"),
        ([0, 1, 3, 3], [0, 1], "3 distinct labels from 0 to 3, missing 2; renumber them as 0..2"),
        ([0, 0, 7, 0], [0, 9], "3 distinct labels from 0 to 9, missing 1, 2, 3, 4, 5, 6, 8;"),
        ([-1, 0, 1, 2], [3, 0], "5 distinct labels from -1 to 3; renumber them as 0..4"),
        ([2, 3, 5, 3], [2, 2], "3 distinct labels from 2 to 5, missing 0, 1, 4; renumber"),
    ],
)
def test_custom_labels_must_be_zero_based_without_gaps(tmp_path, train_labels, val_labels, found):
    data = np.zeros((4, 3, 5, 20, 1), dtype=np.float32)
    data[:, :, :3, 2:] = 1.0
    _write_custom(tmp_path, "train", data, train_labels)
    _write_custom(tmp_path, "val", data[:2], val_labels)
    with pytest.raises(InputError) as error:
        load_dataset("custom", "train", tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'train_label.pkl'} and {tmp_path / 'val_label.pkl'}: labels must be")
    assert found in message, message


def test_empty_split_is_refused(tmp_path):
    data = np.zeros((3, 3, 5, 20, 1), dtype=np.float32)
    data[:, :, :, 2:] = 1.0
    _write_custom(tmp_path, "train", data, [0, 1, 0])
    _write_custom(tmp_path, "val", data[:0], [])
    assert len(load_dataset("custom", "train", tmp_path)) == 3
    with pytest.raises(InputError, match=f"{tmp_path / 'val_data_joint.npy'}: the split holds no samples"):
        load_dataset("custom", "val", tmp_path)


def test_prepared_summary_declares_the_layout(tmp_path):
    """``prepare`` writes the layout into prepare_summary.json: a built-in name or a layout in file form."""
    data = np.random.default_rng(5).normal(size=(2, 3, 6, 15, 2)).astype(np.float32)
    data[:, :, 0, OPENNI15.origin, 0] = 0.0  # pre-normalized
    folder = tmp_path / "sbu" / "fold2"
    _write_split(folder, "val", data, [0, 7], num_frames=np.array([6, 6]))
    summary = tmp_path / "sbu" / "prepare_summary.json"
    summary.write_text(json.dumps({"dataset": "sbu", "layout": "openni15"}))
    assert load_dataset("sbu-fold2", "val", tmp_path).layout is OPENNI15
    summary.write_text(json.dumps({"dataset": "sbu", "layout": {**OPENNI15.to_dict(), "name": "mine"}}))
    assert load_dataset("sbu-fold2", "val", tmp_path).layout.name == "mine"
    summary.write_text(json.dumps({"dataset": "sbu"}))  # no layout: the registry's
    assert load_dataset("sbu-fold2", "val", tmp_path).layout is OPENNI15
    summary.write_text(json.dumps({"dataset": "sbu", "layout": "openni16"}))
    with pytest.raises(InputError, match=f"{summary}: layout 'openni16' is neither a built-in layout"):
        load_dataset("sbu-fold2", "val", tmp_path)
    summary.write_text(json.dumps({"dataset": "sbu", "layout": {"joints": ["a"]}}))
    with pytest.raises(InputError, match=f"{summary}: layout: parents: missing"):
        load_dataset("sbu-fold2", "val", tmp_path)
    summary.write_text('{"dataset": "sbu", ')
    with pytest.raises(InputError, match=f"{summary}: unreadable preparation summary"):
        load_dataset("sbu-fold2", "val", tmp_path)
    summary.write_text("[1, 2]")
    with pytest.raises(InputError, match=f"{summary}: expected a JSON object, got list"):
        load_dataset("sbu-fold2", "val", tmp_path)

"""Dataset loading: synthetic splits, prepared and SkeletonCLR/AimCLR layouts, errors."""

import pickle

import numpy as np
import pytest
import torch
from skeleton.data.datasets import DATASET_NAMES, SkeletonDataset, load_dataset, num_classes
from skeleton.data.synthetic import SyntheticConfig

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
    x, count, label = train[0]
    assert x.shape == (3, 40, 25, 2) and x.dtype == torch.float32
    assert count.dtype == torch.long and count.ndim == 0 and 20 <= int(count) <= 40
    assert isinstance(label, int) and label == train.labels[0]
    # pre-normalized: body 0's spine mid at the origin in frame 0
    assert torch.allclose(x[:, 0, 1, 0], torch.zeros(3), atol=1e-5)
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=8)))
    assert batch[0].shape == (8, 3, 40, 25, 2) and batch[1].shape == (8,) and batch[2].dtype == torch.long


def test_num_classes():
    assert [num_classes(name) for name in DATASET_NAMES[1:-1]] == [60, 60, 120, 120, 51, 51, 10]
    assert num_classes("synthetic") == SyntheticConfig().num_classes
    assert num_classes("synthetic", TINY) == 4
    with pytest.raises(ValueError, match="unknown dataset"):
        num_classes("ntu61-xsub")
    with pytest.raises(ValueError, match="comes from its labels"):
        num_classes("custom")


def test_custom_folder_takes_joints_bodies_and_classes_from_the_files(tmp_path):
    rng = np.random.default_rng(1)
    train = rng.normal(size=(4, 3, 50, 20, 1)).astype(np.float32)
    _write_split(tmp_path, "train", train, [0, 1, 2, 1], num_frames=np.array([10, 20, 30, 50]))
    _write_split(tmp_path, "val", train[:2], [6, 0])  # a class only the validation split has counts too
    dataset = load_dataset("custom", "train", tmp_path)
    assert (dataset.num_joints, dataset.num_bodies, dataset.num_classes) == (20, 1, 7)
    assert dataset.layout.name == "kinect_v1" and dataset[3][0].shape == (3, 50, 20, 1)
    assert load_dataset("custom", "val", tmp_path).num_classes == 7
    with pytest.raises(FileNotFoundError, match="no custom 'train' split"):
        load_dataset("custom", "train", tmp_path / "missing")
    with pytest.raises(ValueError, match="the folder holding the split files"):
        load_dataset("custom", "train")
    _write_split(tmp_path / "odd", "train", rng.normal(size=(2, 3, 8, 18, 1)).astype(np.float32), [0, 1])
    with pytest.raises(ValueError, match="no skeleton layout has 18 joints"):
        load_dataset("custom", "train", tmp_path / "odd")


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
    with pytest.raises(ValueError, match="no skeleton layout has 24 joints"):
        SkeletonDataset(np.zeros((2, 3, 10, 24, 2)), np.zeros(2), ["a", "b"], 3)
    with pytest.raises(ValueError, match="shape"):
        SkeletonDataset(np.zeros((2, 3, 10, 25)), np.zeros(2), ["a", "b"], 3)

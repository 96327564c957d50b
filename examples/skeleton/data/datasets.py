"""Dataset loading: prepared NTU / PKU / NW-UCLA folders and any folder in the same layout (memory-mapped), and
the synthetic dataset.

Data-root convention: ``data_root`` is the folder that holds one sub-folder per dataset family, as written by
``skeleton_moco.py prepare --out DATA_ROOT/<family>``::

    DATA_ROOT/ntu60/{xsub,xview}/   DATA_ROOT/ntu120/{xsub,xset}/   DATA_ROOT/pku2/{xsub,xview}/
    DATA_ROOT/nwucla/xview/

Each benchmark folder holds ``{train,val}_data_joint.npy``, ``{train,val}_num_frame.npy`` and
``{train,val}_label.pkl`` (see :mod:`skeleton.data.files`). ``data_root`` may also point at a family folder
(``DATA_ROOT/ntu60``) or straight at a benchmark folder (``DATA_ROOT/ntu60/xsub``). Folders in the
SkeletonCLR / AimCLR layout (``{split}_position.npy`` or ``{split}_data.npy`` or a ``{split}_data_joint.npy``
without ``num_frame`` file, plus ``{split}_label.pkl``; 50 or 300 frames) are accepted too; their valid
frame counts are derived from the data (last non-zero frame + 1).

``custom`` is any such folder (``data_root`` points straight at it): joints V and bodies M come from the arrays
(V = 25 for Kinect v2, 20 for Kinect v1; any M), the number of classes from the labels of both splits.

Label pickles are unpickled: only load folders you trust.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .benchmarks import NUM_CLASSES, SPLITS
from .files import data_file, label_file, num_frame_file
from .layouts import NUM_COORDS, SkeletonLayout, layout_for
from .prenormalize import prenormalize
from .synthetic import SyntheticConfig, generate_synthetic, split_indices

DATASET_NAMES: tuple[str, ...] = (
    "synthetic",
    "ntu60-xsub",
    "ntu60-xview",
    "ntu120-xsub",
    "ntu120-xset",
    "pku2-xsub",
    "pku2-xview",
    "nwucla",
    "custom",
)
ALTERNATIVE_DATA_FILES = ("{split}_position.npy", "{split}_data.npy")
"""Data file names of the SkeletonCLR / AimCLR layout, tried after ``{split}_data_joint.npy``."""


class SkeletonDataset(Dataset):
    """Skeleton sequences with their valid frame counts and labels.

    ``dataset[i]`` is ``(x, num_frames, label)``: ``x`` float32 tensor (3, T, V, M), ``num_frames`` a long
    scalar tensor (valid frames, at least 1) and ``label`` an int.

    Attributes:
        data: array (N, 3, T, V, M), possibly a read-only memory map; V is the joint count of a known
            :class:`~skeleton.data.layouts.SkeletonLayout`.
        num_frames: (N,) int64 valid frame counts, or None when they are derived per sample from the data.
        labels: (N,) int64, 0-based.
        names: sample names.
        num_classes: size of the label space (may exceed ``labels.max() + 1``).
        max_frames: T.
    """

    def __init__(
        self,
        data: np.ndarray,
        labels: np.ndarray,
        names: list[str],
        num_classes: int,
        num_frames: np.ndarray | None = None,
    ) -> None:
        """Wrap arrays as a dataset.

        Args:
            data: array (N, 3, T, V, M).
            labels: (N,) integer labels in [0, num_classes).
            names: N sample names.
            num_classes: size of the label space.
            num_frames: (N,) valid frame counts; None derives each from its sample's last non-zero frame.

        Raises:
            ValueError: on inconsistent shapes, an unknown joint count or labels out of range.
        """
        if data.ndim != 5 or data.shape[1] != NUM_COORDS or min(data.shape[2:]) < 1:
            raise ValueError(f"data must have shape (N, {NUM_COORDS}, T, V, M), got {data.shape}")
        layout_for(data.shape[3])
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(data),) or len(names) != len(data):
            raise ValueError(f"{len(data)} samples but {labels.shape[0]} labels and {len(names)} names")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"labels must be in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
        if num_frames is not None:
            num_frames = np.clip(np.asarray(num_frames, dtype=np.int64), 1, data.shape[2])
            if num_frames.shape != (len(data),):
                raise ValueError(f"{len(data)} samples but num_frames has shape {num_frames.shape}")
        self.data = data
        self.labels = labels
        self.names = list(names)
        self.num_classes = int(num_classes)
        self.num_frames = num_frames
        self.max_frames = int(data.shape[2])

    def __len__(self) -> int:
        return len(self.data)

    @property
    def num_joints(self) -> int:
        return int(self.data.shape[3])

    @property
    def num_bodies(self) -> int:
        return int(self.data.shape[4])

    @property
    def layout(self) -> SkeletonLayout:
        return layout_for(self.num_joints)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        sample = np.array(self.data[index], dtype=np.float32)  # copies out of the memory map
        if self.num_frames is not None:
            count = int(self.num_frames[index])
        else:
            full = np.flatnonzero(np.any(sample != 0, axis=(0, 2, 3)))
            count = int(full[-1]) + 1 if full.size else 1
        return torch.from_numpy(sample), torch.tensor(count, dtype=torch.long), int(self.labels[index])

    def __getstate__(self) -> dict:
        # A memory map would be pickled as its full content (gigabytes for NTU) when DataLoader workers or
        # DDP processes are spawned; send the file name instead and map it again on the other side.
        state = dict(self.__dict__)
        if isinstance(self.data, np.memmap) and self.data.filename is not None:
            state["data"] = Path(self.data.filename)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["data"], Path):
            state["data"] = np.load(state["data"], mmap_mode="r")
        self.__dict__.update(state)


def parse_dataset_name(name: str) -> tuple[str, str]:
    """Split a dataset name into (family, benchmark), e.g. ``"ntu60-xsub"`` -> ``("ntu60", "xsub")``.

    Raises:
        ValueError: if ``name`` is not in :data:`DATASET_NAMES`.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    if name in ("synthetic", "custom"):
        return name, ""
    if name == "nwucla":
        return "nwucla", "xview"
    family, benchmark = name.split("-")
    return family, benchmark


def num_classes(name: str, synthetic: SyntheticConfig | None = None) -> int:
    """Number of classes of a dataset: 60, 120, 51 (PKU-MMD II, the reference's head), 10 (NW-UCLA) or the
    synthetic count.

    Args:
        name: a name from :data:`DATASET_NAMES` other than ``"custom"``.
        synthetic: configuration of the synthetic dataset (default ``SyntheticConfig()``).

    Raises:
        ValueError: for an unknown name, or ``"custom"`` (its classes come from its labels: load it).
    """
    family, _ = parse_dataset_name(name)
    if family == "synthetic":
        return (synthetic or SyntheticConfig()).num_classes
    if family == "custom":
        raise ValueError("a custom dataset's class count comes from its labels; load it with load_dataset")
    return NUM_CLASSES[family]


def load_dataset(
    name: str,
    split: str,
    data_root: str | os.PathLike | None = None,
    *,
    synthetic: SyntheticConfig | None = None,
) -> SkeletonDataset:
    """Load one split of a dataset.

    Args:
        name: a name from :data:`DATASET_NAMES`.
        split: ``"train"`` or ``"val"``.
        data_root: for real datasets, the folder holding ``<family>/<benchmark>/`` (see the module docstring;
            a family or benchmark folder is accepted too); for ``"custom"`` the folder holding the split files.
            Ignored for ``"synthetic"``.
        synthetic: configuration of the synthetic dataset (default ``SyntheticConfig()``); the split follows
            its ``benchmark``. The samples are generated and pre-normalized in memory.

    Returns:
        The dataset; real datasets are memory-mapped, not read into memory.

    Raises:
        ValueError: for an unknown name or split, a missing ``data_root``, or inconsistent files.
        FileNotFoundError: if no folder under ``data_root`` holds the split in a known layout.
    """
    family, benchmark = parse_dataset_name(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if family == "synthetic":
        return _load_synthetic(synthetic or SyntheticConfig(), split)
    if data_root is None:
        expected = "the split files" if family == "custom" else f"{family}/{benchmark}/"
        raise ValueError(f"data_root is required for {name!r} (the folder holding {expected})")
    root = Path(data_root)
    candidates = [root] if family == "custom" else [root, root / benchmark, root / family / benchmark]
    for folder in candidates:
        files = SplitFiles.find(folder, split)
        if files is not None:
            return files.load(_custom_num_classes(folder) if family == "custom" else NUM_CLASSES[family])
    tried = ", ".join(str(folder) for folder in candidates)
    raise FileNotFoundError(
        f"no {name} {split!r} split found; looked in {tried} for {data_file(split)} + {num_frame_file(split)}"
        f" + {label_file(split)} (prepared layout), or {' / '.join(ALTERNATIVE_DATA_FILES).format(split=split)}"
        f" + {label_file(split)} (SkeletonCLR/AimCLR layout). Run `skeleton_moco.py prepare` first."
    )


@dataclass(frozen=True)
class SplitFiles:
    """The files of one split in a prepared folder.

    Attributes:
        data: the (N, 3, T, V, M) array file.
        labels: the ``(sample_names, labels)`` pickle.
        num_frames: the (N,) valid-frame file, or None when frame counts must be derived from the data.
    """

    data: Path
    labels: Path
    num_frames: Path | None

    @classmethod
    def find(cls, folder: Path, split: str) -> SplitFiles | None:
        """Detect the layout of ``folder`` for ``split``; None if it holds neither known layout."""
        labels = folder / label_file(split)
        if not labels.is_file():
            return None
        names = [data_file(split)] + [name.format(split=split) for name in ALTERNATIVE_DATA_FILES]
        for name in names:
            if (folder / name).is_file():
                num_frames = folder / num_frame_file(split)
                return cls(folder / name, labels, num_frames if num_frames.is_file() else None)
        return None

    def load(self, num_classes: int) -> SkeletonDataset:
        """Open the split memory-mapped.

        Raises:
            ValueError: if the files disagree on the number of samples or hold an unexpected shape.
        """
        data = np.load(self.data, mmap_mode="r")
        names, labels = read_labels(self.labels)
        num_frames = None if self.num_frames is None else np.load(self.num_frames)
        try:
            return SkeletonDataset(data, np.asarray(labels), [str(n) for n in names], num_classes, num_frames)
        except ValueError as error:
            raise ValueError(f"inconsistent split files {self.data}, {self.labels}: {error}") from None


def read_labels(path: Path) -> tuple[list, np.ndarray]:
    """Read a ``(sample_names, labels)`` pickle (unpickling: trusted folders only).

    Raises:
        ValueError: if the file does not hold a pair of equally long sequences with integer labels.
    """
    with open(path, "rb") as handle:
        # latin1 reads the Python 2 pickles some released preprocessed data still ships with.
        content = pickle.load(handle, encoding="latin1")
    if not isinstance(content, (tuple, list)) or len(content) != 2:
        raise ValueError(f"{path}: expected a pickled (sample_names, labels) pair, got {type(content).__name__}")
    names, labels = content
    labels = np.asarray(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    if labels.ndim != 1 or len(names) != len(labels) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: expected equally long names and integer labels, got {len(names)} names and "
                         f"labels of shape {labels.shape}, dtype {labels.dtype}")  # fmt: skip
    return list(names), labels


def _custom_num_classes(folder: Path) -> int:
    """The class count of a custom folder: one more than the largest label of either split."""
    largest = [read_labels(folder / label_file(split))[1].max(initial=-1) for split in SPLITS
               if (folder / label_file(split)).is_file()]  # fmt: skip
    return int(max(largest)) + 1


def _load_synthetic(config: SyntheticConfig, split: str) -> SkeletonDataset:
    samples = generate_synthetic(config, split_indices(config, split))
    data = samples.data
    chunk = 256  # bounds the float64 working memory of the pre-normalization
    for start in range(0, len(data), chunk):
        data[start : start + chunk] = prenormalize(data[start : start + chunk])
    return SkeletonDataset(data, samples.labels, samples.names, config.num_classes, samples.num_frames)

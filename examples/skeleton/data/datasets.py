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
frame counts are derived from the data (last non-zero frame + 1). AimCLR's ``feeder/preprocess_ntu`` output,
``{split}_position.npy`` with ``{split}_label.npy`` (int64 (N, 1), no sample names), is read with the names
``{split}_000000``, ``{split}_000001``, ...

Positions are checked on a sample of the data (body 0's spine mid in frame 0, see
:func:`~skeleton.data.prenormalize.coordinate_frame`): data in camera coordinates (SkeletonCLR's
``tools/ntu_gendata`` writes ``{split}_data.npy`` so) is pre-normalized sample by sample as it is read, with a
warning; data centred another way (AimCLR's relative positions) is used as it is, with a warning. A folder that
holds another dataset than the one named (labels, layout or its ``prepare_summary.json`` disagree; NTU-60 data
named NTU-120) is refused with :class:`~skeleton.fileio.InputError`, as is a truncated or unreadable file.

``custom`` is any such folder (``data_root`` points straight at it): joints V and bodies M come from the arrays
(V = 25 for Kinect v2, 20 for Kinect v1; any M), the number of classes from the labels of both splits.

Label pickles are unpickled: only load folders you trust.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..fileio import InputError, load_npy
from .benchmarks import NTU60_MAX_ACTION, NTU60_MAX_SETUP, NUM_CLASSES, PREPARED_SLOTS, SPLITS
from .files import SUMMARY_FILE, data_file, label_file, num_frame_file
from .layouts import NUM_COORDS, SkeletonLayout, layout_for
from .ntu_format import NtuSampleId
from .prenormalize import coordinate_frame, prenormalize
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
ALTERNATIVE_LABEL_FILE = "{split}_label.npy"
"""Labels of AimCLR's ``feeder/preprocess_ntu`` output, int64 (N, 1) without sample names, tried after
``{split}_label.pkl``."""


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
        prenormalize_on_read: whether each sample is pre-normalized as it is read (data in camera coordinates).
    """

    def __init__(
        self,
        data: np.ndarray,
        labels: np.ndarray,
        names: list[str],
        num_classes: int,
        num_frames: np.ndarray | None = None,
        prenormalize_on_read: bool = False,
    ) -> None:
        """Wrap arrays as a dataset.

        Args:
            data: array (N, 3, T, V, M).
            labels: (N,) integer labels in [0, num_classes).
            names: N sample names.
            num_classes: size of the label space.
            num_frames: (N,) valid frame counts; None derives each from its sample's last non-zero frame.
            prenormalize_on_read: pre-normalize each sample (:func:`~skeleton.data.prenormalize.prenormalize`)
                when it is read, for data in camera coordinates; frame counts are derived before.

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
        self.prenormalize_on_read = prenormalize_on_read

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
        if self.prenormalize_on_read:  # after the count: the padding it adds repeats frames past the last one
            sample = prenormalize(sample[None])[0]
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
        ValueError: for an unknown name or split, or a missing ``data_root``.
        InputError: (a ``ValueError``) naming the file, for inconsistent, truncated or unreadable files, or a folder
            that holds another dataset than ``name`` (see the module docstring).
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
        if files is None:
            continue
        if family == "custom":
            return files.load(_custom_num_classes(folder))
        _check_prepared_family(name, family, folder)
        dataset = files.load(NUM_CLASSES[family])
        _check_content_family(name, family, files, dataset)
        return dataset
    tried = ", ".join(str(folder) for folder in candidates)
    raise FileNotFoundError(
        f"no {name} {split!r} split found; looked in {tried} for {data_file(split)} + {num_frame_file(split)}"
        f" + {label_file(split)} (prepared layout), or {' / '.join(ALTERNATIVE_DATA_FILES).format(split=split)}"
        f" + {label_file(split)} or {ALTERNATIVE_LABEL_FILE.format(split=split)} (SkeletonCLR/AimCLR layout)."
        " Run `skeleton_moco.py prepare` first."
    )


@dataclass(frozen=True)
class SplitFiles:
    """The files of one split in a prepared folder.

    Attributes:
        data: the (N, 3, T, V, M) array file.
        labels: the ``(sample_names, labels)`` pickle, or AimCLR's (N, 1) ``.npy`` of labels.
        num_frames: the (N,) valid-frame file, or None when frame counts must be derived from the data.
    """

    data: Path
    labels: Path
    num_frames: Path | None

    @classmethod
    def find(cls, folder: Path, split: str) -> SplitFiles | None:
        """Detect the layout of ``folder`` for ``split``; None if it holds neither known layout."""
        labels = _labels_path(folder, split)
        if labels is None:
            return None
        names = [data_file(split)] + [name.format(split=split) for name in ALTERNATIVE_DATA_FILES]
        for name in names:
            if (folder / name).is_file():
                num_frames = folder / num_frame_file(split)
                return cls(folder / name, labels, num_frames if num_frames.is_file() else None)
        return None

    def load(self, num_classes: int) -> SkeletonDataset:
        """Open the split memory-mapped; check where its positions stand (see the module docstring).

        Raises:
            InputError: if a file is truncated or unreadable, or the files disagree on the number of samples or
                hold an unexpected shape.
        """
        data = load_npy(self.data, mmap_mode="r")
        names, labels = read_labels(self.labels)
        num_frames = None if self.num_frames is None else load_npy(self.num_frames)
        try:
            dataset = SkeletonDataset(data, labels, [str(n) for n in names], num_classes, num_frames)
        except ValueError as error:
            raise InputError(f"inconsistent split files {self.data}, {self.labels}: {error}") from None
        frame, distance = coordinate_frame(data)
        if frame == "camera":
            dataset.prenormalize_on_read = True
            warnings.warn(
                f"{self.data} is in camera coordinates, not pre-normalized (body 0's spine mid {distance:.2f} away"
                " from the origin in frame 0, median of a sample; SkeletonCLR's tools/ntu_gendata writes raw"
                " positions): every sample is pre-normalized as it is read",
                stacklevel=3,
            )
        elif frame == "centred":
            warnings.warn(
                f"{self.data} is centred, but not by the 2s-AGCN pre-normalization of this pipeline and the paper"
                f" (body 0's spine mid {distance:.2f} away from the origin in frame 0, median of a sample; AimCLR's"
                " preprocess_ntu centres on the spine shoulder); used as it is",
                stacklevel=3,
            )
        return dataset


def read_labels(path: Path) -> tuple[list, np.ndarray]:
    """Read a ``(sample_names, labels)`` pickle (unpickling: trusted folders only), or an AimCLR ``{split}_label.npy``
    of (N, 1) or (N,) labels, whose samples are named ``{split}_000000``, ``{split}_000001``, ...

    Raises:
        InputError: if the file cannot be read (e.g. truncated), or does not hold a pair of equally long sequences
            with integer labels (a pickle) or a column of integer labels (an ``.npy``).
    """
    if path.suffix == ".npy":
        labels = load_npy(path)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        split = path.stem.removesuffix("_label")
        names = [f"{split}_{i:06d}" for i in range(len(labels))] if labels.ndim == 1 else []
    else:
        try:
            with open(path, "rb") as handle:
                # latin1 reads the Python 2 pickles some released preprocessed data still ships with.
                content = pickle.load(handle, encoding="latin1")
        except Exception as error:  # unpickling arbitrary bytes can raise almost any exception type
            raise InputError(f"{path}: unreadable label pickle ({type(error).__name__}: {error})") from None
        if not isinstance(content, (tuple, list)) or len(content) != 2:
            raise InputError(f"{path}: expected a pickled (sample_names, labels) pair, got {type(content).__name__}")
        names, labels = content
        labels = np.asarray(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    if labels.ndim != 1 or len(names) != len(labels) or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{path}: expected equally long names and integer labels, got {len(names)} names and "
                         f"labels of shape {labels.shape}, dtype {labels.dtype}")  # fmt: skip
    return list(names), labels


def _labels_path(folder: Path, split: str) -> Optional[Path]:
    """The label file of ``split`` in ``folder``: the pickle, else AimCLR's ``.npy``; None if neither exists."""
    for path in (folder / label_file(split), folder / ALTERNATIVE_LABEL_FILE.format(split=split)):
        if path.is_file():
            return path
    return None


def _custom_num_classes(folder: Path) -> int:
    """The class count of a custom folder: one more than the largest label of either split."""
    paths = [path for path in (_labels_path(folder, split) for split in SPLITS) if path is not None]
    return int(max(read_labels(path)[1].max(initial=-1) for path in paths)) + 1


def _check_prepared_family(name: str, family: str, folder: Path) -> None:
    """Refuse a benchmark folder whose ``prepare_summary.json`` (one level up, as ``prepare`` writes it) names
    another dataset family than ``name``.

    Raises:
        InputError: naming both datasets and the summary.
    """
    summary = folder.parent / SUMMARY_FILE
    if not summary.is_file():
        return
    try:
        prepared = json.loads(summary.read_text(encoding="utf-8")).get("dataset")
    except (ValueError, AttributeError):  # not JSON, or not an object: it says nothing about the family
        return
    if isinstance(prepared, str) and prepared in NUM_CLASSES and prepared != family:
        raise InputError(
            f"dataset {name}, but {folder} was prepared from {prepared} (see {summary}); name that dataset, or"
            f" point --data-root at a preparation of {family}"
        )


def _check_content_family(name: str, family: str, files: SplitFiles, dataset: SkeletonDataset) -> None:
    """Refuse data whose layout is not the family's, or NTU-60 data named NTU-120 (valid labels, but half the
    classes would never be seen).

    NTU-60 data is recognized by labels below 60 and sample names (where they are NTU names) of setups up to 17:
    every split of an NTU-120 benchmark holds all 120 actions and setups above 17.

    Raises:
        InputError: saying what the files hold.
    """
    layout = PREPARED_SLOTS[family]
    if (dataset.num_joints, dataset.num_bodies) != layout:
        raise InputError(
            f"dataset {name} has {layout[0]} joints x {layout[1]} bodies, but {files.data} holds"
            f" {dataset.num_joints} x {dataset.num_bodies}: another dataset's folder?"
        )
    if family != "ntu120" or not len(dataset):
        return
    largest = int(dataset.labels.max())
    setups = [_ntu_setup(sample) for sample in dataset.names]
    known = [setup for setup in setups if setup is not None]
    if largest < NTU60_MAX_ACTION and all(setup <= NTU60_MAX_SETUP for setup in known):
        seen = f" and setups up to S{max(known):03d}" if known else ""
        raise InputError(
            f"dataset {name}, but {files.labels} holds NTU-60 data: labels 0-{largest}{seen} (NTU-120 has 120"
            f" actions and setups up to S032); use --dataset ntu60-..., or point --data-root at a preparation of"
            " ntu120"
        )


def _ntu_setup(name: str) -> Optional[int]:
    """The setup of an NTU sample name (``S001C002...``, also ``S001C002....skeleton``), None for other names."""
    try:
        return NtuSampleId.parse(name).setup
    except ValueError:
        return None


def _load_synthetic(config: SyntheticConfig, split: str) -> SkeletonDataset:
    samples = generate_synthetic(config, split_indices(config, split))
    data = samples.data
    chunk = 256  # bounds the float64 working memory of the pre-normalization
    for start in range(0, len(data), chunk):
        data[start : start + chunk] = prenormalize(data[start : start + chunk])
    return SkeletonDataset(data, samples.labels, samples.names, config.num_classes, samples.num_frames)

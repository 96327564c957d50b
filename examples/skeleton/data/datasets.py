"""Dataset loading: prepared folders (NTU, PKU-MMD, NW-UCLA, SBU, MSR Action3D), any folder in the same layout
(memory-mapped), and the synthetic dataset.

Data-root convention: ``data_root`` is the folder that holds one sub-folder per dataset family, as written by
``skeleton_moco.py prepare --out DATA_ROOT/<family>``::

    DATA_ROOT/ntu60/{xsub,xview}/   DATA_ROOT/ntu120/{xsub,xset}/   DATA_ROOT/pku2/{xsub,xview}/
    DATA_ROOT/nwucla/xview/         DATA_ROOT/sbu/fold1..fold5/     DATA_ROOT/msr-action3d/xsub/

Each benchmark folder holds ``{train,val}_data_joint.npy``, ``{train,val}_num_frame.npy`` and
``{train,val}_label.pkl`` (see ``skeleton.data.prepare``). ``data_root`` may also point at a family folder
(``DATA_ROOT/ntu60``) or straight at a benchmark folder (``DATA_ROOT/ntu60/xsub``). Folders in the
SkeletonCLR / AimCLR layout (``{split}_position.npy`` or ``{split}_data.npy`` or a ``{split}_data_joint.npy``
without ``num_frame`` file, plus ``{split}_label.pkl``; 50 or 300 frames) are accepted too; their valid
frame counts are derived from the data (last non-zero frame + 1). AimCLR's ``feeder/preprocess_ntu`` output,
``{split}_position.npy`` with ``{split}_label.npy`` (int64 (N, 1), no sample names), is read with the names
``{split}_000000``, ``{split}_000001``, ...

Layouts: data arrays are (N, C, T, V, M) with C = 3 (positions) or C = 2 (image keypoints) and V the joints of a
``skeleton.data.layouts.SkeletonLayout``. A prepared folder's layout is the ``layout`` of its
``prepare_summary.json`` (a built-in name or a layout in file form), else its dataset's (the registry's).
A ``custom`` folder's layout is the ``layout`` argument (a built-in name, a layout file or a layout), else the
folder's ``layout.yaml`` / ``layout.yml`` / ``layout.json``, else the built-in layout with V joints; an unknown V
without a declared layout is refused with a message saying how to declare one.

Checks when a split is loaded (each failure a ``skeleton.fileio.InputError`` naming the file):

- every coordinate is finite and within ``MAX_ABS_COORDINATE`` (NaN, inf or 1e30 anywhere: the file and the
  first sample index), read in chunks of at most ``CHECK_CHUNK_BYTES`` from the memory map;
- a split holds at least one sample (an empty validation split would only fail later, inside evaluation);
- custom labels are 0-based without gaps: together the two splits use exactly 0..K-1 (a class may be missing
  from one split). Labels numbered 1..K, or with gaps, are refused, not remapped: a remap would silently change
  what the class numbers in the user's files and in the results mean;
- labels within the dataset's class count; a folder of another dataset than the one named (labels, layout or its
  ``prepare_summary.json`` disagree; NTU-60 data named NTU-120) is refused, as is a truncated or unreadable file.

Positions are checked on a sample of the data (body 0's origin joint in frame 0, see
``skeleton.data.prenormalize.coordinate_frame``): 3-D data in camera coordinates (SkeletonCLR's
``tools/ntu_gendata`` writes ``{split}_data.npy`` so) and 2-D keypoints as a pose estimator writes them are
pre-normalized sample by sample as they are read, with a warning; 3-D data centred another way (AimCLR's
relative positions) is used as it is, with a warning.

``custom`` is any such folder (``data_root`` points straight at it): C, V and M come from the arrays, the number
of classes from the labels of both splits.

Label pickles are unpickled: only load folders you trust.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..fileio import InputError, load_npy
from .formats.ntu import NTU60_MAX_ACTION, NTU60_MAX_SETUP, NtuSampleId
from .layouts import (
    BUILT_IN_LAYOUTS,
    COORDINATE_COUNTS,
    KINECT_V2,
    LayoutSpec,
    SkeletonLayout,
    find_layout_file,
    layout_for,
    layout_from_dict,
    read_layout,
    resolve_layout,
)
from .prenormalize import coordinate_frame, prenormalize
from .prepare import SPLITS, SUMMARY_FILE, data_file, label_file, num_frame_file
from .registry import FAMILIES, DatasetSpec, dataset_spec
from .synthetic import SyntheticConfig, generate_synthetic, split_indices

ALTERNATIVE_DATA_FILES = ("{split}_position.npy", "{split}_data.npy")
"""Data file names of the SkeletonCLR / AimCLR layout, tried after ``{split}_data_joint.npy``."""
ALTERNATIVE_LABEL_FILE = "{split}_label.npy"
"""Labels of AimCLR's ``feeder/preprocess_ntu`` output, int64 (N, 1) without sample names, tried after
``{split}_label.pkl``."""
MAX_ABS_COORDINATE = 1e6
"""Largest coordinate magnitude accepted. No sensor or image gives coordinates beyond a million units (metres,
millimetres or pixels); larger values are corrupt or fill values, which would pass into training as if real."""
CHECK_CHUNK_BYTES = 64 * 2**20
"""Bytes of data read at once by the coordinate check: the memory it needs, whatever the file's size."""


class SkeletonDataset(Dataset):
    """Skeleton sequences with their valid frame counts and labels, and the layout of their joints.

    ``dataset[i]`` is ``(x, num_frames, label)``: ``x`` float32 tensor (C, T, V, M), ``num_frames`` a long
    scalar tensor (valid frames, at least 1) and ``label`` an int.

    Attributes:
        data: array (N, C, T, V, M), possibly a read-only memory map; C = 3 or 2, V the layout's joints.
        layout: the ``skeleton.data.layouts.SkeletonLayout`` of the joint axis.
        num_frames: (N,) int64 valid frame counts, or None when they are derived per sample from the data.
        labels: (N,) int64, 0-based.
        names: sample names.
        num_classes: size of the label space (may exceed ``labels.max() + 1``).
        max_frames: T.
        prenormalize_on_read: whether each sample is pre-normalized as it is read (3-D data in camera
            coordinates, 2-D keypoints in image coordinates).
    """

    def __init__(
        self,
        data: np.ndarray,
        labels: np.ndarray,
        names: list[str],
        num_classes: int,
        layout: SkeletonLayout,
        num_frames: np.ndarray | None = None,
        prenormalize_on_read: bool = False,
    ) -> None:
        """Wrap arrays as a dataset.

        Args:
            data: array (N, C, T, V, M), C = 3 or 2.
            labels: (N,) integer labels in [0, num_classes).
            names: N sample names.
            num_classes: size of the label space.
            layout: the layout of the V joints.
            num_frames: (N,) valid frame counts; None derives each from its sample's last non-zero frame.
            prenormalize_on_read: pre-normalize each sample (``skeleton.data.prenormalize.prenormalize``)
                when it is read; frame counts are derived before.

        Raises:
            ValueError: on inconsistent shapes, joints that are not the layout's, or labels out of range.
        """
        if data.ndim != 5 or data.shape[1] not in COORDINATE_COUNTS or min(data.shape[2:]) < 1:
            raise ValueError(f"data must have shape (N, C, T, V, M) with C in {COORDINATE_COUNTS}, got {data.shape}")
        if data.shape[3] != layout.num_joints:
            raise ValueError(f"data has {data.shape[3]} joints, but layout {layout.name} has {layout.num_joints}")
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
        self.layout = layout
        self.labels = labels
        self.names = list(names)
        self.num_classes = int(num_classes)
        self.num_frames = num_frames
        self.max_frames = int(data.shape[2])
        self.prenormalize_on_read = prenormalize_on_read

    def __len__(self) -> int:
        return len(self.data)

    @property
    def num_coords(self) -> int:
        """C: 3 for positions, 2 for image keypoints."""
        return int(self.data.shape[1])

    @property
    def num_joints(self) -> int:
        return int(self.data.shape[3])

    @property
    def num_bodies(self) -> int:
        return int(self.data.shape[4])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        sample = np.array(self.data[index], dtype=np.float32)  # copies out of the memory map
        if self.num_frames is not None:
            count = int(self.num_frames[index])
        else:
            full = np.flatnonzero(np.any(sample != 0, axis=(0, 2, 3)))
            count = int(full[-1]) + 1 if full.size else 1
        if self.prenormalize_on_read:  # after the count: the padding it adds repeats frames past the last one
            sample = prenormalize(sample[None], self.layout)[0]
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


def load_dataset(
    name: str,
    split: str,
    data_root: str | os.PathLike | None = None,
    *,
    synthetic: SyntheticConfig | None = None,
    layout: LayoutSpec | None = None,
) -> SkeletonDataset:
    """Load one split of a dataset.

    Args:
        name: a name from ``skeleton.data.registry.DATASET_NAMES``.
        split: ``"train"`` or ``"val"``.
        data_root: for prepared datasets, the folder holding ``<family>/<benchmark>/`` (see the module docstring;
            a family or benchmark folder is accepted too); for ``"custom"`` the folder holding the split files.
            Ignored for ``"synthetic"``.
        synthetic: configuration of the synthetic dataset (default ``SyntheticConfig()``); the split follows
            its ``benchmark``. The samples are generated and pre-normalized in memory.
        layout: the skeleton layout of the data: a layout, a built-in layout's name or a layout file. It beats
            the folder's own (layout file or ``prepare_summary.json``); by default that one, else the built-in
            layout with the data's joint count.

    Returns:
        The dataset; real datasets are memory-mapped, not read into memory.

    Raises:
        ValueError: for an unknown name, split or layout, or a missing ``data_root``.
        InputError: (a ``ValueError``) naming the file, for inconsistent, truncated or unreadable files, non-finite
            or absurd coordinates, an empty split, custom labels that are not 0..K-1, an invalid layout file, data
            whose joint count no layout declares, or a folder that holds another dataset than ``name`` (see the
            module docstring).
        FileNotFoundError: if no folder under ``data_root`` holds the split in a known layout.

    Example:
        >>> from skeleton.data.synthetic import SyntheticConfig
        >>> small = SyntheticConfig(num_classes=2, num_performers=4, num_cameras=2, repetitions=1, max_frames=20,
        ...                         min_frames=10)
        >>> dataset = load_dataset("synthetic", "val", synthetic=small)
        >>> dataset.layout.name, dataset.num_coords, dataset[0][0].shape
        ('kinect_v2', 3, torch.Size([3, 20, 25, 2]))
    """
    spec = dataset_spec(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    declared = None if layout is None else resolve_layout(layout)
    if spec.family == "synthetic":
        return _load_synthetic(synthetic or SyntheticConfig(), split)
    if data_root is None:
        expected = "the split files" if spec.family == "custom" else f"{spec.family}/{spec.benchmark}/"
        raise ValueError(f"data_root is required for {name!r} (the folder holding {expected})")
    root = Path(data_root)
    custom = spec.family == "custom"
    candidates = [root] if custom else [root, root / spec.benchmark, root / spec.family / spec.benchmark]
    for folder in candidates:
        files = SplitFiles.find(folder, split)
        if files is None:
            continue
        if custom:
            layout_file = find_layout_file(folder)
            if declared is None and layout_file is not None:
                declared = read_layout(layout_file)
            return files.load(_custom_num_classes(folder), declared)
        prepared = _prepared_summary(folder)
        _check_prepared_family(name, spec, prepared)
        dataset = files.load(spec.num_classes, declared or _prepared_layout(spec, prepared))
        _check_content_family(spec, files, dataset)
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
        data: the (N, C, T, V, M) array file.
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

    def load(self, num_classes: int, layout: SkeletonLayout | None) -> SkeletonDataset:
        """Open the split memory-mapped, check its values, and see where its positions stand (see the module
        docstring).

        Args:
            num_classes: size of the label space.
            layout: the layout of the data's joints; None: the built-in layout with the data's joint count.

        Raises:
            InputError: if a file is truncated or unreadable, the files disagree on the number of samples or hold
                an unexpected shape or joints that are not the layout's (or no built-in layout has that many), the
                split is empty, or a coordinate is non-finite or absurd.
        """
        data = load_npy(self.data, mmap_mode="r")
        if data.ndim != 5:
            raise InputError(f"{self.data}: expected an array of shape (N, C, T, V, M), got {data.shape}")
        if layout is None:
            try:
                layout = layout_for(data.shape[3])
            except ValueError as error:
                raise InputError(f"{self.data}: {error}") from None
        names, labels = read_labels(self.labels)
        num_frames = None if self.num_frames is None else load_npy(self.num_frames)
        try:
            dataset = SkeletonDataset(data, labels, [str(n) for n in names], num_classes, layout, num_frames)
        except ValueError as error:
            raise InputError(f"inconsistent split files {self.data}, {self.labels}: {error}") from None
        if not len(dataset):
            raise InputError(f"{self.data}: the split holds no samples; every split needs at least one")
        check_coordinates(data, self.data)
        frame, distance = coordinate_frame(data, layout)
        if frame in ("camera", "image"):
            dataset.prenormalize_on_read = True
            source = (
                "3-D data in camera coordinates, not pre-normalized (SkeletonCLR's tools/ntu_gendata writes raw"
                " positions)"
                if frame == "camera"
                else "2-D keypoints in image coordinates, not pre-normalized"
            )
            warnings.warn(
                f"{self.data} holds {source}: body 0's {layout.joint_names[layout.origin]} lies {distance:.2f} away"
                " from the origin in frame 0 (median of a sample); every sample is pre-normalized as it is read",
                stacklevel=3,
            )
        elif frame == "centred":
            warnings.warn(
                f"{self.data} is centred, but not by the 2s-AGCN pre-normalization of this pipeline and the paper"
                f" (body 0's {layout.joint_names[layout.origin]} {distance:.2f} away from the origin in frame 0,"
                " median of a sample; AimCLR's preprocess_ntu centres on the spine shoulder); used as it is",
                stacklevel=3,
            )
        return dataset


def check_coordinates(data: np.ndarray, path: Path) -> None:
    """Refuse data with a non-finite coordinate or one beyond ``MAX_ABS_COORDINATE``, reading it in chunks of
    at most ``CHECK_CHUNK_BYTES`` (a memory map stays on disk).

    Args:
        data: array (N, ...), e.g. a memory map of the file.
        path: the file, for the message.

    Raises:
        InputError: naming the file, the first offending sample, where in it and the value.
    """
    per_sample = max(1, int(np.prod(data.shape[1:])) * data.dtype.itemsize)
    step = max(1, CHECK_CHUNK_BYTES // per_sample)
    for start in range(0, len(data), step):
        chunk = np.asarray(data[start : start + step])
        # Two reductions without temporaries; NaN propagates through both and fails the comparisons, made in
        # Python floats (the bound cast to float16 would be inf).
        low, high = float(chunk.min(initial=0)), float(chunk.max(initial=0))
        if -MAX_ABS_COORDINATE <= low and high <= MAX_ABS_COORDINATE:
            continue
        bad = ~(np.abs(chunk, dtype=np.float64) <= MAX_ABS_COORDINATE)  # also true for NaN, which compares false
        position = np.unravel_index(int(np.argmax(bad)), chunk.shape)
        sample, where = start + int(position[0]), tuple(int(i) for i in position[1:])
        raise InputError(
            f"{path}: sample {sample} holds the coordinate {float(chunk[position])!r} at (coordinate, frame, joint,"
            f" body) {where}; coordinates must be finite and within +-{MAX_ABS_COORDINATE:g}"
        )


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
    """The class count K of a custom folder, whose two splits together must use exactly the labels 0..K-1.

    Raises:
        InputError: naming the label files and what they hold, for labels that do not start at 0 or have gaps.
    """
    paths = [path for path in (_labels_path(folder, split) for split in SPLITS) if path is not None]
    used = np.unique(np.concatenate([read_labels(path)[1] for path in paths]))
    if used.size and (used[0] != 0 or used[-1] != used.size - 1):
        low, high = int(used[0]), int(used[-1])
        missing = sorted(set(range(high + 1)) - set(used.tolist()))
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise InputError(
            f"{' and '.join(map(str, paths))}: labels must be 0-based class indices without gaps (the splits"
            f" together using 0..K-1), found {used.size} distinct labels from {low} to {high}"
            + (f", missing {shown}" if missing else "")
            + (f" (numbered from {low}? subtract {low})" if low > 0 and high - low == used.size - 1 else "")
            + f"; renumber them as 0..{used.size - 1}"
        )
    return int(used.size)


def _prepared_summary(folder: Path) -> dict[str, Any]:
    """The ``prepare_summary.json`` one level above a benchmark folder (where ``prepare`` writes it), or ``{}``.

    Raises:
        InputError: naming the file, if it exists but is not a JSON object.
    """
    summary = folder.parent / SUMMARY_FILE
    if not summary.is_file():
        return {}
    try:
        content = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{summary}: unreadable preparation summary ({error})") from None
    if not isinstance(content, dict):
        raise InputError(f"{summary}: expected a JSON object, got {type(content).__name__}")
    return {**content, "_path": str(summary)}


def _prepared_layout(spec: DatasetSpec, summary: dict[str, Any]) -> SkeletonLayout:
    """A prepared folder's layout: its summary's ``layout`` (a built-in name or a layout in file form), else the
    dataset's.

    Raises:
        InputError: naming the summary, for a ``layout`` entry that is neither.
    """
    declared = summary.get("layout")
    if declared is None:
        return BUILT_IN_LAYOUTS[spec.layout]
    if isinstance(declared, str) and declared in BUILT_IN_LAYOUTS:
        return BUILT_IN_LAYOUTS[declared]
    if isinstance(declared, dict):
        return layout_from_dict(declared, source=f"{summary['_path']}: layout")
    raise InputError(
        f"{summary['_path']}: layout {declared!r} is neither a built-in layout ({', '.join(BUILT_IN_LAYOUTS)}) nor"
        " a layout in file form"
    )


def _check_prepared_family(name: str, spec: DatasetSpec, summary: dict[str, Any]) -> None:
    """Refuse a benchmark folder whose ``prepare_summary.json`` names another dataset family than ``name``.

    Raises:
        InputError: naming both datasets and the summary.
    """
    prepared = summary.get("dataset")
    if isinstance(prepared, str) and prepared != spec.family and prepared in FAMILIES:
        raise InputError(
            f"dataset {name}, but its folder was prepared from {prepared} (see {summary['_path']}); name that"
            f" dataset, or point --data-root at a preparation of {spec.family}"
        )


def _check_content_family(spec: DatasetSpec, files: SplitFiles, dataset: SkeletonDataset) -> None:
    """Refuse data whose layout or bodies are not the dataset's, or NTU-60 data named NTU-120 (valid labels, but
    half the classes would never be seen).

    NTU-60 data is recognized by labels below 60 and sample names (where they are NTU names) of setups up to 17:
    every split of an NTU-120 benchmark holds all 120 actions and setups above 17.

    Raises:
        InputError: saying what the files hold.
    """
    expected = BUILT_IN_LAYOUTS[spec.layout]
    if (dataset.num_joints, dataset.num_bodies) != (expected.num_joints, spec.num_bodies):
        raise InputError(
            f"dataset {spec.name} has {expected.num_joints} joints x {spec.num_bodies} bodies, but {files.data}"
            f" holds {dataset.num_joints} x {dataset.num_bodies}: another dataset's folder?"
        )
    if spec.family != "ntu120":
        return
    largest = int(dataset.labels.max())
    setups = [_ntu_setup(sample) for sample in dataset.names]
    known = [setup for setup in setups if setup is not None]
    if largest < NTU60_MAX_ACTION and all(setup <= NTU60_MAX_SETUP for setup in known):
        seen = f" and setups up to S{max(known):03d}" if known else ""
        raise InputError(
            f"dataset {spec.name}, but {files.labels} holds NTU-60 data: labels 0-{largest}{seen} (NTU-120 has 120"
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
        data[start : start + chunk] = prenormalize(data[start : start + chunk], KINECT_V2)
    return SkeletonDataset(data, samples.labels, samples.names, config.num_classes, KINECT_V2, samples.num_frames)

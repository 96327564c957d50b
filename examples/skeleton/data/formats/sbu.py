"""SBU Kinect Interaction: two people, 15 OpenNI joints each, 8 interaction classes, five subject-pair folds.

``prepare --dataset sbu --raw DIR --fold N`` reads every ``<pair>/<class>/<take>/skeleton_pos.txt`` under ``DIR``
(e.g. ``s01s02/03/001/skeleton_pos.txt``: pair s01s02, class 03, take 001) into ``fold<N>/``: the pairs of fold N
validate, the other four folds' pairs train. A sample is named ``<pair>_<class>_<take>`` (``s01s02_03_001``), its
label is the class folder minus one (0..7).

Each line of a file is one frame: the frame number, then x, y, z of the 15 joints of person 1, then of person 2
(91 comma-separated numbers; the released files end lines with CRLF). Frame numbers start anywhere and must
increase. The joints, in file order (kept as the prepared order, the ``openni15`` layout): head, neck, torso, left shoulder, left elbow,
left hand, right shoulder, right elbow, right hand, left hip, left knee, left foot, right hip, right knee, right
foot. The coordinates are normalized (x, y in [0, 1] over the image, z a scaled depth); they are turned back into
metres with the dataset's own inverse, ``X = (1280 - 2560 x) / 1000``, ``Y = (960 - 1920 y) / 1000``,
``Z = z * 10000 / 7.8125 / 1000`` (bone lengths then do not vary with the depth). A person whose 45 values are
all zero in a frame is absent there and stays zero.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from einops import rearrange

from . import NUM_COORDS, Cut, FileJob, PrepareOption, RawFormat, SampleRef, Scan, find_files, unique_samples
from .text import SkeletonFormatError, parse_number_lines, read_lines

FILE_NAME = "skeleton_pos.txt"
NUM_JOINTS = 15
NUM_BODIES = 2
NUM_CLASSES = 8
VALUES_PER_LINE = 1 + NUM_BODIES * NUM_JOINTS * NUM_COORDS
"""The frame number, then x, y, z of every joint of both people."""
FOLDS: dict[int, frozenset[str]] = {
    1: frozenset({"s01s02", "s03s04", "s05s02", "s06s04"}),
    2: frozenset({"s02s03", "s02s07", "s03s05", "s05s03"}),
    3: frozenset({"s01s03", "s01s07", "s07s01", "s07s03"}),
    4: frozenset({"s02s01", "s02s06", "s03s02", "s03s06"}),
    5: frozenset({"s04s02", "s04s03", "s04s06", "s06s02", "s06s03"}),
}
"""The dataset's five-fold cross-validation over subject pairs: each fold validates once."""
FULL_FILE_COUNT = 282
"""Files of the complete release."""
FOLD_SIZES: dict[str, tuple[int, int]] = {
    "fold1": (227, 55),
    "fold2": (230, 52),
    "fold3": (226, 56),
    "fold4": (228, 54),
    "fold5": (217, 65),
}
"""(train, val) sequences of each fold on the complete release (fold 1's are the published ones, the others
counted on the release's folders)."""

# Inverse of the dataset's normalization, per coordinate: metres = offset + scale * value.
_OFFSET = np.array([1280.0, 960.0, 0.0]) / 1000.0
_SCALE = np.array([-2560.0, -1920.0, 10000.0 / 7.8125]) / 1000.0

_PAIR = re.compile(r"s\d{2}s\d{2}")
_CLASS = re.compile(r"0[1-8]")
_TAKE = re.compile(r"\d{3}")


@dataclass(frozen=True)
class SbuSampleId:
    """The sample a file's folders name: ``<pair>/<class>/<take>/skeleton_pos.txt``."""

    pair: str
    action: int  # 1..8, as the class folder
    take: str

    @classmethod
    def parse(cls, path: str) -> SbuSampleId:
        """Parse a file's path such as ``raw/s01s02/03/001/skeleton_pos.txt``.

        Raises:
            ValueError: if the path does not end in ``sXXsYY/0C/TTT/skeleton_pos.txt`` with a class 01..08.
        """
        parts = Path(path).parts[-4:]
        if (
            len(parts) != 4
            or parts[3] != FILE_NAME
            or not _PAIR.fullmatch(parts[0])
            or not _CLASS.fullmatch(parts[1])
            or not _TAKE.fullmatch(parts[2])
        ):
            raise ValueError(
                f"{path!r} is not an SBU file path (expected <pair sXXsYY>/<class 01-08>/<take NNN>/{FILE_NAME})"
            )
        return cls(parts[0], int(parts[1]), parts[2])

    @property
    def name(self) -> str:
        """``<pair>_<class>_<take>``, e.g. ``s01s02_03_001``."""
        return f"{self.pair}_{self.action:02d}_{self.take}"


def read_sbu(path: str | os.PathLike) -> np.ndarray:
    """Read one ``skeleton_pos.txt`` file.

    Args:
        path: the file.

    Returns:
        float64 array (2, F, 15, 3): both people's joints in metres, zero where a person is absent.

    Raises:
        SkeletonFormatError: for an empty file, a line without 91 comma-separated values, a non-numeric or
            out-of-range value, or a frame number that is not an integer or does not increase.
        OSError: if the file cannot be read.
    """
    lines = read_lines(path)
    values = parse_number_lines(lines, list(range(len(lines))), VALUES_PER_LINE, path, separator=",")
    frames = values[:, 0]
    for line in np.flatnonzero(frames != np.round(frames)):
        raise SkeletonFormatError(path, int(line) + 1, f"frame number {frames[line]:g} is not an integer")
    for line in np.flatnonzero(np.diff(frames) <= 0):
        raise SkeletonFormatError(
            path, int(line) + 2, f"frame number {frames[line + 1]:g} does not increase (after {frames[line]:g})"
        )
    normalized = rearrange(values[:, 1:], "f (m v c) -> m f v c", m=NUM_BODIES, v=NUM_JOINTS, c=NUM_COORDS)
    present = np.any(normalized != 0, axis=(2, 3), keepdims=True)
    return np.where(present, _OFFSET + _SCALE * normalized, 0.0)


def read_job(job: FileJob) -> list[Cut]:
    """Read one SBU file: both people (2, F, 15, 3)."""
    bodies = read_sbu(job.path)
    return [Cut(bodies, bodies.shape[1])]


def scan(raw: Path, options: Mapping[str, Any]) -> Scan:
    """Find the SBU files under ``raw`` and split them by ``options["fold"]`` (1..5).

    Raises:
        ValueError: for a fold outside 1..5.
    """
    fold = options["fold"]
    if fold not in FOLDS:
        raise ValueError(f"--fold must be one of {sorted(FOLDS)}, got {fold!r}")
    known_pairs = frozenset().union(*FOLDS.values())
    found = Scan(benchmarks=(f"fold{fold}",), reader=read_job)
    for path, sample in unique_samples(
        find_files(raw, FILE_NAME, found), lambda path: SbuSampleId.parse(str(path)), lambda s: s.name, found
    ):
        if sample.pair not in known_pairs:
            found.malformed.append(f"{path}: pair {sample.pair} is in none of the five folds ({_describe_folds()})")
            continue
        train = (sample.pair not in FOLDS[fold],)
        found.add(path, [SampleRef(sample.name, sample.action - 1, train, None, str(path))])
    found.complete = len(found.samples) == FULL_FILE_COUNT and not found.malformed
    return found


def _describe_folds() -> str:
    return "; ".join(f"fold {fold}: {' '.join(sorted(pairs))}" for fold, pairs in FOLDS.items())


SBU = RawFormat(
    family="sbu",
    raw_help=f"<pair>/<class>/<take>/{FILE_NAME} files",
    benchmarks=tuple(FOLD_SIZES),
    num_classes=NUM_CLASSES,
    layout="openni15",
    num_joints=NUM_JOINTS,
    num_bodies=NUM_BODIES,
    scan=scan,
    options=(
        PrepareOption(
            "--fold",
            "the subject-pair fold that validates (the other four train)",
            default=1,
            choices=tuple(FOLDS),
            type=int,
        ),  # fmt: skip
    ),
    published_sizes=FOLD_SIZES,
)

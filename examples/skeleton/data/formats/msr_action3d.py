"""MSR Action3D: one person, 20 Kinect v1 joints, 20 actions, 10 subjects, cross-subject protocol.

``prepare --dataset msr-action3d --raw DIR`` reads every ``aAA_sSS_eEE_skeleton3D.txt`` under ``DIR`` (action
01..20, subject 01..10, take) into ``xsub/``: odd subjects train, even subjects validate. A sample is named
``aAA_sSS_eEE``, its label is the action minus one (0..19).

Each line of a file is one joint, ``x y z c`` (metres in the camera frame, and a confidence that is not used),
20 lines per frame. The file's joint order (1-based: left shoulder, right shoulder, shoulder centre, spine, left
hip, right hip, hip centre, left elbow, right elbow, left wrist, right wrist, left hand, right hand, left knee,
right knee, left ankle, right ankle, left foot, right foot, head) is reordered into the Kinect v1 order of NW-UCLA
(``FILE_TO_KINECT_V1``). Frames whose joints are all zero (tracking lost, at the start or end of some takes)
are dropped and reported with the sample; a file with no other frame is malformed.
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

from . import NUM_COORDS, Cut, FileJob, RawFormat, SampleRef, Scan, find_files, unique_samples
from .text import SkeletonFormatError, parse_number_lines, read_lines

SUFFIX = "_skeleton3D.txt"
NUM_JOINTS = 20
NUM_ACTIONS = 20
NUM_SUBJECTS = 10
VALUES_PER_LINE = NUM_COORDS + 1  # x y z and a confidence
TRAIN_SUBJECTS: frozenset[int] = frozenset({1, 3, 5, 7, 9})
"""Cross-subject protocol: odd subjects train, even subjects validate."""

FILE_TO_KINECT_V1: tuple[int, ...] = (6, 3, 2, 19, 0, 7, 9, 11, 1, 8, 10, 12, 4, 13, 15, 17, 5, 14, 16, 18)
"""``FILE_TO_KINECT_V1[k]`` is the 0-based file joint of Kinect v1 joint ``k`` (hip centre, spine, shoulder
centre, head, left shoulder/elbow/wrist/hand, right shoulder/elbow/wrist/hand, left hip/knee/ankle/foot, right
hip/knee/ankle/foot)."""

FULL_FILE_COUNT = 567
"""Files of the complete release."""
KNOWN_BROKEN = frozenset({"a13_s09_e02"})
"""Samples of the complete release with no valid frame."""
PUBLISHED_SIZES: dict[str, tuple[int, int]] = {"xsub": (291, 275)}
"""(train, val) sequences of the complete release without ``KNOWN_BROKEN`` (counted on the release)."""

_NAME = re.compile(r"a(\d{2})_s(\d{2})_e(\d{2})")


@dataclass(frozen=True)
class MsrSampleId:
    """The ids of a file name ``aAA_sSS_eEE_skeleton3D.txt`` (all 1-based)."""

    action: int
    subject: int
    take: int

    @classmethod
    def parse(cls, path: str) -> MsrSampleId:
        """Parse a file name such as ``a01_s02_e03_skeleton3D.txt``.

        Raises:
            ValueError: if the name does not follow the scheme, or names an action or subject outside 1..20 / 1..10.
        """
        name = Path(path).name
        match = _NAME.fullmatch(name.removesuffix(SUFFIX)) if name.endswith(SUFFIX) else None
        if match is None:
            raise ValueError(f"{name!r} is not an MSR Action3D file name (expected aAA_sSS_eEE{SUFFIX})")
        sample = cls(*(int(group) for group in match.groups()))
        if not 1 <= sample.action <= NUM_ACTIONS:
            raise ValueError(f"{name!r}: action a{sample.action:02d} is outside a01-a{NUM_ACTIONS}")
        if not 1 <= sample.subject <= NUM_SUBJECTS:
            raise ValueError(f"{name!r}: subject s{sample.subject:02d} is outside s01-s{NUM_SUBJECTS}")
        return sample

    @property
    def name(self) -> str:
        """``aAA_sSS_eEE``."""
        return f"a{self.action:02d}_s{self.subject:02d}_e{self.take:02d}"


def read_msr(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read one ``*_skeleton3D.txt`` file.

    Args:
        path: the file.

    Returns:
        ``(joints, dropped)``: float64 (F, 20, 3) positions in metres in the Kinect v1 order, without the frames
        that were all zero, and the number of such frames dropped.

    Raises:
        SkeletonFormatError: for an empty file, a line without 4 values, a non-numeric or out-of-range value, a
            number of lines that is not a multiple of 20, or a file without any frame that is not all zero.
        OSError: if the file cannot be read.
    """
    lines = read_lines(path)
    if len(lines) % NUM_JOINTS:
        raise SkeletonFormatError(
            path, len(lines), f"{len(lines)} joint lines, not a multiple of {NUM_JOINTS} (truncated last frame?)"
        )
    values = parse_number_lines(lines, list(range(len(lines))), VALUES_PER_LINE, path)
    joints = rearrange(values[:, :NUM_COORDS], "(f v) c -> f v c", v=NUM_JOINTS)[:, FILE_TO_KINECT_V1]
    tracked = np.any(joints != 0, axis=(1, 2))
    if not tracked.any():
        raise SkeletonFormatError(path, 1, f"no valid frame: all {len(joints)} frames are all zero (tracking lost)")
    return joints[tracked], int((~tracked).sum())


def read_job(job: FileJob) -> list[Cut]:
    """Read one MSR Action3D file: one body (1, F, 20, 3); dropped all-zero frames are noted."""
    joints, dropped = read_msr(job.path)
    total = len(joints) + dropped
    message = f"{job.path}: {dropped} of {total} frames all zero (tracking lost), dropped" if dropped else ""
    return [Cut(joints[None], len(joints), message)]


def scan(raw: Path, options: Mapping[str, Any]) -> Scan:
    """Find the MSR Action3D files under ``raw`` (no options)."""
    found = Scan(benchmarks=("xsub",), reader=read_job)
    files = find_files(raw, SUFFIX, found)
    for path, sample in unique_samples(files, lambda path: MsrSampleId.parse(path.name), lambda s: s.name, found):
        train = (sample.subject in TRAIN_SUBJECTS,)
        found.add(path, [SampleRef(sample.name, sample.action - 1, train, None, str(path))])
    found.complete = len(found.samples) == FULL_FILE_COUNT and not found.malformed
    return found


MSR_ACTION3D = RawFormat(
    family="msr-action3d",
    raw_help=f"aAA_sSS_eEE{SUFFIX} files",
    benchmarks=("xsub",),
    num_classes=NUM_ACTIONS,
    layout="kinect_v1",
    num_joints=NUM_JOINTS,
    num_bodies=1,
    scan=scan,
    published_sizes=PUBLISHED_SIZES,
    known_broken=KNOWN_BROKEN,
)

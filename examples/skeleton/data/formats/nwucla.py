"""NW-UCLA Multiview Action 3D skeletons in the per-sample JSON form (as CTR-GCN and others distribute them).

A file ``aAA_sSS_eEE_vVV.json`` (action, subject, repetition, view) holds
``{"file_name": "aAA_sSS_eEE_vVV", "skeletons": [[[x, y, z] * 20] * T], "label": 1..10}``: one person, T >= 1
frames of the 20 Kinect v1 joints in metres (``skeleton.data.layouts.KINECT_V1``, the same order as NTU's
joints 1-20). The label is the action's position in ``NWUCLA_ACTIONS``, plus one.

``prepare --dataset nwucla --raw all_sqe`` reads every such file under ``all_sqe`` into ``xview/`` (views 1 and 2
train, view 3 validates), one body: samples of shape (3, 300, 20, 1).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import NUM_COORDS, Cut, FileJob, RawFormat, SampleRef, Scan, find_files, unique_samples
from .text import SkeletonFormatError, describe_out_of_range, out_of_range

NWUCLA_NAME = re.compile(r"a(\d{2})_s(\d{2})_e(\d{2})_v(\d{2})")
NUM_VIEWS = 3
NWUCLA_JOINTS = 20
"""Kinect v1 joints."""
NWUCLA_ACTIONS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)
"""NW-UCLA action ids (``aAA`` in file names); label = position in this tuple (a07 and a10 do not exist)."""
TRAIN_VIEWS: frozenset[int] = frozenset({1, 2})
"""Cross-view protocol: views 1 and 2 train, view 3 tests."""
FULL_FILE_COUNT = 1_484
"""Files of the complete release."""


@dataclass(frozen=True)
class NwuclaSampleId:
    """The ids encoded in an NW-UCLA file name ``aAA_sSS_eEE_vVV`` (as written: actions 1-12 without 7 and 10,
    views 1-3)."""

    action: int
    subject: int
    repetition: int
    view: int

    @classmethod
    def parse(cls, name: str) -> NwuclaSampleId:
        """Parse a sample or file name such as ``a01_s01_e00_v01.json``.

        Raises:
            ValueError: if the name does not follow the scheme, or names an action or view NW-UCLA lacks.
        """
        match = NWUCLA_NAME.fullmatch(Path(name).name.removesuffix(".json"))
        if match is None:
            raise ValueError(f"{name!r} is not an NW-UCLA sample name (expected aAA_sSS_eEE_vVV[.json])")
        sample = cls(*(int(group) for group in match.groups()))
        if sample.action not in NWUCLA_ACTIONS:
            raise ValueError(f"{name!r}: action a{sample.action:02d} is not one of NW-UCLA's {NWUCLA_ACTIONS}")
        if not 1 <= sample.view <= NUM_VIEWS:
            raise ValueError(f"{name!r}: view v{sample.view:02d} is not in 1-{NUM_VIEWS}")
        return sample

    @property
    def name(self) -> str:
        """The canonical sample name, without extension."""
        return f"a{self.action:02d}_s{self.subject:02d}_e{self.repetition:02d}_v{self.view:02d}"

    @property
    def label(self) -> int:
        """0-based class: the action's position in action-id order."""
        return NWUCLA_ACTIONS.index(self.action)


def read_nwucla(path: str | os.PathLike) -> np.ndarray:
    """Read one NW-UCLA JSON file.

    Args:
        path: the ``.json`` file; its name must follow ``NwuclaSampleId``.

    Returns:
        float64 array (T, 20, 3), T >= 1, joint positions in metres.

    Raises:
        SkeletonFormatError: for a file that is not UTF-8 or not valid JSON (e.g. a truncated file; the line is the
            parser's), a missing or ragged ``skeletons`` array, a frame without 20 joints of 3 values, non-numeric,
            non-finite or out-of-range coordinates (see ``skeleton.data.formats.text.MAX_ABS_VALUE``), no frame
            at all, or a ``label`` that disagrees with the file name.
        ValueError: if the file name does not follow the NW-UCLA scheme.
        OSError: if the file cannot be read.
    """
    sample = NwuclaSampleId.parse(str(path))
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SkeletonFormatError(path, error.lineno, f"invalid JSON: {error.msg} (column {error.colno})") from None
    except UnicodeDecodeError as error:
        raise SkeletonFormatError(path, 1, f"not UTF-8 text (byte {error.start}): {error.reason}") from None
    except RecursionError:  # arrays nested thousands deep exhaust the parser's stack
        raise SkeletonFormatError(path, 1, "invalid JSON: nested too deeply") from None
    if not isinstance(content, dict) or "skeletons" not in content:
        raise SkeletonFormatError(path, 1, 'expected a JSON object with a "skeletons" array')
    frames = content["skeletons"]
    if not isinstance(frames, list) or not frames:
        raise SkeletonFormatError(path, 1, f'"skeletons" must be a non-empty list of frames, got {_describe(frames)}')
    for number, frame in enumerate(frames, start=1):
        if not _is_frame(frame):
            raise SkeletonFormatError(
                path, 1, f"frame {number}/{len(frames)}: expected {NWUCLA_JOINTS} joints of {NUM_COORDS} numbers"
            )
    try:
        joints = np.array(frames, dtype=np.float64)
    except OverflowError:  # an integer literal beyond float64, e.g. 1 followed by 400 zeros
        joints = np.array([[[_as_float(value) for value in joint] for joint in frame] for frame in frames])
    bad = out_of_range(joints)
    if bad.any():
        frame, joint, coordinate = (int(i) for i in np.argwhere(bad)[0])
        value = frames[frame][joint][coordinate]
        raise SkeletonFormatError(
            path, 1, f"frame {frame + 1}/{len(frames)}, joint {joint + 1}: {describe_out_of_range(value)}"
        )
    label = content.get("label")
    if label is not None and label != sample.label + 1:
        raise SkeletonFormatError(
            path, 1, f"label {label!r} disagrees with action a{sample.action:02d} (label {sample.label + 1})"
        )
    return joints


def _is_frame(frame: object) -> bool:
    return (
        isinstance(frame, list)
        and len(frame) == NWUCLA_JOINTS
        and all(
            isinstance(joint, list)
            and len(joint) == NUM_COORDS
            and all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in joint)
            for joint in frame
        )
    )


def _as_float(value: float) -> float:
    """``float(value)``, or infinity for an integer too large for a float (refused as out of range then)."""
    try:
        return float(value)
    except OverflowError:
        return float("inf")


def _describe(value: object) -> str:
    if isinstance(value, list):
        return "an empty list"
    return type(value).__name__


def read_job(job: FileJob) -> list[Cut]:
    """Read one NW-UCLA file: one body (1, T, 20, 3)."""
    joints = read_nwucla(job.path)
    return [Cut(joints[None], len(joints))]


def scan(raw: Path, options: Mapping[str, Any]) -> Scan:
    """Find the NW-UCLA files under ``raw`` (no options)."""
    found = Scan(benchmarks=("xview",), reader=read_job)
    for path, sample in unique_samples(
        find_files(raw, ".json", found), lambda path: NwuclaSampleId.parse(path.name), lambda s: s.name, found
    ):
        found.add(path, [SampleRef(sample.name, sample.label, (sample.view in TRAIN_VIEWS,), None, str(path))])
    found.complete = len(found.samples) == FULL_FILE_COUNT and not found.malformed
    return found


NWUCLA = RawFormat(
    family="nwucla",
    raw_help="the all_sqe folder of aAA_sSS_eEE_vVV.json files",
    benchmarks=("xview",),
    num_classes=len(NWUCLA_ACTIONS),
    layout="kinect_v1",
    num_joints=NWUCLA_JOINTS,
    num_bodies=1,
    scan=scan,
    published_sizes={"xview": (1_020, 464)},
)

"""NTU RGB+D 60 / 120 ``.skeleton`` files: the raw format, its sample names and benchmarks, body selection.

A file is: the frame count; per frame a body count (0 or more); per body a line of 10 values (bodyID
clippedEdges handLeftConfidence handLeftState handRightConfidence handRightState isRestricted leanX leanY
trackingState), the joint count (25) and 25 lines of 12 values (x y z depthX depthY colorX colorY orientW
orientX orientY orientZ trackingState). Copies in circulation use LF or CRLF endings, may write numbers in
exponent notation (``8.094816E-05``) and carry 64-bit body ids; all of that is accepted.

``prepare --dataset ntu60|ntu120 --raw RAW`` reads every ``*.skeleton`` under ``RAW`` (searched recursively, so
the NTU-60 and NTU-120 archives can sit side by side) that belongs to the dataset: ``ntu60`` skips setups above
17 and actions above 60. ``--ignore-list`` names the samples to leave out (the official missing-skeleton lists).
A sample keeps its first 300 frames, up to 4 bodies per frame by their position in the frame, and of those the
2 of highest motion energy, as the reference preprocessing does.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import MAX_FRAMES, Cut, FileJob, PrepareOption, RawFormat, SampleRef, Scan, find_files, unique_samples
from .text import SkeletonFormatError, parse_floats, parse_number_lines

NUM_JOINTS = 25
"""Joints of a Kinect v2 skeleton (NTU RGB+D and PKU-MMD)."""
NUM_BODIES = 2
"""Bodies per prepared NTU / PKU-MMD sample (the two most active)."""
MAX_BODIES_READ = 4
"""Bodies per frame considered when reading NTU files; further bodies in a frame are ignored."""

NTU60_XSUB_TRAIN_PERFORMERS: frozenset[int] = frozenset(
    {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
)
NTU120_XSUB_TRAIN_PERFORMERS: frozenset[int] = NTU60_XSUB_TRAIN_PERFORMERS | frozenset(
    {45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89,
     91, 92, 93, 94, 95, 97, 98, 100, 103}
)  # fmt: skip
XVIEW_TRAIN_CAMERAS: frozenset[int] = frozenset({2, 3})
"""Cross-view: cameras 2 and 3 train, camera 1 tests. Cross-setup (NTU-120): even setups train."""

NTU60_MAX_SETUP, NTU60_MAX_ACTION = 17, 60
NTU120_MAX_SETUP, NTU120_MAX_ACTION = 32, 120
NTU_MAX_CAMERA, NTU120_MAX_PERFORMER, NTU_MAX_REPLICATION = 3, 106, 2

FULL_FILE_COUNTS: dict[str, int] = {"ntu60": 56_880, "ntu120": 114_480}
"""Skeleton files of the complete releases, before removing the missing-skeleton lists."""
MISSING_COUNTS: dict[str, int] = {"ntu60": 302, "ntu120": 535}
"""Sizes of the official missing-skeleton lists."""
BENCHMARKS: dict[str, tuple[str, ...]] = {"ntu60": ("xsub", "xview"), "ntu120": ("xsub", "xset")}

BODY_VALUES = 10
JOINT_VALUES = 12
NTU_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
ID_RANGES = {
    "setup": ("S", NTU120_MAX_SETUP),
    "camera": ("C", NTU_MAX_CAMERA),
    "performer": ("P", NTU120_MAX_PERFORMER),
    "replication": ("R", NTU_MAX_REPLICATION),
    "action": ("A", NTU120_MAX_ACTION),
}
"""Letter and largest value of each id of an NTU RGB+D 120 sample name; every id starts at 1."""


@dataclass(frozen=True)
class NtuSampleId:
    """The ids encoded in an NTU file name ``SsssCcccPpppRrrrAaaa`` (all 1-based)."""

    setup: int
    camera: int
    performer: int
    replication: int
    action: int

    @classmethod
    def parse(cls, name: str) -> NtuSampleId:
        """Parse a sample name or file name such as ``S001C002P003R002A013.skeleton``.

        Raises:
            ValueError: if the name does not follow the NTU naming scheme, or an id lies outside the dataset's
                range (e.g. ``S000``, ``C009`` or ``A000``, which would become label -1).
        """
        match = NTU_NAME.fullmatch(Path(name).name.removesuffix(".skeleton"))
        if match is None:
            raise ValueError(f"{name!r} is not an NTU sample name (expected SsssCcccPpppRrrrAaaa[.skeleton])")
        sample = cls(*(int(group) for group in match.groups()))
        for field, (letter, largest) in ID_RANGES.items():
            value = getattr(sample, field)
            if not 1 <= value <= largest:
                raise ValueError(
                    f"{name!r}: {field} {letter}{value:03d} is outside NTU RGB+D's {letter}001-{letter}{largest:03d}"
                )
        return sample

    @property
    def name(self) -> str:
        """The canonical sample name, without extension."""
        return f"S{self.setup:03d}C{self.camera:03d}P{self.performer:03d}R{self.replication:03d}A{self.action:03d}"


@dataclass(frozen=True)
class SkeletonRecording:
    """The content of one ``.skeleton`` file, bodies in file order.

    Attributes:
        body_counts: (F,) int64, bodies listed in each frame.
        body_ids: (K,) uint64, K = body_counts.sum(); the 64-bit tracking ids.
        body_info: (K, 9) float64, the nine values after the body id on each body line.
        joints: (K, 25, 12) float64, the joint lines (x y z first, in metres).
    """

    body_counts: np.ndarray
    body_ids: np.ndarray
    body_info: np.ndarray
    joints: np.ndarray

    @property
    def num_frames(self) -> int:
        """Number of frames declared (and present) in the file."""
        return len(self.body_counts)

    def body_slots(self, max_bodies: int = MAX_BODIES_READ) -> np.ndarray:
        """Joint positions indexed by a body's position within its frame, as the reference reads them.

        Args:
            max_bodies: bodies kept per frame; later bodies of a frame are ignored.

        Returns:
            float64 array (max_bodies, F, 25, 3), zero where a frame lists fewer bodies.
        """
        frame = np.repeat(np.arange(self.num_frames), self.body_counts)
        first_of_frame = np.repeat(np.cumsum(self.body_counts) - self.body_counts, self.body_counts)
        slot = np.arange(len(frame)) - first_of_frame
        keep = slot < max_bodies
        slots = np.zeros((max_bodies, self.num_frames, NUM_JOINTS, 3))
        slots[slot[keep], frame[keep]] = self.joints[keep, :, :3]
        return slots


def motion_energy(bodies: np.ndarray) -> np.ndarray:
    """The reference's body "motion energy": sum over x, y, z of the std over the body's non-empty frames.

    The std is taken over all (frame, joint) values of a coordinate, frames with any non-zero value only.

    Args:
        bodies: array (..., F, V, 3).

    Returns:
        float64 array (...) of energies; 0 for a body with no non-empty frame.
    """
    # Empty frames are all zeros, so they add nothing to the sums; only the count must exclude them.
    count = np.any(bodies != 0, axis=(-2, -1)).sum(-1, keepdims=True) * bodies.shape[-2]
    safe = np.maximum(count, 1)
    mean = bodies.sum(axis=(-3, -2), dtype=np.float64) / safe
    square = np.square(bodies, dtype=np.float64).sum(axis=(-3, -2)) / safe
    return np.sqrt(np.maximum(square - mean**2, 0.0)).sum(-1)


def select_bodies(slots: np.ndarray, keep: int = NUM_BODIES) -> np.ndarray:
    """Keep the ``keep`` bodies of highest motion energy, highest first (ties keep the lower slot first).

    Args:
        slots: array (B, F, V, 3) of candidate bodies.
        keep: number of bodies to return.

    Returns:
        Array (min(B, keep), F, V, 3).
    """
    order = np.argsort(-motion_energy(slots), kind="stable")[:keep]
    return slots[order]


def kept_bodies(recording: SkeletonRecording, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """The bodies the reference keeps from a recording: its first ``max_frames`` frames, up to 4 bodies per
    frame by position in the frame, then the 2 of highest motion energy (measured on the kept frames).

    Returns:
        float64 array (2, min(F, max_frames), 25, 3).
    """
    slots = recording.body_slots(MAX_BODIES_READ)[:, :max_frames]
    return select_bodies(slots, NUM_BODIES)


def read_skeleton(path: str | os.PathLike) -> SkeletonRecording:
    """Read and validate one ``.skeleton`` file.

    Args:
        path: the file.

    Returns:
        The parsed recording.

    Raises:
        SkeletonFormatError: on a wrong number of values on a line, a non-numeric, non-finite or out-of-range
            value (see ``skeleton.data.formats.text.MAX_ABS_VALUE``), a frame count larger than the file can
            hold, a joint count other than 25, content after the declared frames, or a file that ends before them.
        OSError: if the file cannot be read.
    """
    with open(path, encoding="ascii", errors="replace") as handle:
        return parse_skeleton(handle.read(), path)


def parse_skeleton(text: str, source: str | os.PathLike = "<text>") -> SkeletonRecording:
    """Parse the text of a ``.skeleton`` file (LF, CRLF or CR line endings).

    Args:
        text: the file content.
        source: name used in error messages.

    Returns:
        The parsed recording.

    Raises:
        SkeletonFormatError: see ``read_skeleton``.
    """
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    cursor = _Cursor(lines, source)
    num_frames = cursor.count("frame count")
    if num_frames > len(lines) - 1:  # each frame takes one line or more: its body count, then its bodies
        # Refused before anything is allocated: a corrupt count such as 99999999999 is a format error, not a
        # MemoryError that ends the whole preparation.
        raise SkeletonFormatError(
            source,
            1,
            f"frame count {num_frames} exceeds the {len(lines) - 1} lines after it (corrupt count or truncated file?)",
        )
    body_counts: list[int] = []  # Python ints: a corrupt count beyond int64 fails below as a truncated file
    body_ids: list[int] = []
    body_info: list[list[float]] = []
    joint_starts: list[int] = []
    for frame in range(num_frames):
        body_counts.append(cursor.count(f"body count of frame {frame + 1}/{num_frames}"))
        for _ in range(body_counts[-1]):
            tokens, line = cursor.values(BODY_VALUES, f"body line of frame {frame + 1}")
            body_ids.append(_body_id(tokens[0], source, line))
            body_info.append(parse_floats(tokens[1:], source, line))
            joints = cursor.count(f"joint count of frame {frame + 1}")
            if joints != NUM_JOINTS:
                raise SkeletonFormatError(source, cursor.index, f"expected {NUM_JOINTS} joints, got {joints}")
            joint_starts.append(cursor.skip(NUM_JOINTS, f"joint lines of frame {frame + 1}/{num_frames}"))
    if cursor.index < len(lines):
        raise SkeletonFormatError(
            source, cursor.index + 1, f"unexpected content after the {num_frames} declared frames"
        )
    joint_lines = [index for start in joint_starts for index in range(start, start + NUM_JOINTS)]
    return SkeletonRecording(
        body_counts=np.array(body_counts, dtype=np.int64),
        body_ids=np.array(body_ids, dtype=np.uint64),
        body_info=np.array(body_info, dtype=np.float64).reshape(-1, BODY_VALUES - 1),
        joints=parse_number_lines(lines, joint_lines, JOINT_VALUES, source).reshape(-1, NUM_JOINTS, JOINT_VALUES),
    )


class _Cursor:
    """Sequential reader over the lines of a file that reports 1-based line numbers."""

    def __init__(self, lines: list[str], source: str | os.PathLike) -> None:
        self.lines = lines
        self.source = source
        self.index = 0

    def _need(self, count: int, what: str) -> None:
        if self.index + count > len(self.lines):
            raise SkeletonFormatError(
                self.source, len(self.lines) + 1, f"file ends early: expected {what} (truncated file?)"
            )

    def values(self, count: int, what: str) -> tuple[list[str], int]:
        """The whitespace-separated tokens of the next line, which must hold exactly ``count`` values."""
        self._need(1, what)
        tokens = self.lines[self.index].split()
        self.index += 1
        if len(tokens) != count:
            raise SkeletonFormatError(self.source, self.index, f"{what}: expected {count} values, got {len(tokens)}")
        return tokens, self.index

    def count(self, what: str) -> int:
        """The next line as a non-negative integer."""
        (token,), line = self.values(1, what)
        if not token.isdigit():
            raise SkeletonFormatError(self.source, line, f"{what}: expected a non-negative integer, got {token!r}")
        return int(token)

    def skip(self, count: int, what: str) -> int:
        """Step over ``count`` lines (validated later, in bulk); return the index of the first."""
        self._need(count, what)
        self.index += count
        return self.index - count


def _body_id(token: str, source: str | os.PathLike, line: int) -> int:
    if not token.isdigit() or int(token) >= 2**64:
        raise SkeletonFormatError(source, line, f"body id must be an unsigned 64-bit integer, got {token!r}")
    return int(token)


def is_training(family: str, benchmark: str, setup: int, camera: int, performer: int) -> bool:
    """Return whether an NTU sample belongs to the training side of a benchmark.

    Args:
        family: ``"ntu60"`` or ``"ntu120"`` (selects the cross-subject performer list).
        benchmark: ``"xsub"``, ``"xview"`` or ``"xset"``.
        setup: 1-based setup id (``Sxxx``).
        camera: 1-based camera id (``Cxxx``).
        performer: 1-based performer id (``Pxxx``).

    Returns:
        True for the training split, False for the validation (test) split.

    Raises:
        ValueError: if ``family`` or ``benchmark`` is not one of the NTU benchmarks.
    """
    if family not in BENCHMARKS or benchmark not in BENCHMARKS[family]:
        raise ValueError(f"unknown NTU benchmark {family!r}/{benchmark!r}; expected one of {BENCHMARKS}")
    if benchmark == "xsub":
        train = NTU60_XSUB_TRAIN_PERFORMERS if family == "ntu60" else NTU120_XSUB_TRAIN_PERFORMERS
        return performer in train
    if benchmark == "xview":
        return camera in XVIEW_TRAIN_CAMERAS
    return setup % 2 == 0


def in_scope(family: str, sample: NtuSampleId) -> bool:
    """Whether an NTU sample belongs to ``family`` (NTU-120 contains NTU-60)."""
    return family == "ntu120" or (sample.setup <= NTU60_MAX_SETUP and sample.action <= NTU60_MAX_ACTION)


def read_ignore_list(path: str | os.PathLike) -> set[str]:
    """Read an NTU missing-skeleton list: sample names, one per line, after an optional prose header.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: on a line after the first sample name that is neither blank nor a sample name, or a
            file without any sample name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--ignore-list {path} does not exist")
    names: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line, text in enumerate(handle.read().splitlines(), start=1):
            token = text.strip().removesuffix(".skeleton")
            if NTU_NAME.fullmatch(token):
                names.add(token)
            elif names and token:  # prose is only allowed before the first sample name
                raise ValueError(f"{path}:{line}: expected a sample name like S001C002P003R002A013, got {text!r}")
    if not names:
        raise ValueError(f"{path}: no sample name (SsssCcccPpppRrrrAaaa) found")
    return names


def read_job(job: FileJob) -> list[Cut]:
    """Read one ``.skeleton`` file: its kept bodies (2, min(F, 300), 25, 3) and its frame count."""
    recording = read_skeleton(job.path)
    return [Cut(kept_bodies(recording), recording.num_frames)]


def scan(family: str, raw: Path, options: Mapping[str, Any]) -> Scan:
    """Find the samples of an NTU family under ``raw`` (``options``: ``ignore_list``, a path or None)."""
    ignore = read_ignore_list(options["ignore_list"]) if options["ignore_list"] is not None else set()
    benchmarks = BENCHMARKS[family]
    found = Scan(benchmarks=benchmarks, reader=read_job)
    files = find_files(raw, ".skeleton", found)
    in_family = functools.partial(in_scope, family)
    files_in_scope = 0
    for path, sample in unique_samples(
        files, lambda path: NtuSampleId.parse(path.name), lambda s: s.name, found, in_family
    ):
        files_in_scope += 1
        if sample.name in ignore:
            found.ignored += 1
            continue
        train = tuple(is_training(family, b, sample.setup, sample.camera, sample.performer) for b in benchmarks)
        found.add(path, [SampleRef(sample.name, sample.action - 1, train, None, str(path))])
    ignore_ids_in_scope = 0
    for name in ignore:
        try:
            ignore_ids_in_scope += in_family(NtuSampleId.parse(name))
        except ValueError:  # an id outside NTU's ranges names no file of any NTU dataset
            pass
    # The published sizes hold for the complete release with the official missing-skeleton list.
    found.complete = (
        files_in_scope == FULL_FILE_COUNTS[family]
        and ignore_ids_in_scope == MISSING_COUNTS[family]
        and not found.malformed
    )
    return found


IGNORE_LIST = PrepareOption(
    "--ignore-list",
    "missing-skeleton list (samples to leave out); a prose header before the ids is fine",
    type=Path,
)
RAW_HELP = "*.skeleton files, searched recursively"

NTU60 = RawFormat(
    family="ntu60",
    raw_help=RAW_HELP,
    benchmarks=BENCHMARKS["ntu60"],
    num_classes=NTU60_MAX_ACTION,
    layout="kinect_v2",
    num_joints=NUM_JOINTS,
    num_bodies=NUM_BODIES,
    scan=functools.partial(scan, "ntu60"),
    options=(IGNORE_LIST,),
    published_sizes={"xsub": (40_091, 16_487), "xview": (37_646, 18_932)},
)
NTU120 = RawFormat(
    family="ntu120",
    raw_help=RAW_HELP,
    benchmarks=BENCHMARKS["ntu120"],
    num_classes=NTU120_MAX_ACTION,
    layout="kinect_v2",
    num_joints=NUM_JOINTS,
    num_bodies=NUM_BODIES,
    scan=functools.partial(scan, "ntu120"),
    options=(IGNORE_LIST,),
    published_sizes={"xsub": (63_026, 50_919), "xset": (54_468, 59_477)},
)

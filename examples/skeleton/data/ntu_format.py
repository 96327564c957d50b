"""NTU RGB+D ``.skeleton`` files: parsing with line-accurate errors, writing, and body selection (SPEC section 3.1).

A file is: the frame count; per frame a body count (0 or more); per body a line of 10 values (bodyID
clippedEdges handLeftConfidence handLeftState handRightConfidence handRightState isRestricted leanX leanY
trackingState), the joint count (25) and 25 lines of 12 values (x y z depthX depthY colorX colorY orientW
orientX orientY orientZ trackingState). Copies in circulation use LF or CRLF endings, may write numbers in
exponent notation (``8.094816E-05``) and carry 64-bit body ids; all of that is accepted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .benchmarks import (
    MAX_BODIES_READ,
    MAX_FRAMES,
    NTU120_MAX_ACTION,
    NTU120_MAX_PERFORMER,
    NTU120_MAX_SETUP,
    NTU_MAX_CAMERA,
    NTU_MAX_REPLICATION,
    NUM_BODIES,
    NUM_JOINTS,
)
from .text_parsing import SkeletonFormatError, parse_floats, parse_number_lines

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
            value (see :data:`~skeleton.data.text_parsing.MAX_ABS_VALUE`), a frame count larger than the file can
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
        SkeletonFormatError: see :func:`read_skeleton`.
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


def write_skeleton(
    path: str | os.PathLike, recording: SkeletonRecording, *, crlf: bool = False, exponent: bool = False
) -> None:
    """Write a recording as a ``.skeleton`` file.

    The state, confidence and flag fields are written as integers, the others as numbers.

    Args:
        path: destination file.
        recording: content to write.
        crlf: end lines with ``\\r\\n`` instead of ``\\n``.
        exponent: write every non-integer field in exponent notation (``8.094816E-05``); otherwise the
            shortest of fixed and exponent notation, as the Kinect SDK prints.
    """
    number = "%.6E" if exponent else "%.7G"
    # clippedEdges, hand confidences/states and isRestricted are integers, then leanX leanY, trackingState
    body_format = "%d " + " ".join(["%d"] * 6 + [number] * 2 + ["%d"])
    joint_format = " ".join([number] * (JOINT_VALUES - 1) + ["%d"])  # the last field is the tracking state
    out = [str(recording.num_frames)]
    body = 0
    for count in recording.body_counts:
        out.append(str(int(count)))
        for _ in range(count):
            out.append(body_format % (int(recording.body_ids[body]), *recording.body_info[body]))
            out.append(str(NUM_JOINTS))
            out.extend(joint_format % tuple(row) for row in recording.joints[body].tolist())
            body += 1
    newline = "\r\n" if crlf else "\n"
    with open(path, "w", encoding="ascii", newline="") as handle:
        handle.write(newline.join(out) + newline)


def recording_from_bodies(bodies: np.ndarray, body_ids: np.ndarray | None = None) -> SkeletonRecording:
    """Build a recording from joint positions, listing in each frame the bodies that are non-zero there.

    The fields the pipeline does not use get plausible constants (tracked joints, zero orientation).

    Args:
        bodies: array (B, F, 25, 3) of positions in metres; an all-zero (body, frame) is not listed.
        body_ids: optional (B,) uint64 tracking ids; default: 64-bit ids like the Kinect's.

    Returns:
        The recording.
    """
    num_bodies, num_frames = bodies.shape[:2]
    if body_ids is None:
        body_ids = np.uint64(72057594037927936) + np.arange(num_bodies, dtype=np.uint64) * np.uint64(1_000_003)
    present = np.any(bodies != 0, axis=(2, 3)).T  # (F, B): frame-major, like the file
    frame_index, body_index = np.nonzero(present)
    joints = np.zeros((len(body_index), NUM_JOINTS, JOINT_VALUES))
    joints[:, :, :3] = bodies[body_index, frame_index]
    joints[:, :, 7] = 1.0  # orientW of the identity quaternion
    joints[:, :, 11] = 2.0  # trackingState "tracked"
    info = np.zeros((len(body_index), BODY_VALUES - 1))
    info[:, -1] = 2.0
    return SkeletonRecording(
        body_counts=present.sum(axis=1).astype(np.int64),
        body_ids=np.asarray(body_ids, dtype=np.uint64)[body_index],
        body_info=info,
        joints=joints,
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

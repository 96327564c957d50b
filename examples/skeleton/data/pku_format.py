"""PKU-MMD Phase II files: per-video skeletons, per-video action labels and split lists (SPEC section 3.1).

- ``skeleton/<video>.txt``: one line per frame, 150 numbers: body 1 joints 1..25 (x y z), then body 2
  (zeros when absent); NTU joint order, 30 fps.
- ``label/<video>.txt``: one row ``action,start,end,confidence`` per action instance (1-based action ids).
- ``cross_subject_v2.txt`` / ``cross_view_v2.txt``: a header line, the training videos separated by ``", "``,
  a header line, the test videos.

Frame conventions of ``start, end``: ``"reference"`` reads frames [start, end) 0-based, as the released
HaLP/CMD preprocessing; ``"inclusive"`` reads 1-based frames start..end inclusive, as other codebases.

Odd rows (``ODD_ROWS``): the released ``pku_gendata.py`` slices ``video[start:end]`` without a check and splits
by the training list alone, so it cuts a segment that ends beyond the video to the frames there are, keeps a
segment with no frame (or no body) as an all-zero sample, and puts a video missing from a split file's training
list into that benchmark's val split. ``"released"`` does the same; ``"skip"`` reports such rows and videos as
malformed and leaves them out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from einops import rearrange

from .benchmarks import NUM_BODIES, NUM_JOINTS
from .text_parsing import SkeletonFormatError, parse_number_lines

FRAME_CONVENTIONS = ("reference", "inclusive")
ODD_ROWS = ("released", "skip")
VALUES_PER_FRAME = NUM_BODIES * NUM_JOINTS * 3
SPLIT_FILES = {"xsub": "cross_subject_v2.txt", "xview": "cross_view_v2.txt"}


@dataclass(frozen=True)
class PkuSegment:
    """One action instance of a label file.

    Attributes:
        action: 1-based action id, as in the file.
        start: first frame, as written.
        end: last (inclusive convention) or one-past-last (reference convention) frame, as written.
        confidence: annotation confidence.
        line: 1-based line number in the label file.
    """

    action: int
    start: int
    end: int
    confidence: float
    line: int

    def frames(self, convention: str) -> tuple[int, int]:
        """The 0-based half-open frame range [first, stop) under a frame convention.

        Raises:
            ValueError: for an unknown convention.
        """
        if convention == "reference":
            return self.start, self.end
        if convention == "inclusive":
            return self.start - 1, self.end
        raise ValueError(f"unknown frame convention {convention!r}; expected one of {FRAME_CONVENTIONS}")


def sample_name(video: str, row: int) -> str:
    """Name of the sample cut from label row ``row`` (1-based, among the rows) of a video: ``<video>_<row:03d>``."""
    return f"{video}_{row:03d}"


def read_pku_skeleton(path: str | os.PathLike) -> np.ndarray:
    """Read a PKU-MMD II skeleton file.

    Args:
        path: the file.

    Returns:
        float64 array (F, 2, 25, 3) in metres.

    Raises:
        SkeletonFormatError: on a line without exactly 150 values, or a non-numeric or non-finite value.
    """
    with open(path, encoding="ascii", errors="replace") as handle:
        lines = handle.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    values = parse_number_lines(lines, list(range(len(lines))), VALUES_PER_FRAME, path)
    return rearrange(values, "f (m v c) -> f m v c", m=NUM_BODIES, v=NUM_JOINTS, c=3)


def write_pku_skeleton(path: str | os.PathLike, bodies: np.ndarray, *, crlf: bool = False) -> None:
    """Write (F, 2, 25, 3) joint positions as a PKU-MMD II skeleton file.

    Args:
        path: destination file.
        bodies: positions in metres; zeros for an absent body.
        crlf: CRLF line endings.
    """
    rows = rearrange(np.asarray(bodies, dtype=np.float64), "f m v c -> f (m v c)")
    line = " ".join(["%.7g"] * VALUES_PER_FRAME) + ("\r\n" if crlf else "\n")
    with open(path, "w", encoding="ascii", newline="") as handle:
        handle.write("".join(line % tuple(row) for row in rows.tolist()))


def read_pku_labels(path: str | os.PathLike) -> list[PkuSegment]:
    """Read a PKU-MMD label file (blank lines are skipped).

    Raises:
        SkeletonFormatError: on a row without 4 comma-separated values, or with a non-integer action / frame,
            an action id below 1 or a non-numeric confidence.
    """
    segments = []
    with open(path, encoding="ascii", errors="replace") as handle:
        for line, text in enumerate(handle.read().splitlines(), start=1):
            if not text.strip():
                continue
            fields = [field.strip() for field in text.split(",")]
            if len(fields) != 4:
                raise SkeletonFormatError(path, line, f"expected 4 comma-separated values, got {len(fields)}")
            try:
                action, start, end = (int(field) for field in fields[:3])
                confidence = float(fields[3])
            except ValueError:
                message = f"expected integers action,start,end and a number, got {text!r}"
                raise SkeletonFormatError(path, line, message) from None
            if action < 1:
                raise SkeletonFormatError(path, line, f"action ids are 1-based, got {action}")
            segments.append(PkuSegment(action, start, end, confidence, line))
    return segments


def write_pku_labels(path: str | os.PathLike, segments: list[PkuSegment], *, crlf: bool = False) -> None:
    """Write a PKU-MMD label file (``action,start,end,confidence`` rows)."""
    newline = "\r\n" if crlf else "\n"
    with open(path, "w", encoding="ascii", newline="") as handle:
        for segment in segments:
            handle.write(f"{segment.action},{segment.start},{segment.end},{segment.confidence:g}{newline}")


def read_pku_split(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Read a PKU-MMD split file.

    Returns:
        ``(training_videos, test_videos)``.

    Raises:
        SkeletonFormatError: if the file has fewer than 4 lines or an empty video list.
    """
    with open(path, encoding="ascii", errors="replace") as handle:
        lines = handle.read().splitlines()
    if len(lines) < 4:
        expected = "expected 4 lines: header, training videos, header, test videos"
        raise SkeletonFormatError(path, len(lines) + 1, expected)
    lists = []
    for line in (2, 4):
        names = [name.strip() for name in lines[line - 1].split(",") if name.strip()]
        if not names:
            raise SkeletonFormatError(path, line, "empty list of video names")
        lists.append(names)
    return lists[0], lists[1]


def write_pku_split(path: str | os.PathLike, train: list[str], test: list[str]) -> None:
    """Write a PKU-MMD split file with the official headers."""
    with open(path, "w", encoding="ascii") as handle:
        handle.write(f"Training videos: \n{', '.join(train)}\nValidation videos: \n{', '.join(test)}\n")

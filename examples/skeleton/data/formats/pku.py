"""PKU-MMD Phase II: per-video skeletons, per-video action labels and split lists.

``prepare --dataset pku2 --raw PKU`` reads ``PKU/skeleton/*.txt`` with their ``PKU/label/`` files and the two split
files, and cuts one sample per label row:

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

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from einops import rearrange

from . import Cut, FileJob, PrepareOption, RawFormat, SampleRef, Scan
from .ntu import NUM_BODIES, NUM_JOINTS
from .text import SkeletonFormatError, parse_number_lines

FRAME_CONVENTIONS = ("reference", "inclusive")
ODD_ROWS = ("released", "skip")
VALUES_PER_FRAME = NUM_BODIES * NUM_JOINTS * 3
SPLIT_FILES = {"xsub": "cross_subject_v2.txt", "xview": "cross_view_v2.txt"}
BENCHMARKS = tuple(SPLIT_FILES)
NUM_CLASSES = 51
"""Action ids 1..51 (the reference's classifier head has 51 outputs)."""


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


def read_job(job: FileJob, keep_odd_rows: bool) -> list[Cut]:
    """Read one PKU-MMD video and cut its label rows' samples (see ``cut_segment``)."""
    video = read_pku_skeleton(job.path)
    cuts = []
    for _, sample in job.items:
        bodies, message = cut_segment(video, sample, keep_odd_rows)
        frames = 0 if bodies is None else bodies.shape[1]
        cuts.append(Cut(bodies, frames, message, keep_empty=keep_odd_rows))
    return cuts


def cut_segment(video: np.ndarray, sample: SampleRef, keep_odd_rows: bool) -> tuple[np.ndarray | None, str]:
    """The bodies (2, F, 25, 3) of a label row's segment, and a message.

    Args:
        video: the video's frames (F, 2, 25, 3).
        sample: the sample, with its ``segment``.
        keep_odd_rows: keep segments ending beyond the video or holding none of its frames.

    Returns:
        ``(bodies, "")`` for a segment inside the video; ``(None, why)`` for one that is malformed; with
        ``keep_odd_rows``, ``(bodies, what was done)`` for a segment ending beyond the video (cut at its end) or
        holding none of its frames (F = 0), as the released script's unchecked ``video[start:end]``.
    """
    first, stop = sample.segment
    frames = len(video)
    inside = 0 <= first < stop <= frames
    if not inside and (not keep_odd_rows or first < 0):  # a negative start would count from the video's end
        return None, f"{sample.where}: frames [{first}, {stop}) outside the video's {frames} frames"
    bodies = rearrange(video[first:stop], "t m v c -> m t v c")
    if inside:
        return bodies, ""
    if bodies.shape[1]:
        kept = f"end beyond the video's {frames}: cut to [{first}, {frames})"
    else:
        kept = f"hold none of the video's {frames}: kept, 0 frames"
    return bodies, f"{sample.where}: frames [{first}, {stop}) {kept}"


def scan(raw: Path, options: Mapping[str, Any]) -> Scan:
    """Find the label rows of a PKU-MMD II folder (``options``: ``pku_frames``, ``pku_odd_rows``).

    Raises:
        FileNotFoundError: if a part of the folder is missing, or it holds no skeleton file.
        ValueError: for an unreadable split file.
    """
    frames, keep_odd_rows = options["pku_frames"], options["pku_odd_rows"] == "released"
    required = [raw / "skeleton", raw / "label", *(raw / name for name in SPLIT_FILES.values())]
    missing = [str(path) for path in required if not path.exists()]
    if missing:
        raise FileNotFoundError(
            f"--raw {raw} is not a PKU-MMD II folder: missing {', '.join(missing)}"
            f" (expected skeleton/, label/, {', '.join(SPLIT_FILES.values())})"
        )
    try:
        splits = {b: tuple(map(set, read_pku_split(raw / name))) for b, name in SPLIT_FILES.items()}
    except SkeletonFormatError as error:
        raise ValueError(f"unreadable split file: {error}") from None
    videos = sorted((raw / "skeleton").glob("*.txt"))
    if not videos:
        raise FileNotFoundError(f"no skeleton files (*.txt) under {raw / 'skeleton'}")
    # Kept odd rows are the only choice the samples do not show (the other fingerprints stay as they were).
    settings = ("--pku-odd-rows released",) if keep_odd_rows else ()
    found = Scan(BENCHMARKS, functools.partial(read_job, keep_odd_rows=keep_odd_rows), settings=settings)
    for path in videos:
        video = path.stem
        label_path = raw / "label" / path.name
        # As the released script, a video is a training video of a benchmark if that list names it, else val.
        train = tuple(video in splits[benchmark][0] for benchmark in BENCHMARKS)
        unlisted = [SPLIT_FILES[b] for b in BENCHMARKS if video not in splits[b][0] | splits[b][1]]
        if unlisted:
            message = f"{path}: video {video} missing from {', '.join(unlisted)}"
            if not keep_odd_rows:
                found.malformed.append(message)
                continue
            found.notes.append(f"{message}: put into val there")
        try:
            segments = read_pku_labels(label_path)
        except FileNotFoundError:
            found.malformed.append(f"{label_path}: label file missing")
            continue
        except SkeletonFormatError as error:
            found.malformed.append(str(error))
            continue
        samples = []
        for number, segment in enumerate(segments, start=1):
            if segment.action > NUM_CLASSES:
                found.malformed.append(f"{label_path}:{segment.line}: action {segment.action} > {NUM_CLASSES}")
                continue
            where = f"{label_path}:{segment.line}"
            samples.append(
                SampleRef(sample_name(video, number), segment.action - 1, train, segment.frames(frames), where)
            )
        found.add(path, samples)
    return found


PKU2 = RawFormat(
    family="pku2",
    raw_help="skeleton/, label/, cross_subject_v2.txt, cross_view_v2.txt",
    benchmarks=BENCHMARKS,
    num_classes=NUM_CLASSES,
    layout="kinect_v2",
    num_joints=NUM_JOINTS,
    num_bodies=NUM_BODIES,
    scan=scan,
    options=(
        PrepareOption(
            "--pku-frames",
            "label frames: [start, end) 0-based as the reference, or 1-based inclusive",
            default="reference",
            choices=FRAME_CONVENTIONS,
        ),
        PrepareOption(
            "--pku-odd-rows",
            "segments ending beyond the video, empty segments and videos missing from a split file: kept as the"
            " released script keeps them (cut, zero samples, val) or skipped; reported either way",
            default="released",
            choices=ODD_ROWS,
        ),
    ),
)

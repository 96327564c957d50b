"""Line-oriented numeric text parsing with errors that name the file and the line."""

from __future__ import annotations

import math
import os

import numpy as np

MAX_ABS_VALUE = 1e5
"""Largest magnitude accepted for a number in a skeleton file. The files hold positions in metres (a Kinect tracks
bodies up to about 8 m away), image coordinates in pixels (up to 1920), small integers and orientations; a larger
value is corruption, and past 3.4e38 it would overflow the float32 arrays that ``prepare`` writes."""


class SkeletonFormatError(ValueError):
    """A malformed skeleton, label or split file, located by file name and 1-based line number."""

    def __init__(self, path: str | os.PathLike, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(f"{self.path}:{line}: {message}")


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a text skeleton file (any line ending), without trailing blank lines.

    Raises:
        SkeletonFormatError: for a file without any non-blank line.
        OSError: if the file cannot be read.
    """
    with open(path, encoding="ascii", errors="replace") as handle:
        lines = handle.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise SkeletonFormatError(path, 1, "empty file: no frame")
    return lines


def parse_number_lines(
    lines: list[str], indices: list[int], width: int, source: str | os.PathLike, separator: str | None = None
) -> np.ndarray:
    """Parse lines of ``width`` numbers each into a (len(indices), width) float64 array.

    The whole block is converted at once; only when that fails are the lines parsed one by one, which
    names the first offending line.

    Args:
        lines: all lines of a file.
        indices: 0-based indices of the lines to parse.
        width: values expected on each line.
        source: file name for error messages.
        separator: what separates the values: None for runs of whitespace, or a character such as ``","``
            (spaces around the values are allowed; an empty field is a non-numeric value).

    Raises:
        SkeletonFormatError: on a line with another number of values, or a non-numeric, non-finite or out-of-range
            (``MAX_ABS_VALUE``) value.
    """
    joiner = " " if separator is None else separator
    tokens = joiner.join(lines[i] for i in indices).split(separator) if indices else []
    if len(tokens) == width * len(indices):
        try:
            values = np.array(tokens, dtype=np.float64).reshape(len(indices), width)
        except ValueError:
            values = None
        if values is not None and not out_of_range(values).any():
            return values
    rows = []
    for index in indices:
        row = lines[index].split(separator)
        if len(row) != width:
            raise SkeletonFormatError(source, index + 1, f"expected {width} values, got {len(row)}")
        rows.append(parse_floats(row, source, index + 1))
    return np.array(rows, dtype=np.float64).reshape(len(indices), width)


def parse_floats(tokens: list[str], source: str | os.PathLike, line: int) -> list[float]:
    """Convert the tokens of one line to finite floats of magnitude at most ``MAX_ABS_VALUE``.

    Raises:
        SkeletonFormatError: naming ``source`` and ``line`` on a non-numeric, non-finite or out-of-range token.
    """
    values = []
    for token in tokens:
        if not token.strip():
            raise SkeletonFormatError(source, line, "empty value (two separators in a row?)")
        try:
            value = float(token)
        except ValueError:
            raise SkeletonFormatError(source, line, f"non-numeric value {token!r}") from None
        if out_of_range(np.float64(value)):
            raise SkeletonFormatError(source, line, describe_out_of_range(token))
        values.append(value)
    return values


def out_of_range(values: np.ndarray) -> np.ndarray:
    """Mask of the values a skeleton file cannot hold: non-finite, or larger in magnitude than
    ``MAX_ABS_VALUE``."""
    return ~(np.abs(values) <= MAX_ABS_VALUE)  # NaN compares False, so it is out of range too


def describe_out_of_range(value: object) -> str:
    """The error message for a value ``out_of_range`` refuses (``value`` as written in the file)."""
    try:
        finite = math.isfinite(float(value))
    except OverflowError:  # an integer too large for a float is finite, only out of range
        finite = True
    text = str(value)
    shown = text if len(text) <= 24 else f"{text[:12]}...({len(text)} characters)"
    kind = "out-of-range" if finite else "non-finite"
    return f"{kind} value {shown!r} (expected a finite number of magnitude <= {MAX_ABS_VALUE:g})"

"""Line-oriented numeric text parsing with errors that name the file and the line."""

from __future__ import annotations

import os

import numpy as np


class SkeletonFormatError(ValueError):
    """A malformed skeleton, label or split file, located by file name and 1-based line number."""

    def __init__(self, path: str | os.PathLike, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(f"{self.path}:{line}: {message}")


def parse_number_lines(lines: list[str], indices: list[int], width: int, source: str | os.PathLike) -> np.ndarray:
    """Parse lines of ``width`` whitespace-separated numbers each into a (len(indices), width) float64 array.

    The whole block is converted at once; only when that fails are the lines parsed one by one, which
    names the first offending line.

    Args:
        lines: all lines of a file.
        indices: 0-based indices of the lines to parse.
        width: values expected on each line.
        source: file name for error messages.

    Raises:
        SkeletonFormatError: on a line with another number of values, or a non-numeric or non-finite value.
    """
    tokens = " ".join(lines[i] for i in indices).split()
    if len(tokens) == width * len(indices):
        try:
            values = np.array(tokens, dtype=np.float64).reshape(len(indices), width)
        except ValueError:
            values = None
        if values is not None and np.isfinite(values).all():
            return values
    rows = []
    for index in indices:
        row = lines[index].split()
        if len(row) != width:
            raise SkeletonFormatError(source, index + 1, f"expected {width} values, got {len(row)}")
        rows.append(parse_floats(row, source, index + 1))
    return np.array(rows, dtype=np.float64).reshape(len(indices), width)


def parse_floats(tokens: list[str], source: str | os.PathLike, line: int) -> list[float]:
    """Convert the tokens of one line to finite floats.

    Raises:
        SkeletonFormatError: naming ``source`` and ``line`` on a non-numeric or non-finite token.
    """
    values = []
    for token in tokens:
        try:
            value = float(token)
        except ValueError:
            raise SkeletonFormatError(source, line, f"non-numeric value {token!r}") from None
        if not np.isfinite(value):
            raise SkeletonFormatError(source, line, f"non-finite value {token!r}")
        values.append(value)
    return values

"""Reading and writing the pipeline's files safely: atomic writes, ``.npy`` arrays read with errors that name the
file, and the error raised for an input file or folder that is not what it must be."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Optional

import numpy as np


class InputError(ValueError):
    """A file or folder given to a command is not what it must be: a truncated array, a checkpoint without its
    configuration, another dataset's folder.

    The message names the path, what was expected and what was found. ``skeleton_moco.py`` prints it without a
    traceback and exits with 2.
    """


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file through a temporary file next to it, renamed over it at the end.

    The rename is atomic, so an interruption at any moment leaves either the previous file or the new one, never
    a half-written one. The temporary file's name is unique (``tempfile``), so two processes writing the same file
    cannot write into each other's temporary file; the last rename wins.

    Args:
        path: the file to write.
        write: writes the content into the binary handle it receives.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, 0o644)  # mkstemp's files are private; the files written here are ordinary outputs
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_npy(path: Path, mmap_mode: Optional[str] = None) -> np.ndarray:
    """``np.load`` of an ``.npy`` array file, refusing pickled objects, with errors that name the file.

    Args:
        path: the ``.npy`` file.
        mmap_mode: ``None`` to read the array, ``"r"`` to map it read-only.

    Returns:
        The array (a memory map with ``mmap_mode``).

    Raises:
        InputError: if the file is not a readable ``.npy`` array of numbers, or is shorter than its header
            declares (an interrupted copy or download), which ``np.load`` reports without the file's name.
    """
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(handle)
            data_start = handle.tell()
    except (OSError, ValueError, EOFError) as error:
        raise InputError(f"{path}: not a readable .npy array ({error})") from None
    if dtype.hasobject:
        raise InputError(f"{path}: holds Python objects (dtype {dtype}); expected an array of numbers")
    expected = data_start + int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        raise InputError(
            f"{path}: truncated .npy file: {size} bytes, but its header declares shape {shape} {dtype}, {expected}"
            " bytes (an interrupted copy or download?)"
        )
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)

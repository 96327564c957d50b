"""Raw dataset formats: one module per format, each declaring a ``RawFormat`` that ``prepare`` runs.

An adapter does three things: it *scans* the raw folder (which files hold which samples, their labels and the
split each belongs to in every benchmark), it *reads* one file into bodies (B, F, V, 3) arrays, one per sample cut
from it, and it *declares* what its prepared samples are (joints, bodies, layout, classes) and the split sizes of
its complete release. Everything else (workers, the resumable memory-mapped writer, pre-normalization, the
summary) is the same for every format and lives in ``skeleton.data.prepare``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

import numpy as np

MAX_FRAMES = 300
"""Frame axis length of a prepared sample; longer recordings keep their first 300 frames."""
NUM_COORDS = 3
"""Coordinates per joint in every raw format read here: x, y, z in metres."""

SampleId = TypeVar("SampleId")


@dataclass(frozen=True)
class SampleRef:
    """One sample to prepare.

    Attributes:
        name: the sample's name in the label pickle.
        label: 0-based class.
        train: per benchmark of the scan, whether the sample is in that benchmark's training split.
        segment: 0-based ``[first, stop)`` frames of the file the sample is cut from (PKU-MMD); None: the whole file.
        where: location for messages about this sample (its file, or file and line).
    """

    name: str
    label: int
    train: tuple[bool, ...]
    segment: Optional[tuple[int, int]]
    where: str


@dataclass(frozen=True)
class FileJob:
    """One raw file and the samples cut from it: ``items`` are ``(sample index, sample)`` pairs."""

    path: str
    items: tuple[tuple[int, SampleRef], ...]


@dataclass(frozen=True)
class Cut:
    """What reading a file gave for one of its samples.

    Attributes:
        bodies: float array (B, F, V, 3), B <= the format's bodies, in metres; None when the sample is malformed.
        num_frames: frames of the sample in the source (before the prepared layout keeps the first 300).
        message: why the sample is malformed, or what was done to keep it (e.g. frames dropped); "" otherwise.
        keep_empty: keep a sample without any body as an all-zero sample (as a released script does) instead of
            dropping it.
    """

    bodies: Optional[np.ndarray]
    num_frames: int
    message: str = ""
    keep_empty: bool = False


Reader = Callable[[FileJob], list[Cut]]
"""Reads one file and returns one ``Cut`` per sample of the job, in the order of ``job.items``. It runs in a
worker process, so it must be picklable (a module-level function or a partial of one). It raises
``skeleton.data.formats.text.SkeletonFormatError`` or ``OSError`` for a file that fails as a whole."""


@dataclass
class Scan:
    """What an adapter found under ``--raw``.

    Attributes:
        benchmarks: the benchmarks this preparation writes (``SampleRef.train`` follows this order).
        samples: every sample to prepare, in the order they are written.
        jobs: the files to read, in sample order; each sample belongs to exactly one job.
        reader: reads a job (see ``Reader``).
        malformed: ``file[:line]: message`` of every file or label row skipped while scanning.
        notes: ``file[:line]: message`` of what was kept though odd (e.g. a video missing from a split list).
        ignored: samples left out by an ignore list.
        outside: files that belong to another dataset (e.g. NTU-120 setups in an NTU-60 preparation).
        complete: whether the scan found the complete release, so that the split sizes must be the published ones
            (provided no sample turns out malformed beyond those the release is known to break).
        settings: the options that change the output but do not show in the samples (part of the fingerprint
            that decides whether an unfinished preparation can be resumed).
    """

    benchmarks: tuple[str, ...]
    reader: Reader
    samples: list[SampleRef] = field(default_factory=list)
    jobs: list[FileJob] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ignored: int = 0
    outside: int = 0
    complete: bool = False
    settings: tuple[str, ...] = ()

    def add(self, path: str | os.PathLike, samples: list[SampleRef]) -> None:
        """Add the samples cut from one file (nothing when ``samples`` is empty)."""
        items = []
        for sample in samples:
            items.append((len(self.samples), sample))
            self.samples.append(sample)
        if items:
            self.jobs.append(FileJob(str(path), tuple(items)))


@dataclass(frozen=True)
class PrepareOption:
    """A ``prepare`` option only one format understands (e.g. NTU's ``--ignore-list``).

    Attributes:
        flag: the command-line flag, e.g. ``"--fold"``; the keyword of ``skeleton.data.prepare.prepare_dataset``
            is its name with dashes as underscores (``fold``).
        help: the help text.
        default: the value when the option is not given.
        choices: the accepted values, or None.
        type: converts the command-line text.
    """

    flag: str
    help: str
    default: Any = None
    choices: Optional[tuple[Any, ...]] = None
    type: Callable[[str], Any] = str

    @property
    def name(self) -> str:
        """The keyword name: ``--pku-odd-rows`` -> ``pku_odd_rows``."""
        return self.flag.removeprefix("--").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser, families: str) -> None:
        """Add the flag to a parser; its default is None so that a flag given for another format can be told apart."""
        shown = f" (default {self.default})" if self.default is not None else ""
        parser.add_argument(
            self.flag, type=self.type, choices=self.choices, default=None, help=f"{families}: {self.help}{shown}"
        )

    def resolve(self, value: Any) -> Any:
        """The value to use: ``value``, or the default when None.

        Raises:
            ValueError: for a value outside ``choices``.
        """
        if value is None:
            return self.default
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.flag} must be one of {self.choices}, got {value!r}")
        return value


@dataclass(frozen=True)
class RawFormat:
    """A raw dataset format: what its prepared samples are, and how to scan its folder.

    Attributes:
        family: the family name (``prepare --dataset`` and the prepared folder).
        raw_help: what ``--raw`` holds, for ``--help``.
        benchmarks: every benchmark of the family.
        num_classes: size of the label space.
        layout: name of the skeleton layout of the prepared samples.
        num_joints: joints V of a prepared sample (the layout's).
        num_bodies: body slots M of a prepared sample.
        scan: ``scan(raw, options) -> Scan``; ``options`` maps each of ``options``' names to its value.
        options: the format's own ``prepare`` options.
        published_sizes: ``{benchmark: (train, val)}`` of the complete release (checked when a scan is complete).
        known_broken: names of samples the complete release is known to hold broken (skipped as malformed
            without making the release incomplete).
    """

    family: str
    raw_help: str
    benchmarks: tuple[str, ...]
    num_classes: int
    layout: str
    num_joints: int
    num_bodies: int
    scan: Callable[[Path, Mapping[str, Any]], Scan]
    options: tuple[PrepareOption, ...] = ()
    published_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    known_broken: frozenset[str] = frozenset()


def find_files(raw: Path, suffix: str, scan: Scan) -> list[Path]:
    """The files named ``*<suffix>`` under ``raw``, searched recursively (following links to folders), sorted.

    A folder that cannot be listed (no permission, an I/O error) and a link that leads back into a folder being
    searched (a loop) or nowhere are reported in ``scan.malformed``; the search goes on without them
    (``Path.rglob`` and a plain ``os.walk`` would skip them silently, and their samples would be missing
    unannounced).

    Raises:
        FileNotFoundError: if no such file is found.
    """

    def unreadable(error: OSError) -> None:
        scan.malformed.append(f"{error.filename}: folder not searched, it cannot be read ({error.strerror})")

    files = []
    for folder, subfolders, names in os.walk(raw, onerror=unreadable, followlinks=True):
        ancestors = _ancestors(Path(folder), raw)
        for name in list(subfolders):
            path = Path(folder) / name
            if path.is_symlink() and path.resolve() in ancestors:
                scan.malformed.append(f"{path}: link to {path.resolve()}, a folder it is in: not searched (a loop)")
                subfolders.remove(name)
        for name in names:
            path = Path(folder) / name
            if path.is_symlink() and not path.exists():
                scan.malformed.append(f"{path}: broken link to {os.readlink(path)}, not read")
            elif name.endswith(suffix):
                files.append(path)
    if not files:
        unread = f" ({'; '.join(scan.malformed)})" if scan.malformed else ""
        raise FileNotFoundError(f"no *{suffix} files under --raw {raw}{unread}")
    return sorted(files)


def _ancestors(folder: Path, raw: Path) -> set[Path]:
    """The resolved folders from ``raw`` down to ``folder`` (the walk is inside each of them)."""
    resolved = {raw.resolve()}
    current = folder
    while current != raw and current != current.parent:
        resolved.add(current.resolve())
        current = current.parent
    return resolved


def unique_samples(
    files: list[Path],
    parse: Callable[[Path], SampleId],
    name: Callable[[SampleId], str],
    scan: Scan,
    in_scope: Callable[[SampleId], bool] = lambda sample: True,
) -> Iterator[tuple[Path, SampleId]]:
    """The files whose names parse to a sample id in scope, each sample once.

    The others are counted in ``scan``: a name that does not parse, or a second file of a sample, as malformed;
    a sample out of scope as outside.

    Args:
        files: candidate files.
        parse: file -> sample id; raises ``ValueError`` for a path outside the format's naming scheme.
        name: sample id -> its canonical name (duplicates share it).
        scan: receives what is left out.
        in_scope: whether a sample belongs to the dataset being prepared.
    """
    seen: dict[str, Path] = {}
    for path in files:
        try:
            sample = parse(path)
        except ValueError as error:
            scan.malformed.append(f"{path}: {error}")
            continue
        if not in_scope(sample):
            scan.outside += 1
            continue
        key = name(sample)
        if key in seen:
            scan.malformed.append(f"{path}: duplicate of {seen[key]}, skipped")
            continue
        seen[key] = path
        yield path, sample

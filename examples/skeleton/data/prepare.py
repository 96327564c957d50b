"""``prepare``: raw NTU RGB+D 60/120, PKU-MMD II or NW-UCLA files to the prepared layout of CMD/HaLP (SPEC 3.1).

Usage (through ``examples/skeleton_moco.py``)::

    skeleton_moco.py prepare --dataset ntu60 --raw RAW --out DATA_ROOT/ntu60 \
        --ignore-list NTU_RGBD_samples_with_missing_skeletons.txt
    skeleton_moco.py prepare --dataset ntu120 --raw RAW --out DATA_ROOT/ntu120 \
        --ignore-list NTU_RGBD120_samples_with_missing_skeletons.txt
    skeleton_moco.py prepare --dataset pku2 --raw PKU --out DATA_ROOT/pku2
    skeleton_moco.py prepare --dataset nwucla --raw all_sqe --out DATA_ROOT/nwucla

For NTU, every ``*.skeleton`` under ``RAW`` (searched recursively, so the NTU-60 and NTU-120 archives can sit
side by side) that belongs to the dataset is read; ``ntu60`` skips setups above 17 and actions above 60.
For PKU-MMD II, ``PKU`` holds ``skeleton/``, ``label/``, ``cross_subject_v2.txt`` and ``cross_view_v2.txt``;
``--pku-odd-rows`` says what becomes of the label rows and videos the released script keeps without a check
(:mod:`skeleton.data.pku_format`): ``released`` (default) keeps them as it does, ``skip`` leaves them out, and
either way each is reported with its file and line.
For NW-UCLA, every ``aAA_sSS_eEE_vVV.json`` under ``all_sqe`` is read into ``xview/`` (views 1 and 2 train,
view 3 validates) with its native 20 Kinect v1 joints and one body: samples of shape (3, 300, 20, 1).

Files are parsed and pre-normalized in ``--workers`` processes; samples stream into ``.npy`` files opened
with ``np.lib.format.open_memmap`` (re-opened per block, so memory stays bounded whatever the dataset size).
Progress is saved after every block in ``OUT/.prepare/state.npz`` (one file, replaced atomically): an interrupted
run resumes where it stopped when started again with the same arguments. Malformed files are reported with file name and line, skipped and
listed in the final summary; the exit code is 0 unless ``--strict`` is given and something was skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from einops import rearrange
from tqdm import tqdm

from ..console import interactive
from ..fileio import atomic_write
from .benchmarks import (
    BENCHMARKS,
    FULL_FILE_COUNTS,
    MAX_FRAMES,
    MISSING_COUNTS,
    NTU60_MAX_ACTION,
    NTU60_MAX_SETUP,
    NUM_CLASSES,
    NWUCLA_TRAIN_VIEWS,
    PREPARED_SLOTS,
    PUBLISHED_SPLIT_SIZES,
    SPLITS,
    ntu_is_training,
)
from .files import SUMMARY_FILE, data_file, label_file, num_frame_file, pack_sample, sample_shape
from .ntu_format import NTU_NAME, NtuSampleId, kept_bodies, read_skeleton
from .nwucla_format import NwuclaSampleId, read_nwucla
from .pku_format import (
    FRAME_CONVENTIONS,
    ODD_ROWS,
    SPLIT_FILES,
    read_pku_labels,
    read_pku_skeleton,
    read_pku_split,
    sample_name,
)
from .prenormalize import prenormalize
from .text_parsing import SkeletonFormatError

DATASETS = tuple(BENCHMARKS)
PENDING, DONE, MALFORMED, EMPTY = 0, 1, 2, 3
WORK_DIR = ".prepare"
STATE_FILE = "state.npz"  # in WORK_DIR: per candidate status and frame count, the fingerprint and the messages
SAMPLES_PER_BATCH = 8  # files a worker parses and pre-normalizes per task
SAMPLES_PER_WORKER_BLOCK = 64  # samples in flight per worker between two saves of the progress


class PrepareError(RuntimeError):
    """The prepared data fails a consistency check (e.g. split sizes differ from the published ones)."""


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``prepare`` options to an argument parser."""
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="which raw dataset --raw holds")
    parser.add_argument("--raw", required=True, type=Path, help="folder of the raw files (see module docstring)")
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. DATA_ROOT/ntu60")
    parser.add_argument(
        "--ignore-list",
        type=Path,
        help="NTU missing-skeleton list (samples to leave out); a prose header before the ids is fine",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    parser.add_argument("--strict", action="store_true", help="exit with 1 if any file was malformed")
    parser.add_argument(
        "--pku-frames",
        choices=FRAME_CONVENTIONS,
        default="reference",
        help="PKU label frames: [start, end) 0-based as the reference (default) or 1-based inclusive",
    )
    parser.add_argument(
        "--pku-odd-rows",
        choices=ODD_ROWS,
        default="released",
        help="PKU segments ending beyond the video, empty segments and videos missing from a split file: kept as "
        "the released script keeps them (cut, zero samples, val; default) or skipped; reported either way",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_prepare(args: argparse.Namespace) -> int:
    """Run ``prepare`` from parsed arguments (see :func:`add_prepare_arguments`).

    Returns:
        Exit code: 0 on success (malformed files skipped and listed), 1 with ``--strict`` when files were
        skipped as malformed, 2 on an error (missing input, bad arguments, an ``--out`` that cannot be written, a
        failed consistency check, or any other file-system error, which names its file).
    """
    try:
        summary = prepare_dataset(
            args.dataset,
            args.raw,
            args.out,
            ignore_list=args.ignore_list,
            workers=args.workers,
            pku_frames=args.pku_frames,
            pku_odd_rows=args.pku_odd_rows,
            progress=not args.quiet,
        )
    except (OSError, ValueError, PrepareError) as error:
        print(f"prepare: error: {error}", file=sys.stderr)
        return 2
    print(summary.report())
    return 1 if args.strict and summary.malformed else 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of this module alone (``skeleton_moco.py prepare`` is the usual one)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_prepare_arguments(parser)
    return run_prepare(parser.parse_args(argv))


@dataclass
class PrepareSummary:
    """What a ``prepare`` run produced and skipped.

    Attributes:
        dataset: ``ntu60``, ``ntu120``, ``pku2`` or ``nwucla``.
        out: output folder.
        counts: ``{benchmark: {"train": n, "val": n}}``.
        malformed: ``file:line: message`` of every skipped malformed or unreadable input.
        odd_rows: ``file[:line]: message`` of every PKU label row or video kept as the released script keeps it
            (``--pku-odd-rows released``): cut at the video's end, kept with no frame or no body, put into val.
        empty: names of samples dropped because no body appears in any frame.
        ignored: samples left out through ``--ignore-list``.
        outside: NTU files that belong to another dataset (e.g. NTU-120 setups in an ``ntu60`` run).
        truncated: samples longer than 300 frames (their first 300 are kept).
        published_sizes_checked: whether the split sizes were checked against the published ones.
    """

    dataset: str
    out: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    malformed: list[str] = field(default_factory=list)
    odd_rows: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    ignored: int = 0
    outside: int = 0
    truncated: int = 0
    published_sizes_checked: bool = False

    def report(self) -> str:
        """A human-readable multi-line summary."""
        lines = [f"prepared {self.dataset} into {self.out}"]
        for benchmark, counts in self.counts.items():
            lines.append(f"  {benchmark}: train {counts['train']}, val {counts['val']}")
        if self.published_sizes_checked:
            lines.append("  split sizes equal the published ones")
        lines.append(f"  left out by --ignore-list: {self.ignored}")
        if self.outside:
            lines.append(f"  files of another dataset, not used: {self.outside}")
        if self.truncated:
            lines.append(f"  longer than {MAX_FRAMES} frames, first {MAX_FRAMES} kept: {self.truncated}")
        if self.odd_rows:
            lines.append(f"  kept as the released script keeps them (--pku-odd-rows released): {len(self.odd_rows)}")
            lines.extend(f"    {message}" for message in self.odd_rows)
        lines.append(f"  dropped, no body in any frame: {len(self.empty)}")
        lines.extend(f"    {name}" for name in self.empty)
        lines.append(f"  skipped, malformed: {len(self.malformed)}")
        lines.extend(f"    {message}" for message in self.malformed)
        return "\n".join(lines)


@dataclass(frozen=True)
class _Candidate:
    """One sample to prepare."""

    name: str
    label: int  # 0-based
    train: tuple[bool, ...]  # per benchmark of the dataset
    segment: tuple[int, int] | None  # PKU: 0-based [first, stop) in the video; NTU: the whole file
    where: str  # location for error messages about this sample


@dataclass(frozen=True)
class _Job:
    """One file to read and the candidates cut from it."""

    kind: str  # "ntu", "pku" or "nwucla"
    path: str
    items: tuple[tuple[int, _Candidate], ...]  # (candidate index, candidate)
    keep_odd_rows: bool = False  # PKU: cut segments at the video's end, keep empty ones (--pku-odd-rows released)


SampleId = TypeVar("SampleId", NtuSampleId, NwuclaSampleId)

_JOB_SLOTS = {"ntu": PREPARED_SLOTS["ntu60"], "pku": PREPARED_SLOTS["pku2"], "nwucla": PREPARED_SLOTS["nwucla"]}
"""(joints, bodies) of the samples cut from each kind of file."""


@dataclass
class _Scan:
    """What was found under --raw: the samples to prepare, grouped by file, and what was left out."""

    candidates: list[_Candidate] = field(default_factory=list)
    jobs: list[_Job] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    keep_odd_rows: bool = False  # PKU, --pku-odd-rows released
    odd_rows: list[str] = field(default_factory=list)  # videos missing from a split file, put into val
    ignored: int = 0
    outside: int = 0
    files_in_scope: int = 0
    ignore_ids_in_scope: int = 0


def prepare_dataset(
    dataset: str,
    raw: str | os.PathLike,
    out: str | os.PathLike,
    *,
    ignore_list: str | os.PathLike | None = None,
    workers: int = 1,
    pku_frames: str = "reference",
    pku_odd_rows: str = "released",
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> PrepareSummary:
    """Convert a raw dataset to ``out/<benchmark>/{train,val}_{data_joint.npy,num_frame.npy,label.pkl}``.

    Args:
        dataset: ``"ntu60"``, ``"ntu120"``, ``"pku2"`` or ``"nwucla"``.
        raw: folder of the raw files (see the module docstring).
        out: output folder; ``out/.prepare`` holds the progress of an unfinished run.
        ignore_list: NTU missing-skeleton list; its samples are left out.
        workers: processes parsing files; 1 parses in this process.
        pku_frames: frame convention of PKU label files (see :mod:`skeleton.data.pku_format`).
        pku_odd_rows: ``"released"`` keeps the PKU segments ending beyond their video (cut to the video), the
            segments with no frame or no body (all-zero samples) and the videos missing from a split file (in
            that benchmark's val split), as the released script does; ``"skip"`` leaves them out as malformed.
            Either way each one is reported. A negative start is malformed under both.
        progress: show a progress bar.
        log: receives one-line status messages.

    Returns:
        The summary (also saved as ``out/prepare_summary.json``).

    Raises:
        FileNotFoundError: if ``raw`` or a required file in it is missing, or it holds no skeleton file.
        ValueError: for invalid arguments, an ``out`` that is a file or cannot be created or written, or an
            unreadable ignore list / PKU split file.
        OSError: if writing the outputs fails later (e.g. the disk is full).
        PrepareError: if, on the complete NTU (with the official ignore list) or NW-UCLA dataset, a split size differs
            from the published one.
    """
    if dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {DATASETS}, got {dataset!r}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if pku_frames not in FRAME_CONVENTIONS:
        raise ValueError(f"--pku-frames must be one of {FRAME_CONVENTIONS}, got {pku_frames!r}")
    if pku_odd_rows not in ODD_ROWS:
        raise ValueError(f"--pku-odd-rows must be one of {ODD_ROWS}, got {pku_odd_rows!r}")
    raw = Path(raw)
    if not raw.is_dir():
        raise FileNotFoundError(f"--raw {raw} does not exist or is not a folder")
    if dataset in ("pku2", "nwucla") and ignore_list is not None:
        raise ValueError("--ignore-list applies to the NTU datasets only")
    _check_writable(Path(out))
    if dataset == "pku2":
        scan = _scan_pku(raw, pku_frames, pku_odd_rows == "released")
    elif dataset == "nwucla":
        scan = _scan_nwucla(raw)
    else:
        ignore = read_ignore_list(ignore_list) if ignore_list is not None else set()
        scan = _scan_ntu(dataset, raw, ignore)
    writer = _Writer(dataset, Path(out), scan, log)
    summary = writer.finished_summary()
    if summary is not None:
        log(f"{out} is already prepared with these inputs (delete it to prepare again)")
        return summary
    writer.process(workers, progress)
    return writer.finalize()


def _check_writable(out: Path) -> None:
    """Create ``out`` if needed and write a probe file into it, before any work is done.

    Raises:
        ValueError: naming ``--out`` if it is a file, or cannot be created or written.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder (created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise ValueError(f"--out {out}: cannot write there ({error.strerror}: {error.filename or out})") from None


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


def _find_files(raw: Path, suffix: str, scan: _Scan) -> list[Path]:
    """The files named ``*<suffix>`` under ``raw``, searched recursively, sorted.

    A folder that cannot be listed (no permission, an I/O error) is reported in ``scan.malformed``; the search
    goes on without it (``Path.rglob`` would skip it silently, and its samples would be missing unannounced).

    Raises:
        FileNotFoundError: if no such file is found.
    """

    def unreadable(error: OSError) -> None:
        scan.malformed.append(f"{error.filename}: folder not searched, it cannot be read ({error.strerror})")

    files = [
        Path(folder) / name
        for folder, _, names in os.walk(raw, onerror=unreadable)
        for name in names
        if name.endswith(suffix)
    ]
    if not files:
        unread = f" ({'; '.join(scan.malformed)})" if scan.malformed else ""
        raise FileNotFoundError(f"no *{suffix} files under --raw {raw}{unread}")
    return sorted(files)


def _scan_ntu(dataset: str, raw: Path, ignore: set[str]) -> _Scan:
    scan = _Scan()
    for path, sample in _unique_samples(_find_files(raw, ".skeleton", scan), NtuSampleId.parse, scan,
                                        lambda sample: _in_scope(dataset, sample)):  # fmt: skip
        if sample.name in ignore:
            scan.ignored += 1
            continue
        train = tuple(
            ntu_is_training(dataset, benchmark, sample.setup, sample.camera, sample.performer)
            for benchmark in BENCHMARKS[dataset]
        )
        candidate = _Candidate(sample.name, sample.action - 1, train, None, str(path))
        scan.jobs.append(_Job("ntu", str(path), ((len(scan.candidates), candidate),)))
        scan.candidates.append(candidate)
    for name in ignore:
        try:
            scan.ignore_ids_in_scope += _in_scope(dataset, NtuSampleId.parse(name))
        except ValueError:  # an id outside NTU's ranges names no file of any NTU dataset
            pass
    return scan


def _in_scope(dataset: str, sample: NtuSampleId) -> bool:
    """Whether an NTU sample belongs to ``dataset`` (NTU-120 contains NTU-60)."""
    return dataset == "ntu120" or (sample.setup <= NTU60_MAX_SETUP and sample.action <= NTU60_MAX_ACTION)


def _scan_pku(raw: Path, frames: str, keep_odd_rows: bool) -> _Scan:
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
    scan = _Scan(keep_odd_rows=keep_odd_rows)
    for path in videos:
        video = path.stem
        label_path = raw / "label" / path.name
        # As the released script, a video is a training video of a benchmark if that list names it, else val.
        train = tuple(video in splits[benchmark][0] for benchmark in BENCHMARKS["pku2"])
        unlisted = [SPLIT_FILES[b] for b in BENCHMARKS["pku2"] if video not in splits[b][0] | splits[b][1]]
        if unlisted:
            message = f"{path}: video {video} missing from {', '.join(unlisted)}"
            if not keep_odd_rows:
                scan.malformed.append(message)
                continue
            scan.odd_rows.append(f"{message}: put into val there")
        try:
            segments = read_pku_labels(label_path)
        except FileNotFoundError:
            scan.malformed.append(f"{label_path}: label file missing")
            continue
        except SkeletonFormatError as error:
            scan.malformed.append(str(error))
            continue
        items = []
        for number, segment in enumerate(segments, start=1):
            if segment.action > NUM_CLASSES["pku2"]:
                classes = NUM_CLASSES["pku2"]
                scan.malformed.append(f"{label_path}:{segment.line}: action {segment.action} > {classes}")
                continue
            candidate = _Candidate(
                sample_name(video, number), segment.action - 1, train, segment.frames(frames),
                f"{label_path}:{segment.line}",
            )  # fmt: skip
            items.append((len(scan.candidates), candidate))
            scan.candidates.append(candidate)
        scan.files_in_scope += 1
        if items:
            scan.jobs.append(_Job("pku", str(path), tuple(items), keep_odd_rows))
    return scan


def _scan_nwucla(raw: Path) -> _Scan:
    scan = _Scan()
    for path, sample in _unique_samples(_find_files(raw, ".json", scan), NwuclaSampleId.parse, scan):
        candidate = _Candidate(sample.name, sample.label, (sample.view in NWUCLA_TRAIN_VIEWS,), None, str(path))
        scan.jobs.append(_Job("nwucla", str(path), ((len(scan.candidates), candidate),)))
        scan.candidates.append(candidate)
    return scan


def _unique_samples(
    files: list[Path],
    parse: Callable[[str], SampleId],
    scan: _Scan,
    in_scope: Callable[[SampleId], bool] = lambda sample: True,
) -> Iterator[tuple[Path, SampleId]]:
    """The files whose names parse to a sample id in scope, each sample once; the others are counted in ``scan``
    (a name that does not parse or a second file of a sample as malformed, a sample out of scope as outside)."""
    seen: dict[str, Path] = {}
    for path in files:
        try:
            sample = parse(path.name)
        except ValueError as error:
            scan.malformed.append(f"{path}: {error}")
            continue
        if not in_scope(sample):
            scan.outside += 1
            continue
        if sample.name in seen:
            scan.malformed.append(f"{path}: duplicate of {seen[sample.name]}, skipped")
            continue
        seen[sample.name] = path
        scan.files_in_scope += 1
        yield path, sample


def _cut_segment(video: np.ndarray, candidate: _Candidate, keep_odd_rows: bool) -> tuple[np.ndarray | None, str]:
    """The bodies (2, F, 25, 3) of a PKU segment, and a message.

    Returns:
        ``(bodies, "")`` for a segment inside the video; ``(None, why)`` for one that is malformed; with
        ``keep_odd_rows``, ``(bodies, what was done)`` for a segment ending beyond the video (cut at its end) or
        holding none of its frames (F = 0), as the released script's unchecked ``video[start:end]``.
    """
    first, stop = candidate.segment
    frames = len(video)
    inside = 0 <= first < stop <= frames
    if not inside and (not keep_odd_rows or first < 0):  # a negative start would count from the video's end
        return None, f"{candidate.where}: frames [{first}, {stop}) outside the video's {frames} frames"
    bodies = rearrange(video[first:stop], "t m v c -> m t v c")
    if inside:
        return bodies, ""
    if bodies.shape[1]:
        kept = f"end beyond the video's {frames}: cut to [{first}, {frames})"
    else:
        kept = f"hold none of the video's {frames}: kept, 0 frames"
    return bodies, f"{candidate.where}: frames [{first}, {stop}) {kept}"


def _process(jobs: list[_Job]) -> tuple[list[tuple[int, int, int, str]], np.ndarray]:
    """Worker task: read files, cut and pack samples, pre-normalize them together.

    Returns:
        ``(results, samples)``: per candidate ``(index, status, frames in the source, message)``, and the
        pre-normalized float32 samples of the candidates with status DONE, in order. The message says why a
        sample is MALFORMED or EMPTY, or what was done to a DONE one kept by ``--pku-odd-rows released``.
    """
    results, samples = [], []
    for job in jobs:
        try:
            if job.kind == "ntu":
                recording = read_skeleton(job.path)
                whole = (kept_bodies(recording), recording.num_frames)
            elif job.kind == "nwucla":
                joints = read_nwucla(job.path)
                whole = (joints[None], len(joints))
            else:
                video = read_pku_skeleton(job.path)
        except (SkeletonFormatError, OSError) as error:
            results += [(index, MALFORMED, 0, str(error)) for index, _ in job.items]
            continue
        for index, candidate in job.items:
            message = ""
            if candidate.segment is None:
                bodies, total = whole
            else:
                cut, message = _cut_segment(video, candidate, job.keep_odd_rows)
                if cut is None:
                    results.append((index, MALFORMED, 0, message))
                    continue
                bodies, total = cut, cut.shape[1]
            sample, _ = pack_sample(bodies, num_bodies=_JOB_SLOTS[job.kind][1])
            if not sample.any():
                if not job.keep_odd_rows:
                    results.append((index, EMPTY, total, f"{candidate.where}: no body in any frame"))
                    continue
                message = message or f"{candidate.where}: no body in any frame: kept, all zero"
            results.append((index, DONE, total, message))
            samples.append(sample)
    empty_shape = (0, *sample_shape(*_JOB_SLOTS[jobs[0].kind])) if jobs else (0, *sample_shape())
    stacked = np.stack(samples) if samples else np.zeros(empty_shape, dtype=np.float32)
    return results, prenormalize(stacked)


class _Writer:
    """Streams processed samples into the output files and keeps the resumable progress."""

    def __init__(self, dataset: str, out: Path, scan: _Scan, log: Callable[[str], None]) -> None:
        self.dataset = dataset
        self.out = out
        self.scan = scan
        self.log = log
        self.benchmarks = BENCHMARKS[dataset]
        self.work = out / WORK_DIR
        candidates = [(c.name, c.label, c.train, c.segment, c.where) for c in scan.candidates]
        # Kept odd rows are the only choice the candidates do not show; the other fingerprints stay as they were.
        inputs = [dataset, candidates, *(["--pku-odd-rows released"] if scan.keep_odd_rows else [])]
        self.fingerprint = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()
        train = np.array([c.train for c in scan.candidates], dtype=bool).reshape(-1, len(self.benchmarks))
        # members[(benchmark, split)]: boolean mask of the candidates of that split
        self.members = {
            (benchmark, split): train[:, b] if split == "train" else ~train[:, b]
            for b, benchmark in enumerate(self.benchmarks)
            for split in SPLITS
        }
        self.status = np.zeros(len(scan.candidates), dtype=np.int8)
        self.num_frames = np.zeros(len(scan.candidates), dtype=np.int64)
        self.messages: dict[str, str] = {}

    def _partial(self, benchmark: str, split: str) -> Path:
        return self.out / benchmark / (data_file(split) + ".partial")

    def finished_summary(self) -> PrepareSummary | None:
        """The saved summary if ``out`` already holds a finished preparation of the same inputs."""
        path = self.out / SUMMARY_FILE
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        outputs = [
            self.out / benchmark / name(split)
            for benchmark in self.benchmarks
            for split in SPLITS
            for name in (data_file, num_frame_file, label_file)
        ]
        if saved.pop("fingerprint", None) != self.fingerprint or not all(p.is_file() for p in outputs):
            return None
        return PrepareSummary(**saved)

    def _resume(self) -> bool:
        state = self.work / STATE_FILE
        if not state.is_file() or not all(self._partial(b, s).is_file() for b, s in self.members):
            return False
        with np.load(state, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            status, num_frames = saved["status"], saved["num_frames"]
        if meta["fingerprint"] != self.fingerprint:
            self.log(f"discarding the unfinished preparation in {self.work}: its inputs differ")
            return False
        self.status, self.num_frames, self.messages = status, num_frames, meta["messages"]
        self.log(f"resuming: {int((self.status != PENDING).sum())} of {len(self.status)} samples already done")
        return True

    def _start(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        (self.out / SUMMARY_FILE).unlink(missing_ok=True)
        for (benchmark, split), mask in self.members.items():
            (self.out / benchmark).mkdir(parents=True, exist_ok=True)
            shape = (
                int(mask.sum()),
                *sample_shape(*PREPARED_SLOTS[self.dataset]),
            )  # upper bound; shrunk to the kept samples at the end
            np.lib.format.open_memmap(self._partial(benchmark, split), mode="w+", dtype=np.float32, shape=shape)
        self._save_state()

    def _save_state(self) -> None:
        # One file, replaced atomically: statuses, frame counts and messages always come from the same save, so
        # a kill at any moment leaves either the previous state or the new one, never a done sample without its
        # frame count.
        meta = np.array(json.dumps({"fingerprint": self.fingerprint, "messages": self.messages}))
        atomic_write(
            self.work / STATE_FILE,
            lambda handle: np.savez(handle, status=self.status, num_frames=self.num_frames, meta=meta),
        )

    def process(self, workers: int, progress: bool) -> None:
        """Process every pending candidate, in order, saving progress after each block."""
        if not self._resume():
            self._start()
        # Candidates complete in order, so the finished ones are a prefix and the next write positions are
        # the counts of finished samples per split.
        done = int(np.argmin(self.status != PENDING)) if (self.status == PENDING).any() else len(self.status)
        position = {key: int((self.status[:done] == DONE)[mask[:done]].sum()) for key, mask in self.members.items()}
        jobs = [job for job in self.scan.jobs if job.items[0][0] >= done]
        block = SAMPLES_PER_WORKER_BLOCK * workers
        pool = multiprocessing.Pool(workers) if workers > 1 else None  # before tqdm starts its monitor thread
        bar = _Progress(len(self.status), done, f"prepare {self.dataset}", progress, self.log)
        try:
            for batches in _blocks(jobs, SAMPLES_PER_BATCH, block):
                outputs = {key: np.lib.format.open_memmap(self._partial(*key), mode="r+") for key in self.members}
                try:
                    for results, samples in pool.imap(_process, batches) if pool else map(_process, batches):
                        kept = iter(samples)
                        for index, status, total, message in results:
                            if status == DONE:
                                sample = next(kept)
                                for key, mask in self.members.items():
                                    if mask[index]:
                                        outputs[key][position[key]] = sample
                                        position[key] += 1
                            if status != EMPTY and message:  # why it was skipped, or what was done to keep it
                                self.messages[str(index)] = message
                            self.status[index], self.num_frames[index] = status, total
                        bar.update(len(results))
                finally:
                    for array in outputs.values():
                        array.flush()
                    del outputs  # unmapping releases the written pages: memory stays bounded
                    self._save_state()
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()

    def finalize(self) -> PrepareSummary:
        """Check the split sizes, write the final files, the summary, and remove the progress."""
        summary = PrepareSummary(dataset=self.dataset, out=str(self.out), ignored=self.scan.ignored)
        summary.outside = self.scan.outside
        summary.truncated = int(((self.status == DONE) & (self.num_frames > MAX_FRAMES)).sum())
        skipped = [self.messages[str(i)] for i in np.flatnonzero(self.status == MALFORMED)]
        summary.malformed = list(dict.fromkeys(self.scan.malformed + skipped))  # a bad video fails all its samples
        kept_odd = [self.messages[str(i)] for i in np.flatnonzero(self.status == DONE) if str(i) in self.messages]
        summary.odd_rows = self.scan.odd_rows + kept_odd
        summary.empty = [self.scan.candidates[i].name for i in np.flatnonzero(self.status == EMPTY)]
        for benchmark in self.benchmarks:
            summary.counts[benchmark] = {
                split: int((self.status == DONE)[self.members[benchmark, split]].sum()) for split in SPLITS
            }
        summary.published_sizes_checked = self._check_published_sizes(summary)
        for (benchmark, split), mask in self.members.items():
            kept = np.flatnonzero(mask & (self.status == DONE))
            folder = self.out / benchmark
            _truncate_rows(self._partial(benchmark, split), len(kept))
            frames = np.minimum(self.num_frames[kept], MAX_FRAMES)
            atomic_write(folder / num_frame_file(split), lambda handle, f=frames: np.save(handle, f))
            names = [self.scan.candidates[i].name for i in kept]
            labels = [self.scan.candidates[i].label for i in kept]
            atomic_write(folder / label_file(split), lambda handle, v=(names, labels): pickle.dump(v, handle))
            os.replace(self._partial(benchmark, split), folder / data_file(split))
        saved = {**asdict(summary), "fingerprint": self.fingerprint}
        atomic_write(self.out / SUMMARY_FILE, lambda handle: handle.write(json.dumps(saved, indent=1).encode()))
        shutil.rmtree(self.work)
        return summary

    def _check_published_sizes(self, summary: PrepareSummary) -> bool:
        """On a complete NTU (with its official ignore list) or NW-UCLA dataset, the split sizes must be the published
        ones."""
        if self.dataset not in FULL_FILE_COUNTS:
            return False
        complete = (
            self.scan.files_in_scope == FULL_FILE_COUNTS[self.dataset]
            and self.scan.ignore_ids_in_scope == MISSING_COUNTS[self.dataset]
            and not summary.malformed
        )
        if not complete:
            return False
        for benchmark in self.benchmarks:
            expected = PUBLISHED_SPLIT_SIZES[self.dataset, benchmark]
            found = (summary.counts[benchmark]["train"], summary.counts[benchmark]["val"])
            if found != expected:
                raise PrepareError(
                    f"{self.dataset} {benchmark}: {found[0]} train / {found[1]} val samples, but the published split"
                    f" has {expected[0]} / {expected[1]}; {len(summary.empty)} samples without body were dropped"
                    f" (progress kept in {self.work})"
                )
        return True


class _Progress:
    """Finished samples: a tqdm bar on a terminal; elsewhere (a job log, CI), where every redraw of a bar would be
    kept, one line at each tenth of the total.

    Args:
        total: samples in all.
        done: samples finished before (a resumed run).
        description: label of the bar and the lines.
        enabled: report progress at all.
        log: receives the lines.
    """

    def __init__(self, total: int, done: int, description: str, enabled: bool, log: Callable[[str], None]) -> None:
        self.bar = tqdm(
            total=total, initial=done, unit="sample", desc=description, disable=not (enabled and interactive())
        )
        self.lines = enabled and not interactive()
        self.total, self.done, self.description, self.log = total, done, description, log
        self.tenths = self._tenths()

    def _tenths(self) -> int:
        return self.done * 10 // max(self.total, 1)

    def update(self, count: int) -> None:
        """Count ``count`` more finished samples."""
        self.bar.update(count)
        self.done += count
        if self.lines and self._tenths() > self.tenths:
            self.tenths = self._tenths()
            self.log(f"{self.description}: {self.done}/{self.total} samples")

    def close(self) -> None:
        self.bar.close()


def _blocks(jobs: list[_Job], per_batch: int, per_block: int) -> Iterator[list[list[_Job]]]:
    """Group jobs into worker batches of about ``per_batch`` samples, and batches into blocks of ``per_block``."""
    block: list[list[_Job]] = []
    batch: list[_Job] = []
    batch_size = block_size = 0
    for job in jobs:
        batch.append(job)
        batch_size += len(job.items)
        if batch_size >= per_batch:
            block.append(batch)
            block_size += batch_size
            batch, batch_size = [], 0
            if block_size >= per_block:
                yield block
                block, block_size = [], 0
    if batch:
        block.append(batch)
    if block:
        yield block


def _truncate_rows(path: Path, rows: int) -> None:
    """Shrink the first axis of an ``.npy`` file in place: rewrite its header, same length, and cut the data."""
    with open(path, "r+b") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
        data_start = handle.tell()
        prefix = 8 + (2 if version == (1, 0) else 4)  # magic string, version, header length field
        header = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran_order,
                       "shape": (rows, *shape[1:])})  # fmt: skip
        room = data_start - prefix - 1  # the header ends with a newline
        if len(header) > room:
            raise PrepareError(f"cannot shrink {path}: new header longer than the old one")
        handle.seek(prefix)
        handle.write((header.ljust(room) + "\n").encode("latin1"))
    os.truncate(path, data_start + rows * int(np.prod(shape[1:])) * dtype.itemsize)


if __name__ == "__main__":
    sys.exit(main())

"""``prepare``: raw skeleton files to the prepared layout of CMD/HaLP, one generic resumable writer for every format.

Usage (through ``examples/skeleton_moco.py``)::

    skeleton_moco.py prepare --dataset ntu60 --raw RAW --out DATA_ROOT/ntu60 \
        --ignore-list NTU_RGBD_samples_with_missing_skeletons.txt
    skeleton_moco.py prepare --dataset ntu120 --raw RAW --out DATA_ROOT/ntu120 \
        --ignore-list NTU_RGBD120_samples_with_missing_skeletons.txt
    skeleton_moco.py prepare --dataset pku2 --raw PKU --out DATA_ROOT/pku2
    skeleton_moco.py prepare --dataset nwucla --raw all_sqe --out DATA_ROOT/nwucla
    skeleton_moco.py prepare --dataset sbu --raw SBU --out DATA_ROOT/sbu --fold 1
    skeleton_moco.py prepare --dataset msr-action3d --raw MSR --out DATA_ROOT/msr-action3d

What each format expects under ``--raw`` and how its samples are named and split is in its adapter module
(``skeleton.data.formats``); the adapters are listed in ``skeleton.data.registry.FORMATS``.

The prepared layout, shared with the loader (``skeleton.data.datasets``): one folder per benchmark (e.g.
``ntu60/xsub``) holding, for each split ``train`` / ``val``, ``{split}_data_joint.npy`` float32 (N, 3, 300, V, M),
``{split}_num_frame.npy`` (N,) valid frame counts and ``{split}_label.pkl`` = ``(sample_names, labels)`` with
0-based labels — the layout of the CMD and HaLP repositories — and beside the benchmark folders
``prepare_summary.json``: the family (``dataset``), its layout name, the counts and every file skipped.

Files are parsed and pre-normalized in ``--num-workers`` processes; samples stream into ``.npy`` files opened
with ``np.lib.format.open_memmap`` (re-opened per block, so memory stays bounded whatever the dataset size).
Progress is saved after every block in ``OUT/.prepare/state.npz`` (one file, replaced atomically): an interrupted
run resumes where it stopped when started again with the same arguments. Malformed files are reported with file
name and line, skipped and listed in the final summary; the exit code is 0 unless ``--strict`` is given and
something was skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from einops import rearrange

from ..fileio import atomic_write
from ..progress import SampleCounter
from .formats import MAX_FRAMES, NUM_COORDS, FileJob, PrepareOption, RawFormat, Reader, Scan
from .formats.text import SkeletonFormatError
from .layouts import BUILT_IN_LAYOUTS
from .prenormalize import prenormalize
from .registry import FORMATS

SPLITS: tuple[str, ...] = ("train", "val")
SUMMARY_FILE = "prepare_summary.json"
"""What ``prepare`` wrote into a family folder (``DATA_ROOT/ntu60``): its family, layout, counts and skipped files."""
PENDING, DONE, MALFORMED, EMPTY = 0, 1, 2, 3
WORK_DIR = ".prepare"
LOCK_FILE = ".prepare.lock"  # held while a run writes into the folder
STATE_FILE = "state.npz"  # in WORK_DIR: per sample status and frame count, the fingerprint and the messages
SAMPLES_PER_BATCH = 8  # files a worker parses and pre-normalizes per task
SAMPLES_PER_WORKER_BLOCK = 64  # samples in flight per worker between two saves of the progress


class PrepareError(RuntimeError):
    """The prepared data fails a consistency check (e.g. split sizes differ from the published ones)."""


def data_file(split: str) -> str:
    """File name of a split's joint array."""
    return f"{split}_data_joint.npy"


def num_frame_file(split: str) -> str:
    """File name of a split's valid-frame counts."""
    return f"{split}_num_frame.npy"


def label_file(split: str) -> str:
    """File name of a split's ``(sample_names, labels)`` pickle."""
    return f"{split}_label.pkl"


def sample_shape(num_joints: int, num_bodies: int) -> tuple[int, int, int, int]:
    """Shape (3, 300, V, M) of one prepared sample."""
    return (NUM_COORDS, MAX_FRAMES, num_joints, num_bodies)


def pack_sample(bodies: np.ndarray, num_joints: int, num_bodies: int) -> np.ndarray:
    """Place a recording's bodies into one sample of the prepared layout.

    Args:
        bodies: array (B, F, V, 3) with B <= ``num_bodies`` bodies, F frames (any F >= 0) and V = ``num_joints``.
        num_joints: V, the joints of the prepared sample.
        num_bodies: M, the body slots of the prepared sample.

    Returns:
        float32 (3, 300, V, M), zero-padded in time and bodies, keeping the first 300 frames.

    Raises:
        ValueError: if ``bodies`` does not have shape (B <= num_bodies, F, num_joints, 3).
    """
    if bodies.ndim != 4 or bodies.shape[0] > num_bodies or bodies.shape[2:] != (num_joints, NUM_COORDS):
        expected = f"(B<={num_bodies}, F, {num_joints}, {NUM_COORDS})"
        raise ValueError(f"bodies must have shape {expected}, got {bodies.shape}")
    num_frames = min(bodies.shape[1], MAX_FRAMES)
    sample = np.zeros(sample_shape(num_joints, num_bodies), dtype=np.float32)
    sample[:, :num_frames, :, : bodies.shape[0]] = rearrange(bodies[:, :num_frames], "m t v c -> c t v m")
    return sample


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``prepare`` options to an argument parser: the common ones, then each format's own."""
    families = "; ".join(f"{family}: {fmt.raw_help}" for family, fmt in FORMATS.items())
    parser.add_argument("--dataset", required=True, choices=tuple(FORMATS), help="which raw dataset --raw holds")
    parser.add_argument("--raw", required=True, type=Path, help=f"folder of the raw files: {families}")
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. DATA_ROOT/ntu60")
    parser.add_argument("--num-workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    parser.add_argument("--strict", action="store_true", help="exit with 1 if any file was malformed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    for option, owners in _format_options().values():
        option.add_to(parser, "/".join(owners))


def _format_options() -> dict[str, tuple[PrepareOption, list[str]]]:
    """Each format option by flag, with the families that declare it (NTU-60 and NTU-120 share theirs)."""
    options: dict[str, tuple[PrepareOption, list[str]]] = {}
    for family, fmt in FORMATS.items():
        for option in fmt.options:
            options.setdefault(option.flag, (option, []))[1].append(family)
    return options


def run_prepare(args: argparse.Namespace) -> int:
    """Run ``prepare`` from parsed arguments (see ``add_prepare_arguments``).

    Returns:
        Exit code: 0 on success (malformed files skipped and listed), 1 with ``--strict`` when files were
        skipped as malformed, 2 on an error (missing input, bad arguments, an ``--out`` that cannot be written, a
        failed consistency check, or any other file-system error, which names its file).
    """
    options = {option.name: getattr(args, option.name) for option, _ in _format_options().values()}
    try:
        summary = prepare_dataset(
            args.dataset, args.raw, args.out, num_workers=args.num_workers, progress=not args.quiet, **options
        )
    except (OSError, ValueError, PrepareError) as error:
        print(f"prepare: error: {error}", file=sys.stderr)
        return 2
    print(summary.report())
    return 1 if args.strict and summary.malformed else 0


@dataclass
class PrepareSummary:
    """What a ``prepare`` run produced and skipped.

    Attributes:
        dataset: the family, as ``prepare --dataset`` names it (e.g. ``ntu60`` or ``sbu``).
        layout: name of the skeleton layout of the samples (``kinect_v2``, ``kinect_v1``, ``openni15``).
        out: output folder.
        counts: ``{benchmark: {"train": n, "val": n}}`` of the benchmarks this run wrote, and of those an earlier run
            of the same family left in ``out`` (SBU: each fold prepared into it).
        malformed: ``file:line: message`` of every skipped malformed or unreadable input.
        notes: ``file[:line]: message`` of every sample or file kept though odd, with what was done to it (PKU
            label rows kept as the released script keeps them, MSR Action3D frames without any tracked joint
            dropped, ...).
        empty: names of samples dropped because no body appears in any frame.
        ignored: samples left out through an ignore list (NTU ``--ignore-list``).
        outside: files that belong to another dataset (e.g. NTU-120 setups in an ``ntu60`` run).
        truncated: samples longer than 300 frames (their first 300 are kept).
        published_sizes_checked: whether the split sizes were checked against the published ones.
    """

    dataset: str
    layout: str
    out: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    malformed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    ignored: int = 0
    outside: int = 0
    truncated: int = 0
    published_sizes_checked: bool = False

    def report(self) -> str:
        """A human-readable multi-line summary."""
        lines = [f"prepared {self.dataset} ({self.layout} layout) into {self.out}"]
        for benchmark, counts in self.counts.items():
            lines.append(f"  {benchmark}: train {counts['train']}, val {counts['val']}")
            lines.extend(f"    {benchmark} {split} holds no sample: it cannot be trained or evaluated on"
                         for split, count in counts.items() if not count)  # fmt: skip
        if self.published_sizes_checked:
            lines.append("  split sizes equal the published ones")
        if self.ignored:
            lines.append(f"  left out by --ignore-list: {self.ignored}")
        if self.outside:
            lines.append(f"  files of another dataset, not used: {self.outside}")
        if self.truncated:
            lines.append(f"  longer than {MAX_FRAMES} frames, first {MAX_FRAMES} kept: {self.truncated}")
        if self.notes:
            lines.append(f"  kept, with a note: {len(self.notes)}")
            lines.extend(f"    {message}" for message in self.notes)
        lines.append(f"  dropped, no body in any frame: {len(self.empty)}")
        lines.extend(f"    {name}" for name in self.empty)
        lines.append(f"  skipped, malformed: {len(self.malformed)}")
        lines.extend(f"    {message}" for message in self.malformed)
        return "\n".join(lines)


def prepare_dataset(
    family: str,
    raw: str | os.PathLike,
    out: str | os.PathLike,
    *,
    num_workers: int = 1,
    progress: bool = False,
    log: Callable[[str], None] = print,
    **options: Any,
) -> PrepareSummary:
    """Convert a raw dataset to ``out/<benchmark>/{train,val}_{data_joint.npy,num_frame.npy,label.pkl}``.

    Args:
        family: a family of ``skeleton.data.registry.FORMATS`` (``"ntu60"``, ``"pku2"``, ``"sbu"``, ...).
        raw: folder of the raw files (see the format's module).
        out: output folder; ``out/.prepare`` holds the progress of an unfinished run.
        num_workers: processes parsing files; 1 parses in this process.
        progress: show a progress bar.
        log: receives one-line status messages.
        **options: the format's own options by keyword (``ignore_list`` for NTU, ``pku_frames`` and
            ``pku_odd_rows`` for PKU-MMD, ``fold`` for SBU); None or absent means the format's default.

    Returns:
        The summary (also saved as ``out/prepare_summary.json``).

    Raises:
        FileNotFoundError: if ``raw`` or a required file in it is missing, or it holds no skeleton file.
        ValueError: for invalid arguments (an option another format declares, a value outside its choices), an
            ``out`` that is a file or cannot be created or written, or an unreadable ignore list / split file.
        OSError: if writing the outputs fails later (e.g. the disk is full).
        PrepareError: if ``raw`` holds no sample of the dataset (every file skipped), or, on a complete release, a
            split size differs from the published one.

    Example:
        >>> prepare_dataset("sbu", "shared/data/sbu-kinect-interaction", "data/sbu", fold=2)  # doctest: +SKIP
    """
    if family not in FORMATS:
        raise ValueError(f"--dataset must be one of {tuple(FORMATS)}, got {family!r}")
    fmt = FORMATS[family]
    if num_workers < 1:
        raise ValueError(f"--num-workers must be >= 1, got {num_workers}")
    resolved = _resolve_options(fmt, options)
    raw = Path(raw)
    if not raw.is_dir():
        raise FileNotFoundError(f"--raw {raw} does not exist or is not a folder")
    _check_writable(Path(out))
    with _exclusive(Path(out)):
        scan = fmt.scan(raw, resolved)
        if not scan.samples:
            skipped = f": {len(scan.malformed)} skipped, the first: {scan.malformed[0]}" if scan.malformed else ""
            raise PrepareError(f"no {family} sample to prepare under --raw {raw}{skipped}")
        writer = _Writer(fmt, Path(out), scan, log)
        summary = writer.finished_summary()
        if summary is not None:
            log(f"{out} is already prepared with these inputs (delete it to prepare again)")
            return summary
        writer.process(num_workers, progress)
        return writer.finalize()


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold ``out/.prepare.lock`` for the preparation: two runs into one ``--out`` (e.g. two SBU folds started
    together) would share its progress file. The kernel releases the lock when the process ends, however it ends.

    Raises:
        ValueError: naming ``--out`` if another process is preparing into it.
    """
    with open(out / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"--out {out} is being prepared by another process (it holds {out / LOCK_FILE}); wait for it to finish"
                " or give another --out"
            ) from None
        yield


def _resolve_options(fmt: RawFormat, options: dict[str, Any]) -> dict[str, Any]:
    """The format's options with defaults filled in.

    Raises:
        ValueError: for an option the format does not declare (given, not None), or a value outside its choices.
    """
    own = {option.name: option for option in fmt.options}
    for name, value in options.items():
        if name in own or value is None:
            continue
        owners = _format_options().get("--" + name.replace("_", "-"))
        if owners is None:
            raise ValueError(f"unknown prepare option {name!r}")
        raise ValueError(f"{owners[0].flag} applies to --dataset {'/'.join(owners[1])} only, not {fmt.family}")
    return {name: option.resolve(options.get(name)) for name, option in own.items()}


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


@dataclass(frozen=True)
class _Task:
    """What a worker needs besides the jobs: how to read them, the prepared sample's shape and its layout."""

    reader: Reader
    num_joints: int
    num_bodies: int
    layout: str


def _process(task: _Task, jobs: list[FileJob]) -> tuple[list[tuple[int, int, int, str]], np.ndarray]:
    """Worker task: read files, pack their samples, pre-normalize them together.

    Returns:
        ``(results, samples)``: per sample ``(index, status, frames in the source, message)``, and the
        pre-normalized float32 samples of those with status DONE, in order. The message says why a sample is
        MALFORMED or EMPTY, or what was done to a DONE one (a note).
    """
    results, samples = [], []
    for job in jobs:
        try:
            cuts = task.reader(job)
        except (SkeletonFormatError, OSError) as error:
            results += [(index, MALFORMED, 0, str(error)) for index, _ in job.items]
            continue
        if len(cuts) != len(job.items):
            raise RuntimeError(f"{task.reader} returned {len(cuts)} samples for {job.path}, expected {len(job.items)}")
        for cut, (index, sample_ref) in zip(cuts, job.items):
            if cut.bodies is None:
                results.append((index, MALFORMED, 0, cut.message))
                continue
            sample = pack_sample(cut.bodies, task.num_joints, task.num_bodies)
            message = cut.message
            if not sample.any():
                if not cut.keep_empty:
                    results.append((index, EMPTY, cut.num_frames, f"{sample_ref.where}: no body in any frame"))
                    continue
                message = message or f"{sample_ref.where}: no body in any frame: kept, all zero"
            results.append((index, DONE, cut.num_frames, message))
            samples.append(sample)
    shape = (len(samples), *sample_shape(task.num_joints, task.num_bodies))
    stacked = np.stack(samples) if samples else np.zeros(shape, dtype=np.float32)
    return results, prenormalize(stacked, BUILT_IN_LAYOUTS[task.layout])


class _Writer:
    """Streams processed samples into the output files and keeps the resumable progress."""

    def __init__(self, fmt: RawFormat, out: Path, scan: Scan, log: Callable[[str], None]) -> None:
        self.fmt = fmt
        self.out = out
        self.scan = scan
        self.log = log
        self.benchmarks = scan.benchmarks
        self.work = out / WORK_DIR
        samples = [(s.name, s.label, s.train, s.segment, s.where) for s in scan.samples]
        self.fingerprint = hashlib.sha256(json.dumps([fmt.family, samples, *scan.settings]).encode()).hexdigest()
        train = np.array([s.train for s in scan.samples], dtype=bool).reshape(-1, len(self.benchmarks))
        # members[(benchmark, split)]: boolean mask of the samples of that split
        self.members = {
            (benchmark, split): train[:, b] if split == "train" else ~train[:, b]
            for b, benchmark in enumerate(self.benchmarks)
            for split in SPLITS
        }
        self.status = np.zeros(len(scan.samples), dtype=np.int8)
        self.num_frames = np.zeros(len(scan.samples), dtype=np.int64)
        self.messages: dict[str, str] = {}
        self.earlier: dict[str, dict[str, int]] = {}  # counts of the other benchmarks already in out

    def _partial(self, benchmark: str, split: str) -> Path:
        return self.out / benchmark / (data_file(split) + ".partial")

    def finished_summary(self) -> PrepareSummary | None:
        """The saved summary if ``out`` already holds a finished preparation of the same inputs.

        A summary that cannot be read, or was written by another version (other fields), is not one: the
        preparation runs again and replaces it.
        """
        saved = self._saved_summary(report=True)
        if saved is None or saved.pop("fingerprint", None) != self.fingerprint:
            return None
        if not all(self._outputs_exist(benchmark) for benchmark in self.benchmarks):
            return None
        return PrepareSummary(**saved)

    def _saved_summary(self, report: bool) -> dict[str, Any] | None:
        """The summary in ``out`` as written by this version, or None (``report``: say why it is not used)."""
        path = self.out / SUMMARY_FILE
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            if report:
                self.log(f"{path} is unreadable ({error}); preparing again")
            return None
        expected = {f.name for f in fields(PrepareSummary)} | {"fingerprint"}
        if not isinstance(saved, dict) or set(saved) != expected:
            if report:
                self.log(f"{path} was written by another version; preparing again")
            return None
        return saved

    def _outputs_exist(self, benchmark: str) -> bool:
        return all(
            (self.out / benchmark / name(split)).is_file()
            for split in SPLITS
            for name in (data_file, num_frame_file, label_file)
        )

    def _earlier_counts(self) -> dict[str, dict[str, int]]:
        """The counts of the other benchmarks an earlier run of the same family left in ``out`` (SBU: the other
        folds), kept in the new summary."""
        saved = self._saved_summary(report=False)
        if saved is None or saved["dataset"] != self.fmt.family or not isinstance(saved["counts"], dict):
            return {}
        return {
            benchmark: counts
            for benchmark, counts in saved["counts"].items()
            if benchmark in self.fmt.benchmarks and benchmark not in self.benchmarks and self._outputs_exist(benchmark)
        }

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
        self.earlier = meta.get("earlier", {})  # absent from the progress of an earlier version
        self.log(f"resuming: {int((self.status != PENDING).sum())} of {len(self.status)} samples already done")
        return True

    def _start(self) -> None:
        self.earlier = self._earlier_counts()
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        (self.out / SUMMARY_FILE).unlink(missing_ok=True)
        for (benchmark, split), mask in self.members.items():
            (self.out / benchmark).mkdir(parents=True, exist_ok=True)
            # An upper bound of the rows; shrunk to the kept samples at the end.
            shape = (int(mask.sum()), *sample_shape(self.fmt.num_joints, self.fmt.num_bodies))
            np.lib.format.open_memmap(self._partial(benchmark, split), mode="w+", dtype=np.float32, shape=shape)
        self._save_state()

    def _save_state(self) -> None:
        # One file, replaced atomically: statuses, frame counts and messages always come from the same save, so
        # a kill at any moment leaves either the previous state or the new one, never a done sample without its
        # frame count.
        meta = {"fingerprint": self.fingerprint, "messages": self.messages, "earlier": self.earlier}
        meta = np.array(json.dumps(meta))
        atomic_write(
            self.work / STATE_FILE,
            lambda handle: np.savez(handle, status=self.status, num_frames=self.num_frames, meta=meta),
        )

    def process(self, num_workers: int, progress: bool) -> None:
        """Process every pending sample, in order, saving progress after each block."""
        if not self._resume():
            self._start()
        # Samples complete in order, so the finished ones are a prefix and the next write positions are
        # the counts of finished samples per split.
        done = int(np.argmin(self.status != PENDING)) if (self.status == PENDING).any() else len(self.status)
        position = {key: int((self.status[:done] == DONE)[mask[:done]].sum()) for key, mask in self.members.items()}
        jobs = [job for job in self.scan.jobs if job.items[0][0] >= done]
        process = functools.partial(
            _process, _Task(self.scan.reader, self.fmt.num_joints, self.fmt.num_bodies, self.fmt.layout)
        )
        block = SAMPLES_PER_WORKER_BLOCK * num_workers
        pool = multiprocessing.Pool(num_workers) if num_workers > 1 else None  # before tqdm starts its thread
        bar = SampleCounter(len(self.status), done, f"prepare {self.fmt.family}", progress, self.log)
        try:
            for batches in _blocks(jobs, SAMPLES_PER_BATCH, block):
                outputs = {key: np.lib.format.open_memmap(self._partial(*key), mode="r+") for key in self.members}
                try:
                    for results, samples in pool.imap(process, batches) if pool else map(process, batches):
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
        summary = PrepareSummary(dataset=self.fmt.family, layout=self.fmt.layout, out=str(self.out))
        summary.ignored, summary.outside = self.scan.ignored, self.scan.outside
        summary.truncated = int(((self.status == DONE) & (self.num_frames > MAX_FRAMES)).sum())
        skipped = [self.messages[str(i)] for i in np.flatnonzero(self.status == MALFORMED)]
        summary.malformed = list(dict.fromkeys(self.scan.malformed + skipped))  # a bad video fails all its samples
        kept_odd = [self.messages[str(i)] for i in np.flatnonzero(self.status == DONE) if str(i) in self.messages]
        summary.notes = self.scan.notes + kept_odd
        summary.empty = [self.scan.samples[i].name for i in np.flatnonzero(self.status == EMPTY)]
        for benchmark in self.benchmarks:
            summary.counts[benchmark] = {
                split: int((self.status == DONE)[self.members[benchmark, split]].sum()) for split in SPLITS
            }
        summary.published_sizes_checked = self._check_published_sizes(summary)
        counts = {**self.earlier, **summary.counts}
        summary.counts = {benchmark: counts[benchmark] for benchmark in self.fmt.benchmarks if benchmark in counts}
        for (benchmark, split), mask in self.members.items():
            kept = np.flatnonzero(mask & (self.status == DONE))
            folder = self.out / benchmark
            _truncate_rows(self._partial(benchmark, split), len(kept))
            frames = np.minimum(self.num_frames[kept], MAX_FRAMES)
            atomic_write(folder / num_frame_file(split), lambda handle, f=frames: np.save(handle, f))
            names = [self.scan.samples[i].name for i in kept]
            labels = [self.scan.samples[i].label for i in kept]
            atomic_write(folder / label_file(split), lambda handle, v=(names, labels): pickle.dump(v, handle))
            os.replace(self._partial(benchmark, split), folder / data_file(split))
        saved = {**asdict(summary), "fingerprint": self.fingerprint}
        atomic_write(self.out / SUMMARY_FILE, lambda handle: handle.write(json.dumps(saved, indent=1).encode()))
        shutil.rmtree(self.work)
        return summary

    def _check_published_sizes(self, summary: PrepareSummary) -> bool:
        """On a complete release (the scan found every file; nothing malformed but the samples the release is
        known to break), the split sizes must be the published ones."""
        broken = {self.scan.samples[i].name for i in np.flatnonzero(self.status == MALFORMED)}
        if not (self.scan.complete and not self.scan.malformed and broken <= self.fmt.known_broken):
            return False
        for benchmark in self.benchmarks:
            expected = self.fmt.published_sizes.get(benchmark)
            if expected is None:
                return False
            found = (summary.counts[benchmark]["train"], summary.counts[benchmark]["val"])
            if found != expected:
                raise PrepareError(
                    f"{self.fmt.family} {benchmark}: {found[0]} train / {found[1]} val samples, but the published"
                    f" split has {expected[0]} / {expected[1]}; {len(summary.empty)} samples without body were"
                    f" dropped (progress kept in {self.work})"
                )
        return True


def _blocks(jobs: list[FileJob], per_batch: int, per_block: int) -> Iterator[list[list[FileJob]]]:
    """Group jobs into worker batches of about ``per_batch`` samples, and batches into blocks of ``per_block``."""
    block: list[list[FileJob]] = []
    batch: list[FileJob] = []
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

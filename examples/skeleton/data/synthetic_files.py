"""Writers that store synthetic samples in the raw NTU RGB+D and PKU-MMD II file formats.

They let ``prepare`` be tested end to end on files in the exact formats of the real datasets.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from einops import rearrange

from .benchmarks import NUM_JOINTS
from .ntu_format import recording_from_bodies, write_skeleton
from .pku_format import (
    FRAME_CONVENTIONS,
    SPLIT_FILES,
    PkuSegment,
    sample_name,
    write_pku_labels,
    write_pku_skeleton,
    write_pku_split,
)
from .synthetic import SyntheticSamples, is_held_out


def write_ntu_skeleton_files(
    samples: SyntheticSamples,
    out_dir: str | os.PathLike,
    *,
    crlf: bool = False,
    exponent: bool = False,
    extra_bodies: int = 0,
    seed: int = 0,
) -> list[Path]:
    """Write samples as real-format NTU ``.skeleton`` files named after the samples.

    A dropped frame (all zeros) is written as a frame with no body; a missing second body is not listed.

    Args:
        samples: output of :func:`generate_synthetic`.
        out_dir: destination folder (created if needed).
        crlf: CRLF line endings.
        exponent: exponent notation for every non-integral value.
        extra_bodies: number of additional small, nearly static bodies (0-2) listed after the real ones in
            every frame, as Kinect ghosts; the NTU reader must discard them by motion energy, except that a
            ghost outranks an absent second body.
        seed: seed of the ghost bodies.

    Returns:
        The written paths, in sample order.

    Raises:
        ValueError: if ``extra_bodies`` is not in 0..2.
    """
    if not 0 <= extra_bodies <= 2:
        raise ValueError(f"extra_bodies must be in 0..2 (at most 4 bodies per frame), got {extra_bodies}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for sample, count, name in zip(samples.data, samples.num_frames, samples.names):
        bodies = rearrange(sample[:, :count].astype(np.float64), "c t v m -> m t v c")
        if extra_bodies:
            # A small blob far behind the performers: low spatial spread, so low energy.
            center = rng.uniform([-1.0, -0.5, 4.0], [1.0, 0.5, 4.5], size=(extra_bodies, 1, 1, 3))
            ghosts = center + rng.normal(0.0, 0.01, size=(extra_bodies, count, NUM_JOINTS, 3))
            ghosts[:, ~np.any(bodies[0] != 0, axis=(1, 2))] = 0.0  # lost frames lose every body
            # Ghosts come after the real bodies in each frame; an absent second body leaves slot 1 to them.
            bodies = np.concatenate([bodies, ghosts])
        path = out / f"{name}.skeleton"
        write_skeleton(path, recording_from_bodies(bodies), crlf=crlf, exponent=exponent)
        paths.append(path)
    return paths


def write_pku_files(
    samples: SyntheticSamples,
    out_dir: str | os.PathLike,
    *,
    samples_per_video: int = 4,
    frame_convention: str = "reference",
    crlf: bool = False,
    seed: int = 0,
) -> dict[str, str]:
    """Write samples as a PKU-MMD Phase II folder: ``skeleton/``, ``label/`` and the two split files.

    Samples of one performer and camera are concatenated into videos of up to ``samples_per_video`` actions,
    each preceded by a few frames holding its first pose; the label rows locate them under
    ``frame_convention``. Cameras 1-3 are the PKU views L, M, R; the splits follow the synthetic x-sub and
    x-view rules (:func:`skeleton.data.synthetic.is_held_out`).

    Args:
        samples: output of :func:`skeleton.data.synthetic.generate_synthetic`.
        out_dir: destination folder (created if needed).
        samples_per_video: action instances per video.
        frame_convention: ``"reference"`` ([start, end) 0-based) or ``"inclusive"`` (1-based, inclusive).
        crlf: CRLF line endings in skeleton and label files.
        seed: seed of the pause lengths.

    Returns:
        ``{PKU sample name: synthetic sample name}``, PKU names as ``prepare`` gives them (``<video>_<row>``).

    Raises:
        ValueError: for more than 3 cameras, an unknown frame convention or samples_per_video < 1.
    """
    if samples.camera.size and samples.camera.max() > 3:
        raise ValueError("PKU-MMD has 3 views (L, M, R); samples use more cameras")
    if frame_convention not in FRAME_CONVENTIONS:
        raise ValueError(f"frame_convention must be one of {FRAME_CONVENTIONS}, got {frame_convention!r}")
    if samples_per_video < 1:
        raise ValueError(f"samples_per_video must be >= 1, got {samples_per_video}")
    out = Path(out_dir)
    (out / "skeleton").mkdir(parents=True, exist_ok=True)
    (out / "label").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    first_index = 1 if frame_convention == "inclusive" else 0
    videos, train, names = [], {benchmark: [] for benchmark in SPLIT_FILES}, {}
    for performer, camera in sorted(set(zip(samples.performer.tolist(), samples.camera.tolist()))):
        members = np.flatnonzero((samples.performer == performer) & (samples.camera == camera))
        for chunk, start in enumerate(range(0, len(members), samples_per_video)):
            frames, segments = [], []
            length = 0
            video = f"A{performer:02d}N{chunk + 1:02d}-{'LMR'[camera - 1]}"
            for row, i in enumerate(members[start : start + samples_per_video], start=1):
                bodies = rearrange(samples.data[i, :, : samples.num_frames[i]], "c t v m -> t m v c")
                pause = int(rng.integers(3, 12))
                frames += [np.repeat(bodies[:1], pause, axis=0), bodies]
                length += pause
                stop = length + len(bodies)
                segments.append(PkuSegment(int(samples.labels[i]) + 1, length + first_index, stop, 1.0, row))
                names[sample_name(video, row)] = samples.names[i]
                length = stop
            write_pku_skeleton(out / "skeleton" / f"{video}.txt", np.concatenate(frames), crlf=crlf)
            write_pku_labels(out / "label" / f"{video}.txt", segments, crlf=crlf)
            videos.append(video)
            for benchmark, videos_of_split in train.items():
                if not is_held_out(benchmark, performer, camera):
                    videos_of_split.append(video)
    for benchmark, file_name in SPLIT_FILES.items():
        write_pku_split(out / file_name, train[benchmark], [v for v in videos if v not in train[benchmark]])
    return names

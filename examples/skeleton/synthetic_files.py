"""Writers that store synthetic samples in the raw NTU RGB+D and PKU-MMD II file formats.

They let ``prepare`` be tested end to end on files in the exact formats of the real datasets.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from einops import rearrange

from .joints import NUM_JOINTS
from .ntu_format import recording_from_bodies, write_skeleton
from .synthetic import SyntheticSamples


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

"""The prepared on-disk layout shared by ``prepare`` and the dataset loader (SPEC section 3.1).

One folder per benchmark (e.g. ``ntu60/xsub``) holding, for each split ``train`` / ``val``:
``{split}_data_joint.npy`` float32 (N, 3, 300, V, M), ``{split}_num_frame.npy`` (N,) valid frame counts and
``{split}_label.pkl`` = ``(sample_names, labels)`` with 0-based labels — the layout of the CMD and HaLP
repositories. NTU RGB+D and PKU-MMD have V = 25 joints and M = 2 bodies; NW-UCLA V = 20, M = 1.
"""

from __future__ import annotations

import numpy as np
from einops import rearrange

from .benchmarks import MAX_FRAMES, NUM_BODIES, NUM_JOINTS
from .layouts import NUM_COORDS

SUMMARY_FILE = "prepare_summary.json"
"""What ``prepare`` wrote into a family folder (``DATA_ROOT/ntu60``): its dataset, counts and skipped files."""


def data_file(split: str) -> str:
    """File name of a split's joint array."""
    return f"{split}_data_joint.npy"


def num_frame_file(split: str) -> str:
    """File name of a split's valid-frame counts."""
    return f"{split}_num_frame.npy"


def label_file(split: str) -> str:
    """File name of a split's ``(sample_names, labels)`` pickle."""
    return f"{split}_label.pkl"


def sample_shape(num_joints: int = NUM_JOINTS, num_bodies: int = NUM_BODIES) -> tuple[int, int, int, int]:
    """Shape (3, 300, V, M) of one prepared sample."""
    return (NUM_COORDS, MAX_FRAMES, num_joints, num_bodies)


def pack_sample(bodies: np.ndarray, num_bodies: int = NUM_BODIES) -> tuple[np.ndarray, int]:
    """Place a recording's bodies into one sample of the prepared layout.

    Args:
        bodies: array (B, F, V, 3) with B <= ``num_bodies`` bodies, F frames (any F >= 0) and V joints.
        num_bodies: M, the body slots of the prepared sample.

    Returns:
        ``(sample, num_frames)``: float32 (3, 300, V, M), zero-padded in time and bodies, keeping the first
        300 frames; ``num_frames = min(F, 300)``.

    Raises:
        ValueError: if ``bodies`` does not have shape (B <= num_bodies, F, V, 3).
    """
    if bodies.ndim != 4 or bodies.shape[0] > num_bodies or bodies.shape[3] != NUM_COORDS:
        raise ValueError(f"bodies must have shape (B<={num_bodies}, F, V, {NUM_COORDS}), got {bodies.shape}")
    num_frames = min(bodies.shape[1], MAX_FRAMES)
    sample = np.zeros(sample_shape(bodies.shape[2], num_bodies), dtype=np.float32)
    sample[:, :num_frames, :, : bodies.shape[0]] = rearrange(bodies[:, :num_frames], "m t v c -> c t v m")
    return sample, num_frames

"""The prepared on-disk layout shared by ``prepare`` and the dataset loader (SPEC section 3.1).

One folder per benchmark (e.g. ``ntu60/xsub``) holding, for each split ``train`` / ``val``:
``{split}_data_joint.npy`` float32 (N, 3, 300, 25, 2), ``{split}_num_frame.npy`` (N,) valid frame counts and
``{split}_label.pkl`` = ``(sample_names, labels)`` with 0-based labels — the layout of the CMD and HaLP
repositories.
"""

from __future__ import annotations

import numpy as np
from einops import rearrange

from .joints import MAX_FRAMES, NUM_BODIES, NUM_COORDS, NUM_JOINTS

SAMPLE_SHAPE = (NUM_COORDS, MAX_FRAMES, NUM_JOINTS, NUM_BODIES)


def data_file(split: str) -> str:
    """File name of a split's joint array."""
    return f"{split}_data_joint.npy"


def num_frame_file(split: str) -> str:
    """File name of a split's valid-frame counts."""
    return f"{split}_num_frame.npy"


def label_file(split: str) -> str:
    """File name of a split's ``(sample_names, labels)`` pickle."""
    return f"{split}_label.pkl"


def pack_sample(bodies: np.ndarray) -> tuple[np.ndarray, int]:
    """Place a recording's bodies into one sample of the prepared layout.

    Args:
        bodies: array (M, F, 25, 3) with M <= 2 bodies and F frames (any F >= 0).

    Returns:
        ``(sample, num_frames)``: float32 (3, 300, 25, 2), zero-padded in time and bodies, keeping the first
        300 frames; ``num_frames = min(F, 300)``.

    Raises:
        ValueError: if ``bodies`` does not have shape (M <= 2, F, 25, 3).
    """
    if bodies.ndim != 4 or bodies.shape[0] > NUM_BODIES or bodies.shape[2:] != (NUM_JOINTS, NUM_COORDS):
        raise ValueError(f"bodies must have shape (M<={NUM_BODIES}, F, {NUM_JOINTS}, 3), got {bodies.shape}")
    num_frames = min(bodies.shape[1], MAX_FRAMES)
    sample = np.zeros(SAMPLE_SHAPE, dtype=np.float32)
    sample[:, :num_frames, :, : bodies.shape[0]] = rearrange(bodies[:, :num_frames], "m t v c -> c t v m")
    return sample, num_frames

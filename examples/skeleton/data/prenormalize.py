"""The 2s-AGCN skeleton pre-normalization used by CMD and HaLP (SPEC section 3.1), vectorized over samples.

The reference loops over samples, bodies, frames and joints in Python; here every step is an array
operation over a whole batch of samples, so preparing a dataset is dominated by file parsing.
"""

from __future__ import annotations

import numpy as np
from einops import rearrange

from .layouts import CENTER_JOINT, X_AXIS_JOINTS, Z_AXIS_JOINTS

DEGENERATE_EPS = 1e-6
"""Below this L1 norm of the rotation axis, or this angle, the alignment rotation is the identity (as the reference)."""

CAMERA_DISTANCE = 1.0
"""Metres. In camera coordinates body 0's spine mid lies farther than this from the origin (a Kinect tracks people
from about 0.5 m, and NTU's performers stood 2-4 m away); in any body-centred frame it lies nearer (a torso's length
at most from the joint the frame is centred on)."""
ORIGIN_TOLERANCE = 1e-3
"""Metres: the pre-normalization puts body 0's spine mid at the origin of frame 0 exactly; float32 copies and
conversions may leave it this far away."""


def prenormalize(data: np.ndarray) -> np.ndarray:
    """Apply the 2s-AGCN pre-normalization to a batch of skeleton sequences.

    Steps, per sample (see SPEC section 3.1): (1) per body, move the non-empty frames to the front when the
    first frame is empty, then fill the trailing empty frames by repeating the sequence from its start;
    (2) subtract body 0's spine mid (joint 1), frame by frame, from every non-zero joint; (3) rotate all
    joints so that body 0's spine base -> spine mid at frame 0 points along +z; (4) rotate again so that
    body 0's left shoulder -> right shoulder at frame 0 points along +x. "Empty" means exactly zero.

    Args:
        data: array (N, 3, T, V, M) of joint coordinates; zeros mark missing bodies/frames.

    Returns:
        A new float32 array of the same shape. The input is not modified.

    Raises:
        ValueError: if ``data`` is not 5-dimensional with 3 coordinates.
    """
    if data.ndim != 5 or data.shape[1] != 3:
        raise ValueError(f"data must have shape (N, 3, T, V, M), got {data.shape}")
    x = rearrange(np.array(data, dtype=np.float64), "n c t v m -> n m t v c")
    x = _pad_bodies(x)
    x = _center(x)
    # Steps 3 and 4 compose into one rotation per sample; step 4's vector is step 3's image of it.
    first = x[:, 0, 0]  # body 0, frame 0: (N, V, C)
    spine = first[:, Z_AXIS_JOINTS[1]] - first[:, Z_AXIS_JOINTS[0]]
    to_z = rotation_to(spine, np.array([0.0, 0.0, 1.0]))
    shoulders = np.einsum("nij,nj->ni", to_z, first[:, X_AXIS_JOINTS[1]] - first[:, X_AXIS_JOINTS[0]])
    rotation = rotation_to(shoulders, np.array([1.0, 0.0, 0.0])) @ to_z
    rotated = rearrange(x, "n m t v c -> n (m t v) c") @ rotation.transpose(0, 2, 1)
    out = rearrange(rotated, "n (m t v) c -> n c t v m", m=x.shape[1], t=x.shape[2])
    return np.ascontiguousarray(out, dtype=np.float32)


def coordinate_frame(data: np.ndarray, max_samples: int = 64) -> tuple[str, float]:
    """How a batch of skeleton sequences is positioned, judged from body 0's spine mid in frame 0.

    Up to ``max_samples`` samples spread evenly over ``data`` are read (cheap on a memory map); those without
    body 0 in frame 0 are not counted.

    Args:
        data: array (N, 3, T, V, M).
        max_samples: samples to read at most.

    Returns:
        ``(frame, distance)``: the median distance of the spine mid from the origin, in the data's units, and
        ``"prenormalized"`` if every sample has it at the origin (within :data:`ORIGIN_TOLERANCE`), as this
        pre-normalization leaves it (also when no sample can be judged); ``"camera"`` if the median exceeds
        :data:`CAMERA_DISTANCE`: raw sensor coordinates, e.g. SkeletonCLR's ``tools/ntu_gendata`` output;
        ``"centred"`` otherwise: centred another way, e.g. AimCLR's ``feeder/preprocess_ntu`` output, relative to
        the spine shoulder.
    """
    indices = np.unique(np.linspace(0, len(data) - 1, min(len(data), max_samples)).round().astype(np.int64))
    first = np.asarray(data[indices, :, 0, :, 0], dtype=np.float64)  # (S, C, V): body 0 in frame 0
    present = np.any(first != 0, axis=(1, 2))
    distance = np.linalg.norm(first[present][:, :, CENTER_JOINT], axis=-1)
    median = float(np.median(distance)) if distance.size else 0.0
    if not (distance > ORIGIN_TOLERANCE).any():
        return "prenormalized", median
    return ("camera" if median > CAMERA_DISTANCE else "centred"), median


def _pad_bodies(x: np.ndarray) -> np.ndarray:
    """Step 1 on (N, M, T, V, C): front-shift bodies whose first frame is empty, then repeat-pad."""
    num_frames = x.shape[2]
    frame_full = np.any(x != 0, axis=(3, 4))  # (N, M, T)
    body_full = frame_full.any(axis=-1)
    shift = body_full & ~frame_full[..., 0]
    if shift.any():
        # A stable sort of "is empty" lists the non-empty frames first, in their original order.
        packed = np.argsort(~frame_full[shift], axis=-1, kind="stable")
        x[shift] = np.take_along_axis(x[shift], packed[..., None, None], axis=1)
        frame_full[shift] = np.take_along_axis(frame_full[shift], packed, axis=-1)
    # Everything after the last non-empty frame is refilled with frames 0, 1, 2, ... of the body.
    length = num_frames - np.argmax(frame_full[..., ::-1], axis=-1)
    pad = body_full & (length < num_frames)
    if pad.any():
        source = np.arange(num_frames) % length[pad][:, None]
        x[pad] = np.take_along_axis(x[pad], source[..., None, None], axis=1)
    return x


def _center(x: np.ndarray) -> np.ndarray:
    """Step 2 on (N, M, T, V, C): body 0's spine mid becomes the origin; zero joints stay zero."""
    center = x[:, 0, :, CENTER_JOINT, :]  # (N, T, C)
    joint_full = np.any(x != 0, axis=-1, keepdims=True)
    return np.where(joint_full, x - center[:, None, :, None, :], 0.0)


def rotation_to(vectors: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation matrices turning each vector toward a fixed direction about their common normal.

    The axis is ``cross(v, target)`` and the angle ``angle(v, target)``; when the axis has L1 norm below
    :data:`DEGENERATE_EPS` (zero, parallel or anti-parallel vector) or the angle is below it, the rotation
    is the identity, as in the reference.

    Args:
        vectors: array (N, 3).
        target: unit vector (3,).

    Returns:
        Array (N, 3, 3) of rotation matrices ``R`` with ``R @ v`` parallel to ``target`` (non-degenerate cases).
    """
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    unit = np.divide(vectors, norm, out=np.zeros_like(vectors), where=norm > 0)
    angle = np.arccos(np.clip(unit @ target, -1.0, 1.0))
    axis = np.cross(vectors, target)
    degenerate = (np.abs(axis).sum(-1) < DEGENERATE_EPS) | (np.abs(angle) < DEGENERATE_EPS)
    axis_norm = np.linalg.norm(axis, axis=-1, keepdims=True)
    k = np.divide(axis, axis_norm, out=np.zeros_like(axis), where=axis_norm > 0)
    zero = np.zeros(len(k))
    skew = np.stack(
        [
            np.stack([zero, -k[:, 2], k[:, 1]], -1),
            np.stack([k[:, 2], zero, -k[:, 0]], -1),
            np.stack([-k[:, 1], k[:, 0], zero], -1),
        ],
        axis=1,
    )
    sin, cos = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    rotation = np.eye(3) + sin * skew + (1.0 - cos) * (skew @ skew)
    return np.where(degenerate[:, None, None], np.eye(3), rotation)

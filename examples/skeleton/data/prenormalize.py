"""Skeleton pre-normalization, vectorized over samples, with the anchors of the data's layout.

3-D positions get the 2s-AGCN pre-normalization that CMD and HaLP use; 2-D image keypoints (from a video pose
estimator) get its planar counterpart, with a scale step since pixel sizes depend on the distance to the
camera. The reference loops over samples, bodies, frames and joints in Python; here every step is an array
operation over a whole batch of samples, so preparing a dataset is dominated by file parsing.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from einops import rearrange

from .layouts import COORDINATE_COUNTS, SkeletonLayout, layout_for

DEGENERATE_EPS = 1e-6
"""Below this L1 norm of the rotation axis, or this angle, the alignment rotation is the identity (as the reference);
below this length the 2-D up direction or scale is left as it is."""

CAMERA_DISTANCE = 1.0
"""Metres. In camera coordinates body 0's origin joint (Kinect: spine mid) lies farther than this from the origin
(a Kinect tracks people from about 0.5 m, and NTU's performers stood 2-4 m away); in any body-centred frame it
lies nearer (a torso's length at most from the joint the frame is centred on)."""
ORIGIN_TOLERANCE = 1e-3
"""The pre-normalization puts body 0's origin joint at the origin of frame 0 exactly; float32 copies and
conversions may leave it this far away (metres, or up-pair lengths for 2-D data)."""


def prenormalize(data: np.ndarray, layout: Optional[SkeletonLayout] = None) -> np.ndarray:
    """Pre-normalize a batch of skeleton sequences (3-D positions or 2-D keypoints).

    Common step (1): per body, move the non-empty frames to the front when the first frame is empty, then fill
    the trailing empty frames by repeating the sequence from its start. "Empty" means exactly zero.

    3-D, the 2s-AGCN steps with the layout's anchors: (2) subtract body 0's origin joint, frame by frame, from
    every non-zero joint; (3) rotate all joints so that body 0's ``up`` pair at frame 0 points along +z; (4)
    rotate again so that body 0's ``across`` pair at frame 0 points along +x.

    2-D: (2) subtract body 0's origin joint, frame by frame, from every non-zero joint (frames where that joint
    is missing use the nearest earlier frame that has it, or the first one); (3) rotate in the plane so that
    body 0's ``up`` pair points along +y, its direction averaged over the frames that have both joints (robust to
    a single bad detection); (4) divide by the median length of that pair over the same frames, so that
    sequences filmed from near and far get one scale: coordinates in "up-pair lengths" (torso lengths). A
    rotation cannot turn image coordinates (y pointing down) into y-up ones without mirroring, and none is
    applied: an upright person filmed in image coordinates is turned by about 180 degrees, every sample the same.

    Args:
        data: array (N, C, T, V, M), C = 3 (x, y, z) or 2 (x, y); zeros mark missing bodies/frames/joints.
        layout: the skeleton layout (its ``origin``, ``up`` and ``across`` joints); None takes the built-in layout
            with V joints (``skeleton.data.layouts.layout_for``).

    Returns:
        A new float32 array of the same shape. The input is not modified.

    Raises:
        ValueError: if ``data`` is not (N, C, T, V, M) with C in (2, 3) and V the layout's joints.

    Example:
        >>> from skeleton.data.layouts import COCO17
        >>> keypoints = np.random.default_rng(0).uniform(100, 500, size=(1, 2, 8, 17, 1))
        >>> out = prenormalize(keypoints, COCO17)
        >>> bool(np.allclose(out[0, :, :, COCO17.origin, 0], 0.0))
        True
    """
    if data.ndim != 5 or data.shape[1] not in COORDINATE_COUNTS:
        raise ValueError(f"data must have shape (N, C, T, V, M) with C in {COORDINATE_COUNTS}, got {data.shape}")
    layout = layout_for(data.shape[3]) if layout is None else layout
    if data.shape[3] != layout.num_joints:
        raise ValueError(f"data has {data.shape[3]} joints, layout {layout.name} {layout.num_joints}")
    x = _pad_bodies(rearrange(np.array(data, dtype=np.float64), "n c t v m -> n m t v c"))
    out = _align_3d(x, layout) if data.shape[1] == 3 else _align_2d(x, layout)
    return np.ascontiguousarray(rearrange(out, "n m t v c -> n c t v m"), dtype=np.float32)


def _align_3d(x: np.ndarray, layout: SkeletonLayout) -> np.ndarray:
    """Steps 2-4 for (N, M, T, V, 3)."""
    x = _center(x, x[:, 0, :, layout.origin, :])
    # Steps 3 and 4 compose into one rotation per sample; step 4's vector is step 3's image of it.
    first = x[:, 0, 0]  # body 0, frame 0: (N, V, C)
    up = first[:, layout.up[1]] - first[:, layout.up[0]]
    to_z = rotation_to(up, np.array([0.0, 0.0, 1.0]))
    across = np.einsum("nij,nj->ni", to_z, first[:, layout.across[1]] - first[:, layout.across[0]])
    return _rotate(x, rotation_to(across, np.array([1.0, 0.0, 0.0])) @ to_z)


def _align_2d(x: np.ndarray, layout: SkeletonLayout) -> np.ndarray:
    """Steps 2-4 for (N, M, T, V, 2)."""
    body = x[:, 0]  # (N, T, V, 2)
    up = body[:, :, layout.up[1]] - body[:, :, layout.up[0]]  # (N, T, 2), before centring hides the origin joint
    seen = np.any(body[:, :, layout.up[0]] != 0, -1) & np.any(body[:, :, layout.up[1]] != 0, -1)
    x = _center(x, _fill_missing(body[:, :, layout.origin]))
    direction = np.where(seen[..., None], up, 0.0).sum(axis=1)  # (N, 2)
    norm = np.linalg.norm(direction, axis=-1)
    ux, uy = np.divide(direction, norm[:, None], out=np.zeros_like(direction), where=norm[:, None] > DEGENERATE_EPS).T
    # R @ (ux, uy) = (0, 1); the identity where the direction is degenerate.
    degenerate = norm <= DEGENERATE_EPS
    rotation = np.stack([np.stack([uy, -ux], -1), np.stack([ux, uy], -1)], axis=1)
    rotation[degenerate] = np.eye(2)
    length = _masked_median(np.linalg.norm(up, axis=-1), seen)
    scale = np.where(length > DEGENERATE_EPS, length, 1.0)
    return _rotate(x, rotation / scale[:, None, None])


def _rotate(x: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """``matrices[n] @ joint`` for every joint of (N, M, T, V, C) ``x``; zero joints stay zero."""
    flat = rearrange(x, "n m t v c -> n (m t v) c") @ matrices.transpose(0, 2, 1)
    return rearrange(flat, "n (m t v) c -> n m t v c", m=x.shape[1], t=x.shape[2])


def _fill_missing(points: np.ndarray) -> np.ndarray:
    """(N, T, C) points with all-zero (missing) frames replaced by the nearest earlier present frame's point, or
    the first present one before it; samples without any present frame stay zero."""
    present = np.any(points != 0, axis=-1)
    frames = np.arange(points.shape[1])
    last_seen = np.maximum.accumulate(np.where(present, frames, -1), axis=1)
    source = np.where(last_seen >= 0, last_seen, np.argmax(present, axis=1)[:, None])
    return np.take_along_axis(points, source[..., None], axis=1)


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row of (N, T) ``values``, the median of the entries where ``mask`` is true; 0 for an empty row."""
    count = mask.sum(axis=1)
    ordered = np.sort(np.where(mask, values, np.inf), axis=1)
    low = np.take_along_axis(ordered, (np.maximum(count, 1) - 1)[:, None] // 2, axis=1)[:, 0]
    high = np.take_along_axis(ordered, (count // 2)[:, None], axis=1)[:, 0]
    return np.where(count > 0, (low + high) / 2, 0.0)


def coordinate_frame(
    data: np.ndarray, layout: Optional[SkeletonLayout] = None, max_samples: int = 64
) -> tuple[str, float]:
    """How a batch of skeleton sequences is positioned, judged from body 0's origin joint in frame 0.

    Up to ``max_samples`` samples spread evenly over ``data`` are read (cheap on a memory map); those without
    body 0 in frame 0 are not counted.

    Args:
        data: array (N, C, T, V, M).
        layout: the layout whose ``origin`` joint is judged; None: the built-in layout with V joints.
        max_samples: samples to read at most.

    Returns:
        ``(frame, distance)``: the median distance of the origin joint from the origin, in the data's units, and
        ``"prenormalized"`` if every sample has it at the origin (within ``ORIGIN_TOLERANCE``), as
        ``prenormalize`` leaves it (also when no sample can be judged). Otherwise, for 2-D data
        ``"image"`` (keypoints as a pose estimator gives them); for 3-D data ``"camera"`` if the median exceeds
        ``CAMERA_DISTANCE``: raw sensor coordinates, e.g. SkeletonCLR's ``tools/ntu_gendata`` output;
        ``"centred"`` otherwise: centred another way, e.g. AimCLR's ``feeder/preprocess_ntu`` output, relative to
        the spine shoulder.
    """
    layout = layout_for(data.shape[3]) if layout is None else layout
    indices = np.unique(np.linspace(0, len(data) - 1, min(len(data), max_samples)).round().astype(np.int64))
    first = np.asarray(data[indices, :, 0, :, 0], dtype=np.float64)  # (S, C, V): body 0 in frame 0
    present = np.any(first != 0, axis=(1, 2))
    distance = np.linalg.norm(first[present][:, :, layout.origin], axis=-1)
    median = float(np.median(distance)) if distance.size else 0.0
    if not (distance > ORIGIN_TOLERANCE).any():
        return "prenormalized", median
    if data.shape[1] == 2:
        return "image", median
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


def _center(x: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Step 2 on (N, M, T, V, C): subtract ``center`` (N, T, C) from every joint; zero joints stay zero."""
    joint_full = np.any(x != 0, axis=-1, keepdims=True)
    return np.where(joint_full, x - center[:, None, :, None, :], 0.0)


def rotation_to(vectors: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation matrices turning each vector toward a fixed direction about their common normal.

    The axis is ``cross(v, target)`` and the angle ``angle(v, target)``; when the axis has L1 norm below
    ``DEGENERATE_EPS`` (zero, parallel or anti-parallel vector) or the angle is below it, the rotation
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

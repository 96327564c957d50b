"""Batched skeleton augmentations of the released recipe, on whatever device the batch is on.

The released code applies these per sample in numpy inside DataLoader workers; here each transform acts on a
whole batch ``x`` of shape (B, C, T, V, M) at once, every sample with its own random draw. Passing a
``torch.Generator`` (on the batch's device) makes the draws reproducible. The transforms follow the data:
C = 3 (x, y, z positions) or C = 2 (image keypoints), V the joints of its layout. Shear and joint corruption
are both "a per-sample C x C matrix applied to some of the joints" (all of them for the shear, the chosen ones,
with a zero or a random matrix, for the corruption), so they share one batched product and one masked select.
The rotation turns 3-D data about each axis and 2-D data in its plane only (a 3-D rotation of 2-D keypoints
would invent a depth they do not have). 2-D data gets instead what a turn of the camera about the body's vertical
does to an image, as far as keypoints without depth can show it (``planar_view_change``).
"""

from __future__ import annotations

import torch
from einops import rearrange

PRETRAIN_RATIO_RANGE = (0.1, 1.0)
LINEAR_RATIO_RANGE = (0.5, 1.0)
"""Crop ratio range of the linear-evaluation training view."""


def sample_crop_windows(
    num_frames: torch.Tensor,
    ratio_range: tuple[float, float] = PRETRAIN_RATIO_RANGE,
    min_length: int = 64,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one random temporal window per sample.

    With n the valid frames and r ~ U(ratio_range): length = clip(floor(n * r), min_length, n) (so n when
    n < min_length) and a start uniform over [0, n - length].

    Args:
        num_frames: (B,) valid frame counts (values below 1 count as 1).
        ratio_range: (low, high) with 0 < low <= high <= 1.
        min_length: shortest window, unless the sequence is shorter.
        generator: random source (on ``num_frames``' device).

    Returns:
        ``(start, length)``, both (B,) long.

    Raises:
        ValueError: for an invalid ratio range or min_length.
    """
    low, high = ratio_range
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"ratio_range must satisfy 0 < low <= high <= 1, got {ratio_range}")
    if min_length < 1:
        raise ValueError(f"min_length must be >= 1, got {min_length}")
    n = num_frames.long().clamp(min=1)
    draws = torch.rand((2, len(n)), generator=generator, device=n.device, dtype=_precise(n.device))
    ratio = low + (high - low) * draws[0]
    length = torch.minimum(torch.floor(n * ratio).long().clamp(min=min_length), n)
    start = torch.minimum(torch.floor(draws[1] * (n - length + 1)).long(), n - length)
    return start, length


def center_crop_windows(num_frames: torch.Tensor, ratio: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """The centred evaluation window: start = floor((1 - ratio) * n / 2), length = n - 2 * start.

    Args:
        num_frames: (B,) valid frame counts (values below 1 count as 1).
        ratio: kept fraction, in (0, 1].

    Returns:
        ``(start, length)``, both (B,) long.

    Raises:
        ValueError: if ratio is not in (0, 1].
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    n = num_frames.long().clamp(min=1)
    start = torch.floor((1.0 - ratio) * n.to(_precise(n.device)) / 2).long()
    return start, n - 2 * start


def crop_resize(x: torch.Tensor, start: torch.Tensor, length: torch.Tensor, out_frames: int = 64) -> torch.Tensor:
    """Cut frames [start, start + length) of each sample and resize them to ``out_frames`` by linear interpolation.

    The sampling grid is that of ``F.interpolate(mode="linear", align_corners=False)``, as in the released
    code: source position (i + 0.5) * length / out_frames - 0.5, clamped at 0.

    Args:
        x: (B, C, T, V, M).
        start: (B,) long window starts.
        length: (B,) long window lengths, >= 1, with start + length <= T.
        out_frames: output length.

    Returns:
        (B, C, out_frames, V, M), same dtype and device as ``x``.
    """
    start, length = start.to(x.device), length.to(x.device)
    # float64 positions: float32 ones are off by up to ~2e-6 frames at T = 300, visible in the output.
    steps = torch.arange(out_frames, device=x.device, dtype=_precise(x.device))
    scale = length.to(steps.dtype) / out_frames
    source = ((steps + 0.5) * scale[:, None] - 0.5).clamp(min=0.0)  # (B, out)
    lower = source.long()  # source < length - 0.5, so lower <= length - 1
    upper = torch.minimum(lower + 1, (length - 1)[:, None])
    weight = (source - lower).to(x.dtype)
    # One advanced-indexing read of both neighbours: only the 2 * out_frames needed frames are copied.
    frames = start[:, None] + torch.cat([lower, upper], dim=1)
    neighbours = x[torch.arange(len(x), device=x.device)[:, None], :, frames]  # (B, 2 * out, C, V, M)
    below, above = neighbours.split(out_frames, dim=1)
    out = torch.lerp(below, above, weight[:, :, None, None, None])
    return rearrange(out, "b t c v m -> b c t v m").contiguous()


def temporal_crop_resize(
    x: torch.Tensor,
    num_frames: torch.Tensor,
    ratio_range: tuple[float, float] = PRETRAIN_RATIO_RANGE,
    min_length: int = 64,
    out_frames: int = 64,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random temporal crop of the valid frames, resized to ``out_frames`` (the released recipe's first step).

    Args:
        x: (B, C, T, V, M).
        num_frames: (B,) valid frame counts (clamped to [1, T]).
        ratio_range: crop ratio range; (0.1, 1) for pretraining, (0.5, 1) for linear-evaluation training.
        min_length: shortest crop (unless the sequence is shorter).
        out_frames: output length.
        generator: random source on ``x``'s device.

    Returns:
        (B, C, out_frames, V, M).
    """
    num_frames = num_frames.to(x.device).clamp(max=x.shape[2])
    start, length = sample_crop_windows(num_frames, ratio_range, min_length, generator=generator)
    return crop_resize(x, start, length, out_frames)


def center_crop_resize(
    x: torch.Tensor, num_frames: torch.Tensor, ratio: float = 0.95, out_frames: int = 64
) -> torch.Tensor:
    """Deterministic centred crop of the valid frames, resized to ``out_frames`` (evaluation view).

    Args:
        x: (B, C, T, V, M).
        num_frames: (B,) valid frame counts (clamped to [1, T]).
        ratio: kept fraction of the valid frames.
        out_frames: output length.

    Returns:
        (B, C, out_frames, V, M).
    """
    start, length = center_crop_windows(num_frames.to(x.device).clamp(max=x.shape[2]), ratio)
    return crop_resize(x, start, length, out_frames)


def shear(x: torch.Tensor, *, magnitude: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """x' = S x per sample, S (C x C) = identity plus off-diagonal entries U(-magnitude, magnitude).

    Args:
        x: (B, C, T, V, M).
        magnitude: bound of the shear coefficients.
        generator: random source on ``x``'s device.

    Returns:
        Tensor like ``x``.
    """
    return _transform_joints(x, _shear_matrices(x, magnitude, generator), None)


def joint_corruption(
    x: torch.Tensor, num_joints: int = 15, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per sample, with p = 0.5 zero ``num_joints`` random distinct joints, else mix their coordinates by a random
    matrix.

    The zeroing or mixing applies to every frame and every body; the mixing matrix (C x C, entries U(-1, 1))
    is drawn once per sample.

    Args:
        x: (B, C, T, V, M).
        num_joints: joints affected per sample.
        generator: random source on ``x``'s device.

    Returns:
        Tensor like ``x``.

    Raises:
        ValueError: if num_joints is not in [0, V].
    """
    return _transform_joints(x, *_corruption(x, num_joints, generator))


def shear_or_corrupt(
    x: torch.Tensor,
    *,
    shear_magnitude: float = 1.0,
    corrupt_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per sample, with p = ``corrupt_prob`` joint corruption (``corrupted_joints`` of the V joints: 15 of
    Kinect v2's 25) else shear (the released recipe's second step: p = 0.5, magnitude 1).

    Args:
        x: (B, C, T, V, M).
        shear_magnitude: bound of the shear coefficients.
        corrupt_prob: probability of corruption instead of shear.
        generator: random source on ``x``'s device.

    Returns:
        Tensor like ``x``.
    """
    corrupt = torch.rand(len(x), generator=generator, device=x.device) < corrupt_prob
    shear_matrices = _shear_matrices(x, shear_magnitude, generator)
    corruption_matrices, chosen = _corruption(x, corrupted_joints(x.shape[3]), generator)
    matrices = torch.where(corrupt[:, None, None], corruption_matrices, shear_matrices)
    return _transform_joints(x, matrices, chosen | ~corrupt[:, None])


def random_rotation(x: torch.Tensor, max_degrees: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each sample by angles drawn from U(-max_degrees, max_degrees): 3-D data about the x, then y, then z
    axis; 2-D data in its plane (one angle).

    Args:
        x: (B, C, T, V, M), C = 3 or 2.
        max_degrees: bound of each angle.
        generator: random source on ``x``'s device.

    Returns:
        Tensor like ``x``.

    Raises:
        ValueError: if C is neither 2 nor 3.
    """
    channels = x.shape[1]
    if channels not in (2, 3):
        raise ValueError(f"x must have 2 or 3 coordinates on dim 1, got shape {tuple(x.shape)}")
    # The coordinate planes turned, in order: (y, z), (x, z), (x, y) for 3-D (R = Rz Ry Rx); (x, y) for 2-D.
    planes = ((1, 2), (0, 2), (0, 1)) if channels == 3 else ((0, 1),)
    precise = torch.promote_types(x.dtype, torch.float32)  # no bfloat16 trigonometry
    draws = torch.rand((len(x), len(planes)), generator=generator, device=x.device).to(precise)
    angles = torch.deg2rad((2 * draws - 1) * max_degrees)
    cos, sin = angles.cos(), angles.sin()
    rotation = torch.eye(channels, device=x.device, dtype=precise).expand(len(x), channels, channels)
    for axis, (i, j) in enumerate(planes):
        turn = torch.eye(channels, device=x.device, dtype=precise).repeat(len(x), 1, 1)
        turn[:, i, i], turn[:, i, j] = cos[:, axis], -sin[:, axis]
        turn[:, j, i], turn[:, j, j] = sin[:, axis], cos[:, axis]
        rotation = turn @ rotation
    rotation = rotation.to(x.dtype)
    return _transform_joints(x, rotation, None)


def planar_view_change(
    x: torch.Tensor, *, mirror_prob: float, foreshorten: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """2-D keypoints as another camera azimuth would see them: x' = s x, y' = y, per sample, with
    |s| ~ U(1 - foreshorten, 1) and s < 0 with probability ``mirror_prob``.

    Why: turning the camera by an azimuth a about the body's vertical maps an orthographic image's horizontal
    coordinate to x cos(a) + z sin(a). Keypoints have no depth z, so the part a 2-D view can change is x cos(a):
    foreshortening (|cos a| < 1) and, past 90 degrees, a mirror image (cos a < 0; a = 180 degrees, the camera on
    the other side, is exactly a mirror of an orthographic image). The pre-normalization turns the body upright
    and scales it by its height, which undoes neither. Joints keep their names under the mirror: the left hand
    seen from behind is still the left hand.

    Args:
        x: (B, 2, T, V, M), pre-normalized (horizontal axis first).
        mirror_prob: probability of a mirror image, in [0, 1].
        foreshorten: bound of the horizontal shrink, in [0, 1].
        generator: random source on ``x``'s device.

    Returns:
        Tensor like ``x``.

    Raises:
        ValueError: if ``x`` is not 2-D or an option is outside [0, 1].
    """
    if x.shape[1] != 2:
        raise ValueError(f"x must hold 2-D keypoints (2 coordinates on dim 1), got shape {tuple(x.shape)}")
    for name, value in (("mirror_prob", mirror_prob), ("foreshorten", foreshorten)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    draws = torch.rand((2, len(x)), generator=generator, device=x.device).to(x.dtype)
    scale = (1.0 - foreshorten * draws[0]) * torch.where(draws[1] < mirror_prob, -1.0, 1.0).to(x.dtype)
    matrices = torch.zeros((len(x), 2, 2), device=x.device, dtype=x.dtype)
    matrices[:, 0, 0], matrices[:, 1, 1] = scale, 1.0
    return _transform_joints(x, matrices, None)


def pretrain_view(
    x: torch.Tensor,
    num_frames: torch.Tensor,
    *,
    out_frames: int = 64,
    crop_min_ratio: float = PRETRAIN_RATIO_RANGE[0],
    crop_min_frames: int = 64,
    shear: float = 1.0,
    corrupt_prob: float = 0.5,
    mirror_prob: float = 0.0,
    foreshorten: float = 0.0,
    rotate_degrees: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One augmented view for contrastive pretraining: random crop-resize, then shear or corruption, then (2-D data
    only) a planar view change, then an optional random rotation (in the plane for 2-D data). The defaults are the
    released recipe.

    Args:
        x: (B, C, T, V, M).
        num_frames: (B,) valid frame counts.
        out_frames: frames of the view.
        crop_min_ratio: crops keep a fraction U(crop_min_ratio, 1) of the valid frames...
        crop_min_frames: ...but at least this many (all of them when fewer are valid).
        shear: bound of the shear coefficients.
        corrupt_prob: probability of joint corruption instead of shear.
        mirror_prob: 2-D data: probability of a mirror image (``planar_view_change``); ignored for 3-D data, whose
            pre-normalization turns every body to face the same way.
        foreshorten: 2-D data: bound of the horizontal shrink; ignored for 3-D data. With both 0 (or 3-D data),
            no draws.
        rotate_degrees: bound of the rotation angles (0: no rotation, no draws).
        generator: random source on ``x``'s device.

    Returns:
        (B, C, out_frames, V, M).
    """
    view = temporal_crop_resize(x, num_frames, (crop_min_ratio, 1.0), crop_min_frames, out_frames, generator=generator)
    view = shear_or_corrupt(view, shear_magnitude=shear, corrupt_prob=corrupt_prob, generator=generator)
    if view.shape[1] == 2 and (mirror_prob > 0 or foreshorten > 0):
        view = planar_view_change(view, mirror_prob=mirror_prob, foreshorten=foreshorten, generator=generator)
    return random_rotation(view, rotate_degrees, generator=generator) if rotate_degrees > 0 else view


def corrupted_joints(num_joints: int) -> int:
    """Joints the corruption touches: 60 % of them, the reference's 15 of Kinect v2's 25 (12 of Kinect v1's 20)."""
    return round(0.6 * num_joints)


def _shear_matrices(x: torch.Tensor, magnitude: float, generator: torch.Generator | None) -> torch.Tensor:
    """(B, C, C) shear matrices: ones on the diagonal, U(-magnitude, magnitude) elsewhere."""
    channels = x.shape[1]
    eye = torch.eye(channels, device=x.device, dtype=x.dtype)
    coefficients = torch.rand((len(x), channels, channels), generator=generator, device=x.device).to(x.dtype)
    return eye + (2 * coefficients - 1) * magnitude * (1 - eye)


def _corruption(
    x: torch.Tensor, num_joints: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint corruption draws: (B, C, C) matrices (zero, or entries U(-1, 1)) and the (B, V) chosen joints."""
    joints = x.shape[3]
    if not 0 <= num_joints <= joints:
        raise ValueError(f"num_joints must be in [0, {joints}], got {num_joints}")
    batch = len(x)
    zero = torch.rand(batch, generator=generator, device=x.device) < 0.5
    # The first num_joints of a uniformly random permutation are a uniform subset of distinct joints.
    ranks = torch.rand((batch, joints), generator=generator, device=x.device).argsort(dim=1).argsort(dim=1)
    channels = x.shape[1]
    mix = (2 * torch.rand((batch, channels, channels), generator=generator, device=x.device) - 1).to(x.dtype)
    return mix.masked_fill(zero[:, None, None], 0.0), ranks < num_joints


def _transform_joints(x: torch.Tensor, matrices: torch.Tensor, joints: torch.Tensor | None) -> torch.Tensor:
    """x' = matrices[b] @ x[b] on the selected joints of each sample (all if ``joints`` is None), x elsewhere.

    Args:
        x: (B, C, T, V, M).
        matrices: (B, C, C).
        joints: (B, V) bool, or None.
    """
    batch, channels, frames, num_joints, bodies = x.shape
    mixed = torch.bmm(matrices, x.reshape(batch, channels, -1)).view_as(x)
    if joints is None:
        return mixed
    # Merging (V, M) keeps the mask broadcast off the tiny body axis, several times faster on the CPU.
    select = joints.repeat_interleave(bodies, dim=1)[:, None, None, :]
    merged = (batch, channels, frames, num_joints * bodies)
    return torch.where(select, mixed.view(merged), x.reshape(merged)).view_as(x)


def _precise(device: torch.device) -> torch.dtype:
    """float64 for frame positions, except on Apple's MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64

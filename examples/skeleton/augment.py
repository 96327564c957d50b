"""Batched skeleton augmentations and modalities (SPEC section 3.3), on whatever device the batch is on.

The released code applies these per sample in numpy inside DataLoader workers; here each transform acts on a
whole batch ``x`` of shape (B, 3, T, 25, 2) at once, every sample with its own random draw. Passing a
``torch.Generator`` (on the batch's device) makes the draws reproducible. All spatial transforms are one
per-sample, per-joint 3x3 linear map, so shear and joint corruption share a single batched product.
"""

from __future__ import annotations

import torch
from einops import rearrange

from .joints import BONE_PARENTS, NUM_JOINTS

MODALITIES = frozenset({"joint", "motion", "bone"})
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
    draws = torch.rand((2, len(n)), generator=generator, device=n.device, dtype=torch.float64)
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
    start = torch.floor((1.0 - ratio) * n.double() / 2).long()
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
    batch, channels, _, joints, bodies = x.shape
    start, length = start.to(x.device), length.to(x.device)
    # float64 positions: float32 ones are off by up to ~2e-6 frames at T = 300, visible in the output.
    steps = torch.arange(out_frames, device=x.device, dtype=torch.float64)
    scale = length.double() / out_frames
    source = ((steps + 0.5) * scale[:, None] - 0.5).clamp(min=0.0)  # (B, out)
    lower = source.long()  # source < length - 0.5, so lower <= length - 1
    upper = torch.minimum(lower + 1, (length - 1)[:, None])
    weight = (source - lower).to(x.dtype)[..., None]
    flat = rearrange(x, "b c t v m -> b t (c v m)")

    def frames(offset: torch.Tensor) -> torch.Tensor:
        index = (start[:, None] + offset)[..., None].expand(-1, -1, flat.shape[-1])
        return torch.gather(flat, 1, index)

    out = torch.lerp(frames(lower), frames(upper), weight)
    return rearrange(out, "b t (c v m) -> b c t v m", c=channels, v=joints, m=bodies)


def temporal_crop_resize(
    x: torch.Tensor,
    num_frames: torch.Tensor,
    ratio_range: tuple[float, float] = PRETRAIN_RATIO_RANGE,
    min_length: int = 64,
    out_frames: int = 64,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random temporal crop of the valid frames, resized to ``out_frames`` (SPEC section 3.3, step 1).

    Args:
        x: (B, 3, T, 25, 2).
        num_frames: (B,) valid frame counts.
        ratio_range: crop ratio range; (0.1, 1) for pretraining, (0.5, 1) for linear-evaluation training.
        min_length: shortest crop (unless the sequence is shorter).
        out_frames: output length.
        generator: random source on ``x``'s device.

    Returns:
        (B, 3, out_frames, 25, 2).
    """
    start, length = sample_crop_windows(num_frames.to(x.device), ratio_range, min_length, generator=generator)
    return crop_resize(x, start, length, out_frames)


def center_crop_resize(
    x: torch.Tensor, num_frames: torch.Tensor, ratio: float = 0.95, out_frames: int = 64
) -> torch.Tensor:
    """Deterministic centred crop of the valid frames, resized to ``out_frames`` (evaluation view).

    Args:
        x: (B, 3, T, 25, 2).
        num_frames: (B,) valid frame counts.
        ratio: kept fraction of the valid frames.
        out_frames: output length.

    Returns:
        (B, 3, out_frames, 25, 2).
    """
    start, length = center_crop_windows(num_frames.to(x.device), ratio)
    return crop_resize(x, start, length, out_frames)


def shear(x: torch.Tensor, *, magnitude: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """x' = S x per sample, S = identity plus off-diagonal entries U(-magnitude, magnitude).

    Args:
        x: (B, 3, T, V, M).
        magnitude: bound of the shear coefficients.
        generator: random source on ``x``'s device.

    Returns:
        Tensor like ``x``.
    """
    matrices = _shear_matrices(x, magnitude, generator)
    return _apply(x, matrices[:, None].expand(-1, x.shape[3], -1, -1))


def joint_corruption(
    x: torch.Tensor, num_joints: int = 15, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per sample, with p = 0.5 zero ``num_joints`` random distinct joints, else mix their xyz by a random matrix.

    The zeroing or mixing applies to every frame and both bodies; the mixing matrix (3x3, entries U(-1, 1))
    is drawn once per sample.

    Args:
        x: (B, 3, T, 25, M).
        num_joints: joints affected per sample.
        generator: random source on ``x``'s device.

    Returns:
        Tensor like ``x``.

    Raises:
        ValueError: if num_joints is not in [0, 25].
    """
    return _apply(x, _corruption_matrices(x, num_joints, generator))


def shear_or_corrupt(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per sample, with p = 0.5 joint corruption (15 joints) else shear (magnitude 1) (SPEC section 3.3, step 2).

    Args:
        x: (B, 3, T, 25, M).
        generator: random source on ``x``'s device.

    Returns:
        Tensor like ``x``.
    """
    corrupt = torch.rand(len(x), generator=generator, device=x.device) < 0.5
    sheared = _shear_matrices(x, 1.0, generator)[:, None].expand(-1, x.shape[3], -1, -1)
    corrupted = _corruption_matrices(x, 15, generator)
    return _apply(x, torch.where(corrupt[:, None, None, None], corrupted, sheared))


def pretrain_view(
    x: torch.Tensor, num_frames: torch.Tensor, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One augmented view for contrastive pretraining: random crop-resize to 64 frames, then shear or corruption.

    Args:
        x: (B, 3, T, 25, 2).
        num_frames: (B,) valid frame counts.
        generator: random source on ``x``'s device.

    Returns:
        (B, 3, 64, 25, 2).
    """
    return shear_or_corrupt(temporal_crop_resize(x, num_frames, generator=generator), generator=generator)


def to_motion(x: torch.Tensor) -> torch.Tensor:
    """Motion modality: x[t + 1] - x[t] along the frame axis (dim -3); the last frame is 0.

    Args:
        x: (..., 3, T, V, M).

    Returns:
        Tensor like ``x``.
    """
    motion = torch.zeros_like(x)
    motion[..., :-1, :, :] = x[..., 1:, :, :] - x[..., :-1, :, :]
    return motion


def to_bone(x: torch.Tensor) -> torch.Tensor:
    """Bone modality: x[v] - x[parent(v)] over the joint axis (dim -2), with the reference's pairs.

    Args:
        x: (..., 3, T, 25, M).

    Returns:
        Tensor like ``x``.
    """
    return x - x[..., BONE_PARENTS.tolist(), :]


def to_modality(x: torch.Tensor, name: str) -> torch.Tensor:
    """Convert joint coordinates to the ``"joint"``, ``"motion"`` or ``"bone"`` modality.

    Raises:
        ValueError: for an unknown modality.
    """
    if name not in MODALITIES:
        raise ValueError(f"unknown modality {name!r}; expected one of {sorted(MODALITIES)}")
    if name == "motion":
        return to_motion(x)
    if name == "bone":
        return to_bone(x)
    return x


def _shear_matrices(x: torch.Tensor, magnitude: float, generator: torch.Generator | None) -> torch.Tensor:
    """(B, 3, 3) shear matrices: ones on the diagonal, U(-magnitude, magnitude) elsewhere."""
    eye = torch.eye(3, device=x.device, dtype=x.dtype)
    coefficients = torch.rand((len(x), 3, 3), generator=generator, device=x.device).to(x.dtype)
    return eye + (2 * coefficients - 1) * magnitude * (1 - eye)


def _corruption_matrices(x: torch.Tensor, num_joints: int, generator: torch.Generator | None) -> torch.Tensor:
    """(B, 25, 3, 3) per-joint maps of joint corruption: identity, or zero / a random mix on chosen joints."""
    if not 0 <= num_joints <= NUM_JOINTS:
        raise ValueError(f"num_joints must be in [0, {NUM_JOINTS}], got {num_joints}")
    batch = len(x)
    zero = torch.rand(batch, generator=generator, device=x.device) < 0.5
    # The first num_joints of a uniformly random permutation are a uniform subset of distinct joints.
    ranks = torch.rand((batch, NUM_JOINTS), generator=generator, device=x.device).argsort(dim=1).argsort(dim=1)
    chosen = ranks < num_joints
    mix = (2 * torch.rand((batch, 3, 3), generator=generator, device=x.device) - 1).to(x.dtype)
    replacement = torch.where(zero[:, None, None], torch.zeros_like(mix), mix)
    eye = torch.eye(3, device=x.device, dtype=x.dtype)
    return torch.where(chosen[..., None, None], replacement[:, None], eye)


def _apply(x: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """x'[:, :, t, v, m] = matrices[:, v] @ x[:, :, t, v, m]; matrices (B, V, 3, 3)."""
    return torch.einsum("bvij,bjtvm->bitvm", matrices, x)

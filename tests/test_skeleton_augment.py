"""Batched augmentations: shapes, per-sample semantics of the released recipe, statistics, reproducibility, 2-D data."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skeleton.data.augment import (
    LINEAR_RATIO_RANGE,
    center_crop_resize,
    center_crop_windows,
    corrupted_joints,
    crop_resize,
    joint_corruption,
    planar_view_change,
    pretrain_view,
    random_rotation,
    sample_crop_windows,
    shear,
    shear_or_corrupt,
    temporal_crop_resize,
)


def _batch(batch=6, frames=120, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, 3, frames, 25, 2), generator=generator)
    num_frames = torch.randint(1, frames + 1, (batch,), generator=generator)
    num_frames[0], num_frames[1] = frames, 40  # one full and one shorter than the minimum crop
    return x, num_frames


def _reference_crop(sample, start, length, out_frames):
    """One sample, as the released code does it: slice, then F.interpolate(linear, align_corners=False)."""
    window = sample[:, start : start + length]  # (C, L, V, M)
    channels, _, joints, bodies = window.shape
    series = window.permute(0, 2, 3, 1).reshape(1, channels * joints * bodies, length)
    resized = F.interpolate(series, size=out_frames, mode="linear", align_corners=False)
    return resized.reshape(channels, joints, bodies, out_frames).permute(0, 3, 1, 2)


def test_crop_resize_matches_per_sample_interpolation():
    x, num_frames = _batch()
    x = x.double()  # float32 interpolation grids round differently; compare the arithmetic exactly in float64
    generator = torch.Generator().manual_seed(1)
    for ratio_range, out_frames in [((0.1, 1.0), 64), ((0.5, 1.0), 64), ((0.9, 1.0), 17)]:
        start, length = sample_crop_windows(num_frames, ratio_range, generator=generator)
        out = crop_resize(x, start, length, out_frames)
        assert out.shape == (6, 3, out_frames, 25, 2) and out.dtype == torch.float64
        for i in range(len(x)):
            expected = _reference_crop(x[i], int(start[i]), int(length[i]), out_frames)
            torch.testing.assert_close(out[i], expected, atol=1e-12, rtol=0)
    single = crop_resize(x.float(), start, length, out_frames)
    torch.testing.assert_close(single, out.float(), atol=1e-5, rtol=1e-5)


def test_center_crop_matches_formula():
    num_frames = torch.tensor([1, 2, 40, 100, 300])
    start, length = center_crop_windows(num_frames, 0.95)
    for n, s, size in zip(num_frames.tolist(), start.tolist(), length.tolist()):
        assert s == int((1 - 0.95) * n / 2) and size == n - 2 * s
    x, counts = _batch()
    out = center_crop_resize(x.double(), counts)
    start, length = center_crop_windows(counts)
    for i in range(len(x)):
        expected = _reference_crop(x[i].double(), int(start[i]), int(length[i]), 64)
        torch.testing.assert_close(out[i], expected, atol=1e-12, rtol=0)


def _reference_window(rng, n, ratio_range, min_length):
    """The released recipe's crop window for one sample, in numpy."""
    ratio = rng.uniform(*ratio_range)
    length = min(max(int(np.floor(n * ratio)), min_length), n)
    return rng.integers(0, n - length + 1), length


@pytest.mark.parametrize(
    "n, ratio_range", [(300, (0.1, 1.0)), (150, LINEAR_RATIO_RANGE), (80, (0.1, 1.0)), (30, (0.1, 1.0))]
)
def test_crop_window_statistics_match_the_released_rule(n, ratio_range):
    draws = 20000
    generator = torch.Generator().manual_seed(2)
    start, length = sample_crop_windows(torch.full((draws,), n), ratio_range, 64, generator=generator)
    assert (length >= min(64, n)).all() and (length <= n).all() and (start >= 0).all()
    assert (start + length <= n).all()
    rng = np.random.default_rng(3)
    ref_start, ref_length = np.array([_reference_window(rng, n, ratio_range, 64) for _ in range(draws)]).T
    # same distribution: mean, spread and the point mass at the minimum length
    assert abs(length.double().mean().item() - ref_length.mean()) < 0.02 * n
    assert abs(length.double().std().item() - ref_length.std()) < 0.03 * n + 0.5
    assert abs((length == min(64, n)).double().mean().item() - (ref_length == min(64, n)).mean()) < 0.015
    if n < 64:
        assert (length == n).all() and (start == 0).all()
        return
    relative = (start.double() + 0.5) / (n - length + 1).double()  # uniform on (0, 1) given the length
    assert abs(relative.mean().item() - 0.5) < 0.01 and abs(relative.var().item() - 1 / 12) < 0.01


def test_crop_samples_are_independent_and_reproducible():
    x = torch.randn(1, 3, 300, 25, 2).expand(64, -1, -1, -1, -1)
    num_frames = torch.full((64,), 300)
    first = temporal_crop_resize(x, num_frames, generator=torch.Generator().manual_seed(0))
    again = temporal_crop_resize(x, num_frames, generator=torch.Generator().manual_seed(0))
    other = temporal_crop_resize(x, num_frames, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, other)
    distinct = {tuple(first[i, 0, :, 0, 0].tolist()) for i in range(64)}
    assert len(distinct) > 60  # identical inputs, different draws


def test_shear_matrix_distribution():
    batch = 4000
    x = torch.zeros(batch, 3, 1, 25, 1)
    x[:, :, 0, :3, 0] = torch.eye(3)  # joint j holds the unit vector e_j, so column j of S comes out
    out = shear(x, generator=torch.Generator().manual_seed(4))
    matrices = out[:, :, 0, :3, 0]  # (B, 3, 3): S[:, i, j]
    diagonal = torch.diagonal(matrices, dim1=1, dim2=2)
    assert torch.equal(diagonal, torch.ones_like(diagonal))
    off = matrices[:, ~torch.eye(3, dtype=torch.bool)]
    assert off.abs().max() <= 1.0
    assert abs(off.mean().item()) < 0.02 and abs(off.var().item() - 1 / 3) < 0.02
    assert torch.equal(out[:, :, :, 3:], torch.zeros_like(out[:, :, :, 3:]))
    half = shear(x, magnitude=0.5, generator=torch.Generator().manual_seed(4))
    assert half[:, :, 0, :3, 0][:, ~torch.eye(3, dtype=torch.bool)].abs().max() <= 0.5


def _classify_corruption(before, after):
    """Per sample: ('zero' | 'mix', set of changed joints, the mixing matrix or None)."""
    results = []
    for x, y in zip(before, after):
        changed = {v for v in range(25) if not torch.equal(x[:, :, v], y[:, :, v])}
        chosen = sorted(changed)
        if torch.equal(y[:, :, chosen], torch.zeros_like(y[:, :, chosen])):
            results.append(("zero", changed, None))
            continue
        # solve y = M x over every frame, joint and body of the chosen joints
        source = x[:, :, chosen].reshape(3, -1).double()
        target = y[:, :, chosen].reshape(3, -1).double()
        matrix = target @ torch.linalg.pinv(source)
        torch.testing.assert_close(matrix @ source, target, atol=1e-4, rtol=1e-4)
        results.append(("mix", changed, matrix))
    return results


def test_joint_corruption_semantics():
    batch = 300
    x = torch.randn(batch, 3, 3, 25, 2, generator=torch.Generator().manual_seed(5))
    out = joint_corruption(x, generator=torch.Generator().manual_seed(6))
    results = _classify_corruption(x, out)
    assert all(len(changed) == 15 for _, changed, _ in results)  # 15 distinct joints, the others untouched
    zero_fraction = np.mean([kind == "zero" for kind, _, _ in results])
    assert abs(zero_fraction - 0.5) < 0.08
    entries = torch.cat([m.flatten() for kind, _, m in results if kind == "mix"])
    assert entries.abs().max() <= 1.0 + 1e-6 and abs(entries.var().item() - 1 / 3) < 0.04
    counts = np.zeros(25)
    for _, changed, _ in results:
        counts[list(changed)] += 1
    assert np.abs(counts / batch - 15 / 25).max() < 0.1  # every joint equally likely


def test_shear_or_corrupt_chooses_per_sample():
    batch = 400
    x = torch.randn(batch, 3, 4, 25, 2, generator=torch.Generator().manual_seed(7))
    out = shear_or_corrupt(x, generator=torch.Generator().manual_seed(8))
    corrupted = np.array([len({v for v in range(25) if not torch.equal(a[:, :, v], b[:, :, v])}) == 15
                          for a, b in zip(x, out)])  # fmt: skip
    assert abs(corrupted.mean() - 0.5) < 0.08
    again = shear_or_corrupt(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(out, again)


def test_pretrain_view_shapes_dtypes():
    x, num_frames = _batch(batch=5, frames=300)
    generator = torch.Generator().manual_seed(9)
    view = pretrain_view(x, num_frames, generator=generator)
    assert view.shape == (5, 3, 64, 25, 2) and view.dtype == x.dtype and torch.isfinite(view).all()
    other = pretrain_view(x, num_frames, generator=generator)
    assert not torch.equal(view, other)
    half = pretrain_view(x.to(torch.bfloat16), num_frames, generator=generator)
    assert half.dtype == torch.bfloat16 and half.shape == view.shape
    linear = temporal_crop_resize(x, num_frames, LINEAR_RATIO_RANGE, generator=generator)
    assert linear.shape == view.shape
    too_long = torch.full((5,), 1000)  # counts beyond the frame axis are clamped to it
    assert torch.equal(center_crop_resize(x, too_long, ratio=1.0), center_crop_resize(x, torch.full((5,), 300), 1.0))


def test_kinect_v1_single_body_views():
    """20 joints x 1 body (NW-UCLA): corruption touches 12 of the 20 joints."""
    generator = torch.Generator().manual_seed(11)
    x = torch.randn((300, 3, 4, 20, 1), generator=generator)
    out = shear_or_corrupt(x, generator=generator)
    changed = [sum(not torch.equal(a[:, :, v], b[:, :, v]) for v in range(20)) for a, b in zip(x, out)]
    assert corrupted_joints(20) == 12 and corrupted_joints(25) == 15
    assert {count for count in changed} <= {12, 20} and 0.4 < np.mean([c == 12 for c in changed]) < 0.6
    view = pretrain_view(x, torch.full((300,), 4), out_frames=8, crop_min_frames=1, generator=generator)
    assert view.shape == (300, 3, 8, 20, 1)


def test_random_rotation_is_a_rotation_within_the_bound():
    generator = torch.Generator().manual_seed(12)
    x = torch.randn((500, 3, 2, 20, 1), dtype=torch.float64, generator=generator)
    out = random_rotation(x, 17.0, generator=torch.Generator().manual_seed(13))
    again = random_rotation(x, 17.0, generator=torch.Generator().manual_seed(13))
    assert torch.equal(out, again)
    flat_in, flat_out = x.reshape(500, 3, -1), out.reshape(500, 3, -1)
    matrices = flat_out @ torch.linalg.pinv(flat_in)
    eye = torch.eye(3, dtype=torch.float64).expand(500, 3, 3)
    torch.testing.assert_close(matrices @ matrices.transpose(1, 2), eye, atol=1e-8, rtol=0)
    torch.testing.assert_close(torch.linalg.det(matrices), torch.ones(500, dtype=torch.float64))
    # R = Rz Ry Rx with every angle in [-17, 17] degrees: the total turn angle is at most ~29.3 degrees, and
    # R[2, 0] = -sin(angle about y) recovers that angle's distribution, U(-17, 17).
    turn = torch.rad2deg(torch.arccos(((matrices.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))
    assert turn.max() <= 29.4
    about_y = torch.rad2deg(torch.arcsin(-matrices[:, 2, 0]))
    assert about_y.abs().max() <= 17.0 + 1e-6 and about_y.abs().mean() == pytest.approx(8.5, abs=0.8)


def test_pretrain_view_options():
    x, num_frames = _batch(batch=64, frames=60, seed=3)
    generator = torch.Generator().manual_seed(14)
    plain = pretrain_view(x, num_frames, shear=0.0, corrupt_prob=0.0, out_frames=60, crop_min_ratio=1.0,
                          crop_min_frames=60, generator=generator)  # fmt: skip
    # no shear, no corruption, whole valid range: the crop-resize of the valid frames alone
    torch.testing.assert_close(plain, crop_resize(x, torch.zeros(64, dtype=torch.long), num_frames, 60))
    # the defaults are the released recipe, draw for draw
    default = pretrain_view(x, num_frames, generator=torch.Generator().manual_seed(15))
    generator = torch.Generator().manual_seed(15)
    released = shear_or_corrupt(temporal_crop_resize(x, num_frames, generator=generator), generator=generator)
    assert torch.equal(default, released) and default.shape == (64, 3, 64, 25, 2)


def _matrices(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """The per-sample C x C matrix mapping every joint of ``before`` to ``after`` (least squares), float64."""
    flat_in, flat_out = before.reshape(*before.shape[:2], -1), after.reshape(*after.shape[:2], -1)
    return flat_out @ torch.linalg.pinv(flat_in)


def test_two_dimensional_rotation_stays_in_the_plane():
    """2-D keypoints (COCO-17, 2 bodies): one in-plane angle per sample, U(-bound, bound); no z appears."""
    x = torch.randn((800, 2, 3, 17, 2), dtype=torch.float64, generator=torch.Generator().manual_seed(21))
    out = random_rotation(x, 30.0, generator=torch.Generator().manual_seed(22))
    assert out.shape == (800, 2, 3, 17, 2)
    matrices = _matrices(x, out)
    eye = torch.eye(2, dtype=torch.float64).expand(800, 2, 2)
    torch.testing.assert_close(matrices @ matrices.transpose(1, 2), eye, atol=1e-8, rtol=0)
    torch.testing.assert_close(torch.linalg.det(matrices), torch.ones(800, dtype=torch.float64))
    angle = torch.rad2deg(torch.atan2(matrices[:, 1, 0], matrices[:, 0, 0]))
    assert angle.abs().max() <= 30.0 + 1e-6 and angle.abs().mean() == pytest.approx(15.0, abs=1.2)
    assert (angle > 0).float().mean() == pytest.approx(0.5, abs=0.06)
    # Both bodies and all frames of a sample turn together: the matrix explains every joint exactly.
    torch.testing.assert_close(torch.einsum("bij,bjtvm->bitvm", matrices, x), out, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="2 or 3 coordinates"):
        random_rotation(torch.zeros(1, 4, 2, 17, 1), 10.0)


def test_two_dimensional_shear_and_corruption_are_two_by_two():
    """Shear: 2 x 2 with a unit diagonal; corruption: 10 of COCO's 17 joints zeroed or mixed by a 2 x 2 matrix."""
    generator = torch.Generator().manual_seed(23)
    x = torch.randn((200, 2, 4, 17, 2), dtype=torch.float64, generator=generator)
    sheared = shear(x, magnitude=0.5, generator=generator)
    matrices = _matrices(x, sheared)
    torch.testing.assert_close(matrices.diagonal(dim1=1, dim2=2), torch.ones(200, 2, dtype=torch.float64))
    off = torch.stack([matrices[:, 0, 1], matrices[:, 1, 0]], dim=1)
    assert off.abs().max() <= 0.5 and off.abs().max() > 0.4
    assert corrupted_joints(17) == 10 and corrupted_joints(15) == 9
    out = shear_or_corrupt(x, generator=generator)
    assert out.shape == x.shape
    changed = [[v for v in range(17) if not torch.equal(a[:, :, v], b[:, :, v])] for a, b in zip(x, out)]
    assert {len(c) for c in changed} <= {10, 17} and 0.35 < np.mean([len(c) == 10 for c in changed]) < 0.65
    for before, after, joints in zip(x, out, changed):
        if len(joints) == 10:  # the untouched joints are exactly the input's; the touched ones one 2 x 2 map
            keep = [v for v in range(17) if v not in joints]
            assert torch.equal(before[:, :, keep], after[:, :, keep])
            mix = _matrices(before[None, :, :, joints], after[None, :, :, joints])[0]
            assert mix.abs().max() <= 1.0 + 1e-9
            torch.testing.assert_close(torch.einsum("ij,jtvm->itvm", mix, before[:, :, joints]),
                                       after[:, :, joints], atol=1e-10, rtol=0)  # fmt: skip


def test_two_dimensional_pretrain_view():
    """The whole pretraining view on 2-D keypoints keeps (B, 2, T, V, M), with or without rotation."""
    x = torch.randn((6, 2, 90, 17, 1), generator=torch.Generator().manual_seed(24))
    num_frames = torch.tensor([90, 80, 70, 60, 50, 40])
    for degrees in (0.0, 20.0):
        view = pretrain_view(x, num_frames, rotate_degrees=degrees, generator=torch.Generator().manual_seed(25))
        assert view.shape == (6, 2, 64, 17, 1) and torch.isfinite(view).all()


def test_planar_view_change_scales_and_mirrors_the_horizontal_axis_only():
    """x' = s x, y' = y per sample (both bodies, every frame): |s| ~ U(1 - foreshorten, 1), s < 0 with mirror_prob."""
    x = torch.randn((4000, 2, 3, 17, 2), dtype=torch.float64, generator=torch.Generator().manual_seed(26))
    out = planar_view_change(x, mirror_prob=0.3, foreshorten=0.4, generator=torch.Generator().manual_seed(27))
    assert torch.equal(out[:, 1], x[:, 1])
    scale = out[:, 0, 0, 0, 0] / x[:, 0, 0, 0, 0]
    torch.testing.assert_close(out[:, 0], scale[:, None, None, None] * x[:, 0], atol=1e-12, rtol=0)
    size = scale.abs()
    assert size.min() >= 0.6 - 1e-9 and size.max() <= 1.0 + 1e-9
    assert size.mean() == pytest.approx(0.8, abs=0.01) and size.std() == pytest.approx(0.4 / math.sqrt(12), abs=0.01)
    assert (scale < 0).double().mean() == pytest.approx(0.3, abs=0.025)
    # no shrink, no mirror: the identity; always a mirror, no shrink: x -> -x exactly
    same = planar_view_change(x, mirror_prob=0.0, foreshorten=0.0, generator=torch.Generator().manual_seed(28))
    assert torch.equal(same, x)
    mirrored = planar_view_change(x, mirror_prob=1.0, foreshorten=0.0)
    assert torch.equal(mirrored[:, 0], -x[:, 0]) and torch.equal(mirrored[:, 1], x[:, 1])
    with pytest.raises(ValueError, match="2-D keypoints"):
        planar_view_change(torch.zeros(1, 3, 2, 25, 1), mirror_prob=0.5, foreshorten=0.5)
    with pytest.raises(ValueError, match=r"foreshorten must be in \[0, 1\], got 1.5"):
        planar_view_change(x, mirror_prob=0.5, foreshorten=1.5)


def test_the_planar_view_change_acts_on_two_dimensional_views_only():
    """3-D views draw nothing for it (the same views as without the options); 2-D views get it after the shear."""
    x, num_frames = _batch(batch=16, frames=60, seed=4)
    options = dict(shear=0.5, corrupt_prob=0.0, rotate_degrees=10.0)
    plain = pretrain_view(x, num_frames, **options, generator=torch.Generator().manual_seed(29))
    with_it = pretrain_view(x, num_frames, **options, mirror_prob=0.5, foreshorten=0.5,
                            generator=torch.Generator().manual_seed(29))  # fmt: skip
    assert torch.equal(plain, with_it)
    flat = x[:, :2]
    view = pretrain_view(flat, num_frames, shear=0.5, corrupt_prob=0.0, mirror_prob=1.0, foreshorten=0.0,
                         generator=torch.Generator().manual_seed(30))  # fmt: skip
    generator = torch.Generator().manual_seed(30)
    expected = shear_or_corrupt(temporal_crop_resize(flat, num_frames, generator=generator), shear_magnitude=0.5,
                                corrupt_prob=0.0, generator=generator)  # fmt: skip
    expected[:, 0] = -expected[:, 0]
    torch.testing.assert_close(view, expected, atol=0, rtol=0)


def test_argument_validation():
    with pytest.raises(ValueError, match="ratio_range"):
        sample_crop_windows(torch.tensor([10]), (0.0, 1.0))
    with pytest.raises(ValueError, match="ratio"):
        center_crop_windows(torch.tensor([10]), 1.5)
    with pytest.raises(ValueError, match="num_joints"):
        joint_corruption(torch.zeros(1, 3, 2, 25, 2), num_joints=26)
    assert math.isclose(LINEAR_RATIO_RANGE[0], 0.5)

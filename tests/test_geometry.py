"""hallucinate_positives against an independent float64 reference, its invariants, and its input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import DEGENERATE_CASES, boundary_by_bisection, degenerate_geometry, gen, kept, slerp, sphere

from halp_loss import Hallucination, exit_times, hallucinate_positives


@pytest.mark.parametrize("dim, num_protos", [(3, 4), (8, 5), (128, 20)])
def test_matches_materializing_reference(dim: int, num_protos: int) -> None:
    anchors, protos = sphere(6, dim, 1), sphere(num_protos, dim, 2)
    out = hallucinate_positives(anchors, protos, lam=0.8, num_positives=30, generator=gen())
    k, p = anchors.numpy(), protos.numpy()
    for n in range(k.shape[0]):
        nearest = int(np.argmax(p @ k[n]))
        assert out.nearest[n] == nearest
        for m in range(30):
            s = int(out.target[n, m])
            t_max = boundary_by_bisection(k[n], p[nearest], p[s])
            assert out.t_max[n, m].item() == pytest.approx(t_max, abs=1e-9)
            h = slerp(k[n], p[s], out.t[n, m].item())
            np.testing.assert_allclose(out.positives[n, m].numpy(), h, atol=1e-10)
            assert bool(out.keep[n, m]) == kept(h, p, nearest)


def test_rare_root_geometry_walks_toward_target() -> None:
    # Anchor at 170 deg, its nearest prototype at 100 deg, target at 0 deg: cos w < 0 and b / a + cos w < 0, where
    # the released arctan formula returns a negative fraction. The boundary is the bisector at 50 deg.
    def at(deg: float) -> list[float]:
        return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]

    anchor = torch.tensor([at(170)], dtype=torch.float64)
    protos = torch.tensor([at(100), at(0)], dtype=torch.float64)
    k, p0, ps = anchor[0], protos[0], protos[1]
    w = torch.acos(k @ ps)
    a, b = k @ (p0 - ps), 1 - ps @ p0
    assert torch.atan(torch.sin(w) / (b / a + torch.cos(w))) < 0  # the released formula's branch error

    out = hallucinate_positives(anchor, protos, lam=0.0, num_positives=4, generator=gen())
    assert torch.allclose(out.t_max, torch.full_like(out.t_max, 120 / 170))
    angle = torch.rad2deg(torch.atan2(out.positives[..., 1], out.positives[..., 0]))
    assert torch.allclose(angle, torch.full_like(angle, 50.0))
    assert out.keep.all()


def test_invariants() -> None:
    anchors, protos = sphere(32, 16, 3, torch.float32), sphere(10, 16, 4, torch.float32)
    out = hallucinate_positives(anchors, protos, lam=0.8, num_positives=200, generator=gen())
    assert isinstance(out, Hallucination)
    assert torch.allclose(out.positives.norm(dim=-1), torch.ones(32, 200), atol=1e-5)
    assert ((out.t_max >= 0) & (out.t_max <= 1)).all()
    assert (out.t <= out.t_max + 1e-7).all() and (out.t >= 0.2 * out.t_max - 1e-7).all()
    own = torch.einsum("bmd,bd->bm", out.positives, protos[out.nearest])
    toward = torch.einsum("bmd,bmd->bm", out.positives, protos[out.target])
    assert (own >= toward - 1e-5).all()
    assert (out.target != out.nearest[:, None]).all()
    # cos(anchor, h) = cos(t w) falls as t grows along each walk.
    cos_anchor = torch.einsum("bmd,bd->bm", out.positives, anchors)
    w = torch.acos((anchors[:, None, :] * protos[out.target]).sum(-1).clamp(-1, 1))
    assert torch.allclose(cos_anchor, torch.cos(out.t * w), atol=1e-5)
    n, first = 0, out.target[0, 0]
    same = out.target[n] == first
    order = out.t[n][same].argsort()
    assert (cos_anchor[n][same][order].diff() <= 1e-6).all()


def test_step_distribution_and_lam_zero() -> None:
    anchors, protos = sphere(16, 8, 5), sphere(6, 8, 6)
    hardest = hallucinate_positives(anchors, protos, lam=0.0, num_positives=50, generator=gen())
    assert torch.equal(hardest.t, hardest.t_max)
    out = hallucinate_positives(anchors, protos, lam=0.5, num_positives=4000, generator=gen(1))
    moving = out.t_max > 1e-6
    u = ((1 - out.t / out.t_max)[moving] / 0.5).sort().values
    ecdf = torch.arange(1, u.numel() + 1, dtype=u.dtype) / u.numel()
    assert (u - ecdf).abs().max() < 0.02  # Kolmogorov-Smirnov distance of u / lam from U(0, 1)


def test_tensor_lam_per_anchor() -> None:
    anchors, protos = sphere(4, 8, 7), sphere(5, 8, 8)
    lam = torch.tensor([[0.0], [0.0], [1.0], [1.0]], dtype=torch.float64)
    out = hallucinate_positives(anchors, protos, lam=lam, num_positives=100, generator=gen())
    assert torch.equal(out.t[:2], out.t_max[:2])
    assert (out.t[2:] < out.t_max[2:]).any() and (out.t[2:] < 0.5 * out.t_max[2:]).any()


def test_targets_uniform_among_candidates() -> None:
    anchors, protos = sphere(3, 8, 9), sphere(8, 8, 10)
    out = hallucinate_positives(anchors, protos, num_positives=21000, num_candidates=3, generator=gen())
    sims = anchors @ protos.T
    for n in range(3):
        order = sims[n].argsort(descending=True)
        assert out.nearest[n] == order[0]
        counts = torch.bincount(out.target[n], minlength=8).double()
        assert set(counts.nonzero().flatten().tolist()) == set(order[1:4].tolist())
        expected = 21000 / 3
        chi2 = (((counts[order[1:4]] - expected) ** 2) / expected).sum()
        assert chi2 < 13.8  # chi-square with 2 degrees of freedom, p = 0.001
    default = hallucinate_positives(anchors, protos, num_positives=7000, generator=gen())
    for n in range(3):
        assert (torch.bincount(default.target[n], minlength=8) > 0).sum() == 7


def test_keep_rate_in_reference_range() -> None:
    # SPEC: the released setting keeps 91-100 % of positives in 128-D with 20 prototypes.
    keys = sphere(256, 128, 11, torch.float32)
    protos = keys[torch.randperm(256, generator=gen())[:20]]
    out = hallucinate_positives(keys[:64], protos, generator=gen())
    assert 0.85 <= out.keep.float().mean() <= 1.0


def test_determinism_dtypes_and_no_grad() -> None:
    anchors = sphere(8, 16, 12, torch.float32).requires_grad_()
    protos = sphere(5, 16, 13, torch.float32)
    a = hallucinate_positives(anchors, protos, generator=gen(3))
    b = hallucinate_positives(anchors, protos, generator=gen(3))
    c = hallucinate_positives(anchors, protos, generator=gen(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.target, c.target)
    assert not a.positives.requires_grad
    half = hallucinate_positives(anchors.detach().half(), protos.bfloat16(), generator=gen())
    assert half.positives.dtype == torch.float32
    double = hallucinate_positives(anchors.detach().double(), protos, generator=gen())
    assert double.positives.dtype == torch.float64


def test_inputs_are_normalized_inside() -> None:
    anchors, protos = sphere(6, 8, 14), sphere(4, 8, 15)
    scaled = hallucinate_positives(anchors * 7.0, protos * 0.1, generator=gen())
    plain = hallucinate_positives(anchors, protos, generator=gen())
    assert torch.allclose(scaled.positives, plain.positives)


@pytest.mark.parametrize("case", DEGENERATE_CASES)
def test_degenerate_geometry_is_finite(case: str) -> None:
    anchors, protos = degenerate_geometry(case)
    out = hallucinate_positives(anchors, protos, lam=0.0, num_positives=20, generator=gen())
    for field in (out.positives, out.t, out.t_max):
        assert torch.isfinite(field).all()
    assert torch.allclose(out.positives.norm(dim=-1), torch.ones(out.t.shape), atol=1e-5)
    if case == "anchor_is_prototype":
        # From a prototype the boundary with any other prototype is their bisector, halfway along the arc.
        assert torch.allclose(out.t_max, torch.full_like(out.t_max, 0.5), atol=1e-4)
    if case == "antipodal_target":
        # No unique geodesic toward an antipodal target: the walk has length zero.
        assert torch.allclose(out.positives, F.normalize(anchors, dim=1)[:, None, :].expand_as(out.positives))


def test_bad_inputs_raise_value_errors() -> None:
    anchors, protos = sphere(4, 8, 18), sphere(5, 8, 19)
    cases = [
        (dict(anchor=anchors[0]), "anchor must be 2-D"),
        (dict(prototypes=protos[:, :4]), "prototypes must have 8 columns"),
        (dict(prototypes=protos[:1]), "at least 2 rows"),
        (dict(num_candidates=5), r"num_candidates must be in \[1, P - 1\]"),
        (dict(num_candidates=0), "num_candidates"),
        (dict(lam=1.5), r"lam must be a float in \[0, 1\]"),
        (dict(lam=torch.tensor([-0.1])), r"lam values must lie in \[0, 1\]"),
        (dict(lam=torch.zeros(3, 2)), r"lam of shape \(3, 2\) must broadcast to \(4, 10\)"),
        (dict(lam=torch.full((1, 4, 10), 0.5)), r"lam of shape \(1, 4, 10\) must broadcast to \(4, 10\)"),
        (dict(lam=float("nan")), r"lam must be a float in \[0, 1\]"),
        (dict(num_positives=0), "num_positives must be an integer >= 1"),
        (dict(anchor=anchors.clone().index_fill_(0, torch.tensor([2]), float("nan"))), "anchor has non-finite"),
        (dict(prototypes=protos.clone().index_fill_(0, torch.tensor([1]), 0.0)), "prototypes has a row of zero"),
        (dict(anchor=anchors.long()), "floating-point"),
        (dict(anchor=[[1.0] * 8]), "anchor must be a torch.Tensor, got list"),
        (dict(anchor=anchors[:, :0], prototypes=protos[:, :0]), "anchor must have at least one column"),
        (dict(prototypes=protos.to("meta")), "prototypes is on meta but anchor is on cpu"),
    ]
    for override, message in cases:
        kwargs = dict(anchor=anchors, prototypes=protos, num_positives=10)
        kwargs.update(override)
        with pytest.raises(ValueError, match=message):
            hallucinate_positives(**kwargs)


def polar(theta: float, phi: float) -> list[float]:
    return [math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_filter_cuts_walks_toward_an_almost_antipodal_target(dtype: torch.dtype) -> None:
    # Issue 13: p_j is 1e-6 less similar to the anchor than p0, and p_s . (p0 - p_j) = -6e-6 sits inside a fixed
    # tolerance of 64 float32 epsilons; but with the target 1e-3 rad from antipodal, 1 / sin w amplifies these to
    # a clear margin of 2e-3 to 5e-3 in h-space, and the explicit argmax filter keeps none of the positives.
    anchor = torch.tensor([[0.0, 0.0, 1.0]], dtype=dtype)
    p0, pj = polar(math.pi / 3, 1.0), polar(math.acos(math.cos(math.pi / 3) - 1e-6), -(1 - 6.9e-3))
    protos = torch.tensor([p0, pj, polar(math.pi - 1e-3, 0.0)], dtype=dtype)
    out = hallucinate_positives(anchor, protos, lam=0.8, num_positives=2000, generator=gen())
    toward = out.target[0] == 2
    assert out.nearest.item() == 0 and toward.sum() > 900
    assert not out.keep[0, toward].any()
    k, p = anchor.double().numpy()[0], F.normalize(protos.double(), dim=1).numpy()
    for t in out.t[0, toward][:50].tolist():
        margin = p @ slerp(k, p[2], t)
        assert margin[1] - margin[0] > 1.5e-3  # the argmax filter drops it by a clear margin
    exits = exit_times(anchor, protos)
    assert exits.exit_prototype[0, 1] == 1 and exits.t_exit[0, 1] < 1e-3 * exits.t_max[0, 1]


def near_antipodal_geometry(rng: np.random.Generator, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Issue 13's configuration, randomized: an anchor k, its nearest prototype p0, a third prototype p_j from 1e-6
    to 1e-5 less similar to k and tilted so that p_s . (p0 - p_j) takes either sign (its boundary crosses the
    walk, or only nearly), and a target p_s 3e-4 to 3e-3 rad from antipodal to k. Randomly rotated in ``dim``
    dimensions and rounded to float32."""
    theta, phi = rng.uniform(0.4, 1.2), rng.uniform(0.3, 2.5)
    gap, tilt = 10 ** rng.uniform(-6, -5), rng.uniform(-2e-2, 2e-2)
    points = np.zeros((4, dim))
    points[:, :3] = [
        [0.0, 0.0, 1.0],
        polar(theta, phi),
        polar(math.acos(math.cos(theta) - gap), -phi + tilt),
        polar(math.pi - 10 ** rng.uniform(-3.5, -2.5), 0.0),
    ]
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    rotated = torch.from_numpy(points @ rotation.T).float()
    return rotated[:1], rotated[1:]


def argmax_margins(anchor: torch.Tensor, protos: torch.Tensor, out: Hallucination) -> tuple[np.ndarray, np.ndarray]:
    """Float64 explicit rank filter on the positives at the drawn steps: the margin ``h . p0 - max_j h . p_j`` over
    third prototypes (kept iff >= 0), and the float32 uncertainty of that margin, ``16 eps (1 + (sin((1 - t) w) +
    sin(t w)) / sin w)``: cosines known to a few epsilons, amplified by the slerp's ``1 / sin w``."""
    k, p = F.normalize(anchor.double(), dim=1).numpy()[0], F.normalize(protos.double(), dim=1).numpy()
    nearest = int(np.argmax(p @ k))
    assert out.nearest.item() == nearest
    target, t = out.target[0].numpy(), out.t[0].double().numpy()
    w = np.arccos(np.clip(p[target] @ k, -1.0, 1.0))
    h = (np.sin((1 - t) * w)[:, None] * k + np.sin(t * w)[:, None] * p[target]) / np.sin(w)[:, None]
    sims = h @ p.T
    others = sims.copy()
    others[:, nearest] = -np.inf
    others[np.arange(len(t)), target] = -np.inf  # t <= t_max: the target is never closer than p0
    margin = sims[:, nearest] - others.max(axis=1)
    band = 16 * np.finfo(np.float32).eps * (1 + (np.sin((1 - t) * w) + np.sin(t * w)) / np.sin(w))
    return margin, band


@pytest.mark.parametrize("dim", [3, 16])
def test_rank_filter_matches_float64_argmax_near_antipodal_targets(dim: int) -> None:
    rng = np.random.default_rng(dim)
    clear_drops = clear_keeps = 0
    for _ in range(40):
        anchor, protos = near_antipodal_geometry(rng, dim)
        out = hallucinate_positives(anchor, protos, lam=1.0, num_positives=400, generator=gen())
        margin, band = argmax_margins(anchor, protos, out)
        keep = out.keep[0].numpy()
        disagree = keep != (margin >= 0)
        # Only true float32 ties may go either way.
        assert (np.abs(margin[disagree]) <= band[disagree]).all()
        clear_drops += int((margin < -band).sum())
        clear_keeps += int((margin > band).sum())
    assert clear_drops > 800 and clear_keeps > 8000  # of 16,000: both outcomes exercised, far from ties


def test_extreme_magnitudes_give_the_unit_scale_result() -> None:
    # Rows of 1e20 overflow a float32 squared norm and rows of 1e-30 underflow it; only the direction matters.
    anchors, protos = sphere(6, 16, 27, torch.float32), sphere(5, 16, 28, torch.float32)
    plain = hallucinate_positives(anchors, protos, generator=gen())
    # Powers of two scale exactly, so the result is the same to the bit.
    for scale_anchor, scale_protos in [(2.0**67, 1.0), (1.0, 2.0**67), (2.0**-100, 2.0**100)]:
        out = hallucinate_positives(anchors * scale_anchor, protos * scale_protos, generator=gen())
        assert all(torch.equal(a, b) for a, b in zip(out, plain))
    # Subnormal anchors keep only a few significant bits, but still give unit positives in the right direction.
    out = hallucinate_positives(anchors * 1e-40, protos * 1e20, generator=gen())
    assert torch.allclose(out.positives.norm(dim=-1), torch.ones(6, 100), atol=1e-6)
    assert torch.allclose(out.positives, plain.positives, atol=1e-3)


def test_positives_toward_almost_antipodal_targets_are_unit_norm() -> None:
    # alpha and beta grow like 1 / sin w, and the analytic norm of alpha k + beta p_s misses the computed one by up
    # to 9 % in float32; the positives are normalized by their computed norm. The prototypes near -k are targets.
    g = torch.Generator().manual_seed(29)
    anchors = F.normalize(torch.randn(32, 8, generator=g), dim=1)
    offsets = torch.logspace(-6, -2, 32)[:, None] * F.normalize(torch.randn(32, 8, generator=g), dim=1)
    for n in range(32):
        protos = F.normalize(torch.stack([anchors[n] + 0.3 * torch.randn(8, generator=g), offsets[n] - anchors[n]]))
        out = hallucinate_positives(anchors[n : n + 1], protos, lam=1.0, num_positives=200, generator=gen(n))
        assert torch.allclose(out.positives.norm(dim=-1), torch.ones(1, 200), atol=1e-6)
        # On the great circle through k and its target, as far as float32 inputs define it: rounding them tilts
        # the plane of k and an almost antipodal p_s by up to about eps / sin w.
        target = out.target[0, 0]
        assert (out.target == target).all()  # with P = 2 the walks all go toward the other prototype
        k, p = F.normalize(anchors[n].double(), dim=0), F.normalize(protos[target].double(), dim=0)
        plane, _ = torch.linalg.qr(torch.stack([k, p]).T)
        h = out.positives[0].double()
        off_plane = (h - (h @ plane) @ plane.T).norm(dim=1).max()
        assert off_plane <= 4 * torch.finfo(torch.float32).eps / (1 - (k @ p) ** 2).sqrt()


def test_empty_batch_gives_empty_outputs() -> None:
    protos = sphere(5, 8, 30)
    out = hallucinate_positives(torch.zeros(0, 8), protos, num_positives=7)
    assert out.positives.shape == (0, 7, 8) and out.keep.shape == out.t.shape == (0, 7) and out.nearest.shape == (0,)
    exits = exit_times(torch.zeros(0, 8), protos)
    assert exits.t_exit.shape == exits.exit_prototype.shape == (0, 4)

"""hallucinate_positives against an independent float64 reference, its invariants, and its input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import DEGENERATE_CASES, boundary_by_bisection, degenerate_geometry, gen, kept, slerp, sphere, unit

from halp_loss import Hallucination, hallucinate_positives


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
        (dict(lam=torch.zeros(3, 2)), "does not broadcast"),
        (dict(num_positives=0), "num_positives must be an integer >= 1"),
        (dict(anchor=anchors.clone().index_fill_(0, torch.tensor([2]), float("nan"))), "anchor has non-finite"),
        (dict(prototypes=protos.clone().index_fill_(0, torch.tensor([1]), 0.0)), "prototypes has a row of zero"),
        (dict(anchor=anchors.long()), "floating-point"),
    ]
    for override, message in cases:
        kwargs = dict(anchor=anchors, prototypes=protos)
        kwargs.update(override)
        with pytest.raises(ValueError, match=message):
            hallucinate_positives(**kwargs)

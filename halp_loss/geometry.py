"""Positive hallucination on the unit sphere (HaLP, CVPR 2023), in closed form.

A positive ``h`` lies on the great circle from the anchor ``k`` toward a target prototype ``p_s``:

    h(t) = [sin((1 - t) w) k + sin(t w) p_s] / sin w,    w = arccos(k . p_s),

so ``h = alpha k + beta p_s``. Everything the method needs -- the boundary ``t_max``, the rank filter, the
similarity of a query to ``h`` -- is a combination of the dot products ``k . P`` and ``P . P^T``. This module
works on those dot products alone; the (B, M, D) positives are only built when a caller asks for them.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from halp_loss._checks import (
    Lam,
    check_device,
    check_lam,
    check_matrix,
    check_positive_int,
    check_values,
    compute_dtype,
)

__all__ = [
    "CandidateWalks",
    "GeodesicDraws",
    "Hallucination",
    "candidate_walks",
    "detached_unit_rows",
    "draw_geodesics",
    "hallucinate_positives",
    "unit_rows",
]


def unit_rows(x: Tensor) -> Tensor:
    """Rows scaled to unit norm, at any finite magnitude; zero rows stay zero (differentiable).

    Each row is first scaled by the power of two nearest above its largest magnitude. That scaling is exact, so
    rows of ordinary magnitude get bit for bit ``F.normalize(x)``, while a row of 1e20s (whose squared norm
    overflows float32) or of 1e-30s (whose squared norm underflows) is normalized as accurately. The scale
    carries no gradient, which is exact since the result does not depend on it.
    """
    return F.normalize(x * row_scales(x), dim=-1)


def detached_unit_rows(x: Tensor) -> Tensor:
    """:func:`unit_rows` without autograd, for many rows in any memory layout (a MoCo queue passed as ``queue.T``).

    The same power-of-two scaling, then the norm as a sum of squares and an in-place division: on a CPU this
    normalizes a column-major 16384 x 128 queue in half the time of ``F.normalize``, whose norm kernel is slow across
    strides. Rows agree with :func:`unit_rows` to float rounding (not bit for bit).
    """
    scaled = x.detach() * row_scales(x)
    norm = scaled.square().sum(dim=-1, keepdim=True).sqrt_()
    # F.normalize's eps: zero rows stay zero.
    return scaled.div_(norm.clamp_min_(1e-12))


def row_scales(x: Tensor) -> Tensor:
    """(..., 1) powers of two that bring each row's largest magnitude into [0.5, 1), detached.

    Subnormal rows would need a factor beyond the dtype's range: scaling them by its largest power of two already
    lifts them far from underflow.
    """
    x = x.detach()
    # max |x| from the row's max and min, which needs no |x| temporary.
    largest = torch.frexp(torch.maximum(x.amax(dim=-1, keepdim=True), -x.amin(dim=-1, keepdim=True))).exponent
    limit = math.frexp(torch.finfo(x.dtype).max)[1] - 2
    return torch.exp2(-largest.clamp(-limit, limit).to(x.dtype))


class GeodesicDraws(NamedTuple):
    """Random positives described by their coefficients: ``h = (alpha * k + beta * P[target]) / norm``.

    All fields are (B, M) except ``nearest`` (B,).
    """

    nearest: Tensor
    target: Tensor
    t: Tensor
    t_max: Tensor
    alpha: Tensor
    beta: Tensor
    norm: Tensor
    keep: Tensor


class Hallucination(NamedTuple):
    """Hallucinated positives and how they were drawn.

    Attributes:
        positives: (B, M, D) unit-norm positives.
        keep: (B, M) bool, True where the positive's nearest prototype is still the anchor's (rank filter).
        target: (B, M) long, index of the prototype each positive walks toward.
        nearest: (B,) long, index of the anchor's nearest prototype.
        t: (B, M) position of each positive as a fraction of the anchor-to-target geodesic.
        t_max: (B, M) fraction at which the geodesic reaches the boundary between the anchor's cell and the
            target's cell; ``t <= t_max``.
    """

    positives: Tensor
    keep: Tensor
    target: Tensor
    nearest: Tensor
    t: Tensor
    t_max: Tensor


def boundary_fraction(a: Tensor, b: Tensor, cos_w: Tensor, w: Tensor) -> Tensor:
    """Fraction ``t`` of the geodesic at which ``h(t) . p0 = h(t) . p_s``, in [0, 1].

    The condition ``a sin((1 - t) w) = b sin(t w)`` with ``a = k . (p0 - p_s) >= 0`` and ``b = 1 - p_s . p0``
    has its root ``t w = atan2(a sin w, b + a cos w)`` in [0, w]. The released code's
    ``arctan(sin w / (b / a + cos w))`` picks the wrong branch when ``b / a + cos w < 0``.
    """
    theta = torch.atan2(a * torch.sin(w), b + a * cos_w)
    tiny = torch.finfo(w.dtype).tiny
    return (theta / w.clamp_min(tiny)).clamp(0.0, 1.0)


def slerp_coefficients(t: Tensor, cos_w: Tensor, w: Tensor, degenerate: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``alpha, beta, norm`` with ``h = (alpha k + beta p) / norm`` unit-norm, ``h(t)`` the slerp from k to p.

    Where ``sin w`` vanishes (k = p, or k = -p where the walk has length 0) the linear weights are used, which
    is the slerp's limit as ``w -> 0`` and gives ``h = k`` at ``t = 0``.
    """
    sin_w = torch.where(degenerate, torch.ones_like(w), torch.sin(w))
    alpha = torch.where(degenerate, 1.0 - t, torch.sin((1.0 - t) * w) / sin_w)
    beta = torch.where(degenerate, t, torch.sin(t * w) / sin_w)
    norm_sq = alpha * alpha + beta * beta + 2.0 * alpha * beta * cos_w
    return alpha, beta, norm_sq.clamp_min(torch.finfo(w.dtype).tiny).sqrt()


def walk_geometry(
    sim_anchor: Tensor, sim_protos: Tensor, nearest: Tensor, target: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``cos_w, w, t_max, degenerate`` of the walks from each anchor toward ``target`` (all (B, M)).

    Args:
        sim_anchor: (B, P) anchor-prototype cosines.
        sim_protos: (P, P) prototype-prototype cosines.
        nearest: (B,) nearest prototype of each anchor.
        target: (B, M) target prototypes.
    """
    cos_w = sim_anchor.gather(1, target).clamp(-1.0, 1.0)
    w = torch.acos(cos_w)
    degenerate = torch.sin(w) <= 8 * torch.finfo(w.dtype).eps
    a = (sim_anchor.gather(1, nearest[:, None]) - cos_w).clamp_min(0.0)
    b = (1.0 - sim_protos[target, nearest[:, None]]).clamp_min(0.0)
    t_max = boundary_fraction(a, b, cos_w, w)
    # An antipodal target has no unique geodesic: stay at the anchor.
    t_max = torch.where(degenerate & (cos_w < 0), torch.zeros_like(t_max), t_max)
    return cos_w, w, t_max, degenerate


def candidate_targets(sim_anchor: Tensor, nearest: Tensor, num_candidates: int) -> Tensor:
    """(B, C) the ``num_candidates`` prototypes most similar to each anchor, its nearest excluded.

    With ``C = P - 1`` these are all the other prototypes in index order; otherwise they are sorted by
    decreasing similarity.
    """
    batch, num_protos = sim_anchor.shape
    if num_candidates == num_protos - 1:
        # All other prototypes: skip the nearest by shifting the indices at and above it.
        others = torch.arange(num_protos - 1, device=sim_anchor.device).expand(batch, -1)
        return others + (others >= nearest[:, None]).long()
    others = sim_anchor.scatter(1, nearest[:, None], float("-inf"))
    return others.topk(num_candidates, dim=1).indices


class CandidateWalks(NamedTuple):
    """Geometry of the walks from each anchor toward each of its candidate targets; all (B, C) but ``nearest``."""

    nearest: Tensor
    target: Tensor
    cos_w: Tensor
    w: Tensor
    t_max: Tensor
    degenerate: Tensor
    t_exit: Tensor
    exit_prototype: Tensor


def walk_exits(
    sim_anchor: Tensor, sim_protos: Tensor, nearest: Tensor, target: Tensor, cos_w: Tensor, w: Tensor, t_max: Tensor
) -> tuple[Tensor, Tensor]:
    """``t_exit, exit_prototype`` (both (B, C)) of the walks toward ``target``, from dot products alone.

    The walk stays in the cell of ``p0`` (the nearest prototype) while ``h(t) . (p0 - p_j) >= 0`` for every third
    prototype ``p_j``. Scaled by ``sin w`` this is ``a_j sin((1 - t) w) + c_j sin(t w)`` with
    ``a_j = k . (p0 - p_j) >= 0`` and ``c_j = p_s . (p0 - p_j)``: a sinusoid in ``t w`` over an arc of length
    ``w <= pi``, which changes sign at most once, exactly when ``c_j < 0``, at
    ``t w = atan2(a_j sin w, a_j cos w - c_j)``. So the rank filter keeps exactly ``t <= t_exit``, the first such
    crossing (or ``t_max``): a filter on ``t`` per (anchor, target) pair instead of an argmax per positive.

    Args:
        sim_anchor: (B, P) anchor-prototype cosines.
        sim_protos: (P, P) prototype-prototype cosines.
        nearest: (B,) nearest prototype of each anchor.
        target: (B, C) target prototypes.
        cos_w: (B, C) cosines between the anchors and their targets (clamped to [-1, 1]).
        w: (B, C) their angles.
        t_max: (B, C) boundary fractions of the walks (:func:`walk_geometry`).
    """
    a = (sim_anchor.gather(1, nearest[:, None]) - sim_anchor).clamp_min(0.0)[:, None, :]
    c = sim_protos[target, nearest[:, None]][..., None] - sim_protos[target]
    theta = torch.atan2(a * torch.sin(w)[..., None], a * cos_w[..., None] - c)
    t_cross = (theta / w.clamp_min(torch.finfo(w.dtype).tiny)[..., None]).clamp(0.0, 1.0)
    cuts = third_party_cuts(a, c, w, t_max)
    # p0 and the target are not third parties (the target's crossing is t_max itself).
    index = torch.arange(sim_protos.shape[0], device=target.device)
    cuts &= (index != target[..., None]) & (index != nearest[:, None, None])
    t_exit, first = torch.where(cuts, t_cross, t_max[..., None]).min(dim=2)
    return t_exit, torch.where(t_exit < t_max, first, target)


TIE_EPS = 8
"""Cosines closer than this many machine epsilons are ties (float32 dot products of unit vectors are off by
at most about 1.5 epsilons, measured up to D = 1024)."""


def third_party_cuts(a: Tensor, c: Tensor, w: Tensor, t_max: Tensor) -> Tensor:
    """(B, C, P) bool: whether prototype ``j`` cuts the walk before its end by more than a float tie.

    Cosines are rounded, and ties are kept (the boundary belongs to the cell), so ``p_j`` cuts the walk only if
    at the walk's end ``h`` is closer to ``p_j`` than to ``p0`` by more than cosines off by ``tie`` each can
    explain: ``(a_j + tie) sin((1 - t_max) w) + (c_j + tie) sin(t_max w) < 0`` (the margin in h-space, scaled by
    ``sin w``). The sinusoid changes sign at most once, so this holds exactly when the walk crosses into
    ``p_j``'s cell before ``t_max`` with a margin beyond the rounding. Testing the sign of ``c_j`` against a fixed
    tolerance instead misses clear crossings toward nearly antipodal targets, where ``1 / sin w`` amplifies the
    cosine differences; and with the margin a copy of ``p0`` (``a_j, c_j ~ 0``) or of the target (crossing at
    ``t_max``) never cuts.

    Args:
        a: (B, 1, P) ``k . (p0 - p_j)``, clamped at 0.
        c: (B, C, P) ``p_s . (p0 - p_j)``.
        w: (B, C) angles from the anchors to their targets.
        t_max: (B, C) boundary fractions of the walks.
    """
    tie = TIE_EPS * torch.finfo(w.dtype).eps
    end = (w * t_max)[..., None]
    before, after = torch.sin(w[..., None] - end), torch.sin(end)
    # The tie terms are moved to the (B, C, 1) side: three passes over the (B, C, P) tensor instead of five.
    return torch.addcmul(c * after, a, before) < -tie * (before + after)


def candidate_walks(sim_anchor: Tensor, sim_protos: Tensor, num_candidates: int) -> CandidateWalks:
    """:class:`CandidateWalks` of each anchor toward each of its candidate targets, from the (B, P)
    anchor-prototype and (P, P) prototype-prototype cosines (no validation, no autograd)."""
    nearest = sim_anchor.argmax(dim=1)
    target = candidate_targets(sim_anchor, nearest, num_candidates)
    cos_w, w, t_max, degenerate = walk_geometry(sim_anchor, sim_protos, nearest, target)
    t_exit, exit_prototype = walk_exits(sim_anchor, sim_protos, nearest, target, cos_w, w, t_max)
    return CandidateWalks(nearest, target, cos_w, w, t_max, degenerate, t_exit, exit_prototype)


def draw_geodesics(
    sim_anchor: Tensor,
    sim_protos: Tensor,
    lam: Lam,
    num_positives: int,
    num_candidates: int,
    generator: Optional[torch.Generator] = None,
) -> GeodesicDraws:
    """Draw ``num_positives`` positives per anchor from dot products alone (no validation, no autograd).

    Args:
        sim_anchor: (B, P) cosines between unit-norm anchors and unit-norm prototypes.
        sim_protos: (P, P) cosines between the prototypes.
        lam: float or tensor broadcastable to (B, M) in [0, 1]; ``u ~ U(0, lam)``, ``t = (1 - u) t_max``.
        num_positives: M.
        num_candidates: targets are drawn among this many most similar prototypes besides the nearest.
        generator: torch generator on the tensors' device, for reproducible draws.

    Returns:
        GeodesicDraws with (B, M) coefficients such that ``h = (alpha k + beta P[target]) / norm``.
    """
    # Draws are made per positive, but the geometry depends only on the (anchor, target) pair: compute it once
    # per candidate target and gather, so no (B, M, P) tensor is needed for the rank filter.
    walks = candidate_walks(sim_anchor, sim_protos, num_candidates)
    pick = torch.randint(
        num_candidates, (sim_anchor.shape[0], num_positives), generator=generator, device=sim_anchor.device
    )
    target, cos_w, w, t_max, degenerate, t_exit = (
        field.gather(1, pick)
        for field in (walks.target, walks.cos_w, walks.w, walks.t_max, walks.degenerate, walks.t_exit)
    )
    u = torch.rand(target.shape, generator=generator, device=w.device, dtype=w.dtype)
    if isinstance(lam, Tensor):
        lam = lam.to(device=w.device, dtype=w.dtype)
    t = (1.0 - u * lam) * t_max
    alpha, beta, norm = slerp_coefficients(t, cos_w, w, degenerate)
    # The rank filter keeps exactly the steps up to the walk's exit from the anchor's cell.
    keep = t <= t_exit
    return GeodesicDraws(walks.nearest, target, t, t_max, alpha, beta, norm, keep)


def resolve_candidates(num_candidates: Optional[int], num_prototypes: int) -> int:
    """Validate ``num_candidates`` against the number of prototypes; ``None`` means all others."""
    if num_prototypes < 2:
        raise ValueError(f"prototypes must hold at least 2 rows to walk between, got {num_prototypes}")
    if num_candidates is None:
        return num_prototypes - 1
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int):
        raise ValueError(f"num_candidates must be an int or None, got {num_candidates!r}")
    if not 1 <= num_candidates <= num_prototypes - 1:
        raise ValueError(
            f"num_candidates must be in [1, P - 1] = [1, {num_prototypes - 1}] for P = {num_prototypes} "
            f"prototypes, got {num_candidates}"
        )
    return num_candidates


def checked_unit_inputs(
    anchor: Tensor, prototypes: Tensor, num_candidates: Optional[int]
) -> tuple[Tensor, Tensor, int]:
    """Validate the inputs of an inspection-level function and return the unit-norm anchors and prototypes (in
    float32, float64 if either input is float64) and the resolved ``num_candidates``.

    Raises:
        ValueError: for inputs of the wrong rank, dtype or device, a dim mismatch, ``P < 2``, ``num_candidates``
            out of range, non-finite values or zero-norm rows.
    """
    check_matrix(anchor, "anchor")
    check_matrix(prototypes, "prototypes", anchor.shape[1])
    check_device(prototypes, "prototypes", anchor, "anchor")
    num_candidates = resolve_candidates(num_candidates, prototypes.shape[0])
    check_values(anchor, "anchor")
    check_values(prototypes, "prototypes")
    dtype = compute_dtype(anchor, prototypes)
    return unit_rows(anchor.to(dtype)), unit_rows(prototypes.to(dtype)), num_candidates


@torch.no_grad()
def hallucinate_positives(
    anchor: Tensor,
    prototypes: Tensor,
    lam: Lam = 0.8,
    num_positives: int = 100,
    *,
    num_candidates: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> Hallucination:
    """Hallucinate positives for each anchor by walking toward other prototypes (HaLP, SPEC section 1).

    For every anchor ``k`` with nearest prototype ``p0``, each positive picks a target ``p_s`` uniformly among the
    candidate prototypes, finds the fraction ``t_max`` of the geodesic ``k -> p_s`` at which the walk reaches the
    boundary between the two prototypes' cells, and stops at ``t = (1 - u) t_max`` with ``u ~ U(0, lam)``.
    A positive is kept when its nearest prototype is still ``p0``. Positives carry no gradient.

    Args:
        anchor: (B, D) anchors (e.g. momentum-encoder keys); normalized inside.
        prototypes: (P, D) prototypes, ``P >= 2``; normalized inside.
        lam: how far below the boundary positives may fall, a float or a tensor broadcastable to (B, M) with
            values in [0, 1]. ``lam = 0`` puts every positive on the boundary (the hardest).
        num_positives: M, positives per anchor.
        num_candidates: draw targets among this many most similar prototypes other than the nearest
            (default: all ``P - 1``).
        generator: optional ``torch.Generator`` on the anchors' device for reproducible draws.

    Returns:
        A :class:`Hallucination` with ``positives`` (B, M, D) in float32 (float64 if an input is float64).

    Raises:
        ValueError: for inputs of the wrong rank, dtype or device, a dim mismatch, ``P < 2``, ``num_candidates``
            out of range, ``lam`` outside [0, 1], ``num_positives < 1``, non-finite values or zero-norm rows.

    Example:
        >>> k = torch.nn.functional.normalize(torch.randn(8, 128), dim=1)
        >>> prototypes = torch.nn.functional.normalize(torch.randn(20, 128), dim=1)
        >>> out = hallucinate_positives(k, prototypes, lam=0.8, num_positives=100)
        >>> out.positives.shape, out.keep.dtype
        (torch.Size([8, 100, 128]), torch.bool)
    """
    k, protos, num_candidates = checked_unit_inputs(anchor, prototypes, num_candidates)
    check_positive_int(num_positives, "num_positives")
    check_lam(lam, anchor.shape[0], num_positives)
    draws = draw_geodesics(k @ protos.T, protos @ protos.T, lam, num_positives, num_candidates, generator)
    # Normalized by its computed norm rather than the analytic one: toward a nearly antipodal target, where
    # alpha and beta grow like 1 / sin w, the two disagree by up to 9 % in float32. Both stay far below 1 / eps,
    # so the squared norm cannot overflow and the plain normalization suffices.
    walked = draws.alpha[..., None] * k[:, None, :] + draws.beta[..., None] * protos[draws.target]
    positives = F.normalize(walked, dim=-1)
    return Hallucination(positives, draws.keep, draws.target, draws.nearest, draws.t, draws.t_max)

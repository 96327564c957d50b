"""Positive hallucination on the unit sphere (HaLP, CVPR 2023), in closed form.

A positive ``h`` lies on the great circle from the anchor ``k`` toward a target prototype ``p_s``. In the plane of
``k`` and ``p_s``, with ``u_s = (p_s - cos w k) / sin w`` the unit tangent at ``k`` toward ``p_s`` and
``w = arccos(k . p_s)``, the point at angle ``x = t w`` along the walk is

    h(x) = cos x k + sin x u_s    (the slerp  [sin(w - x) k + sin x p_s] / sin w),

the complex number ``e^{ix}`` in the basis ``(k, u_s)``. Everything the method needs -- where the walk reaches the
boundary of the anchor's cell, where a third prototype's cell cuts it, the similarity of a query to ``h`` -- is a
combination of the dot products ``k . P`` and ``P . P^T``. This module works on those dot products alone; the
(B, M, D) positives are only built when a caller asks for them.

For each anchor and target every boundary is the root of a sinusoid ``a sin(w - x) + c sin x`` with ``a >= 0``
(``a = k . (p0 - p_j)``, ``c = p_s . (p0 - p_j)``, ``p0`` the anchor's nearest prototype), which is
``x = atan2(sin w, cos w + rho)`` with ``rho = -c / a``: decreasing in ``rho``, so the first boundary a walk meets
is the one of largest ``rho``. The ``rho`` of the target's own boundary is ``(1 - p_s . p0) / a``, that of a third
prototype ``-(c + tie) / a``; their numerators depend on the prototypes only and are tabulated once per set of
prototypes (``WalkTables``), so a call costs one (B, P, P) division and a max.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, TypeVar

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
    "Hallucination",
    "WalkTables",
    "Walks",
    "candidate_mask",
    "detached_unit_rows",
    "draw_positions",
    "hallucinate_positives",
    "normalize_rows",
    "random_draws",
    "unit_rows",
    "walk_angles",
    "walk_tables",
]

T = TypeVar("T")

NORMALIZE_EPS = 1e-12
"""``F.normalize``'s eps: rows of zeros stay zero."""


def unit_rows(x: Tensor) -> Tensor:
    """Rows scaled to unit norm, at any finite magnitude; zero rows stay zero (differentiable).

    Each row is first scaled by the power of two nearest above its largest magnitude. That scaling is exact, so
    rows of ordinary magnitude get bit for bit ``F.normalize(x)``, while a row of 1e20s (whose squared norm
    overflows float32) or of 1e-30s (whose squared norm underflows) is normalized as accurately. The scale
    carries no gradient, which is exact since the result does not depend on it.
    """
    return normalize_rows(x)[0]


def normalize_rows(x: Tensor, *, inplace: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """``unit_rows`` and its pieces: ``(unit, scale, norm)`` with ``unit = x * scale / norm``, ``scale`` the
    (..., 1) powers of two and ``norm`` the clamped norms of the scaled rows, so that the gradient of ``unit``
    is ``(g - unit (unit . g)) * scale / norm`` (what the fused losses compute without autograd).

    ``inplace`` overwrites ``x`` with ``unit`` (no autograd): a caller normalizing a buffer of its own, such as a
    concatenation that holds a queue, saves allocating two copies of it.
    """
    scale = row_scales(x)
    scaled = x.mul_(scale) if inplace else x * scale
    # F.normalize's norm, clamp and division: the same bits for rows it handles.
    norm = torch.linalg.vector_norm(scaled, dim=-1, keepdim=True).clamp_min(NORMALIZE_EPS)
    return scaled.div_(norm) if inplace else scaled / norm, scale, norm


@torch.no_grad()
def detached_unit_rows(x: Tensor) -> Tensor:
    """``unit_rows`` without autograd, for many rows in any memory layout (MoCo negatives passed as ``queue.T``).

    Each row is divided by its largest magnitude (by the smallest normal number if that is smaller, an exact power
    of two, so that subnormal rows are scaled up and zero rows give no 0 / 0), which brings every finite row into a
    range where its norm neither overflows nor underflows, then by that norm; zero rows stay zero. Three passes over
    the rows and two writes: a column-major 16384 x 128 queue is normalized in less time than ``F.normalize`` takes.
    Rows agree with ``unit_rows`` to float rounding (not bit for bit).
    """
    tiny = torch.finfo(x.dtype).tiny
    unit = x / x.abs().amax(dim=-1, keepdim=True).clamp_min_(tiny)
    return unit.div_(torch.linalg.vector_norm(unit, dim=-1, keepdim=True).clamp_min_(tiny))


@torch.no_grad()
def row_scales(x: Tensor) -> Tensor:
    """(..., 1) powers of two that bring each row's largest magnitude into [0.5, 1), without autograd.

    Subnormal rows would need a factor beyond the dtype's range: scaling them by its largest power of two already
    lifts them far from underflow (and the exponent is clamped on both sides, so no scale is itself subnormal).
    """
    # |x| then max: linalg.vector_norm(x, inf) is one kernel but, on a CPU, 8 x slower over a large queue.
    largest = x.abs().amax(dim=-1, keepdim=True)
    limit = math.frexp(torch.finfo(x.dtype).max)[1] - 2
    # 0.5 ** exponent: one kernel, exact, in x's dtype (exp2 of the integer exponent would be float32).
    return torch.pow(constant(0.5, x.dtype, x.device), torch.frexp(largest).exponent.clamp(-limit, limit))


_CACHE: dict[tuple, Any] = {}


def device_cache(key: tuple, build: Callable[[], T]) -> T:
    """``build()`` once per ``key`` (which names the dtype and device), kept for the process: constants a step would
    otherwise copy from the host. Built outside inference mode, so the tensors can be saved for backward later; a
    plain dict rather than ``functools.lru_cache``, which torch.compile warns it cannot trace."""
    if key not in _CACHE:
        with torch.inference_mode(False):
            _CACHE[key] = build()
    return _CACHE[key]


def constant(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``value`` as a 0-d tensor of ``dtype`` on ``device``, built once."""
    return device_cache(("constant", value, dtype, device), lambda: torch.tensor(value, dtype=dtype, device=device))


TIE_EPS = 8
"""Cosines closer than this many machine epsilons are ties (float32 dot products of unit vectors are off by
at most about 1.5 epsilons, measured up to D = 1024)."""


class WalkTables(NamedTuple):
    """What the walks need from a set of P unit prototypes, computed once per set (per bank refit).

    Attributes:
        prototypes: (P, D) the prototypes.
        transposed: (D, P) the prototypes as columns, contiguous, for ``anchor @ transposed``.
        ratios: (P, P, P) numerators of the boundary ratios ``rho``: at ``[n, s, j]`` for an anchor nearest to
            ``p_n`` walking toward ``p_s``, ``-(c + tie)`` with ``c = p_s . (p_n - p_j)`` for a third prototype
            ``p_j``, and ``1 - p_s . p_n`` (no tie: the target's boundary is the walk's end) at ``j = s``.
        floor: (P, P) at ``[n, s]``: the smallest positive normal number where ``s != n``, infinity where
            ``s == n``: added to the step range of each walk, it turns point masses (a range of length 0) into
            ratios 1 and gives the walk toward the anchor's own prototype probability 0.
        order: (P, P - 1) long, at ``[n]``: the targets ``s != n`` in index order.
    """

    prototypes: Tensor
    transposed: Tensor
    ratios: Tensor
    floor: Tensor
    order: Tensor


@torch.no_grad()
def walk_tables(prototypes: Tensor) -> WalkTables:
    """``WalkTables`` of (P, D) unit prototypes, ``P >= 2`` (no validation, no autograd)."""
    num = prototypes.shape[0]
    tiny = torch.finfo(prototypes.dtype).tiny
    gram = prototypes @ prototypes.T
    # c[n, s, j] = p_s . p_n - p_s . p_j, indexed [n, s, j].
    c = gram.T[:, :, None] - gram[None, :, :]
    ratios = -(c + TIE_EPS * torch.finfo(prototypes.dtype).eps)
    # A zero numerator over a zero a (the anchor on that boundary) would be 0 / 0: -tiny makes it -inf, no cut.
    ratios = torch.where(ratios == 0, -tiny, ratios)
    # The target's own boundary (j = s), untied: b = 1 - p_s . p_n >= 0, plus tiny so that b = a = 0 (a duplicate
    # of the nearest prototype) gives +inf, a walk of length zero, rather than 0 / 0.
    boundary = (1.0 - gram).clamp_min(0.0) + tiny
    ratios.diagonal(dim1=1, dim2=2).copy_(boundary)
    index = torch.arange(num, device=prototypes.device)
    # Row n of order: 0 .. P - 1 without n (arithmetic rather than a mask, which would read back from a GPU).
    others = index[: num - 1].expand(num, num - 1)
    order = others + (others >= index[:, None]).long()
    return WalkTables(
        prototypes, prototypes.T.contiguous(), ratios, torch.full_like(gram, tiny).fill_diagonal_(math.inf), order
    )


class Walks(NamedTuple):
    """Geometry of the walks from each anchor toward every prototype, all (B, P) but ``nearest`` (B,).

    The walk toward the anchor's own prototype (column ``nearest``) is not a walk; its entries are finite and
    ignored. Angles are along the great circle from the anchor; fractions of the walk are ``angle / angle(w)``.

    Attributes:
        nearest: (B,) long, the anchor's nearest prototype ``p0``.
        cos: ``cos w``, the anchor-target cosines, clamped to [-1, 1].
        sin: ``sin w``, at least the smallest normal number.
        angle: ``w``, the length of each walk.
        end: angle at which the walk reaches the boundary between ``p0``'s and the target's cells (``t_max w``).
        exit: angle up to which the walk stays in ``p0``'s cell, ``<= end``: the first boundary it meets.
        ratios: (B, P, P) ``cos w + rho`` with ``rho`` the boundary ratio at ``[b, s, j]``; the largest gives the exit.
    """

    nearest: Tensor
    cos: Tensor
    sin: Tensor
    angle: Tensor
    end: Tensor
    exit: Tensor
    ratios: Tensor


def walk_angles(anchor: Tensor, tables: WalkTables) -> Walks:
    """``Walks`` of unit ``anchor`` rows (B, D) toward every prototype of ``tables`` (no validation, no
    autograd).

    The rank filter keeps a positive while its nearest prototype is still ``p0``: while ``h(x) . (p0 - p_j) >= 0``
    for every ``j``. Cosines are rounded, so a third prototype ``p_j`` only cuts a walk where it is closer than
    ``p0`` by more than ``TIE_EPS`` epsilons of the target's cosines ``c`` can explain; copies of ``p0`` (``a = c =
    0``) or of the target never cut, and the margin in h-space stays right toward nearly antipodal targets.
    """
    cos = (anchor @ tables.transposed).clamp_(-1.0, 1.0)
    largest, nearest = cos.max(dim=1)
    # a = k . (p0 - p_j) >= 0, exactly (largest is the row's maximum).
    a = largest[:, None] - cos
    angle = torch.acos(cos)
    # sin w > 0 keeps every division by it finite; it is 0 only for walks of length 0, whose positives are k.
    sin = torch.sin(angle).clamp_min_(torch.finfo(cos.dtype).tiny)
    ratios = tables.ratios[nearest] / a[:, None, :]
    # A target antipodal to the anchor has no unique geodesic: the walk has length zero (atan2(sin, inf) = 0).
    shifted = cos.masked_fill(cos <= -1.0, math.inf)
    # The end is the target's own boundary (the diagonal); the exit the first boundary of any prototype.
    end = torch.atan2(sin, shifted + ratios.diagonal(dim1=1, dim2=2))
    exit = torch.atan2(sin, shifted + ratios.amax(dim=2))
    return Walks(nearest, cos, sin, angle, end, exit, ratios)


def walk_fraction(lengths: Tensor, angle: Tensor, target: Optional[Tensor] = None) -> Tensor:
    """Angles along walks as fractions ``t`` of the walks' ``lengths`` (B, P), in [0, 1]; ``target`` (B, M) picks
    the walk of each entry of ``angle`` (default: ``angle`` is (B, P), one entry per walk)."""
    length = lengths if target is None else lengths.gather(1, target)
    return (angle / length.clamp_min(torch.finfo(angle.dtype).tiny)).clamp(0.0, 1.0)


def candidate_mask(walks: Walks, tables: WalkTables, num_candidates: int) -> Tensor:
    """(B, P) bool, True at each anchor's candidate targets (all other prototypes, or the ``num_candidates`` most
    similar ones)."""
    order = candidate_order(walks, tables, num_candidates)
    return torch.zeros_like(walks.cos, dtype=torch.bool).scatter_(1, order, True)


def candidate_order(walks: Walks, tables: WalkTables, num_candidates: int) -> Tensor:
    """(B, C) each anchor's candidate targets: all other prototypes in index order, or the ``num_candidates`` most
    similar in decreasing similarity."""
    if num_candidates == tables.order.shape[1]:
        return tables.order[walks.nearest]
    others = walks.cos.scatter(1, walks.nearest[:, None], -math.inf)
    return others.topk(num_candidates, dim=1).indices


def draw_positions(
    walks: Walks, candidates: Tensor, lam: Lam, draws: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Place the drawn positives (no validation, no autograd): ``target, x, keep``, all (B, M), ``keep`` 1.0 or 0.0 in
    the angles' dtype.

    Each positive walks toward the target ``draws`` picks among the anchor's (B, C) ``candidates`` and stops at the
    angle ``x = (1 - lam u) end`` with ``u`` its uniform draw: at ``t = (1 - u lam) t_max`` of its walk. It is kept
    by the rank filter when ``x <= exit``.
    """
    pick, u = draws
    target = candidates.gather(1, pick)
    end = walks.end.gather(1, target)
    if isinstance(lam, Tensor):
        x = end * (1.0 - lam.to(end) * u)
    else:
        x = torch.addcmul(end, end, u, value=-lam)
    # exit >= x, compared in place: a float 1 or 0, as the sums over kept positives use it.
    return target, x, walks.exit.gather(1, target).ge_(x)


@torch.compiler.disable
def random_draws(
    rows: int,
    num_candidates: int,
    num_positives: int,
    generator: Optional[torch.Generator],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """The random draws of ``num_positives`` positives for each of ``rows`` anchors: (rows, M) indices among
    ``num_candidates`` targets, then (rows, M) uniform steps in [0, 1) of ``dtype``, from ``generator`` (the
    default generator of ``device`` if ``None``), in the order the released code draws them.

    Run eagerly even inside torch.compile: compiled random ops neither take a generator nor follow its stream, and
    the draws must be the ones [`hallucinate_positives`][halp_loss.hallucinate_positives] makes.
    """
    pick = torch.randint(num_candidates, (rows, num_positives), generator=generator, device=device)
    return pick, torch.rand(pick.shape, generator=generator, device=device, dtype=dtype)


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
    """Hallucinate positives for each anchor by walking toward other prototypes (HaLP).

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
        A [`Hallucination`][halp_loss.Hallucination] with ``positives`` (B, M, D) in float32 (float64 if an input is
        float64).

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
    if k.shape[0] == 0:
        empty = k.new_zeros(0, num_positives)
        index = empty.long()
        return Hallucination(k.new_zeros(0, num_positives, k.shape[1]), empty.bool(), index, index[:, 0], empty, empty)
    tables = walk_tables(protos)
    walks = walk_angles(k, tables)
    draws = random_draws(k.shape[0], num_candidates, num_positives, generator, k.device, k.dtype)
    target, x, keep = draw_positions(walks, candidate_order(walks, tables, num_candidates), lam, draws)
    cos, sin = walks.cos.gather(1, target)[..., None], walks.sin.gather(1, target)[..., None]
    # h = cos x k + sin x u_s, u_s = (p_s - cos w k) / sin w. Normalized by its computed norm: toward a nearly
    # antipodal target u_s is known only to about eps / sin w. Its coefficients stay far below 1 / eps, so nothing
    # can overflow and the plain normalization suffices.
    tangent = (protos[target] - cos * k[:, None, :]) / sin
    walked = torch.cos(x)[..., None] * k[:, None, :] + torch.sin(x)[..., None] * tangent
    t_max = walk_fraction(walks.angle, walks.end.gather(1, target), target)
    t = walk_fraction(walks.angle, x, target)
    return Hallucination(F.normalize(walked, dim=-1), keep.bool(), target, walks.nearest, t, t_max)

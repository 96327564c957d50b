"""The HaLP term in the limit of infinitely many positives: exact, deterministic, zero variance.

[`halp_loss.functional.sampled_halp_term`][halp_loss.functional.sampled_halp_term] averages over ``M`` random positives
per anchor, each with a random target ``p_s`` (uniform over the candidates) and a random step ``t`` (uniform on
``[(1 - lam) t_max, t_max]``). Its ``M -> infinity`` limit has a closed form.

Along the walk from the anchor ``k`` toward ``p_s`` (angle ``w``), a positive passes the rank filter while
``h(t) . (p0 - p_j) >= 0`` for every third prototype ``p_j``, ``p0`` the anchor's nearest. Scaled by ``sin w``
this is, with ``x = t w``,

    g_j(x) = a_j sin(w - x) + c_j sin(x),    a_j = k . (p0 - p_j) >= 0,    c_j = p_s . (p0 - p_j),

a sinusoid that starts at ``g_j(0) >= 0`` and, over an arc of length ``w <= pi``, changes sign at most once.
It ends below zero exactly when ``c_j < 0``, and then crosses at ``x = atan2(a_j sin w, a_j cos w - c_j)``.
So the kept positives of a walk are exactly those with ``t <= t_exit``, the first crossing (or ``t_max``), and
every expectation the term needs is an integral over one known interval of ``t``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from halp_loss._checks import Lam, check_positive_int
from halp_loss._closed_form import expected_parts
from halp_loss.functional import HaLPTerm, run_checked_term
from halp_loss.geometry import candidate_order, checked_unit_inputs, walk_angles, walk_fraction, walk_tables

__all__ = ["DEFAULT_NUM_NODES", "ExitTimes", "exit_times", "expected_halp_term"]

DEFAULT_NUM_NODES = 16
"""Gauss-Legendre nodes per kept interval for ``objective="infonce"``: ~1e-6 relative error at T = 0.07."""


class ExitTimes(NamedTuple):
    """Where each anchor's walks toward its candidate targets leave the anchor's cell.

    Attributes:
        nearest: (B,) long, the anchor's nearest prototype ``p0``.
        target: (B, C) long, the candidate targets (all other prototypes in index order by default).
        t_exit: (B, C) fraction of the geodesic up to which the walk stays in ``p0``'s cell, ``<= t_max``;
            positives with ``t <= t_exit`` pass the rank filter and those beyond it do not.
        t_max: (B, C) fraction at which the walk reaches the boundary between ``p0``'s and the target's cells.
        exit_prototype: (B, C) long, the prototype whose cell the walk enters at ``t_exit``: the target itself
            unless a third prototype's cell comes first.
    """

    nearest: Tensor
    target: Tensor
    t_exit: Tensor
    t_max: Tensor
    exit_prototype: Tensor


@torch.no_grad()
def exit_times(anchor: Tensor, prototypes: Tensor, *, num_candidates: Optional[int] = None) -> ExitTimes:
    """Where each geodesic from an anchor toward a candidate target leaves the anchor's prototype cell.

    The rank filter keeps exactly the positives with ``t <= t_exit``; ``t_exit < t_max`` where a third
    prototype's cell comes before the target's. Ties are kept (the boundary belongs to the cell), and cosines
    equal to within their float rounding count as ties, so that copies of a prototype add no boundary.

    Args:
        anchor: (B, D) anchors; normalized inside.
        prototypes: (P, D) prototypes, ``P >= 2``; normalized inside.
        num_candidates: the targets are this many most similar prototypes other than the nearest (default all
            ``P - 1``, in index order).

    Returns:
        [`ExitTimes`][halp_loss.ExitTimes] with (B, C) fields in float32 (float64 if an input is float64).

    Raises:
        ValueError: for inputs of the wrong rank, dtype or device, a dim mismatch, ``P < 2``, ``num_candidates``
            out of range, non-finite values or zero-norm rows.

    Example:
        >>> k = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
        >>> prototypes = torch.nn.functional.normalize(torch.randn(20, 16), dim=1)
        >>> out = exit_times(k, prototypes)
        >>> out.t_exit.shape, bool((out.t_exit <= out.t_max).all())
        (torch.Size([8, 19]), True)
    """
    k, protos, num_candidates = checked_unit_inputs(anchor, prototypes, num_candidates)
    tables = walk_tables(protos)
    walks = walk_angles(k, tables)
    target = candidate_order(walks, tables, num_candidates)
    t_max = walk_fraction(walks.angle, walks.end.gather(1, target), target)
    # exit <= end; the minimum keeps it so through the rounding of the fractions.
    t_exit = walk_fraction(walks.angle, walks.exit.gather(1, target), target).minimum(t_max)
    exit_prototype = torch.where(t_exit < t_max, walks.ratios.argmax(dim=2).gather(1, target), target)
    return ExitTimes(walks.nearest, target, t_exit, t_max, exit_prototype)


def expected_halp_term(
    query: Tensor,
    anchor: Tensor,
    prototypes: Tensor,
    *,
    lam: Lam = 0.8,
    num_candidates: Optional[int] = None,
    objective: str = "align",
    temperature: float = 0.07,
    negatives_lse: Optional[Tensor] = None,
    num_nodes: int = DEFAULT_NUM_NODES,
) -> HaLPTerm:
    """The HaLP term over infinitely many positives per anchor: the ``num_positives -> infinity`` limit of
    [`halp_loss.functional.sampled_halp_term`][halp_loss.functional.sampled_halp_term], deterministic and with zero
    variance.

    For each anchor and each candidate target the rank filter keeps the steps ``t <= t_exit``
    ([`exit_times`][halp_loss.exit_times]), so with ``t`` uniform on ``[(1 - lam) t_max, t_max]`` the probability of
    being kept and the law of the kept positives are known exactly. The term is the ratio of sums over all anchors and
    targets ``sum E[keep * loss] / sum E[keep]``, which is what the sampled estimator's
    ``sum keep * loss / sum keep`` converges to. For ``"align"`` the mean of ``q . h`` over a kept interval
    ``[t1, t2]`` is ``sinc((t2 - t1) w / 2) q . h((t1 + t2) / 2)``; for ``"infonce"`` the interval is integrated
    by Gauss-Legendre quadrature. ``lam = 0`` is the limit of a point mass at ``t_max``. The cost is
    O(R C P) for the exits plus O(R C num_nodes) for ``"infonce"``, independent of any number of positives.

    Args:
        query: (R, D) unit-norm queries, ``R >= 1`` (receive the gradient).
        anchor: (R, D) anchors (normalized and detached inside).
        prototypes: (P, D) prototypes, ``P >= 2`` (normalized and detached inside).
        lam: float in [0, 1], or a tensor of such values broadcastable to (R, 1): one value per anchor.
        num_candidates: targets among this many nearest other prototypes (default all ``P - 1``).
        objective: ``"align"`` (released code) or ``"infonce"`` (positives scored against the negatives).
        temperature: T, a finite number >= 1e-6.
        negatives_lse: (R,) negatives' log-sum-exp of each query row, required for ``"infonce"``.
        num_nodes: Gauss-Legendre nodes per interval for ``"infonce"`` (unused by ``"align"``, which is closed
            form); the default is accurate to ~1e-6.

    Returns:
        ``HaLPTerm`` whose ``kept_fraction`` is the mean probability of being kept and ``mean_t`` the mean
        step of the kept positives. Float32 (float64 if ``query`` or ``anchor`` is float64), with autocast
        disabled inside.

    Raises:
        ValueError: for a wrong rank, dtype, width or device, an empty batch, ``anchor`` not shaped like
            ``query``, non-finite values, zero anchor or prototype rows, ``P < 2``, ``num_candidates`` out of range,
            ``lam`` outside [0, 1] or of a shape other than per anchor, ``num_nodes < 1``, an unknown
            ``objective``, ``"infonce"`` without a valid ``negatives_lse``, or a temperature that is not a finite
            number > 0.

    Example:
        >>> q = torch.nn.functional.normalize(torch.randn(64, 128), dim=1).requires_grad_()
        >>> k = torch.nn.functional.normalize(torch.randn(64, 128), dim=1)
        >>> prototypes = torch.nn.functional.normalize(torch.randn(20, 128), dim=1)
        >>> term = expected_halp_term(q, k, prototypes, lam=0.8)
        >>> term.loss.backward()
        >>> q.grad.shape
        torch.Size([64, 128])
    """
    check_positive_int(num_nodes, "num_nodes")
    return run_checked_term(
        expected_parts,
        query,
        anchor,
        prototypes,
        lam=lam,
        lam_columns=1,
        lam_meaning="one value per anchor (rows, 1)",
        num_candidates=num_candidates,
        objective=objective,
        temperature=temperature,
        negatives_lse=negatives_lse,
        num_nodes=num_nodes,
    )

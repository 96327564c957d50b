"""Functional contrastive losses and the fused HaLP term.

The InfoNCE terms are written as ``logaddexp(pos, lse_neg) - pos`` with ``lse_neg`` the log-sum-exp of the
negative logits of each row: the same value as cross-entropy over ``[pos, negatives]`` without building the
concatenated logits, and ``lse_neg`` is then reused by the HaLP term's ``"infonce"`` objective.

The public functions accept any floating dtype and compute in float32 (float64 when an input is float64) with
autocast disabled; they validate their inputs and raise ``ValueError`` naming the argument. The pieces
(``moco_logits``, ``simclr_logits``, ``info_nce_from_logits``, ``sampled_term``) do not validate: they are what
:class:`halp_loss.HaLPInfoNCE` composes after its own checks.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import Tensor

from halp_loss._checks import (
    Lam,
    check_device,
    check_finite,
    check_lam,
    check_matrix,
    check_negatives,
    check_pair,
    check_positive_int,
    check_temperature,
    check_values,
    compute_dtype,
)
from halp_loss.distributed import gather_rows_with_grad, rank, world_size
from halp_loss.geometry import detached_unit_rows, draw_geodesics, resolve_candidates, unit_rows

__all__ = [
    "ContrastiveLogits",
    "HaLPTerm",
    "OBJECTIVES",
    "moco_logits",
    "simclr_logits",
    "info_nce_from_logits",
    "info_nce",
    "nt_xent",
    "sampled_halp_term",
    "sampled_term",
]

OBJECTIVES = ("align", "infonce")


class ContrastiveLogits(NamedTuple):
    """Per-row pieces of an InfoNCE loss.

    Attributes:
        query: (R, D) unit-norm queries (carry the gradient).
        anchor: (R, D) unit-norm detached positives of the queries: the anchors of hallucination.
        positive: (R,) positive logit ``query . anchor / T`` (with gradient through both views in SimCLR).
        negatives_lse: (R,) log-sum-exp of the row's negative logits ``query . n / T``.
    """

    query: Tensor
    anchor: Tensor
    positive: Tensor
    negatives_lse: Tensor


class HaLPTerm(NamedTuple):
    """A HaLP term and its diagnostics.

    Attributes:
        loss: scalar, mean over kept positives (0 when none is kept).
        kept_fraction: scalar, fraction of positives that pass the rank filter.
        mean_t: scalar, mean geodesic fraction ``t`` of the kept positives.
    """

    loss: Tensor
    kept_fraction: Tensor
    mean_t: Tensor


def no_autocast(device: torch.device) -> torch.autocast:
    """A context in which autocast is off on ``device``: logits and log-sum-exp stay in full precision."""
    return torch.autocast(device_type=device.type, enabled=False)


def moco_logits(
    query: Tensor, key: Tensor, negatives: Tensor, temperature: float, *, unit_negatives: bool = False
) -> ContrastiveLogits:
    """InfoNCE pieces for MoCo: positive ``q . k``, negatives the rows of ``negatives`` (e.g. ``queue.T``).

    Query, key and negatives are normalized (the negatives not if ``unit_negatives`` says they are unit rows
    already, as :class:`halp_loss.KeyQueue` stores them). Gradient flows into ``query`` only.
    """
    q = unit_rows(query)
    k = unit_rows(key.detach())
    negatives = negatives.detach() if unit_negatives else detached_unit_rows(negatives)
    # Scaling the (B, D) query rather than the (B, K) logits saves a pass over the logits.
    scaled = q / temperature
    positive = (scaled * k).sum(dim=1)
    negatives_lse = torch.logsumexp(scaled @ negatives.T, dim=1)
    return ContrastiveLogits(q, k, positive, negatives_lse)


def simclr_logits(
    view1: Tensor, view2: Tensor, temperature: float, gather_distributed: bool = False
) -> ContrastiveLogits:
    """NT-Xent pieces over the 2B views: each view's positive is the other view of its sample and its
    negatives are the other 2B - 2 embeddings (2 W B - 2 with ``gather_distributed`` across W ranks).

    Rows are ``[view1; view2]``; both views are queries, and each row's anchor is the detached other view.
    """
    z = unit_rows(torch.cat([view1, view2]))
    batch = view1.shape[0]
    if gather_distributed and world_size() > 1:
        # Rank-order concatenation: this rank's rows start at rank * B inside each gathered view.
        everyone = torch.cat([gather_rows_with_grad(z[:batch]), gather_rows_with_grad(z[batch:])])
        total, offset = batch * world_size(), batch * rank()
    else:
        everyone, total, offset = z, batch, 0
    logits = (z / temperature) @ everyone.T
    local = torch.arange(batch, device=z.device) + offset
    own = torch.cat([local, local + total])
    partner = torch.cat([local + total, local])
    rows = torch.arange(2 * batch, device=z.device)
    positive = logits[rows, partner]
    # Negatives: everything but the row itself and its partner, masked in one pass over the logits.
    masked = logits.index_put((rows.repeat(2), torch.cat([own, partner])), logits.new_tensor(float("-inf")))
    anchor = torch.cat([z[batch:], z[:batch]]).detach()
    return ContrastiveLogits(z, anchor, positive, torch.logsumexp(masked, dim=1))


def info_nce_from_logits(logits: ContrastiveLogits) -> Tensor:
    """Mean over rows of ``-log(e^pos / (e^pos + sum_j e^neg_j))``."""
    return (torch.logaddexp(logits.positive, logits.negatives_lse) - logits.positive).mean()


def info_nce(query: Tensor, key: Tensor, negatives: Tensor, temperature: float = 0.07) -> Tensor:
    """MoCo's InfoNCE: cross-entropy over ``[q . k, q . negatives] / T`` with the positive as label.

    Args:
        query: (B, D) queries, ``B >= 1``; normalized inside; receive the gradient.
        key: (B, D) keys; normalized and detached inside.
        negatives: (K, D) negatives as rows (a MoCo ``(D, K)`` queue is passed as ``queue.T``), normalized inside;
            with ``K = 0`` the loss is 0.
        temperature: T, a finite number >= 1e-6.

    Returns:
        Scalar loss, mean over the batch, in float32 (float64 if an input is float64).

    Raises:
        ValueError: for a non-tensor, a wrong rank, dtype, width or device, an empty batch, mismatched query and
            key shapes, a (D, K) queue buffer passed as is, or a temperature that is not a finite number >= 1e-6.
    """
    check_pair(query, "query", key, "key")
    check_negatives(negatives, query)
    temperature = check_temperature(temperature)
    dtype = compute_dtype(query, key, negatives)
    with no_autocast(query.device):
        logits = moco_logits(query.to(dtype), key.to(dtype), negatives.to(dtype), temperature)
        return info_nce_from_logits(logits)


def nt_xent(view1: Tensor, view2: Tensor, temperature: float = 0.07, gather_distributed: bool = False) -> Tensor:
    """SimCLR's symmetric NT-Xent over the 2B views with in-batch negatives.

    Args:
        view1: (B, D) embeddings of the first views, ``B >= 1``; normalized inside.
        view2: (B, D) embeddings of the second views.
        temperature: T, a finite number >= 1e-6.
        gather_distributed: use the views of all ranks as negatives (equal batch sizes on every rank).

    Returns:
        Scalar loss, mean over the 2B rows of this rank, in float32 (float64 if a view is float64).

    Raises:
        ValueError: for a non-tensor, a wrong rank, dtype or device, an empty batch, views of different shapes,
            or a temperature that is not a finite number >= 1e-6.
    """
    check_pair(view1, "view1", view2, "view2")
    temperature = check_temperature(temperature)
    dtype = compute_dtype(view1, view2)
    with no_autocast(view1.device):
        return info_nce_from_logits(simclr_logits(view1.to(dtype), view2.to(dtype), temperature, gather_distributed))


def aggregate_kept(per_positive: Tensor, keep: Tensor, t: Tensor) -> HaLPTerm:
    """Mean of ``per_positive`` over the kept positives, with the kept fraction and the kept mean t.

    ``keep`` is a bool mask, or the probabilities of being kept (then ``per_positive`` and ``t`` are the
    means given kept): the term is ``sum keep * per_positive / sum keep`` either way, 0 when nothing is kept.
    """
    weight = keep.to(per_positive.dtype)
    count = weight.sum()
    # Clamped only to avoid 0 / 0: a total below 1 is legitimate for probabilities.
    denominator = count.clamp_min(torch.finfo(weight.dtype).tiny)
    return HaLPTerm(
        (weight * per_positive).sum() / denominator,
        count.detach() / keep.numel(),
        (weight * t).sum().detach() / denominator.detach(),
    )


def positive_loss(similarity: Tensor, negatives_lse: Optional[Tensor], objective: str, temperature: float) -> Tensor:
    """Loss of each hallucinated positive from its cosine with the query: ``-s / T`` for ``"align"``, or
    ``-log(e^{s/T} / (e^{s/T} + sum_j e^{q.n_j/T}))`` for ``"infonce"``.

    Args:
        similarity: (R, ...) query-positive cosines.
        negatives_lse: (R,) the rows' negatives log-sum-exp (required for ``"infonce"``, unchecked here).
        objective: ``"align"`` or ``"infonce"``.
        temperature: T.
    """
    logit = similarity / temperature
    if objective == "align":
        return -logit
    lse = negatives_lse.reshape(negatives_lse.shape + (1,) * (logit.ndim - 1))
    return torch.logaddexp(logit, lse) - logit


def check_term_tensors(query: Tensor, anchor: Tensor, prototypes: Tensor, negatives_lse: Optional[Tensor]) -> None:
    """Validate the tensors of a public HaLP term: shapes, dtypes, devices and values.

    This reads values back from the device (finiteness, zero rows), so :class:`halp_loss.HaLPInfoNCE`, whose own
    checks are free of host reads, calls the unchecked terms instead.
    """
    check_pair(query, "query", anchor, "anchor")
    check_matrix(prototypes, "prototypes", query.shape[1])
    check_device(prototypes, "prototypes", query, "query")
    if negatives_lse is not None:
        check_negatives_lse(negatives_lse, query)
    check_finite(query, "query")
    check_values(anchor, "anchor")
    check_values(prototypes, "prototypes")


def check_negatives_lse(negatives_lse: Tensor, query: Tensor) -> None:
    """``negatives_lse`` is (R,) floating on the query's device, without NaN or +inf (-inf is a row without
    negatives, which the InfoNCE objective handles)."""
    rows = query.shape[0]
    if not isinstance(negatives_lse, Tensor):
        raise ValueError(f"negatives_lse must be a torch.Tensor, got {type(negatives_lse).__name__}")
    if not negatives_lse.is_floating_point():
        raise ValueError(f"negatives_lse must be a floating-point tensor, got dtype {negatives_lse.dtype}")
    if negatives_lse.shape != (rows,):
        shape = tuple(negatives_lse.shape)
        raise ValueError(f"negatives_lse must have shape ({rows},), one value per query row, got {shape}")
    check_device(negatives_lse, "negatives_lse", query, "query")
    if bool((torch.isnan(negatives_lse) | torch.isposinf(negatives_lse)).any()):
        raise ValueError("negatives_lse has NaN or +inf values (-inf, a row without negatives, is allowed)")


def run_checked_term(
    term: Callable[..., HaLPTerm],
    query: Tensor,
    anchor: Tensor,
    prototypes: Tensor,
    *,
    lam: Lam,
    lam_columns: int,
    lam_meaning: str,
    num_candidates: Optional[int],
    objective: str,
    temperature: float,
    negatives_lse: Optional[Tensor],
    **options: Any,
) -> HaLPTerm:
    """Validate the arguments shared by the public HaLP terms, cast the tensors to one float dtype and evaluate the
    unchecked ``term`` with autocast disabled. ``lam`` must broadcast to (R, ``lam_columns``), which
    ``lam_meaning`` describes; ``options`` are the estimator's own arguments, which the caller has checked.

    Raises:
        ValueError: naming the argument, see :func:`sampled_halp_term`.
    """
    check_term_tensors(query, anchor, prototypes, negatives_lse)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective == "infonce" and negatives_lse is None:
        raise ValueError('objective="infonce" needs negatives_lse (the negatives\' log-sum-exp of each row)')
    temperature = check_temperature(temperature)
    num_candidates = resolve_candidates(num_candidates, prototypes.shape[0])
    check_lam(lam, query.shape[0], lam_columns, lam_meaning)
    dtype = compute_dtype(query, anchor)
    with no_autocast(query.device):
        return term(
            query.to(dtype),
            unit_rows(anchor.detach().to(dtype)),
            unit_rows(prototypes.detach().to(dtype)),
            lam=lam,
            num_candidates=num_candidates,
            objective=objective,
            temperature=temperature,
            negatives_lse=None if negatives_lse is None else negatives_lse.to(dtype),
            **options,
        )


def sampled_halp_term(
    query: Tensor,
    anchor: Tensor,
    prototypes: Tensor,
    *,
    lam: Lam = 0.8,
    num_positives: int = 100,
    num_candidates: Optional[int] = None,
    objective: str = "align",
    temperature: float = 0.07,
    negatives_lse: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> HaLPTerm:
    """The HaLP term over ``num_positives`` random positives per anchor, fused: no (B, M, D) tensor is built.

    With ``h = (alpha k + beta p_s) / norm``, the query's cosine to a positive is
    ``(alpha q.k + beta q.p_s) / norm``, so the term needs only ``q.k``, ``q.P``, ``k.P`` and ``P.P^T``.
    The draws are the same as :func:`halp_loss.hallucinate_positives` makes for the same generator state.

    Args:
        query: (R, D) unit-norm queries, ``R >= 1`` (receive the gradient).
        anchor: (R, D) anchors (normalized and detached inside).
        prototypes: (P, D) prototypes, ``P >= 2`` (normalized and detached inside).
        lam: float or tensor broadcastable to (R, M) in [0, 1].
        num_positives: M >= 1.
        num_candidates: targets among this many nearest other prototypes (default all ``P - 1``).
        objective: ``"align"`` (released code) or ``"infonce"`` (positives scored against the negatives).
        temperature: T, a finite number >= 1e-6.
        negatives_lse: (R,) negatives' log-sum-exp of each query row, required for ``"infonce"``.
        generator: optional generator for the draws, on the inputs' device.

    Returns:
        :class:`HaLPTerm` in float32 (float64 if ``query`` or ``anchor`` is float64), with autocast disabled.

    Raises:
        ValueError: for a wrong rank, dtype, width or device, an empty batch, ``anchor`` not shaped like
            ``query``, non-finite values, zero anchor or prototype rows, ``P < 2``, ``num_candidates`` out of range,
            ``lam`` outside [0, 1] or not broadcastable, ``num_positives < 1``, an unknown ``objective``,
            ``"infonce"`` without a valid ``negatives_lse``, or a temperature that is not a finite number >= 1e-6.
    """
    check_positive_int(num_positives, "num_positives")
    return run_checked_term(
        sampled_term,
        query,
        anchor,
        prototypes,
        lam=lam,
        lam_columns=num_positives,
        lam_meaning="(batch, num_positives)",
        num_candidates=num_candidates,
        objective=objective,
        temperature=temperature,
        negatives_lse=negatives_lse,
        num_positives=num_positives,
        generator=generator,
    )


def sampled_term(
    query: Tensor,
    anchor: Tensor,
    protos: Tensor,
    *,
    lam: Lam,
    num_positives: int,
    num_candidates: Optional[int],
    objective: str,
    temperature: float,
    negatives_lse: Optional[Tensor],
    generator: Optional[torch.Generator],
) -> HaLPTerm:
    """:func:`sampled_halp_term` without validation or casts: ``query``, ``anchor`` (R, D) and ``protos`` (P, D)
    unit-norm rows in one float dtype, ``anchor`` and ``protos`` detached."""
    num_candidates = resolve_candidates(num_candidates, protos.shape[0])
    with torch.no_grad():
        draws = draw_geodesics(anchor @ protos.T, protos @ protos.T, lam, num_positives, num_candidates, generator)
    query_anchor = (query * anchor).sum(dim=1, keepdim=True)
    query_target = (query @ protos.T).gather(1, draws.target)
    similarity = (draws.alpha * query_anchor + draws.beta * query_target) / draws.norm
    per_positive = positive_loss(similarity, negatives_lse, objective, temperature)
    return aggregate_kept(per_positive, draws.keep, draws.t)

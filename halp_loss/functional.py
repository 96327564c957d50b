"""Functional contrastive losses and the HaLP term in closed form.

The InfoNCE terms are written as ``logaddexp(pos, lse_neg) - pos`` with ``lse_neg`` the log-sum-exp of the
negative logits of each row: the same value as cross-entropy over ``[pos, negatives]`` without building the
concatenated logits, and ``lse_neg`` is then reused by the HaLP term's ``"infonce"`` objective.

The HaLP term is evaluated together with its gradient, without autograd (:class:`TermParts`): its positives carry
no gradient, so its derivative in the query is a weighted sum of positives, which sums per walk give without
building them. :class:`ClosedFormLoss` attaches that gradient to the value.

The public functions accept any floating dtype and compute in float32 (float64 when an input is float64) with
autocast disabled; they validate their inputs and raise ``ValueError`` naming the argument. The pieces
(``moco_logits``, ``simclr_logits``, ``info_nce_from_logits``, ``sampled_parts``) do not validate: they are what
:class:`halp_loss.HaLPInfoNCE` composes after its own checks.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
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
from halp_loss.geometry import (
    Walks,
    WalkTables,
    candidate_order,
    constant,
    detached_unit_rows,
    draw_positions,
    normalize_rows,
    random_draws,
    resolve_candidates,
    unit_rows,
    walk_angles,
    walk_fraction,
    walk_tables,
)

__all__ = [
    "ContrastiveLogits",
    "HaLPTerm",
    "OBJECTIVES",
    "moco_logits",
    "simclr_logits",
    "info_nce_from_logits",
    "info_nce",
    "moco_loss",
    "nt_xent",
    "sampled_halp_term",
    "sampled_parts",
]

OBJECTIVES = ("align", "infonce")

COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}
"""The complex dtype of each compute dtype (``dtype.to_complex()``, which torch.compile cannot trace)."""


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
        return moco_loss(query, key, negatives, temperature, dtype).loss


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


class TermParts(NamedTuple):
    """A HaLP term evaluated with its gradient, without autograd (what the fused losses and the public terms share).

    Attributes:
        value: scalar, ``scale`` times the term: the mean of the positives' losses over the kept ones (0 when none
            is kept); ``None`` for ``"align"``, where the term is linear in the query and equals
            ``(query * query_grad).sum()``, which a caller can fold into its own reduction.
        query_grad: (R, D) the derivative of the term with respect to the query rows, at fixed ``negatives_lse``.
        lse_grad: (R,) its derivative with respect to ``negatives_lse`` (``"infonce"``), or ``None`` (``"align"``).
        kept: scalar, the number of kept positives (their expected number for the expected estimator).
        count: the number of positives (or walks) ``kept`` is out of.
        denominator: scalar, ``kept`` clamped away from 0.
        weights: the kept weight of every positive (or walk), for :meth:`mean_t`.
        angles: the angle along its walk of every positive (or of each walk's kept mean), for :meth:`mean_t`.
        lengths: (R, P) the walks' lengths ``w``; ``target`` (R, M) picks each positive's walk, or is ``None``
            when ``angles`` has one entry per walk.
    """

    value: Optional[Tensor]
    query_grad: Tensor
    lse_grad: Optional[Tensor]
    kept: Tensor
    count: int
    denominator: Tensor
    weights: Tensor
    angles: Tensor
    lengths: Tensor
    target: Optional[Tensor]

    def total(self, query: Tensor) -> Tensor:
        """The term's value (times ``scale``) for these ``query`` rows."""
        return (query * self.query_grad).sum() if self.value is None else self.value

    def mean_t(self) -> Tensor:
        """The mean geodesic fraction ``t = angle / w`` of the kept positives (0 when none is kept), computed only
        when something reads it."""
        return (self.weights * walk_fraction(self.lengths, self.angles, self.target)).sum() / self.denominator


class ClosedFormLoss(torch.autograd.Function):
    """A loss whose gradients were computed together with its value: forward returns ``values.sum()``, backward
    the given gradients scaled by the incoming one (first order only).

    The HaLP term is linear in the query for ``"align"``, and for every objective its gradient costs a few more
    products of tensors the value already needs, so computing both at once, under ``no_grad``, dispatches far fewer
    kernels than recording the graph for autograd, and keeps no (R, K) logits alive until backward. The sum is the
    last reduction of the value, taken here so that the output is a new tensor without an extra copy.
    """

    @staticmethod
    def forward(
        ctx: Any,
        query: Tensor,
        negatives_lse: Optional[Tensor],
        query_grad: Tensor,
        lse_grad: Optional[Tensor],
        values: Tensor,
    ) -> Tensor:
        ctx.save_for_backward(query_grad, lse_grad)
        return values.sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        query_grad, lse_grad = ctx.saved_tensors
        return query_grad * grad, None if lse_grad is None else lse_grad * grad, None, None, None


def term_loss(query: Tensor, negatives_lse: Optional[Tensor], parts: TermParts) -> Tensor:
    """The term's value as a scalar whose gradient flows into ``query`` (and ``negatives_lse`` for ``"infonce"``)."""
    with torch.no_grad():
        values = query * parts.query_grad if parts.value is None else parts.value
    return ClosedFormLoss.apply(query, negatives_lse, parts.query_grad, parts.lse_grad, values)


class MocoLoss(NamedTuple):
    """:func:`moco_loss`'s result.

    Attributes:
        loss: the scalar loss, whose gradient flows into the query.
        rows: (B, 1) each row's InfoNCE loss.
        halp: the HaLP term's parts (its value and gradient already in ``loss``), or ``None``.
        query: (B, D) the unit queries.
        key: (B, D) the unit keys.
    """

    loss: Tensor
    rows: Tensor
    halp: Optional[TermParts]
    query: Tensor
    key: Tensor


def moco_loss(
    query: Tensor,
    key: Tensor,
    negatives: Tensor,
    temperature: float,
    dtype: torch.dtype,
    *,
    negatives_t: Optional[Tensor] = None,
    halp: Optional[Callable[[Tensor, Tensor, Tensor], TermParts]] = None,
) -> MocoLoss:
    """MoCo's InfoNCE, plus a HaLP term, with the query's gradient computed alongside the value (no validation).

    No autograd graph is recorded: the gradient of the mean over B rows of ``log(1 + e^gap)``, ``gap = lse - q . k /
    T``, is ``sigmoid(gap) (E_softmax[n] - k) / (T B)`` in the unit query, and :class:`ClosedFormLoss` attaches it.
    A step then costs a few dozen kernels and keeps nothing of the negatives until backward.

    Args:
        query: (B, D) queries, cast to ``dtype`` and normalized inside.
        key: (B, D) keys, likewise (no gradient).
        negatives: (K, D) negatives as rows, normalized inside unless ``negatives_t`` is given.
        temperature: T.
        dtype: the compute dtype.
        negatives_t: ``negatives.T`` when the negatives are unit rows already (a built-in queue's buffer).
        halp: computes the HaLP term's parts from the unit queries, unit keys and the rows' (B, 1) negatives'
            log-sum-exp; its value and gradient are added.
    """
    batch = query.shape[0]
    with torch.no_grad():
        # Queries, keys and (explicit) negatives are normalized together: one pass of kernels for all.
        rows = [query, key] if negatives_t is not None else [query, key, negatives]
        unit, scale, norm = normalize_rows(torch.cat([x.to(dtype) for x in rows]), inplace=True)
        q, k, *rest = unit.split([batch, batch] + [x.shape[0] for x in rows[2:]])
        if negatives_t is not None:
            negatives, negatives_t = negatives.to(dtype), negatives_t.to(dtype)
        else:
            negatives, negatives_t = rest[0], rest[0].T
        # d unit / d query = (I - q q^T) scale / norm, row by row.
        rescale = (scale / norm)[:batch]
        # q . n / T; with beta = 0 addmm ignores its first argument.
        logits = torch.addmm(constant(0.0, dtype, q.device), q, negatives_t, beta=0.0, alpha=1.0 / temperature)
        negatives_lse = torch.logsumexp(logits, dim=1, keepdim=True)
        gap = torch.sub(negatives_lse, (q * k).sum(dim=1, keepdim=True), alpha=1.0 / temperature)
        infonce = F.softplus(gap)
        toward_negatives = torch.softmax(logits, dim=1) @ negatives
        coefficient = torch.sigmoid(gap)
        parts = None if halp is None else halp(q, k, negatives_lse)
        if parts is None:
            grad = (toward_negatives - k).mul_(coefficient * (1.0 / (temperature * batch)))
            values = infonce * (1.0 / batch)
        else:
            grad = torch.addcmul(parts.query_grad, coefficient, toward_negatives - k, value=1.0 / (temperature * batch))
            if parts.value is None:
                # "align": the term is linear in the query; one sum for both terms.
                values = torch.add(q * parts.query_grad, infonce, alpha=1.0 / (batch * q.shape[1]))
            else:
                # "infonce": each positive's loss depends on the negatives' lse too.
                grad.addcmul_(parts.lse_grad[:, None], toward_negatives, value=1.0 / temperature)
                values = torch.add(infonce, parts.value).mul_(1.0 / batch)
        # Through the normalization of the query.
        grad = torch.addcmul(grad, q, (q * grad).sum(dim=1, keepdim=True), value=-1.0).mul_(rescale)
    return MocoLoss(ClosedFormLoss.apply(query, None, grad, None, values), infonce, parts, q, k)


def combine_positions(positions: Tensor, walks: Walks, tables: WalkTables, anchor: Tensor, scale: float) -> Tensor:
    """(R, D) ``scale`` times the sum of the positives ``positions`` stands for, without building them.

    ``positions`` (R, P) complex holds, for each anchor and target, the weighted sum of ``e^{ix}`` over positives at
    angles ``x`` along the walk: ``C + iS``. As ``h(x) = cos x k + sin x u_s`` with ``u_s = (p_s - cos w k) / sin w``,
    the sum of the positives is ``sum_s (C - S cos w / sin w) k + (S / sin w) p_s``: a scaled anchor plus one
    (R, P) x (P, D) product.
    """
    along, across = torch.view_as_real(positions).unbind(-1)
    toward = across / walks.sin
    own = torch.addcmul(along, toward, walks.cos, value=-1.0).sum(dim=1, keepdim=True)
    return torch.addmm(own * anchor, toward, tables.prototypes, beta=scale, alpha=scale)


def positive_similarities(query: Tensor, anchor: Tensor, walks: Walks, tables: WalkTables) -> tuple[Tensor, Tensor]:
    """``q . k`` (R, 1) and ``q . u_s`` (R, P): the query's cosine to the positive at angle ``x`` toward ``p_s`` is
    ``cos x q . k + sin x q . u_s``."""
    along = (query * anchor).sum(dim=1, keepdim=True)
    return along, (query @ tables.transposed - walks.cos * along) / walks.sin


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
    term: Callable[..., TermParts],
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
    """Validate the arguments shared by the public HaLP terms, cast the tensors to one float dtype, evaluate the
    unchecked ``term`` (which returns :class:`TermParts`) with autocast disabled and return its :class:`HaLPTerm`,
    whose loss carries the gradient into ``query`` (and ``negatives_lse``). ``lam`` must broadcast to
    (R, ``lam_columns``), which ``lam_meaning`` describes; ``options`` are the estimator's own arguments, which the
    caller has checked.

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
        query = query.to(dtype)
        lse = None if negatives_lse is None else negatives_lse.to(dtype)
        with torch.no_grad():
            anchor = unit_rows(anchor.to(dtype))
            tables = walk_tables(unit_rows(prototypes.to(dtype)))
            parts = term(
                query,
                anchor,
                walk_angles(anchor, tables),
                tables,
                lam=lam,
                num_candidates=num_candidates,
                objective=objective,
                temperature=temperature,
                negatives_lse=None if lse is None else lse[:, None],
                **options,
            )
        return HaLPTerm(term_loss(query, lse, parts), parts.kept / parts.count, parts.mean_t())


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
        sampled_parts,
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


def sampled_parts(
    query: Tensor,
    anchor: Tensor,
    walks: Walks,
    tables: WalkTables,
    *,
    lam: Lam,
    num_positives: int,
    num_candidates: int,
    objective: str,
    temperature: float,
    negatives_lse: Optional[Tensor],
    generator: Optional[torch.Generator],
    scale: float = 1.0,
    draws: Optional[tuple[Tensor, Tensor]] = None,
) -> TermParts:
    """:func:`sampled_halp_term` as :class:`TermParts`, without validation, casts or autograd: ``query`` and
    ``anchor`` (R, D) unit rows of the prototypes' dtype, ``walks`` those of ``anchor`` toward ``tables``.

    Each positive is ``e^{ix}`` in the plane of its walk: the kept ones, weighted by the derivative of their loss,
    are summed per walk with one scatter, and :func:`combine_positions` turns the sums into the query's gradient.
    ``draws`` are the :func:`halp_loss.geometry.random_draws` to use, drawn here from ``generator`` if ``None``.
    """
    if draws is None:
        draws = random_draws(anchor.shape[0], num_candidates, num_positives, generator, anchor.device, anchor.dtype)
    target, x, keep = draw_positions(walks, candidate_order(walks, tables, num_candidates), lam, draws)
    weight = keep.to(x.dtype)
    kept = weight.sum()
    # A count: when nothing is kept the sums are 0 and so is the term.
    denominator = kept.clamp_min(1.0)
    value = lse_grad = None
    if objective == "infonce":
        along, across = positive_similarities(query, anchor, walks, tables)
        similarity = torch.cos(x) * along + torch.sin(x) * across.gather(1, target)
        # Each positive's loss is log(1 + e^gap), gap = lse - s / T: its derivative is sigmoid(gap) in lse and
        # -sigmoid(gap) / T in s.
        gap = negatives_lse - similarity / temperature
        value = (weight * F.softplus(gap)).sum() * scale / denominator
        weight = weight * torch.sigmoid(gap)
        lse_grad = weight.sum(dim=1) * scale / denominator
    # align: the loss -s / T of each positive has derivative -1 / T in s, so the weights are keep itself.
    positions = torch.zeros_like(walks.cos, dtype=COMPLEX[x.dtype]).scatter_add_(1, target, torch.polar(weight, x))
    query_grad = combine_positions(positions, walks, tables, anchor, -scale / temperature) / denominator
    return TermParts(value, query_grad, lse_grad, kept, x.numel(), denominator, keep, x, walks.angle, target)

"""Functional contrastive losses: MoCo's InfoNCE, SimCLR's NT-Xent and the sampled HaLP term.

The functions accept any floating dtype and compute in float32 (float64 when an input is float64) with autocast
disabled; they validate their inputs and raise ``ValueError`` naming the argument.

[`info_nce`][halp_loss.functional.info_nce] and the HaLP terms compute their gradient in closed form together with
their value (``halp_loss._closed_form`` derives it): first order only, so ``create_graph=True`` raises
``RuntimeError``. [`nt_xent`][halp_loss.functional.nt_xent] is plain autograd. ``simclr_logits`` and
``info_nce_from_logits`` are the unvalidated pieces [`halp_loss.HaLPInfoNCE`][halp_loss.HaLPInfoNCE] composes after its
own checks.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import torch
from einops import rearrange
from torch import Tensor

from halp_loss._checks import (
    Lam,
    check_lam,
    check_negatives,
    check_pair,
    check_positive_int,
    check_temperature,
    check_term_tensors,
    compute_dtype,
)
from halp_loss._closed_form import TermParts, moco_loss, no_autocast, sampled_parts, term_loss
from halp_loss.distributed import gather_rows_with_grad, rank, world_size
from halp_loss.geometry import resolve_candidates, unit_rows, walk_angles, walk_tables

__all__ = [
    "ContrastiveLogits",
    "HaLPTerm",
    "OBJECTIVES",
    "simclr_logits",
    "info_nce_from_logits",
    "info_nce",
    "nt_xent",
    "sampled_halp_term",
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
        # One gather of both views, reordered view by view: this rank's rows start at rank * B inside each view.
        everyone = rearrange(gather_rows_with_grad(z), "(rank view batch) d -> (view rank batch) d", view=2, batch=batch)
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

    The gradient is computed in closed form with the value (first order only): ``torch.autograd.grad(loss, query,
    create_graph=True)``, as a gradient penalty or a Hessian-vector product needs, raises ``RuntimeError``; for
    those, write the loss with autograd ops (``F.cross_entropy`` over the concatenated logits).

    Returns:
        Scalar loss, mean over the batch, in float32 (float64 if an input is float64).

    Raises:
        ValueError: for a non-tensor, a wrong rank, dtype, width or device, an empty batch, mismatched query and
            key shapes, a (D, K) queue buffer passed as is, or a temperature that is not a finite number >= 1e-6.

    Example:
        >>> query = torch.randn(8, 16, requires_grad=True)
        >>> loss = info_nce(query, torch.randn(8, 16), torch.randn(100, 16), temperature=0.07)
        >>> loss.backward()
        >>> query.grad.shape
        torch.Size([8, 16])
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
        gather_distributed: use the views of all ranks as negatives; every rank must hold the same batch size.

    Returns:
        Scalar loss, mean over the 2B rows of this rank, in float32 (float64 if a view is float64).

    Raises:
        ValueError: for a non-tensor, a wrong rank, dtype or device, an empty batch, views of different shapes,
            a temperature that is not a finite number >= 1e-6, or (with ``gather_distributed``) batch sizes that
            differ between ranks, on every rank.
    """
    check_pair(view1, "view1", view2, "view2")
    temperature = check_temperature(temperature)
    dtype = compute_dtype(view1, view2)
    with no_autocast(view1.device):
        return info_nce_from_logits(simclr_logits(view1.to(dtype), view2.to(dtype), temperature, gather_distributed))


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
    unchecked ``term`` (which returns ``TermParts``) with autocast disabled and return its ``HaLPTerm``,
    whose loss carries the gradient into ``query`` (and ``negatives_lse``). ``lam`` must broadcast to
    (R, ``lam_columns``), which ``lam_meaning`` describes; ``options`` are the estimator's own arguments, which the
    caller has checked.

    Raises:
        ValueError: naming the argument, see [`sampled_halp_term`][halp_loss.functional.sampled_halp_term].
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

    A positive at angle ``x`` along the walk toward ``p_s`` is ``cos x k + sin x u_s`` in the plane of the anchor
    and the target, so the term and its gradient need only ``q.k``, ``q.P``, ``k.P`` and ``P.P^T``
    (``halp_loss._closed_form``). The draws are the same as
    [`halp_loss.hallucinate_positives`][halp_loss.hallucinate_positives] makes for the same generator state. The
    gradient is first order only: ``create_graph=True`` raises ``RuntimeError``.

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
        ``HaLPTerm`` in float32 (float64 if ``query`` or ``anchor`` is float64), with autocast disabled.

    Raises:
        ValueError: for a wrong rank, dtype, width or device, an empty batch, ``anchor`` not shaped like
            ``query``, non-finite values, zero anchor or prototype rows, ``P < 2``, ``num_candidates`` out of range,
            ``lam`` outside [0, 1] or not broadcastable, ``num_positives < 1``, an unknown ``objective``,
            ``"infonce"`` without a valid ``negatives_lse``, or a temperature that is not a finite number >= 1e-6.

    Example:
        >>> q = torch.nn.functional.normalize(torch.randn(64, 128), dim=1).requires_grad_()
        >>> k = torch.nn.functional.normalize(torch.randn(64, 128), dim=1)
        >>> prototypes = torch.nn.functional.normalize(torch.randn(20, 128), dim=1)
        >>> term = sampled_halp_term(q, k, prototypes, num_positives=100)
        >>> term.loss.backward()
        >>> q.grad.shape
        torch.Size([64, 128])
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

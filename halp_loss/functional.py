"""Functional contrastive losses and the fused HaLP term.

The InfoNCE terms are written as ``logaddexp(pos, lse_neg) - pos`` with ``lse_neg`` the log-sum-exp of the
negative logits of each row: the same value as cross-entropy over ``[pos, negatives]`` without building the
concatenated logits, and ``lse_neg`` is then reused by the HaLP term's ``"infonce"`` objective.

All functions expect float32 or float64 inputs; :class:`halp_loss.HaLPInfoNCE` casts under autocast.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from halp_loss._checks import Lam
from halp_loss.distributed import gather_rows_with_grad, rank, world_size
from halp_loss.geometry import draw_geodesics, resolve_candidates, unit_rows

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


def moco_logits(query: Tensor, key: Tensor, negatives: Tensor, temperature: float) -> ContrastiveLogits:
    """InfoNCE pieces for MoCo: positive ``q . k``, negatives the rows of ``negatives`` (e.g. ``queue.T``).

    Gradient flows into ``query`` only.
    """
    q = F.normalize(query, dim=1)
    k = unit_rows(key.detach())
    # Scaling the (B, D) query rather than the (B, K) logits saves a pass over the logits.
    scaled = q / temperature
    positive = (scaled * k).sum(dim=1)
    negatives_lse = torch.logsumexp(scaled @ negatives.detach().T, dim=1)
    return ContrastiveLogits(q, k, positive, negatives_lse)


def simclr_logits(
    view1: Tensor, view2: Tensor, temperature: float, gather_distributed: bool = False
) -> ContrastiveLogits:
    """NT-Xent pieces over the 2B views: each view's positive is the other view of its sample and its
    negatives are the other 2B - 2 embeddings (2 W B - 2 with ``gather_distributed`` across W ranks).

    Rows are ``[view1; view2]``; both views are queries, and each row's anchor is the detached other view.
    """
    z = F.normalize(torch.cat([view1, view2]), dim=1)
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
        query: (B, D) queries; normalized inside; receive the gradient.
        key: (B, D) keys; normalized and detached inside.
        negatives: (K, D) unit-norm negatives (a MoCo ``(D, K)`` queue is passed as ``queue.T``).
        temperature: T.

    Returns:
        Scalar loss, mean over the batch.
    """
    return info_nce_from_logits(moco_logits(query, key, negatives, temperature))


def nt_xent(view1: Tensor, view2: Tensor, temperature: float = 0.07, gather_distributed: bool = False) -> Tensor:
    """SimCLR's symmetric NT-Xent over the 2B views with in-batch negatives.

    Args:
        view1: (B, D) embeddings of the first views; normalized inside.
        view2: (B, D) embeddings of the second views.
        temperature: T.
        gather_distributed: use the views of all ranks as negatives (equal batch sizes on every rank).

    Returns:
        Scalar loss, mean over the 2B rows of this rank.
    """
    return info_nce_from_logits(simclr_logits(view1, view2, temperature, gather_distributed))


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
        negatives_lse: (R,) the rows' negatives log-sum-exp (required for ``"infonce"``).
        objective: ``"align"`` or ``"infonce"``.
        temperature: T.
    """
    logit = similarity / temperature
    if objective == "align":
        return -logit
    if negatives_lse is None:
        raise ValueError('objective="infonce" needs negatives_lse (the negatives\' log-sum-exp of each row)')
    lse = negatives_lse.reshape(negatives_lse.shape + (1,) * (logit.ndim - 1))
    return torch.logaddexp(logit, lse) - logit


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
        query: (R, D) unit-norm queries (receive the gradient).
        anchor: (R, D) unit-norm anchors (detached inside).
        prototypes: (P, D) prototypes (normalized and detached inside).
        lam: float or tensor broadcastable to (R, M) in [0, 1].
        num_positives: M.
        num_candidates: targets among this many nearest other prototypes (default all ``P - 1``).
        objective: ``"align"`` (released code) or ``"infonce"`` (positives scored against the negatives).
        temperature: T.
        negatives_lse: (R,) negatives' log-sum-exp of each query row, for ``"infonce"``.
        generator: optional generator for the draws.

    Returns:
        :class:`HaLPTerm`.
    """
    anchor = anchor.detach()
    protos = unit_rows(prototypes.detach().to(query.dtype))
    num_candidates = resolve_candidates(num_candidates, protos.shape[0])
    with torch.no_grad():
        draws = draw_geodesics(anchor @ protos.T, protos @ protos.T, lam, num_positives, num_candidates, generator)
    query_anchor = (query * anchor).sum(dim=1, keepdim=True)
    query_target = (query @ protos.T).gather(1, draws.target)
    similarity = (draws.alpha * query_anchor + draws.beta * query_target) / draws.norm
    per_positive = positive_loss(similarity, negatives_lse, objective, temperature)
    return aggregate_kept(per_positive, draws.keep, draws.t)

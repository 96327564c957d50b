r"""The closed-form engine: the losses evaluated together with their gradient in the query, without autograd.

Recording a HaLP step for autograd dispatches about 280 ops and keeps the (B, K) logits and the (B, M, D) positives
alive until backward; computing the gradient in the forward pass, under ``no_grad``, costs about 77 ops and keeps
one (B, D) tensor. This module holds that computation; ``tests/autograd_reference.py`` implements the same losses
with plain autograd, and the tests hold the two equal in value and gradient.

**1. InfoNCE of one row.** With a unit query ``q``, its positive logit ``s = q.k / T`` and the log-sum-exp of its
negative logits ``lse = log sum_j exp(q.n_j / T)``,

    l = -log(e^s / (e^s + e^lse)) = log(1 + e^(lse - s)) = softplus(gap),    gap = lse - s.

``dl/dgap = sigmoid(gap)``, ``d lse/dq = sum_j softmax_j n_j / T = E_softmax[n] / T`` and ``ds/dq = k / T``, so

    dl/dq = sigmoid(gap) (E_softmax[n] - k) / T,

one (B, K) x (K, D) product beyond the logits (``moco_loss``; the mean over B rows divides by B).

**2. Through the row normalization.** A raw query row ``x`` becomes ``q = x c / r`` with ``c`` a power of two
(``halp_loss.geometry.normalize_rows``, exact, so it carries no gradient) and ``r = |x c|``. Since
``dq/dx = (I - q q^T) c / r``, a gradient ``g`` in the unit query is ``(g - q (q.g)) c / r`` in the raw one.

**3. The HaLP term.** A positive at angle ``x`` along the walk from the anchor ``k`` toward the prototype ``p_s``
(walk length ``w``, ``cos w = k.p_s``) is ``h(x) = cos x k + sin x u_s`` with ``u_s = (p_s - cos w k) / sin w``
the unit tangent at ``k``, so the query's cosine to it is

    q.h = cos x (q.k) + sin x (q.u_s),    q.u_s = (q.p_s - cos w q.k) / sin w    (positive_similarities).

With ``c_i`` in {0, 1} the rank filter's verdict on positive ``i`` and ``N = max(sum_i c_i, 1)``, the term is the
mean over the kept positives, ``L = sum_i c_i l_i / N``, with

- ``"align"``: ``l_i = -q.h_i / T``. Positives carry no gradient, so ``dL/dq = -sum_i c_i h_i / (T N)`` and, the
  term being linear in ``q``, ``L = q . dL/dq``: the value costs one product with the gradient.
- ``"infonce"``: ``l_i = softplus(lse - q.h_i / T)``, each positive scored against the row's negatives. As in 1,
  ``dl_i/dq = sigmoid(gap_i) (d lse/dq - h_i / T)``: the positives enter as in ``"align"`` with weights
  ``c_i sigmoid(gap_i)``, and ``lse`` gets the coefficient ``sum_i c_i sigmoid(gap_i) / N`` (``lse_grad``), which
  ``moco_loss`` folds into its ``E_softmax[n]`` product and SimCLR mode hands to autograd through ``lse``.

Either way the gradient is ``-sum_i a_i h_i / (T N)`` for weights ``a_i``.

**4. Positives summed per walk.** In the plane of a walk ``h(x)`` is ``e^{ix}`` in the basis ``(k, u_s)``. The
weighted positives of one anchor toward one target sum to ``Z_s = sum_i a_i e^{i x_i} = C_s + i S_s`` (one
``scatter_add`` of ``polar(a, x)`` into an (R, P) complex tensor), and

    sum_s (C_s k + S_s u_s) = [sum_s (C_s - S_s cos w_s / sin w_s)] k + sum_s (S_s / sin w_s) p_s,

a scaled anchor plus one (R, P) x (P, D) product (``combine_positions``): no (R, M, D) tensor is built.

**5. The expected estimator.** A positive's angle is uniform on ``[(1 - lam) e, e]``, ``e`` the walk's end, and it
is kept on ``[(1 - lam) e, exit]``, of length ``L_s``, with probability ``pi_s = L_s / (lam e)``. Over infinitely
many positives, each target drawn uniformly among the C candidates, ``sum_i c_i l_i / sum_i c_i`` tends to
``sum_s pi_s E[l | kept, s] / sum_s pi_s`` (the common factor M / C cancels). For ``"align"`` the mean of
``e^{ix}`` over an interval of length ``L`` around ``m`` is ``sinc(L / 2) e^{im}``, so ``Z_s = pi_s sinc(L_s / 2)
e^{i m_s}``; for ``"infonce"`` each kept interval is integrated by Gauss-Legendre quadrature, ``Z_s = sum_n pi_s
omega_n sigmoid(gap(x_n)) e^{i x_n}``. Both go through 4 unchanged (``expected_parts``).

**6. Attaching the gradient.** ``ClosedFormLoss`` returns the value and hands the precomputed gradient to
autograd in backward. The gradient is a constant to autograd, so it has no derivative of its own: second-order
gradients (``create_graph=True``) raise a ``RuntimeError`` instead of silently coming out zero.

Nothing here validates its inputs: the public functions ([`halp_loss.functional`][halp_loss.functional],
``halp_loss.expected``) and [`halp_loss.HaLPInfoNCE`][halp_loss.HaLPInfoNCE] check them first.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from halp_loss._checks import Lam
from halp_loss.geometry import (
    Walks,
    WalkTables,
    candidate_mask,
    candidate_order,
    constant,
    detached_unit_rows,
    device_cache,
    draw_positions,
    normalize_rows,
    random_draws,
    walk_fraction,
)

COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}
"""The complex dtype of each compute dtype (``dtype.to_complex()``, which torch.compile cannot trace)."""

SECOND_ORDER_MESSAGE = (
    "halp-loss computes the gradients of info_nce, of MoCo-mode HaLPInfoNCE and of the HaLP term in closed form, "
    "first order only: they have no second derivative, so backward with create_graph=True (gradient penalties, "
    "Hessian-vector products) is not supported. For higher-order gradients write the loss with autograd ops: "
    "F.cross_entropy over torch.cat([q.k, q @ negatives.T], dim=1) / T for InfoNCE (nt_xent and SimCLR-mode "
    "HaLPInfoNCE with halp_weight=0 are autograd already), and the HaLP term on positives built by "
    "halp_loss.hallucinate_positives."
)


def no_autocast(device: torch.device) -> torch.autocast:
    """A context in which autocast is off on ``device``: logits and log-sum-exp stay in full precision."""
    return torch.autocast(device_type=device.type, enabled=False)


class TermParts(NamedTuple):
    """A HaLP term evaluated with its gradient (section 3 of the module docstring).

    Attributes:
        value: scalar, ``scale`` times the term (0 when nothing is kept); ``None`` for ``"align"``, where the term
            is linear in the query and equals ``(query * query_grad).sum()``, which a caller can fold into its own
            reduction.
        query_grad: (R, D) the derivative of the term in the unit query rows, at fixed ``negatives_lse``.
        lse_grad: (R,) its derivative in ``negatives_lse`` (``"infonce"``), or ``None`` (``"align"``).
        kept: scalar, the number of kept positives (their expected number for the expected estimator).
        count: the number of positives (or walks) ``kept`` is out of.
        denominator: scalar, ``kept`` clamped away from 0.
        weights: the kept weight of every positive (or walk), for ``mean_t``.
        angles: the angle along its walk of every positive (or of each walk's kept mean), for ``mean_t``.
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
        """The term's value (times ``scale``) for these unit ``query`` rows."""
        return (query * self.query_grad).sum() if self.value is None else self.value

    def mean_t(self) -> Tensor:
        """The mean geodesic fraction ``t = angle / w`` of the kept positives (0 when none is kept), computed only
        when something reads it."""
        return (self.weights * walk_fraction(self.lengths, self.angles, self.target)).sum() / self.denominator


class ClosedFormLoss(torch.autograd.Function):
    """A loss whose gradients were computed together with its value: forward returns ``values.mean()``, backward the
    given gradients times the incoming one.

    The mean is the last reduction of the value, taken here so that the output is a new tensor without an extra copy.
    ``query`` and ``negatives_lse`` are inputs only to connect the output to the graph.
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
        return values.mean()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        # Grad mode is on in backward exactly when a graph of the gradient is asked for (create_graph=True).
        if torch.is_grad_enabled() and not torch.compiler.is_compiling():
            raise RuntimeError(SECOND_ORDER_MESSAGE)
        query_grad, lse_grad = ctx.saved_tensors
        return query_grad * grad, None if lse_grad is None else lse_grad * grad, None, None, None


def term_loss(query: Tensor, negatives_lse: Optional[Tensor], parts: TermParts) -> Tensor:
    """The term's value as a scalar whose gradient flows into ``query`` (and ``negatives_lse`` for ``"infonce"``)."""
    with torch.no_grad():
        values = parts.total(query)
    return ClosedFormLoss.apply(query, negatives_lse, parts.query_grad, parts.lse_grad, values)


class MocoLoss(NamedTuple):
    """``moco_loss``'s result.

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
    """MoCo's InfoNCE (section 1), plus a HaLP term, with the query's gradient computed alongside the value.

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
        # Queries and keys are normalized together: one pass of kernels for both.
        unit, scale, norm = normalize_rows(torch.cat([query.to(dtype), key.to(dtype)]), inplace=True)
        q, k = unit.split(batch)
        if negatives_t is None:
            negatives = detached_unit_rows(negatives.to(dtype))
            negatives_t = negatives.T
        else:
            negatives, negatives_t = negatives.to(dtype), negatives_t.to(dtype)
        # Section 2: d unit / d query = (I - q q^T) scale / norm, row by row.
        rescale = (scale / norm)[:batch]
        # q . n / T; with beta = 0 addmm ignores its first argument.
        logits = torch.addmm(constant(0.0, dtype, q.device), q, negatives_t, beta=0.0, alpha=1.0 / temperature)
        negatives_lse = torch.logsumexp(logits, dim=1, keepdim=True)
        gap = torch.sub(negatives_lse, (q * k).sum(dim=1, keepdim=True), alpha=1.0 / temperature)
        infonce = F.softplus(gap)
        # (E_softmax[n] - k) / (T B) in one product.
        tb = temperature * batch
        toward_negatives = torch.addmm(k, torch.softmax(logits, dim=1), negatives, beta=-1.0 / tb, alpha=1.0 / tb)
        coefficient = torch.sigmoid(gap)
        parts = None if halp is None else halp(q, k, negatives_lse)
        # ClosedFormLoss takes the mean of `values`: over the B rows, or over (B, D) entries for "align".
        if parts is None:
            grad = toward_negatives.mul_(coefficient)
            values = infonce
        else:
            grad = torch.addcmul(parts.query_grad, coefficient, toward_negatives)
            if parts.value is None:
                # "align": the term is linear in the query, q . query_grad summed; one mean for both terms.
                values = torch.addcmul(infonce, q, parts.query_grad, value=float(batch * q.shape[1]))
            else:
                # "infonce": each positive's loss depends on the negatives' lse too, whose gradient is E_softmax[n].
                expected_negative = torch.add(k, toward_negatives, alpha=tb)
                grad.addcmul_(parts.lse_grad[:, None], expected_negative, value=1.0 / temperature)
                values = torch.add(infonce, parts.value)
        grad = torch.addcmul(grad, q, (q * grad).sum(dim=1, keepdim=True), value=-1.0).mul_(rescale)
    return MocoLoss(ClosedFormLoss.apply(query, None, grad, None, values), infonce, parts, q, k)


def positive_similarities(query: Tensor, anchor: Tensor, walks: Walks, tables: WalkTables) -> tuple[Tensor, Tensor]:
    """``q . k`` (R, 1) and ``q . u_s`` (R, P) (section 3): the query's cosine to the positive at angle ``x`` toward
    ``p_s`` is ``cos x q . k + sin x q . u_s``."""
    along = (query * anchor).sum(dim=1, keepdim=True)
    return along, (query @ tables.transposed - walks.cos * along) / walks.sin


def combine_positions(positions: Tensor, walks: Walks, tables: WalkTables, anchor: Tensor, scale: float) -> Tensor:
    """(R, D) ``scale`` times the sum of the positives ``positions`` stands for, without building them (section 4).

    ``positions`` (R, P) complex holds, for each anchor and target, the weighted sum ``C + iS`` of ``e^{ix}`` over
    positives at angles ``x`` along the walk; their sum is ``sum_s (C - S cos w / sin w) k + (S / sin w) p_s``.
    """
    along, across = torch.view_as_real(positions).unbind(-1)
    toward = across / walks.sin
    own = torch.addcmul(along, toward, walks.cos, value=-1.0).sum(dim=1, keepdim=True)
    return torch.addmm(own * anchor, toward, tables.prototypes, beta=scale, alpha=scale)


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
    """The sampled HaLP term (sections 3 and 4) of unit ``query`` and ``anchor`` rows (R, D) of the prototypes'
    dtype, ``walks`` those of ``anchor`` toward ``tables``, ``negatives_lse`` (R, 1) for ``"infonce"``.

    ``draws`` are the ``halp_loss.geometry.random_draws`` to use, drawn here from ``generator`` if ``None``.
    """
    if draws is None:
        draws = random_draws(anchor.shape[0], num_candidates, num_positives, generator, anchor.device, anchor.dtype)
    target, x, keep = draw_positions(walks, candidate_order(walks, tables, num_candidates), lam, draws)
    weight = keep
    kept = weight.sum()
    # A count: when nothing is kept the sums are 0 and so is the term.
    denominator = kept.clamp_min(1.0)
    value = lse_grad = None
    if objective == "infonce":
        along, across = positive_similarities(query, anchor, walks, tables)
        similarity = torch.cos(x) * along + torch.sin(x) * across.gather(1, target)
        gap = negatives_lse - similarity / temperature
        value = (weight * F.softplus(gap)).sum() * scale / denominator
        weight = weight * torch.sigmoid(gap)
        lse_grad = weight.sum(dim=1) * scale / denominator
    positions = torch.zeros_like(walks.cos, dtype=COMPLEX[x.dtype]).scatter_add_(1, target, torch.polar(weight, x))
    query_grad = combine_positions(positions, walks, tables, anchor, -scale / temperature) / denominator
    return TermParts(value, query_grad, lse_grad, kept, x.numel(), denominator, keep, x, walks.angle, target)


def unit_gauss_legendre(num_nodes: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Gauss-Legendre nodes on [0, 1] and weights summing to 1, built once per dtype and device so that a training
    step does not copy them from the host."""

    def build() -> tuple[Tensor, Tensor]:
        nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
        as_tensor = functools.partial(torch.as_tensor, dtype=dtype, device=device)
        return as_tensor((nodes + 1.0) / 2.0), as_tensor(weights / 2.0)

    return device_cache(("gauss_legendre", num_nodes, dtype, device), build)


def expected_parts(
    query: Tensor,
    anchor: Tensor,
    walks: Walks,
    tables: WalkTables,
    *,
    lam: Lam,
    num_candidates: int,
    objective: str,
    temperature: float,
    negatives_lse: Optional[Tensor],
    num_nodes: int,
    scale: float = 1.0,
) -> TermParts:
    """The expected HaLP term (section 5) of unit ``query`` and ``anchor`` rows (R, D) of the prototypes' dtype,
    ``walks`` those of ``anchor`` toward ``tables``, ``negatives_lse`` (R, 1) for ``"infonce"``."""
    tiny = torch.finfo(walks.end.dtype).tiny
    # Adding tiny to both ends of the ratio L / (lam end) makes a point mass (lam = 0, or a walk of length zero) a
    # ratio of 1 when the walk is not cut before its end (exit = end exactly) and 0 when it is; the floor of a
    # walk that is not a candidate (the anchor's own prototype) is infinite.
    if num_candidates == tables.order.shape[1]:
        floor = tables.floor[walks.nearest]
    else:
        floor = torch.where(candidate_mask(walks, tables, num_candidates), tiny, math.inf)
    if isinstance(lam, Tensor):
        length = walks.exit - (1.0 - lam) * walks.end
        spread = lam * walks.end + floor
    else:
        length = torch.add(walks.exit, walks.end, alpha=lam - 1.0)
        spread = torch.add(floor, walks.end, alpha=lam)
    # Clamped after the division: L and lam end are rounded apart, and the ratio must stay a probability.
    probability = (length + tiny).div_(spread).clamp_(0.0, 1.0)
    middle = torch.sub(walks.exit, length, alpha=0.5)
    kept = probability.sum()
    denominator = kept.clamp_min(tiny)
    value = lse_grad = None
    if objective == "align":
        positions = torch.polar(probability * torch.sinc(length * (0.5 / math.pi)), middle)
    else:
        nodes, weights = unit_gauss_legendre(num_nodes, query.dtype, query.device)
        # Gauss-Legendre nodes over each kept interval [exit - L, exit].
        x = walks.exit[..., None] - length[..., None] * (1.0 - nodes)
        along, across = positive_similarities(query, anchor, walks, tables)
        similarity = torch.cos(x) * along[..., None] + torch.sin(x) * across[..., None]
        gap = negatives_lse[..., None] - similarity / temperature
        value = (probability * (F.softplus(gap) @ weights)).sum() * scale / denominator
        node_weight = probability[..., None] * weights * torch.sigmoid(gap)
        positions = torch.polar(node_weight, x).sum(dim=-1)
        lse_grad = node_weight.sum(dim=(1, 2)) * scale / denominator
    query_grad = combine_positions(positions, walks, tables, anchor, -scale / temperature) / denominator
    count = walks.end.shape[0] * num_candidates
    return TermParts(value, query_grad, lse_grad, kept, count, denominator, probability, middle, walks.angle, None)

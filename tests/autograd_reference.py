"""The losses of the closed-form engine (``halp_loss._closed_form``) written with plain autograd.

Every positive is built as a vector, the InfoNCE terms are cross-entropies over concatenated logits, and the
gradient is whatever autograd makes of them: nothing here shares a formula with the engine. The sampled HaLP term
uses the positives :func:`halp_loss.hallucinate_positives` draws for a seed (the draws the criterion makes with a
generator of that seed); the expected term integrates every walk on a dense grid of explicit positives, each kept
or not by an explicit argmax over the prototypes, with its boundary found by bisection.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from reference import boundary_by_bisection, gen, slerp

from halp_loss import hallucinate_positives


def cross_entropy_rows(positive: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """(...,) ``-log softmax`` of the positive logit among ``[positive, negatives...]`` (last dim of ``negatives``)."""
    logits = torch.cat([positive[..., None], negatives], dim=-1)
    return -torch.log_softmax(logits, dim=-1)[..., 0]


def moco_infonce(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE: cross-entropy over ``[q . k, q . n_j] / T`` of normalized rows, the key detached."""
    q, k, n = F.normalize(query, dim=1), F.normalize(key.detach(), dim=1), F.normalize(negatives, dim=1)
    return cross_entropy_rows((q * k).sum(1) / temperature, q @ n.T / temperature).mean()


def simclr_rows(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, ...]:
    """The 2B SimCLR rows ``z = [view1; view2]`` normalized, their positive logits, the (2B, 2B - 2) logits of their
    negatives (every other row but the partner) and their detached anchors (the partners)."""
    z = F.normalize(torch.cat([view1, view2]), dim=1)
    rows = z.shape[0]
    partner = (torch.arange(rows) + rows // 2) % rows
    logits = z @ z.T / temperature
    others = ~torch.eye(rows, dtype=torch.bool) & (torch.arange(rows)[None, :] != partner[:, None])
    negatives = logits[others].reshape(rows, rows - 2)
    return z, logits[torch.arange(rows), partner], negatives, z[partner].detach()


def nt_xent(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent over the 2B rows."""
    _, positive, negatives, _ = simclr_rows(view1, view2, temperature)
    return cross_entropy_rows(positive, negatives).mean()


def halp_term(
    query: torch.Tensor,
    positives: torch.Tensor,
    weights: torch.Tensor,
    objective: str,
    temperature: float,
    negative_logits: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The HaLP term of unit ``query`` rows (R, D) over constant ``positives`` (R, N, D) weighted by ``weights``
    (R, N) (the rank filter's 0 or 1): ``sum w loss / max(sum w, 1)``, each positive's loss ``-q.h / T``
    (``"align"``) or its cross-entropy against the row's ``negative_logits`` (R, K) (``"infonce"``)."""
    similarity = torch.einsum("rd,rnd->rn", query, positives) / temperature
    if objective == "align":
        losses = -similarity
    else:
        expanded = negative_logits[:, None, :].expand(-1, similarity.shape[1], -1)
        losses = cross_entropy_rows(similarity, expanded)
    return (weights * losses).sum() / weights.sum().clamp_min(1.0)


def sampled_positives(
    anchor: torch.Tensor, prototypes: torch.Tensor, lam: float, num_positives: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The positives and rank-filter weights of the sampled estimator for a generator seeded with ``seed``."""
    out = hallucinate_positives(
        anchor.detach(), prototypes, lam=lam, num_positives=num_positives, generator=gen(seed)
    )
    return out.positives, out.keep.to(anchor.dtype)


def dense_positives(
    anchor: torch.Tensor, prototypes: torch.Tensor, lam: float, grid: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The expected estimator's positives by explicit integration: for every anchor and every other prototype as
    target, ``grid`` midpoints of the step range ``[(1 - lam) t_max, t_max]`` (``grid`` copies of the point at
    ``t_max`` for ``lam = 0``), each kept when no third prototype is more similar than the anchor's nearest."""
    k = F.normalize(anchor.detach(), dim=1).numpy()
    p = F.normalize(prototypes, dim=1).numpy()
    fractions = 1 - lam * (np.arange(grid) + 0.5) / grid
    positives, weights = [], []
    for row in k:
        nearest = int(np.argmax(p @ row))
        row_positives, row_weights = [], []
        for s in (j for j in range(len(p)) if j != nearest):
            h = np.stack([slerp(row, p[s], t) for t in boundary_by_bisection(row, p[nearest], p[s]) * fractions])
            similarity = h @ p.T
            # Up to t_max the anchor's prototype is at least as similar as the target: the filter is about the others.
            similarity[:, s] = -np.inf
            row_positives.append(h)
            row_weights.append((np.argmax(similarity, axis=1) == nearest).astype(np.float64))
        positives.append(np.concatenate(row_positives))
        weights.append(np.concatenate(row_weights))
    return torch.as_tensor(np.stack(positives)), torch.as_tensor(np.stack(weights))

"""The closed-form engine against plain autograd (tests/autograd_reference.py) in value and gradient, float64, and
``torch.autograd.gradcheck`` of its hand-derived gradients; second-order gradients raise."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from autograd_reference import (
    dense_positives,
    halp_term,
    moco_infonce,
    nt_xent,
    sampled_positives,
    simclr_rows,
)
from reference import gen, randn, sphere

from halp_loss import HaLPInfoNCE
from halp_loss._closed_form import expected_parts, sampled_parts, term_loss
from halp_loss.functional import info_nce, info_nce_from_logits, simclr_logits
from halp_loss.geometry import random_draws, walk_angles, walk_tables

T = 0.07
LAM = 0.8
M = 16
SEED = 7
GRID = 4000  # midpoints per walk of the dense integration: each exit is placed to within 1 / GRID of its range


def problem(batch: int = 6, dim: int = 8) -> tuple[torch.Tensor, ...]:
    """Queries near their keys (so that the positives matter), raw negatives of mixed magnitudes, prototypes."""
    key = randn(batch, dim, seed=1)
    query = (key + 0.8 * randn(batch, dim, seed=2)).requires_grad_()
    negatives = randn(20, dim, seed=3) * torch.tensor([3.0, 0.5, 1e3])[torch.arange(20) % 3, None]
    return query, key, negatives, sphere(5, dim, 4)


def criterion(objective: str, estimator: str, queue: bool = False, halp_weight: float = 2.0) -> HaLPInfoNCE:
    return HaLPInfoNCE(
        temperature=T,
        halp_weight=halp_weight,
        objective=objective,
        estimator=estimator,
        lam=LAM,
        num_positives=M,
        generator=gen(SEED),
        memory_bank_size=20 if queue else None,
    )


def positives(anchor: torch.Tensor, prototypes: torch.Tensor, estimator: str) -> tuple[torch.Tensor, torch.Tensor]:
    if estimator == "sampled":
        return sampled_positives(anchor, prototypes, LAM, M, SEED)
    return dense_positives(anchor, prototypes, LAM, GRID)


def assert_close(value: torch.Tensor, expected: torch.Tensor, estimator: str) -> None:
    # The sampled term is the same sum as the reference's; the dense integration is off by O(1 / GRID).
    if estimator == "sampled":
        assert torch.allclose(value, expected, rtol=1e-10, atol=1e-12)
    else:
        assert (value - expected).norm() <= 1e-4 * expected.norm()


def test_info_nce_equals_cross_entropy_in_value_and_gradient() -> None:
    query, key, negatives, _ = problem()
    reference_query = query.detach().clone().requires_grad_()
    loss, expected = info_nce(query, key, negatives, T), moco_infonce(reference_query, key, negatives, T)
    loss.backward(), expected.backward()
    assert torch.allclose(loss, expected, rtol=1e-12) and torch.allclose(query.grad, reference_query.grad, rtol=1e-10)


@pytest.mark.parametrize("queue", [False, True], ids=["explicit_negatives", "built_in_queue"])
@pytest.mark.parametrize("estimator", ["sampled", "expected"])
@pytest.mark.parametrize("objective", ["align", "infonce"])
def test_moco_mode_equals_autograd(objective: str, estimator: str, queue: bool) -> None:
    query, key, negatives, prototypes = problem()
    loss_fn = criterion(objective, estimator, queue)
    if queue:
        loss_fn.queue.enqueue(negatives)  # as 20 earlier keys would have been: normalized, in order
        loss = loss_fn(query, key, prototypes=prototypes)
    else:
        loss = loss_fn(query, key, negatives, prototypes=prototypes)
    reference_query = query.detach().clone().requires_grad_()
    unit_query = F.normalize(reference_query, dim=1)
    points, weights = positives(F.normalize(key, dim=1), prototypes, estimator)
    negative_logits = unit_query @ F.normalize(negatives, dim=1).T / T
    expected = moco_infonce(reference_query, key, negatives, T) + 2.0 * halp_term(
        unit_query, points, weights, objective, T, negative_logits
    )
    loss.backward(), expected.backward()
    assert_close(loss, expected, estimator)
    assert_close(query.grad, reference_query.grad, estimator)


@pytest.mark.parametrize("estimator", ["sampled", "expected"])
@pytest.mark.parametrize("objective", ["align", "infonce"])
def test_simclr_mode_equals_autograd(objective: str, estimator: str) -> None:
    view1, view2 = randn(4, 8, seed=5).requires_grad_(), randn(4, 8, seed=6).requires_grad_()
    prototypes = sphere(5, 8, 4)
    loss = criterion(objective, estimator, halp_weight=1.0)(view1, view2, prototypes=prototypes)
    reference1, reference2 = (view.detach().clone().requires_grad_() for view in (view1, view2))
    rows, _, negative_logits, anchors = simclr_rows(reference1, reference2, T)
    points, weights = positives(anchors, prototypes, estimator)
    expected = nt_xent(reference1, reference2, T) + halp_term(rows, points, weights, objective, T, negative_logits)
    loss.backward(), expected.backward()
    assert_close(loss, expected, estimator)
    assert_close(torch.cat([view1.grad, view2.grad]), torch.cat([reference1.grad, reference2.grad]), estimator)


@pytest.mark.parametrize("queue", [False, True], ids=["explicit_negatives", "built_in_queue"])
@pytest.mark.parametrize("estimator", ["sampled", "expected"])
@pytest.mark.parametrize("objective", ["align", "infonce"])
def test_gradcheck_moco_mode(objective: str, estimator: str, queue: bool) -> None:
    query, key, negatives, prototypes = problem(batch=4, dim=6)
    loss_fn = criterion(objective, estimator, queue)
    if queue:
        loss_fn.queue.enqueue(negatives)
    loss_fn.eval()  # the queue and the bank stay as they are between gradcheck's calls

    def loss(q: torch.Tensor) -> torch.Tensor:
        loss_fn.generator = gen(SEED)  # the same draws at every call
        return loss_fn(q, key, *([] if queue else [negatives]), prototypes=prototypes)

    assert torch.autograd.gradcheck(loss, (query,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("estimator", ["sampled", "expected"])
@pytest.mark.parametrize("objective", ["align", "infonce"])
def test_gradcheck_simclr_mode(objective: str, estimator: str) -> None:
    # What HaLPInfoNCE's SimCLR mode computes, with the anchors (the detached partner views) held at the unperturbed
    # views: the criterion stops their gradient on purpose, which gradcheck's finite differences would not.
    view1, view2 = randn(3, 6, seed=5).requires_grad_(), randn(3, 6, seed=6).requires_grad_()
    tables = walk_tables(sphere(4, 6, 4))
    anchor = simclr_logits(view1, view2, T).anchor
    walks = walk_angles(anchor, tables)
    draws = random_draws(6, 3, M, gen(SEED), anchor.device, anchor.dtype)
    options = dict(lam=LAM, num_candidates=3, objective=objective, temperature=T)

    def loss(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        logits = simclr_logits(first, second, T)
        lse = logits.negatives_lse
        with torch.no_grad():
            query, common = logits.query.detach(), dict(negatives_lse=lse[:, None], **options)
            if estimator == "sampled":
                parts = sampled_parts(query, anchor, walks, tables, num_positives=M, generator=None, draws=draws, **common)
            else:
                parts = expected_parts(query, anchor, walks, tables, num_nodes=16, **common)
        return info_nce_from_logits(logits) + term_loss(logits.query, lse, parts)

    assert torch.autograd.gradcheck(loss, (view1, view2), eps=1e-6, atol=1e-6)


def moco_call(halp_weight: float) -> Callable[[torch.Tensor], torch.Tensor]:
    _, key, negatives, prototypes = problem()
    return lambda q: criterion("align", "sampled", halp_weight=halp_weight)(q, key, negatives, prototypes=prototypes)


@pytest.mark.parametrize(
    "loss",
    [
        lambda q: info_nce(q, randn(6, 8, seed=1), randn(20, 8, seed=3)),
        moco_call(0.0),
        moco_call(2.0),
        lambda q: criterion("infonce", "expected", halp_weight=1.0)(
            q, randn(6, 8, seed=1).requires_grad_(), prototypes=sphere(5, 8, 4)
        ),
    ],
    ids=["info_nce", "moco_infonce_alone", "moco_halp", "simclr_halp"],
)
def test_second_order_gradients_raise(loss: Callable[[torch.Tensor], torch.Tensor]) -> None:
    # Issue 19 item 8: create_graph=True returned a gradient without a graph, so a gradient penalty got nothing.
    query = randn(6, 8, seed=2).requires_grad_()
    (first,) = torch.autograd.grad(loss(query), query)  # first order is fine
    assert torch.isfinite(first).all()
    with pytest.raises(RuntimeError, match="first order only.*create_graph=True.*F.cross_entropy"):
        torch.autograd.grad(loss(query), query, create_graph=True)


def test_simclr_without_the_halp_term_has_second_order_gradients() -> None:
    # Plain NT-Xent is autograd: its Hessian-vector products are those of the reference.
    view1, view2 = randn(4, 8, seed=5).requires_grad_(), randn(4, 8, seed=6).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda v: criterion("align", "sampled", halp_weight=0.0)(v, view2), (view1,))

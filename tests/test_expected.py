"""The exact infinite-positives estimator against a dense float64 reference, the sampled estimator, explicit
rank filtering, gradients and HaLPInfoNCE(estimator="expected")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import DEGENERATE_CASES, boundary_by_bisection, degenerate_geometry, sphere

from halp_loss import ExitTimes, HaLPInfoNCE, exit_times, expected_halp_term
from halp_loss.functional import info_nce, sampled_halp_term, simclr_logits

T = 0.07


def problem(batch: int, dim: int, num_protos: int, seed: int, dtype: torch.dtype = torch.float64):
    """Queries near their anchors, and a negatives log-sum-exp comparable to the positive logits."""
    anchors, protos = sphere(batch, dim, seed, dtype), sphere(num_protos, dim, seed + 1, dtype)
    query = F.normalize(anchors + 0.7 * sphere(batch, dim, seed + 2, dtype), dim=1)
    lse = (query * anchors).sum(1) / T + torch.linspace(-2.0, 2.0, batch, dtype=dtype)
    return query, anchors, protos, lse


def slerp_rows(k: np.ndarray, p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(N, D) explicit points at fractions t of the great-circle arc from k to p."""
    w = np.arccos(np.clip(k @ p, -1.0, 1.0))
    return (np.sin((1 - t) * w)[:, None] * k + np.sin(t * w)[:, None] * p) / np.sin(w)


def dense_reference(query, anchors, protos, lse, lam, objective, num_candidates=None, grid=8001):
    """The M -> infinity limit by brute force: every candidate target, a midpoint grid of explicit positives over
    the step's range (one point when lam = 0), an explicit argmax rank filter, and the ratio of sums."""
    q, k, p, lse = (x.numpy() for x in (query, anchors, protos, lse))
    total_loss = total_keep = total_t = 0.0
    count = 0
    for n in range(k.shape[0]):
        sims = p @ k[n]
        nearest = int(np.argmax(sims))
        others = [j for j in np.argsort(-sims, kind="stable") if j != nearest]
        for s in others[: num_candidates or len(others)]:
            t_max = boundary_by_bisection(k[n], p[nearest], p[s])
            if lam == 0 or t_max == 0:
                t = np.array([t_max])
            else:
                t = t_max * (1 - lam * (np.arange(grid) + 0.5) / grid)
            h = slerp_rows(k[n], p[s], t)
            proto_sims = np.einsum("gd,pd->gp", h, p)  # not h @ p.T: BLAS threads crawl on a loaded machine
            # t <= t_max keeps p0 at least as close as the target: the filter is about third prototypes.
            proto_sims[:, s] = -np.inf
            keep = np.argmax(proto_sims, axis=1) == nearest
            logit = h @ q[n] / T
            loss = -logit if objective == "align" else np.logaddexp(logit, lse[n]) - logit
            total_loss += (keep * loss).mean()
            total_keep += keep.mean()
            total_t += (keep * t).mean()
            count += 1
    return total_loss / total_keep, total_keep / count, total_t / total_keep


@pytest.mark.parametrize("objective", ["align", "infonce"])
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.8, 1.0])
@pytest.mark.parametrize("num_protos, dim", [(2, 4), (3, 3), (5, 4), (20, 5)])
def test_matches_dense_reference(num_protos: int, dim: int, lam: float, objective: str) -> None:
    query, anchors, protos, lse = problem(5, dim, num_protos, seed=10 * num_protos)
    term = expected_halp_term(query, anchors, protos, lam=lam, objective=objective, negatives_lse=lse)
    loss, kept, mean_t = dense_reference(query, anchors, protos, lse, lam, objective)
    # A midpoint grid of G = 8001 points misplaces each exit by up to 1 / G of the range.
    tol = 1e-9 if lam == 0 else 1e-4
    assert term.loss.dtype == torch.float64
    assert term.loss.item() == pytest.approx(loss, rel=tol, abs=tol)
    assert term.kept_fraction.item() == pytest.approx(kept, abs=tol)
    assert term.mean_t.item() == pytest.approx(mean_t, rel=tol, abs=tol)
    if num_protos == 20 and lam > 0:
        assert kept < 0.95  # third prototypes do cut walks short here: the rank filter is exercised


@pytest.mark.parametrize("objective", ["align", "infonce"])
def test_matches_dense_reference_with_candidates(objective: str) -> None:
    query, anchors, protos, lse = problem(5, 4, 9, seed=3)
    term = expected_halp_term(query, anchors, protos, lam=0.8, objective=objective, negatives_lse=lse, num_candidates=3)
    loss, kept, mean_t = dense_reference(query, anchors, protos, lse, 0.8, objective, num_candidates=3)
    assert term.loss.item() == pytest.approx(loss, rel=5e-4)
    assert term.kept_fraction.item() == pytest.approx(kept, abs=5e-4)
    assert term.mean_t.item() == pytest.approx(mean_t, rel=5e-4)


@pytest.mark.parametrize("objective", ["align", "infonce"])
def test_sampled_estimator_converges_to_it(objective: str) -> None:
    query, anchors, protos, lse = problem(8, 5, 10, seed=4)
    exact = expected_halp_term(query, anchors, protos, lam=0.8, objective=objective, negatives_lse=lse).loss.item()
    sizes, seeds = [16, 64, 256, 1024], 200
    rms, means, stds = [], [], []
    for m in sizes:
        losses = torch.tensor(
            [
                sampled_halp_term(
                    query,
                    anchors,
                    protos,
                    lam=0.8,
                    num_positives=m,
                    objective=objective,
                    negatives_lse=lse,
                    generator=torch.Generator().manual_seed(seed),
                ).loss.item()
                for seed in range(seeds)
            ],
            dtype=torch.float64,
        )
        rms.append(((losses - exact) ** 2).mean().sqrt().item())
        means.append(losses.mean().item())
        stds.append(losses.std().item())
    # The gap of one sampled loss to the exact one shrinks like 1 / sqrt(M) ...
    slope = np.polyfit(np.log(sizes), np.log(rms), 1)[0]
    assert -0.62 < slope < -0.38
    # ... and the mean of many sampled losses agrees with it to within their standard error.
    for mean, std in zip(means[1:], stds[1:]):
        assert abs(mean - exact) < 4 * std / seeds**0.5


def test_exit_times_by_explicit_argmax() -> None:
    anchors, protos = sphere(24, 5, 20), sphere(12, 5, 21)
    out = exit_times(anchors, protos)
    assert isinstance(out, ExitTimes)
    assert out.t_exit.shape == out.t_max.shape == out.target.shape == out.exit_prototype.shape == (24, 11)
    k, p = anchors.numpy(), protos.numpy()
    delta, third_party = 1e-9, 0
    for n in range(24):
        nearest = int(out.nearest[n])
        assert nearest == int(np.argmax(p @ k[n]))
        assert sorted(out.target[n].tolist()) == [j for j in range(12) if j != nearest]
        for c in range(11):
            s, t_exit, t_max = int(out.target[n, c]), out.t_exit[n, c].item(), out.t_max[n, c].item()
            assert t_max == pytest.approx(boundary_by_bisection(k[n], p[nearest], p[s]), abs=1e-9)
            assert 0 < t_exit <= t_max
            before, after = slerp_rows(k[n], p[s], np.array([t_exit - delta, t_exit + delta])) @ p.T
            assert int(np.argmax(before)) == nearest
            assert int(np.argmax(after)) == int(out.exit_prototype[n, c])
            if t_exit < t_max:
                third_party += 1
                assert out.exit_prototype[n, c] not in (nearest, s)
            else:
                assert out.exit_prototype[n, c] == s
    assert third_party > 20


def test_exit_times_options_and_dtypes() -> None:
    anchors, protos = sphere(6, 8, 22, torch.float32), sphere(7, 8, 23, torch.float32)
    out = exit_times(anchors * 3.0, protos, num_candidates=2)
    sims = anchors @ protos.T
    others = sims.scatter(1, out.nearest[:, None], float("-inf"))
    assert torch.equal(out.target, others.topk(2, dim=1).indices)
    assert out.t_exit.dtype == torch.float32
    assert exit_times(anchors.double(), protos.half()).t_exit.dtype == torch.float64
    with pytest.raises(ValueError, match=r"num_candidates must be in \[1, P - 1\]"):
        exit_times(anchors, protos, num_candidates=7)
    with pytest.raises(ValueError, match="prototypes must have 8 columns"):
        exit_times(anchors, protos[:, :3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_copies_add_no_boundary(dtype: torch.dtype) -> None:
    # Copies of prototypes (the first two, appended) leave every walk's exit where it was: a copy of the
    # anchor's nearest prototype is tied with it everywhere, and a copy of the target crosses exactly at t_max.
    anchors, protos = sphere(40, 4, 24, dtype), sphere(6, 4, 25, dtype)
    anchors = torch.cat([anchors, F.normalize(protos + 0.05 * sphere(6, 4, 26, dtype), dim=1)])
    plain = exit_times(anchors, protos)
    copied = exit_times(anchors, torch.cat([protos, protos[:2]]))
    assert torch.equal(plain.nearest, copied.nearest)
    for n in range(anchors.shape[0]):
        for c, s in enumerate(plain.target[n].tolist()):
            same = (copied.target[n] == s) | (copied.target[n] == s + 6)
            assert torch.allclose(copied.t_exit[n][same], plain.t_exit[n, c].expand(int(same.sum())), atol=1e-6)
            assert copied.exit_prototype[n][same].remainder(6).tolist() == [plain.exit_prototype[n, c].item()] * int(
                same.sum()
            )
    term_plain = expected_halp_term(anchors, anchors, protos, lam=0.0)
    term_copied = expected_halp_term(anchors, anchors, torch.cat([protos, protos[:2]]), lam=0.0)
    assert term_plain.kept_fraction < 1  # third prototypes do cut some walks ...
    cut = (plain.t_exit < plain.t_max).double().mean()
    assert term_plain.kept_fraction.item() == pytest.approx(1 - cut.item())  # ... and only those
    copied_cut = (copied.t_exit < copied.t_max).double().mean()
    assert term_copied.kept_fraction.item() == pytest.approx(1 - copied_cut.item())


def test_lam_zero_is_the_rank_filter_at_the_boundary() -> None:
    # With lam = 0 every sampled positive sits at t_max; the exact term keeps a walk exactly when the sampled
    # estimator does, so it equals the sampled term weighted by how often each target was drawn.
    query, anchors, protos = (x.float() for x in problem(16, 5, 8, seed=5)[:3])
    exact = expected_halp_term(query, anchors, protos, lam=0.0)
    out = exit_times(anchors, protos)
    sampled = sampled_halp_term(
        query, anchors, protos, lam=0.0, num_positives=7000, generator=torch.Generator().manual_seed(0)
    )
    assert exact.kept_fraction.item() == pytest.approx(sampled.kept_fraction.item(), abs=0.01)
    assert exact.loss.item() == pytest.approx(sampled.loss.item(), rel=0.01)
    assert exact.mean_t.item() == pytest.approx(
        (out.t_max * (out.t_exit == out.t_max)).sum().item() / (out.t_exit == out.t_max).sum().item(), rel=1e-5
    )


@pytest.mark.parametrize("objective", ["align", "infonce"])
@pytest.mark.parametrize("lam", [0.0, 0.8])
def test_gradcheck_and_gradient_flows_into_query_only(objective: str, lam: float) -> None:
    query, anchors, protos, lse = problem(4, 5, 6, seed=6)
    anchors.requires_grad_()
    protos.requires_grad_()

    def term(q: torch.Tensor) -> torch.Tensor:
        return expected_halp_term(q, anchors, protos, lam=lam, objective=objective, negatives_lse=lse).loss

    assert torch.autograd.gradcheck(term, (query.clone().requires_grad_(),))
    q = query.clone().requires_grad_()
    term(q).backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    assert anchors.grad is None and protos.grad is None


def test_dtypes_and_autocast() -> None:
    query, anchors, protos, lse = (x.float() for x in problem(8, 16, 10, seed=7))
    reference = expected_halp_term(query, anchors, protos, objective="infonce", negatives_lse=lse)
    assert reference.loss.dtype == torch.float32
    double = expected_halp_term(
        query.double(), anchors.double(), protos, objective="infonce", negatives_lse=lse.double()
    )
    assert double.loss.dtype == torch.float64
    assert double.loss.item() == pytest.approx(reference.loss.item(), rel=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = query.bfloat16().requires_grad_()
        mixed = expected_halp_term(q, anchors.bfloat16(), protos, objective="infonce", negatives_lse=lse)
        mixed.loss.backward()
    assert mixed.loss.dtype == torch.float32 and q.grad.dtype == torch.bfloat16
    assert mixed.loss.item() == pytest.approx(reference.loss.item(), rel=0.02)
    assert torch.isfinite(q.grad.float()).all()


def test_first_call_under_inference_mode() -> None:
    # The cached quadrature nodes must stay usable by later calls that build a graph.
    query, anchors, protos, lse = problem(4, 6, 5, seed=8)
    with torch.inference_mode():
        expected_halp_term(query, anchors, protos, objective="infonce", negatives_lse=lse, num_nodes=7)
    q = query.clone().requires_grad_()
    expected_halp_term(q, anchors, protos, objective="infonce", negatives_lse=lse, num_nodes=7).loss.backward()
    assert torch.isfinite(q.grad).all()


def test_per_anchor_lam_tensor() -> None:
    query, anchors, protos, lse = problem(6, 5, 7, seed=9)
    lam = torch.tensor([[0.0], [0.8], [0.8], [1.0], [0.3], [0.0]], dtype=torch.float64)
    mixed = expected_halp_term(query, anchors, protos, lam=lam, objective="infonce", negatives_lse=lse)
    rows = [
        expected_halp_term(
            query[i : i + 1],
            anchors[i : i + 1],
            protos,
            lam=lam[i].item(),
            objective="infonce",
            negatives_lse=lse[i : i + 1],
        )
        for i in range(6)
    ]
    # The ratio of sums over the batch: per-row terms weighted by their expected kept counts.
    weights = torch.stack([r.kept_fraction for r in rows])
    combined = (weights * torch.stack([r.loss for r in rows])).sum() / weights.sum()
    assert mixed.loss.item() == pytest.approx(combined.item(), rel=1e-12)


@pytest.mark.parametrize("case", DEGENERATE_CASES)
@pytest.mark.parametrize("lam", [0.0, 0.8])
@pytest.mark.parametrize("objective", ["align", "infonce"])
def test_degenerate_geometry_is_finite_and_consistent(case: str, lam: float, objective: str) -> None:
    anchors, protos = degenerate_geometry(case)
    anchors = F.normalize(anchors, dim=1)
    query = F.normalize(anchors + sphere(anchors.shape[0], 3, 18, torch.float32), dim=1).requires_grad_()
    lse = torch.full((anchors.shape[0],), 5.0)
    kwargs = dict(lam=lam, objective=objective, negatives_lse=lse)
    exact = expected_halp_term(query, anchors, protos, **kwargs)
    exact.loss.backward()
    for value in exact:
        assert torch.isfinite(value)
    assert torch.isfinite(query.grad).all()
    out = exit_times(anchors, protos)
    assert torch.isfinite(out.t_exit).all() and (out.t_exit <= out.t_max).all()
    # Both estimators filter with the same exit times, so ties (copies of a prototype) agree too.
    sampled = sampled_halp_term(
        query, anchors, protos, num_positives=20000, generator=torch.Generator().manual_seed(0), **kwargs
    )
    assert exact.loss.item() == pytest.approx(sampled.loss.item(), rel=0.01, abs=0.01)
    assert exact.kept_fraction.item() == pytest.approx(sampled.kept_fraction.item(), abs=0.01)
    if case == "antipodal_target":
        # No unique geodesic: a walk of length zero, every positive is the anchor itself, always kept.
        assert torch.equal(out.t_max, torch.zeros_like(out.t_max))
        assert exact.kept_fraction.item() == 1.0
        if objective == "align":
            assert exact.loss.item() == pytest.approx(-(query * anchors).sum(1).mean().item() / T, rel=1e-6)


def moco_problem(dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(11)
    q = torch.randn(16, 32, generator=g, dtype=dtype, requires_grad=True)
    k = torch.randn(16, 32, generator=g, dtype=dtype)
    negatives = F.normalize(torch.randn(256, 32, generator=g, dtype=dtype), dim=1)
    protos = F.normalize(torch.randn(8, 32, generator=g, dtype=dtype), dim=1)
    return q, k, negatives, protos


@pytest.mark.parametrize("objective", ["align", "infonce"])
def test_halp_infonce_moco_with_given_prototypes(objective: str) -> None:
    q, k, negatives, protos = moco_problem()
    criterion = HaLPInfoNCE(halp_weight=2.0, lam=0.5, objective=objective, estimator="expected", num_positives=3)
    loss = criterion(q, k, negatives, prototypes=protos)
    unit_q = F.normalize(q, dim=1)
    term = expected_halp_term(
        unit_q, k, protos, lam=0.5, objective=objective, negatives_lse=torch.logsumexp(unit_q @ negatives.T / T, 1)
    )
    assert loss.item() == pytest.approx((info_nce(q, k, negatives, T) + 2.0 * term.loss).item(), rel=1e-6)
    assert criterion.last["kept_fraction"] == pytest.approx(term.kept_fraction.item())
    assert criterion(q, k, negatives, prototypes=protos).item() == loss.item()  # deterministic
    loss.backward()
    assert torch.isfinite(q.grad).all()


def test_halp_infonce_simclr_gradients_reach_both_views() -> None:
    q, k, _, protos = moco_problem(torch.float64)
    k.requires_grad_()
    criterion = HaLPInfoNCE(halp_weight=1.0, objective="infonce", estimator="expected")
    loss = criterion(q, k, prototypes=protos)
    logits = simclr_logits(q, k, T)
    term = expected_halp_term(
        logits.query, logits.anchor, protos, lam=0.8, objective="infonce", negatives_lse=logits.negatives_lse
    )
    assert loss.dtype == torch.float64
    assert criterion.last["halp"] == pytest.approx(term.loss.item(), rel=1e-12)
    # Both views are queries of the HaLP term (each anchored on the other, detached).
    q_grad, k_grad = torch.autograd.grad(term.loss, (q, k))
    assert q_grad.abs().sum() > 0 and k_grad.abs().sum() > 0
    assert torch.isfinite(q_grad).all() and torch.isfinite(k_grad).all()


def test_halp_infonce_with_the_bank_and_under_autocast() -> None:
    q, k, negatives, _ = moco_problem()
    criterion = HaLPInfoNCE(num_prototypes=4, prototype_window=32, prototype_every=1, estimator="expected")
    while not criterion.bank.ready:
        criterion(q, k, negatives)
    criterion.eval()  # freeze the bank
    plain = criterion(q, k, negatives)
    assert criterion.last["halp"] != 0 and 0 < criterion.last["kept_fraction"] <= 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = criterion(q, k, negatives)
    assert mixed.dtype == torch.float32 and mixed.item() == pytest.approx(plain.item(), rel=1e-6)


def test_estimator_and_argument_validation() -> None:
    with pytest.raises(ValueError, match=r"estimator must be one of \('sampled', 'expected'\), got 'exact'"):
        HaLPInfoNCE(estimator="exact")
    with pytest.raises(ValueError, match="num_nodes must be an integer >= 1, got 0"):
        HaLPInfoNCE(estimator="expected", num_nodes=0)
    query, anchors, protos, lse = problem(3, 4, 5, seed=12)
    nan_row = query.clone().index_fill_(0, torch.tensor([1]), float("nan"))
    cases = [
        (dict(objective="contrastive"), r"objective must be one of \('align', 'infonce'\), got 'contrastive'"),
        (dict(objective="infonce"), "needs negatives_lse"),
        (dict(num_nodes=0), "num_nodes must be an integer >= 1"),
        (dict(lam=1.5), r"lam must be a float in \[0, 1\]"),
        (dict(lam=torch.full((1, 4), 0.5)), r"lam of shape \(1, 4\) must broadcast to \(3, 1\), one value per anchor"),
        (dict(num_candidates=5), r"num_candidates must be in \[1, P - 1\]"),
        # Issue 10: each of these used to return a number (0, NaN or a sign-flipped loss) or a raw torch error.
        (dict(query=query.long()), "query must be a floating-point tensor"),
        (dict(query=nan_row), r"query has non-finite values \(first in row 1\)"),
        (dict(anchor=anchors * float("inf")), "anchor has non-finite values"),
        (dict(prototypes=protos.clone().index_fill_(0, torch.tensor([2]), 0.0)), "prototypes has a row of zero"),
        (dict(temperature=0.0), "temperature must be a finite number >= 1e-06, got 0.0"),
        (dict(temperature=-1.0), "temperature must be a finite number >= 1e-06, got -1.0"),
        (dict(temperature=float("inf")), "temperature must be a finite number >= 1e-06, got inf"),
        (dict(query=query[0]), r"query must be 2-D \(rows, dim\), got shape \(4,\)"),
        (dict(prototypes=protos[:, :2]), "prototypes must have 4 columns"),
        (dict(anchor=anchors[:2]), r"anchor must have the shape of query \(3, 4\), got \(2, 4\)"),
        (dict(query=query[:0], anchor=anchors[:0]), "query must have at least one row"),
        (dict(objective="infonce", negatives_lse=lse[:2]), r"negatives_lse must have shape \(3,\)"),
        (dict(objective="infonce", negatives_lse=lse.clone().fill_(float("nan"))), "negatives_lse has NaN"),
        (dict(prototypes=protos.to("meta")), "prototypes is on meta but query is on cpu"),
    ]
    for kwargs, message in cases:
        arguments = dict(query=query, anchor=anchors, prototypes=protos)
        arguments.update(kwargs)
        with pytest.raises(ValueError, match=message):
            expected_halp_term(**arguments)


def test_rows_without_negatives_are_allowed() -> None:
    # -inf is the log-sum-exp of no negatives: each kept positive then scores log(1) = 0.
    query, anchors, protos, lse = problem(3, 4, 5, seed=13)
    term = expected_halp_term(query, anchors, protos, objective="infonce", negatives_lse=torch.full_like(lse, -np.inf))
    assert term.loss.item() == 0.0 and 0 < term.kept_fraction.item() <= 1

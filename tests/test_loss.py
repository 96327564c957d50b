"""HaLPInfoNCE and the functional losses against explicit float64 references."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from reference import gen, moco_cross_entropy, randn, sphere

from halp_loss import HaLPInfoNCE, hallucinate_positives
from halp_loss.functional import info_nce, nt_xent, sampled_halp_term

T = 0.07


def reference_moco(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    return moco_cross_entropy(q, k, negatives, T)


def reference_simclr(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    b = len(z1)
    logits = (z @ z.T / T).masked_fill(torch.eye(2 * b, dtype=torch.bool), float("-inf"))
    labels = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(logits, labels)


def reference_halp(
    q: torch.Tensor, anchors: torch.Tensor, protos: torch.Tensor, objective: str, negatives_per_row: list, seed: int
) -> torch.Tensor:
    """HaLP term from explicitly materialized positives (the released code's formulation)."""
    q = F.normalize(q, dim=1)
    out = hallucinate_positives(anchors.detach(), protos, lam=0.8, num_positives=100, generator=gen(seed))
    sims = torch.einsum("bd,bmd->bm", q, out.positives.to(q.dtype)) / T
    if objective == "align":
        per = -sims
    else:
        per = torch.stack(
            [
                torch.logsumexp(torch.cat([sims[i][:, None], (q[i] @ negs.T / T).expand(sims.shape[1], -1)], 1), 1)
                - sims[i]
                for i, negs in enumerate(negatives_per_row)
            ]
        )
    keep = out.keep.to(q.dtype)
    return (keep * per).sum() / keep.sum()


def test_info_nce_matches_cross_entropy() -> None:
    q, k, negs = randn(8, 16, seed=0), randn(8, 16, seed=1), sphere(300, 16, 2)
    assert torch.allclose(info_nce(q, k, negs, T), reference_moco(q, k, negs), atol=1e-10)


def test_nt_xent_matches_cross_entropy() -> None:
    z1, z2 = randn(6, 16, seed=3), randn(6, 16, seed=4)
    assert torch.allclose(nt_xent(z1, z2, T), reference_simclr(z1, z2), atol=1e-10)


@pytest.mark.parametrize("objective", ["align", "infonce"])
def test_fused_moco_term_equals_explicit_positives(objective: str) -> None:
    q, k, negs, protos = randn(16, 32, seed=5), randn(16, 32, seed=6), sphere(500, 32, 7), sphere(20, 32, 8)
    criterion = HaLPInfoNCE(halp_weight=2.0, objective=objective, generator=gen(11))
    loss = criterion(q, k, negs, prototypes=protos)
    expected = reference_halp(q, F.normalize(k, dim=1), protos, objective, [negs] * 16, seed=11)
    assert torch.allclose(loss, reference_moco(q, k, negs) + 2.0 * expected, atol=1e-5)
    assert criterion.last["halp"] == pytest.approx(expected.item(), abs=1e-5)


@pytest.mark.parametrize("objective", ["align", "infonce"])
def test_queue_moco_term_scores_against_the_queue(objective: str) -> None:
    # The built-in queue's keys are the negatives of both InfoNCE and the "infonce" HaLP term.
    earlier, protos = randn(40, 32, seed=30), sphere(20, 32, 8)
    criterion = HaLPInfoNCE(halp_weight=2.0, objective=objective, generator=gen(11), memory_bank_size=32)
    criterion.queue.enqueue(earlier)  # as earlier calls would have: normalized, the newest 32 stay
    q, k = randn(16, 32, seed=5), randn(16, 32, seed=6)
    loss = criterion(q, k, prototypes=protos)
    negs = F.normalize(earlier[-32:], dim=1)
    expected = reference_halp(q, F.normalize(k, dim=1), protos, objective, [negs] * 16, seed=11)
    assert torch.allclose(loss, reference_moco(q, k, negs) + 2.0 * expected, atol=1e-5)


@pytest.mark.parametrize("objective", ["align", "infonce"])
def test_fused_simclr_term_equals_explicit_positives(objective: str) -> None:
    z1, z2, protos = randn(8, 32, seed=9), randn(8, 32, seed=10), sphere(6, 32, 11)
    criterion = HaLPInfoNCE(halp_weight=1.0, objective=objective, generator=gen(3))
    loss = criterion(z1, z2, prototypes=protos)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    # Row i's negatives: every other embedding except itself and its partner.
    negatives = [z[[j for j in range(16) if j not in (i, (i + 8) % 16)]] for i in range(16)]
    anchors = torch.cat([z[8:], z[:8]])
    expected = reference_halp(torch.cat([z1, z2]), anchors, protos, objective, negatives, seed=3)
    assert torch.allclose(loss, reference_simclr(z1, z2) + expected, atol=1e-5)


def test_fused_float32_matches_float64_reference() -> None:
    q, k, protos = randn(64, 128, seed=12), randn(64, 128, seed=13), sphere(20, 128, 14)
    fused = sampled_halp_term(
        F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1), protos.float(), generator=gen(5)
    )
    # Same draws: the reference hallucinates from the float32 inputs, then scores in float64.
    expected = reference_halp(q, F.normalize(k.float(), dim=1), protos.float(), "align", [], seed=5)
    assert fused.loss.dtype == torch.float32
    assert fused.loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_negatives_are_normalized_inside() -> None:
    # Issue 11: negatives scaled by 3 gave 48.8 instead of 7.03; each row now counts by its direction alone.
    q, k, negs = randn(8, 16, seed=0), randn(8, 16, seed=1), sphere(300, 16, 2)
    scales = torch.tensor([3.0, 0.5, 1e30, 1e-30, 2.0**70])[torch.arange(300) % 5, None]
    expected = reference_moco(q, k, negs)
    criterion = HaLPInfoNCE(halp_weight=0.0)
    for scaled in (3 * negs, scales * negs):
        assert torch.allclose(criterion(q, k, scaled), expected, atol=1e-12)
        assert torch.allclose(info_nce(q, k, scaled, T), expected, atol=1e-12)
    unscaled = info_nce(q.float(), k.float(), negs.float(), T)
    assert info_nce(q.float(), k.float(), (scales * negs).float(), T).item() == pytest.approx(unscaled.item(), abs=1e-5)


def test_a_call_that_looks_like_a_moco_port_warns_once() -> None:
    # SimCLR mode with a query that has a gradient and a key that has none: a MoCo loop that lost its queue.
    q, k = randn(8, 16, seed=0).requires_grad_(), randn(8, 16, seed=1)
    criterion = HaLPInfoNCE()
    with pytest.warns(UserWarning, match=r"14 in-batch negatives per row\. For MoCo.*memory_bank_size=K") as caught:
        criterion(q, k)
        criterion(q, k)
    assert len(caught) == 1 and caught[0].filename == __file__  # points at the criterion's caller


@pytest.mark.parametrize(
    "case", ["simclr", "no_grad", "eval", "declared_in_batch", "explicit_negatives", "built_in_queue"]
)
def test_no_moco_port_warning_for_evaluation_simclr_or_declared_intent(case: str) -> None:
    q, k = randn(8, 16, seed=0).requires_grad_(), randn(8, 16, seed=1)
    criterion = HaLPInfoNCE(memory_bank_size={"declared_in_batch": 0, "built_in_queue": 16}.get(case))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if case == "simclr":  # both views carry gradient
            criterion(q, k.requires_grad_())
        elif case == "no_grad":  # an evaluation call; q is a leaf, so it still reports requires_grad
            with torch.no_grad():
                criterion(q, k)
        elif case == "eval":
            criterion.eval()(q, k)
        elif case == "explicit_negatives":
            criterion(q, k, sphere(32, 16, 2))
        else:
            criterion(q, k)


def test_plain_infonce_until_bank_ready_and_when_weight_zero() -> None:
    negs = sphere(1000, 16, 15).float()
    criterion = HaLPInfoNCE(prototype_window=64, num_prototypes=4)
    plain = HaLPInfoNCE(halp_weight=0.0, prototype_window=64, num_prototypes=4)
    for step in range(3):
        q, k = randn(32, 16, seed=step, dtype=torch.float32), randn(32, 16, seed=50 + step, dtype=torch.float32)
        loss, plain_loss = criterion(q, k, negs).item(), plain(q, k, negs).item()
        if step < 2:  # 64 keys fill the window at the end of step 1
            assert loss == plain_loss == info_nce(q, k, negs, T).item()
            assert criterion.last["halp"] == 0.0 and criterion.last["kept_fraction"] == 0.0
            assert not criterion.active
        else:
            assert loss != plain_loss and criterion.active
    assert criterion.bank.ready and 0.5 < criterion.last["kept_fraction"] <= 1.0
    assert plain.bank.num_seen == 0 and not plain.bank.ready and not plain.active


@pytest.mark.parametrize("estimator", ["sampled", "expected"])
def test_backward_after_a_call_that_refits(estimator: str) -> None:
    # The call uses the bank's prototypes, then refits them in place: backward must still see the ones it used.
    criterion = HaLPInfoNCE(num_prototypes=4, prototype_window=32, prototype_every=1, estimator=estimator)
    negs = sphere(64, 16, 10).float()
    for step in range(4):
        q = randn(16, 16, seed=step, dtype=torch.float32).requires_grad_()
        criterion(q, randn(16, 16, seed=50 + step, dtype=torch.float32), negs).backward()
        assert torch.isfinite(q.grad).all()
    assert criterion.active and criterion.bank.num_fits == 3


def test_eval_mode_uses_but_does_not_feed_the_bank() -> None:
    criterion = HaLPInfoNCE(prototype_window=32, num_prototypes=4)
    negs = sphere(100, 8, 16).float()
    criterion(randn(32, 8, seed=1, dtype=torch.float32), randn(32, 8, seed=2, dtype=torch.float32), negs)
    criterion.eval()
    seen = criterion.bank.num_seen
    criterion(randn(32, 8, seed=3, dtype=torch.float32), randn(32, 8, seed=4, dtype=torch.float32), negs)
    assert criterion.bank.num_seen == seen and criterion.last["halp"] != 0.0


def test_gradient_reaches_only_the_query_in_moco_mode() -> None:
    q = randn(8, 16, seed=17).requires_grad_()
    k = randn(8, 16, seed=18).requires_grad_()
    negs = sphere(64, 16, 19).requires_grad_()
    protos = sphere(5, 16, 20).requires_grad_()
    HaLPInfoNCE(objective="infonce")(q, k, negs, prototypes=protos).backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    assert k.grad is None and negs.grad is None and protos.grad is None


def test_simclr_halp_gradient_flows_into_both_views_as_queries() -> None:
    z1, z2, protos = randn(6, 16, seed=21), randn(6, 16, seed=22), sphere(5, 16, 23)
    grads = []
    for weight in (0.0, 1.0):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        HaLPInfoNCE(halp_weight=weight, generator=gen(7))(a, b, prototypes=protos).backward()
        grads.append((a.grad, b.grad))
    # The HaLP gradient alone, against the explicit formulation with detached anchors.
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    za, zb = F.normalize(a, dim=1), F.normalize(b, dim=1)
    reference_halp(torch.cat([a, b]), torch.cat([zb, za]).detach(), protos, "align", [], seed=7).backward()
    assert torch.allclose(grads[1][0] - grads[0][0], a.grad, atol=1e-8)
    assert torch.allclose(grads[1][1] - grads[0][1], b.grad, atol=1e-8)
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_autocast_bf16_keeps_float32_logits() -> None:
    torch.manual_seed(0)
    encoder = torch.nn.Linear(32, 16)
    x, kx = torch.randn(64, 32), torch.randn(64, 32)
    negs = sphere(4096, 16, 24).float()
    protos = sphere(20, 16, 25).float()
    exact = HaLPInfoNCE(generator=gen(1))(encoder(x), encoder(kx).detach(), negs, prototypes=protos)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, k = encoder(x), encoder(kx).detach()
        assert q.dtype == torch.bfloat16
        loss = HaLPInfoNCE(generator=gen(1))(q, k, negs.bfloat16(), prototypes=protos)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(exact.item(), rel=0.05)
    loss.backward()
    assert torch.isfinite(encoder.weight.grad).all()


def test_float64_stays_float64() -> None:
    criterion = HaLPInfoNCE()
    loss = criterion(randn(4, 8, seed=1), randn(4, 8, seed=2), sphere(16, 8, 3), prototypes=sphere(3, 8, 4))
    assert loss.dtype == torch.float64


def test_degenerate_inputs_give_finite_loss_and_gradient() -> None:
    protos = sphere(4, 8, 26)
    q = torch.cat([torch.zeros(1, 8), protos[:2], -protos[:1]]).requires_grad_()
    k = torch.cat([protos[:1], protos[:1], -protos[:1], protos[1:2]])
    loss = HaLPInfoNCE(lam=0.0, objective="infonce")(q, k, protos.repeat(4, 1), prototypes=torch.cat([protos, protos]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(q.grad).all()


def test_last_holds_floats() -> None:
    criterion = HaLPInfoNCE()
    criterion(randn(4, 8, seed=1), randn(4, 8, seed=2), sphere(16, 8, 3), prototypes=sphere(3, 8, 4))
    assert set(criterion.last) == {"loss", "infonce", "halp", "kept_fraction", "mean_t"}
    assert all(isinstance(v, float) for v in criterion.last.values())
    assert criterion.last["loss"] == pytest.approx(criterion.last["infonce"] + 2.0 * criterion.last["halp"])


def test_state_dict_round_trip_resumes_identically() -> None:
    def run(criterion: HaLPInfoNCE, steps: range) -> list[float]:
        losses = []
        for step in steps:
            q, k = randn(32, 16, seed=step, dtype=torch.float32), randn(32, 16, seed=99 + step, dtype=torch.float32)
            losses.append(criterion(q, k, negs).item())
        return losses

    negs = sphere(200, 16, 27).float()
    make = lambda: HaLPInfoNCE(prototype_window=64, prototype_every=3, num_prototypes=6, generator=gen(0))  # noqa: E731
    full = make()
    expected = run(full, range(12))
    first = make()
    run(first, range(5))
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    resumed.generator.set_state(first.generator.get_state())
    assert run(resumed, range(5, 12)) == expected[5:]
    assert torch.equal(resumed.bank.prototypes, full.bank.prototypes)


def test_input_errors() -> None:
    criterion = HaLPInfoNCE()
    q, k = randn(4, 8, seed=1), randn(4, 8, seed=2)
    queue = sphere(16, 8, 3).T  # a MoCo (D, K) buffer
    with pytest.raises(ValueError, match=r"looks like a MoCo \(D, K\) queue buffer.*queue\.T"):
        criterion(q, k, queue)
    with pytest.raises(ValueError, match="key must have the shape of query"):
        criterion(q, k[:3], queue.T)
    with pytest.raises(ValueError, match="query must be 2-D"):
        criterion(q[0], k, queue.T)
    with pytest.raises(ValueError, match="negatives must have 8 columns"):
        criterion(q, k, torch.randn(5, 7))
    with pytest.raises(ValueError, match="prototypes must have 8 columns"):
        criterion(q, k, queue.T, prototypes=torch.randn(5, 7))
    with pytest.raises(ValueError, match="at least 2 rows"):
        criterion(q, k, queue.T, prototypes=torch.randn(1, 8))
    # Issue 10: a list of negatives raised AttributeError, an empty batch returned NaN.
    with pytest.raises(ValueError, match="negatives must be a torch.Tensor, got list"):
        criterion(q, k, [queue.T])
    with pytest.raises(ValueError, match=r"query must have at least one row .*got \(0, 8\)"):
        criterion(q[:0], k[:0], queue.T)
    with pytest.raises(ValueError, match="key is on meta but query is on cpu"):
        criterion(q, k.to("meta"), queue.T)
    with pytest.raises(ValueError, match="negatives is on meta but query is on cpu"):
        criterion(q, k, queue.T.to("meta"))
    # Issue 11: gather_distributed was silently ignored with explicit negatives.
    with pytest.raises(ValueError, match="gather_distributed=True has nothing to gather when negatives are given"):
        HaLPInfoNCE(gather_distributed=True)(q, k, queue.T)


def test_functional_input_errors() -> None:
    q, k, negs, protos = randn(4, 8, seed=1), randn(4, 8, seed=2), sphere(16, 8, 3), sphere(5, 8, 4)
    cases = [
        (lambda: info_nce(q, k, negs, temperature=0.0), "temperature must be a finite number >= 1e-06"),
        (lambda: info_nce(q, k, [negs]), "negatives must be a torch.Tensor, got list"),
        (lambda: info_nce(q, k, negs.T), r"looks like a MoCo \(D, K\) queue buffer"),
        (lambda: info_nce(q[:0], k[:0], negs), "query must have at least one row"),
        (lambda: info_nce(q, k.long(), negs), "key must be a floating-point tensor"),
        (lambda: nt_xent(q, k, temperature=0.0), "temperature must be a finite number >= 1e-06"),
        (lambda: nt_xent(q, k[:3]), r"view2 must have the shape of view1 \(4, 8\), got \(3, 8\)"),
        (lambda: nt_xent(q[:0], k[:0]), "view1 must have at least one row"),
        (lambda: sampled_halp_term(q, k, protos, lam=2.0), r"lam must be a float in \[0, 1\]"),
        (lambda: sampled_halp_term(q, k, protos, num_positives=0), "num_positives must be an integer >= 1"),
        (lambda: sampled_halp_term(q, k, protos, temperature=-1.0), "temperature must be a finite number >= 1e-06"),
        (lambda: sampled_halp_term(q * float("nan"), k, protos), "query has non-finite values"),
        (lambda: sampled_halp_term(q, k, protos[:, :3]), "prototypes must have 8 columns"),
        (lambda: sampled_halp_term(q, k, protos, objective="infonce"), "needs negatives_lse"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_functional_losses_promote_mixed_dtypes_and_ignore_autocast() -> None:
    q, k, negs = randn(8, 16, seed=0).float(), randn(8, 16, seed=1).float(), sphere(300, 16, 2)
    mixed = info_nce(q, k, negs)  # float32 embeddings, float64 negatives
    assert mixed.dtype == torch.float64
    assert torch.allclose(mixed, reference_moco(q.double(), k.double(), negs), atol=1e-10)
    assert nt_xent(q, k.double()).dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = info_nce(q.bfloat16(), k, negs.float())
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(info_nce(q.bfloat16().float(), k, negs.float()).item(), rel=1e-6)


def test_extreme_magnitudes_give_the_unit_scale_loss() -> None:
    # Issue 10: embeddings of 1e20 overflowed the float32 norm and became zero vectors.
    q, k = randn(8, 16, seed=5, dtype=torch.float32), randn(8, 16, seed=6, dtype=torch.float32)
    negs, protos = sphere(64, 16, 7, torch.float32), sphere(5, 16, 8, torch.float32)
    plain = HaLPInfoNCE(generator=gen(0))(q, k, negs, prototypes=protos)
    for scale in (2.0**67, 2.0**-110):
        q_scaled = (q * scale).requires_grad_()
        loss = HaLPInfoNCE(generator=gen(0))(q_scaled, k * scale, negs, prototypes=protos * scale)
        assert loss.item() == plain.item()
        loss.backward()
        assert torch.isfinite(q_scaled.grad).all() and q_scaled.grad.abs().sum() > 0


def test_a_non_finite_key_does_not_poison_later_steps() -> None:
    # Issue 10: one NaN key at step 5 made every loss NaN once the bank refitted on it.
    criterion = HaLPInfoNCE(num_prototypes=4, prototype_window=32, prototype_every=5)
    negs = sphere(64, 16, 9).float()
    with pytest.warns(RuntimeWarning, match="1 of the 32 keys in the window are not finite or are zero") as caught:
        for step in range(20):
            q, k = randn(8, 16, seed=step, dtype=torch.float32), randn(8, 16, seed=100 + step, dtype=torch.float32)
            if step == 5:
                k[3] = float("nan")
            loss = criterion(q, k, negs)
            assert torch.isfinite(loss) == (step != 5)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1  # once, not every refit
    assert criterion.active and criterion.bank.num_fits == 4 and criterion.bank.num_skipped == 1
    assert torch.isfinite(criterion.bank.prototypes).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0.0), "temperature must be a finite number >= 1e-06, got 0.0"),
        (dict(temperature=1e-300), "temperature must be a finite number >= 1e-06, got 1e-300"),
        (dict(temperature=float("inf")), "temperature must be a finite number >= 1e-06, got inf"),
        (dict(temperature=float("nan")), "temperature must be a finite number >= 1e-06, got nan"),
        (dict(temperature="0.1"), "temperature must be a finite number >= 1e-06, got '0.1'"),
        (dict(halp_weight=-1.0), "halp_weight must be a finite number >= 0"),
        (dict(halp_weight=float("inf")), "halp_weight must be a finite number >= 0, got inf"),
        (dict(seed="a"), "seed must be an integer >= 0, got 'a'"),
        (dict(seed=-1), "seed must be an integer >= 0, got -1"),
        (dict(generator=0), "generator must be a torch.Generator or None, got int"),
        (dict(objective="mse"), "objective must be one of"),
        (dict(lam=2.0), r"lam must be a float in \[0, 1\]"),
        (dict(num_positives=0), "num_positives"),
        (dict(num_candidates=20), "num_candidates"),
        (dict(prototype_window=10), "window"),
        (dict(kmeans_tol=-1.0), "tol"),
    ],
)
def test_hyperparameter_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HaLPInfoNCE(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_prototypes": 1}, "num_prototypes must be an integer >= 2"),
        ({"num_prototypes": 20, "prototype_window": 4}, r"prototype_window \(4\) must hold at least num_prototypes"),
        ({"prototype_window": 0}, "prototype_window"),
    ],
)
def test_prototype_settings_are_refused_under_the_criterions_own_names(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HaLPInfoNCE(**kwargs)

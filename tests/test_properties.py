"""Property-based tests (hypothesis) of the core geometry and losses over shapes, dtypes, magnitudes and degenerate
configurations: every call either raises ``ValueError``, exactly when the test's own validity oracle says the input
is invalid, or returns finite outputs of the documented shapes, unit-norm where promised."""

from __future__ import annotations

import math
from typing import Optional

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halp_loss import (
    HaLPInfoNCE,
    PrototypeBank,
    exit_times,
    expected_halp_term,
    hallucinate_positives,
    spherical_kmeans,
)
from halp_loss.functional import info_nce, nt_xent, sampled_halp_term
from halp_loss.geometry import detached_unit_rows, unit_rows

# Modest example counts and no deadline: the suite runs on a shared 2-core machine.
PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Decimal exponents of row magnitudes that each dtype holds without overflow (float16 tops out at 65504).
EXPONENTS = {torch.float16: (-4, 4), torch.bfloat16: (-30, 30), torch.float32: (-30, 30), torch.float64: (-150, 150)}
DEGENERACIES = ("none", "anchor_is_prototype", "duplicate_prototypes", "antipodal_target", "all_prototypes_equal")


def rows(count: int, dim: int, seed: int, dtype: torch.dtype, exponent: float) -> torch.Tensor:
    """Seeded random rows with magnitudes around 10**exponent, drawn in float64 and rounded to ``dtype``."""
    x = torch.randn(count, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (x * 10.0**exponent).to(dtype)


@st.composite
def geometry(draw: st.DrawFn, min_batch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(anchors, prototypes) of any float dtype and magnitude, often degenerate; rounding to the dtype may make
    rows infinite or zero, which the functions under test must refuse."""
    dtype = draw(st.sampled_from(DTYPES))
    low, high = EXPONENTS[dtype]
    batch, dim, count = draw(st.integers(min_batch, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    anchors = rows(batch, dim, seed, torch.float64, 0.0)
    protos = rows(count, dim, seed + 1, torch.float64, 0.0)
    case = draw(st.sampled_from(DEGENERACIES))
    if case == "anchor_is_prototype" and batch:
        anchors[0] = protos[0]
    elif case == "duplicate_prototypes":
        protos = torch.cat([protos, protos[:1]])
    elif case == "antipodal_target" and batch:
        protos[-1] = -anchors[0] * protos[-1].norm() / anchors[0].norm()
    elif case == "all_prototypes_equal":
        protos = protos[:1].repeat(count, 1)
    scale_anchor = 10.0 ** draw(st.floats(low - 8, high))  # below `low`: float16/bfloat16 rows underflow to zero
    scale_protos = 10.0 ** draw(st.floats(low - 8, high))
    return (anchors * scale_anchor).to(dtype), (protos * scale_protos).to(dtype)


def usable(x: torch.Tensor) -> bool:
    """The oracle for values: finite, and no row without a direction."""
    x = x.double()
    return bool(torch.isfinite(x).all()) and bool((x.abs().amax(dim=1) > 0).all()) if x.numel() else True


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def assert_finite_gradient(x: torch.Tensor) -> None:
    """The gradient of a normalized row grows like 1 / |x|: for tiny half-precision rows it legitimately exceeds
    the dtype's range (what loss scaling is for), so it is checked in float32 and float64."""
    if x.dtype in (torch.float32, torch.float64):
        assert torch.isfinite(x.grad).all()


def unit_tolerance(dtype: torch.dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 1e-5


def assert_unit(x: torch.Tensor) -> None:
    assert torch.isfinite(x).all()
    norms = x.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=unit_tolerance(x.dtype))


@PROPERTY
@given(
    geometry(),
    st.one_of(st.floats(-0.5, 1.5), st.just(0.0), st.just(1.0)),
    st.integers(0, 4),
    st.one_of(st.none(), st.integers(-1, 7)),
)
def test_hallucinate_positives(inputs: tuple, lam: float, num_positives: int, num_candidates: Optional[int]) -> None:
    anchors, protos = inputs
    count = protos.shape[0]
    valid = (
        usable(anchors)
        and usable(protos)
        and count >= 2
        and num_positives >= 1
        and 0 <= lam <= 1
        and (num_candidates is None or 1 <= num_candidates <= count - 1)
    )
    generator = torch.Generator().manual_seed(0)
    if not valid:
        with pytest.raises(ValueError):
            hallucinate_positives(anchors, protos, lam, num_positives, num_candidates=num_candidates)
        return
    out = hallucinate_positives(anchors, protos, lam, num_positives, num_candidates=num_candidates, generator=generator)
    batch, dim = anchors.shape
    assert out.positives.shape == (batch, num_positives, dim)
    assert out.positives.dtype == compute_dtype(anchors, protos)
    assert out.keep.shape == out.target.shape == out.t.shape == out.t_max.shape == (batch, num_positives)
    assert out.nearest.shape == (batch,) and out.keep.dtype == torch.bool
    assert_unit(out.positives)
    assert ((out.t_max >= 0) & (out.t_max <= 1)).all() and ((out.t >= 0) & (out.t <= out.t_max)).all()
    assert ((out.target >= 0) & (out.target < count) & (out.target != out.nearest[:, None])).all()


@PROPERTY
@given(geometry(), st.one_of(st.none(), st.integers(1, 5)))
def test_exit_times(inputs: tuple, num_candidates: Optional[int]) -> None:
    anchors, protos = inputs
    count = protos.shape[0]
    valid = usable(anchors) and usable(protos) and count >= 2 and (num_candidates or 1) <= count - 1
    if not valid:
        with pytest.raises(ValueError):
            exit_times(anchors, protos, num_candidates=num_candidates)
        return
    out = exit_times(anchors, protos, num_candidates=num_candidates)
    shape = (anchors.shape[0], num_candidates or count - 1)
    assert out.t_exit.shape == out.t_max.shape == out.target.shape == out.exit_prototype.shape == shape
    assert torch.isfinite(out.t_exit).all() and (out.t_exit >= 0).all() and (out.t_exit <= out.t_max).all()
    assert (out.t_max <= 1).all() and ((out.exit_prototype >= 0) & (out.exit_prototype < count)).all()


@PROPERTY
@given(
    geometry(min_batch=1),
    st.sampled_from(["sampled", "expected"]),
    st.sampled_from(["align", "infonce"]),
    st.one_of(st.floats(-1.0, 1.0), st.sampled_from([0.07, 1e-6, 1e3])),
    st.floats(0.0, 1.0),
)
def test_halp_terms(inputs: tuple, estimator: str, objective: str, temperature: float, lam: float) -> None:
    anchors, protos = inputs
    # The documented precondition: unit-norm queries (they receive the gradient), here near their anchors.
    query = F.normalize(anchors.double().nan_to_num(0.0) + rows(*anchors.shape, 7, torch.float64, 0.0), dim=1)
    query = query.to(anchors.dtype).requires_grad_()
    lse = (query.detach().double() @ protos.double().nan_to_num(0.0).T).amax(dim=1).clamp(-50, 50).to(anchors.dtype)
    valid = usable(anchors) and usable(protos) and protos.shape[0] >= 2 and temperature >= 1e-6
    kwargs = dict(lam=lam, objective=objective, temperature=temperature, negatives_lse=lse)
    term = expected_halp_term if estimator == "expected" else sampled_halp_term
    if estimator == "sampled":
        kwargs.update(num_positives=20, generator=torch.Generator().manual_seed(0))
    if not valid:
        with pytest.raises(ValueError):
            term(query, anchors, protos, **kwargs)
        return
    out = term(query, anchors, protos, **kwargs)
    assert out.loss.dtype == compute_dtype(query, anchors) and out.loss.shape == ()
    assert all(torch.isfinite(value) for value in out)
    assert 0 <= out.kept_fraction <= 1 and 0 <= out.mean_t <= 1
    out.loss.backward()
    assert_finite_gradient(query)


@st.composite
def embeddings(draw: st.DrawFn, min_batch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(query, key) of one shape, any float dtype, finite magnitudes, sometimes with zero or identical rows."""
    dtype = draw(st.sampled_from(DTYPES))
    low, high = EXPONENTS[dtype]
    batch, dim, seed = draw(st.integers(min_batch, 5)), draw(st.integers(1, 6)), draw(st.integers(0, 2**16))
    query = rows(batch, dim, seed, dtype, draw(st.floats(low, high)))
    key = rows(batch, dim, seed + 1, dtype, draw(st.floats(low, high)))
    if batch and draw(st.booleans()):
        query[0] = 0.0
    if batch and draw(st.booleans()):
        key[-1] = query[-1]
    return query, key


@PROPERTY
@given(embeddings(), st.integers(0, 6), st.sampled_from(DTYPES), st.floats(1e-3, 10.0), st.booleans())
def test_info_nce_and_nt_xent(
    pair: tuple, num_negatives: int, negatives_dtype: torch.dtype, temperature: float, simclr: bool
) -> None:
    query, key = pair
    query.requires_grad_()
    negatives = F.normalize(rows(num_negatives, query.shape[1], 3, torch.float64, 0.0), dim=1).to(negatives_dtype)
    if simclr:
        call = lambda: nt_xent(query, key, temperature)  # noqa: E731
    else:
        call = lambda: info_nce(query, key, negatives, temperature)  # noqa: E731
    if query.shape[0] == 0:
        with pytest.raises(ValueError, match="at least one row"):
            call()
        return
    loss = call()
    assert loss.shape == () and loss.dtype == compute_dtype(query, key, *([] if simclr else [negatives]))
    assert torch.isfinite(loss) and loss >= 0
    loss.backward()
    assert_finite_gradient(query)


@pytest.mark.filterwarnings("ignore:PrototypeBank:RuntimeWarning", "ignore:PrototypeBank. one call appended:UserWarning")
@PROPERTY
@given(
    embeddings(min_batch=1),
    st.booleans(),
    st.sampled_from(["sampled", "expected"]),
    st.sampled_from(["align", "infonce"]),
    st.integers(2, 5),
    st.floats(0.0, 1.0),
    st.sampled_from(DEGENERACIES),
)
def test_halp_infonce_is_finite(
    pair: tuple, simclr: bool, estimator: str, objective: str, num_prototypes: int, lam: float, case: str
) -> None:
    query, key = pair
    dim = query.shape[1]
    criterion = HaLPInfoNCE(
        num_prototypes=num_prototypes,
        prototype_window=num_prototypes + 2,
        prototype_every=1,
        lam=lam,
        objective=objective,
        estimator=estimator,
        num_positives=8,
        generator=torch.Generator().manual_seed(0),
        memory_bank_size=0,  # SimCLR with a key without gradient is intended here
    )
    negatives = None if simclr else F.normalize(rows(7, dim, 4, torch.float64, 0.0), dim=1).to(query.dtype)
    for _ in range(3):  # the bank fits on these keys (degenerate ones included) and HaLP switches on
        q = query.clone().requires_grad_()
        loss = criterion(q, key, negatives)
        assert loss.shape == () and torch.isfinite(loss)
        loss.backward()
        assert_finite_gradient(q)
    if criterion.bank.ready:
        assert_unit(criterion.bank.prototypes)
    # Given prototypes, however degenerate, work too.
    protos = rows(num_prototypes, dim, 5, torch.float64, 0.0)
    if case in ("duplicate_prototypes", "all_prototypes_equal"):
        protos[1:] = protos[0]
    elif case in ("anchor_is_prototype", "antipodal_target"):
        protos[0] = key[0].double() if case == "anchor_is_prototype" else -key[0].double()
    if usable(protos):
        assert torch.isfinite(criterion(query.clone(), key, negatives, prototypes=protos.to(query.dtype)))


@PROPERTY
@given(
    st.sampled_from(DTYPES),
    st.integers(0, 10),
    st.integers(1, 5),
    st.integers(0, 5),
    st.floats(-45, 45),
    st.integers(0, 2**16),
    st.booleans(),
)
def test_spherical_kmeans(
    dtype: torch.dtype, count: int, dim: int, clusters: int, exponent: float, seed: int, duplicates: bool
) -> None:
    x = rows(count, dim, seed, torch.float64, 0.0)
    if duplicates and count:
        x = x[:1].repeat(count, 1)
    x = (x * 10.0**exponent).to(dtype)
    valid = usable(x) and 1 <= clusters <= count
    generator = torch.Generator().manual_seed(0)
    if not valid:
        with pytest.raises(ValueError):
            spherical_kmeans(x, clusters, generator=generator)
        return
    result = spherical_kmeans(x, clusters, generator=generator)
    assert result.centroids.shape == (clusters, dim) and result.assignments.shape == (count,)
    assert_unit(result.centroids)
    assert ((result.assignments >= 0) & (result.assignments < clusters)).all()


@pytest.mark.filterwarnings("ignore:PrototypeBank:RuntimeWarning", "ignore:PrototypeBank. one call appended:UserWarning")
@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from(["ok", "nan", "inf", "zero", "huge", "tiny"])),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_bank_prototypes_stay_finite_and_unit(batches: list, dtype: torch.dtype) -> None:
    bank = PrototypeBank(num_prototypes=3, window=8, every=2)
    skipped = 0
    for index, (size, kind) in enumerate(batches):
        keys = rows(size, 4, index, dtype, 0.0)
        if size and kind in ("nan", "inf", "zero"):
            keys[0] = {"nan": math.nan, "inf": math.inf, "zero": 0.0}[kind]
            skipped += 1
        elif kind in ("huge", "tiny"):
            keys = keys * (1e30 if kind == "huge" else 1e-30)
        bank.update(keys)
    assert bank.num_skipped == skipped and bank.num_seen == sum(size for size, _ in batches)
    if bank.ready:
        assert_unit(bank.prototypes)
    assert torch.isfinite(bank.recent_keys()).all()


@PROPERTY
@given(st.sampled_from([torch.float32, torch.float64]), st.integers(1, 8), st.floats(-44, 38), st.integers(0, 2**16))
def test_unit_rows_at_any_magnitude(dtype: torch.dtype, dim: int, exponent: float, seed: int) -> None:
    x = rows(3, dim, seed, torch.float64, 0.0) * 10.0**exponent
    x[1] = 0.0
    x = x.to(dtype)
    out = unit_rows(x)
    # The detached version (MoCo negatives, column-major as queue.T here) agrees to rounding.
    detached = detached_unit_rows(x.T.contiguous().T)
    assert torch.equal(detached[1], out[1]) and torch.allclose(detached, out, rtol=0, atol=4 * torch.finfo(dtype).eps)
    assert torch.equal(out[1], torch.zeros(dim, dtype=dtype))
    live = x.abs().amax(dim=1) > 0
    assert_unit(out[live])
    if -10 <= exponent <= 10:  # where F.normalize neither overflows nor underflows, the same bits
        assert torch.equal(out, F.normalize(x, dim=1))

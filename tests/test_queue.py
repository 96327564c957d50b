"""The built-in MoCo queue (``HaLPInfoNCE(memory_bank_size=K)``, ``KeyQueue``): the loss against MoCo's InfoNCE over
the last K keys written out in float64, FIFO content after wrap-around, when writes happen, state_dict, eval mode and
errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference import gen, moco_cross_entropy, randn

from halp_loss import HaLPInfoNCE, KeyQueue

T = 0.07
K = 10
DIM = 8
# Batch sizes that fill the queue in part, wrap around mid-batch, and once bring more than K keys.
BATCHES = (4, 4, 3, 12, 4, 5, 4, 3)


def steps(dtype: torch.dtype = torch.float64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Seeded (query, key) batches of sizes ``BATCHES``; keys of norm about 8, which the queue normalizes."""
    return [
        (randn(size, DIM, seed=i, dtype=dtype), 3 * randn(size, DIM, seed=100 + i, dtype=dtype))
        for i, size in enumerate(BATCHES)
    ]


def last_keys(history: list[torch.Tensor], count: int = K) -> torch.Tensor:
    """The ``count`` most recent keys of a list of key batches, normalized in float64, oldest first."""
    if not history:
        return torch.zeros(0, DIM, dtype=torch.float64)
    return F.normalize(torch.cat(history).double(), dim=1)[-count:]


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_loss_and_gradient_are_moco_infonce_over_the_last_K_keys(dtype: torch.dtype, tolerance: float) -> None:
    criterion = HaLPInfoNCE(temperature=T, halp_weight=0.0, memory_bank_size=K)
    history: list[torch.Tensor] = []
    for query, key in steps(dtype):
        q = query.clone().requires_grad_()
        loss = criterion(q, key)
        loss.backward()
        reference_q = query.double().requires_grad_()
        expected = moco_cross_entropy(reference_q, key.double(), last_keys(history), T)
        expected.backward()
        assert loss.dtype == dtype and abs(loss.item() - expected.item()) < tolerance
        assert torch.allclose(q.grad.double(), reference_q.grad, atol=tolerance)
        history.append(key)
    assert criterion.queue.num_seen == sum(BATCHES) and criterion.queue.num_filled == K
    assert torch.allclose(criterion.queue.recent().double(), last_keys(history), atol=tolerance)


def test_first_call_has_no_negatives() -> None:
    # Before any key arrives the loss is InfoNCE over no negatives: exactly 0, with zero gradient.
    q = randn(4, DIM, seed=0).requires_grad_()
    loss = HaLPInfoNCE(halp_weight=0.0, memory_bank_size=K)(q, randn(4, DIM, seed=1))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(q.grad, torch.zeros_like(q))


def test_queue_holds_the_last_K_keys_oldest_first() -> None:
    queue = KeyQueue(K)
    history: list[torch.Tensor] = []
    for i, size in enumerate(BATCHES):
        keys = randn(size, 3, seed=i)
        queue.enqueue(keys)  # normalized on the way in
        history.append(F.normalize(keys, dim=1))
        assert queue.num_seen == sum(map(len, history)) and queue.num_filled == min(queue.num_seen, K)
        assert torch.equal(queue.recent(), torch.cat(history)[-K:])
    # Keys that are not finite are stored as zero rows: negatives of logit 0 rather than NaN losses.
    bad = F.normalize(randn(3, 3, seed=50), dim=1)
    bad[1, 0], bad[2, 2] = float("nan"), float("inf")
    queue.enqueue(bad, normalized=True)
    assert torch.equal(queue.recent()[-3:], torch.cat([bad[:1], torch.zeros(2, 3, dtype=bad.dtype)]))


def test_a_non_finite_key_does_not_poison_later_losses() -> None:
    criterion = HaLPInfoNCE(halp_weight=0.0, memory_bank_size=K)
    for step, (query, key) in enumerate(steps()):
        if step == 2:
            key[0, 0] = float("nan")
        assert torch.isfinite(criterion(query, key)) == (step != 2)


def test_a_training_loop_writes_in_place() -> None:
    # Keys are written when the queue is next read, after backward: no copy of the K x D buffer per step.
    criterion = HaLPInfoNCE(halp_weight=0.0, memory_bank_size=K)
    buffers = set()
    for query, key in steps():
        criterion(query.clone().requires_grad_(), key).backward()
        buffers.add(criterion.queue.keys.data_ptr())
    assert len(buffers) == 1


def test_two_calls_before_one_backward_keep_each_calls_negatives() -> None:
    criterion = HaLPInfoNCE(temperature=T, halp_weight=0.0, memory_bank_size=K)
    (qa, ka), (q1, k1), (q2, k2) = steps()[:3]
    criterion(qa.clone().requires_grad_(), ka).backward()
    q1, q2 = q1.clone().requires_grad_(), q2.clone().requires_grad_()
    loss = criterion(q1, k1) + criterion(q2, k2)  # the second call enqueues k1 while the first still needs ka alone
    state = criterion.state_dict()  # also mid-step: the gradients were computed in the forward pass, so it holds k2
    loss.backward()
    for query, key, seen in ((q1, k1, [ka]), (q2, k2, [ka, k1])):
        reference_q = query.detach().clone().requires_grad_()
        moco_cross_entropy(reference_q, key, last_keys(seen), T).backward()
        assert torch.allclose(query.grad, reference_q.grad, atol=1e-12)
    resumed = HaLPInfoNCE(halp_weight=0.0, memory_bank_size=K)
    resumed.load_state_dict(state)
    assert resumed.queue.num_seen == 11 and torch.allclose(resumed.queue.recent(), last_keys([ka, k1, k2]))


def test_state_dict_round_trip_resumes_identically() -> None:
    def run(criterion: HaLPInfoNCE, indices: range) -> list[float]:
        losses = []
        for i in indices:
            q = randn(6, DIM, seed=i, dtype=torch.float32).requires_grad_()
            loss = criterion(q, randn(6, DIM, seed=50 + i, dtype=torch.float32))
            loss.backward()
            losses.append(loss.item())
        return losses

    def make() -> HaLPInfoNCE:
        return HaLPInfoNCE(
            prototype_window=24, prototype_every=2, num_prototypes=4, memory_bank_size=K, generator=gen(0)
        )

    full = make()
    expected = run(full, range(10))
    first = make()
    run(first, range(5))
    state = first.state_dict()
    assert state["queue.keys"].shape == (K, DIM) and state["queue._extra_state"] == {"num_seen": 30}
    resumed = make()  # the queue's width comes from the checkpoint
    resumed.load_state_dict(state)
    resumed.generator.set_state(first.generator.get_state())
    assert run(resumed, range(5, 10)) == expected[5:]
    assert full.active and torch.equal(resumed.queue.recent(), full.queue.recent())


@pytest.mark.parametrize(
    "built, message",
    [
        (8, r"holds \(10, 8\) keys, but this criterion was built with memory_bank_size K = 8"),
        ((K, 5), "has dim = 8, but this criterion was built with memory_bank_size D = 5"),
    ],
)
def test_state_of_another_size_is_refused(built: object, message: str) -> None:
    source = HaLPInfoNCE(halp_weight=0.0, memory_bank_size=K)
    source(*steps()[0])
    with pytest.raises(ValueError, match=message):
        HaLPInfoNCE(halp_weight=0.0, memory_bank_size=built).load_state_dict(source.state_dict())
    state = source.state_dict()
    state["queue._extra_state"] = {"seen": 4}
    with pytest.raises(ValueError, match="lacks num_seen"):
        HaLPInfoNCE(halp_weight=0.0, memory_bank_size=K).load_state_dict(state)


def test_eval_mode_scores_against_the_queue_without_changing_it() -> None:
    criterion = HaLPInfoNCE(temperature=T, halp_weight=0.0, memory_bank_size=K)
    history = []
    for query, key in steps()[:4]:
        criterion(query, key)
        history.append(key)
    criterion.eval()
    before, seen = criterion.queue.recent(), criterion.queue.num_seen
    for query, key in steps()[4:]:
        assert torch.allclose(criterion(query, key), moco_cross_entropy(query, key, last_keys(history), T), atol=1e-12)
    assert criterion.queue.num_seen == seen and torch.equal(criterion.queue.recent(), before)
    criterion.train()
    criterion(*steps()[4])
    assert criterion.queue.num_seen == seen + BATCHES[4]


def test_declared_size_allocates_and_an_empty_queue_follows_the_first_call() -> None:
    criterion = HaLPInfoNCE(halp_weight=0.0, memory_bank_size=(K, DIM))
    assert criterion.state_dict()["queue.keys"].shape == (K, DIM)  # fixed shapes before training, for DDP
    assert criterion.queue.keys.dtype == torch.float32
    criterion(*steps()[0])  # an empty queue takes the call's dtype (and device), rather than casting every call
    assert criterion.queue.keys.dtype == torch.float64
    fresh = KeyQueue(K, DIM)
    assert fresh.negatives(steps()[0][0].to("meta"), torch.float16).shape == (0, DIM)
    assert fresh.keys.device.type == "meta" and fresh.keys.dtype == torch.float16
    for size in (None, 0, (0, DIM)):
        assert HaLPInfoNCE(memory_bank_size=size).queue is None


@pytest.mark.parametrize("size", [-1, 2.5, "4", True, (4,), (4, 0), (-1, 8), (4, 8, 1), (4.0, 8)])
def test_invalid_memory_bank_size(size: object) -> None:
    with pytest.raises(ValueError, match=r"memory_bank_size must be None, an integer K >= 0 or a pair \(K, D\)"):
        HaLPInfoNCE(memory_bank_size=size)


def test_call_errors() -> None:
    query, key = steps()[0]
    with pytest.raises(ValueError, match="query must have 5 columns"):
        HaLPInfoNCE(memory_bank_size=(K, 5))(query, key)
    criterion = HaLPInfoNCE(halp_weight=0.0, memory_bank_size=K)
    criterion(query, key)
    with pytest.raises(ValueError, match="query must have 8 columns"):
        criterion(query[:, :5], key[:, :5])
    with pytest.raises(ValueError, match=r"negatives were given, but this criterion keeps its own queue .*K = 10"):
        criterion(query, key, F.normalize(randn(6, DIM, seed=3), dim=1))
    with pytest.raises(ValueError, match="query is on meta but the criterion's key queue is on cpu"):
        criterion(query.to("meta"), key.to("meta"))
    with pytest.raises(ValueError, match="keys must have 8 columns"):
        criterion.queue.enqueue(key[:, :5])
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        KeyQueue(0)


def test_a_users_autograd_loss_over_the_queue() -> None:
    # KeyQueue alone: read the negatives, compute a loss with autograd, enqueue the keys before backward (as MoCo's
    # forward does). The keys are written at the next read, so each backward sees the rows its loss read.
    queue, history = KeyQueue(K), []
    for query, key in steps():
        q = query.clone().requires_grad_()
        negatives = queue.negatives(q, torch.float64)
        loss = moco_cross_entropy(q, key, negatives, T)
        queue.enqueue(key)
        loss.backward()
        reference_q = query.clone().requires_grad_()
        moco_cross_entropy(reference_q, key, last_keys(history), T).backward()
        assert torch.allclose(q.grad, reference_q.grad, atol=1e-12)
        history.append(key)
    assert torch.allclose(queue.recent(), last_keys(history), atol=1e-12)


def test_a_second_read_before_backward_is_an_error_not_a_wrong_gradient() -> None:
    # A loss that keeps the queue's rows themselves for backward (the logits q @ negatives.T of unit keys) while the
    # next read writes new keys in place: backward refuses, as autograd does for any tensor modified in place.
    queue = KeyQueue(K)
    (_, k0), (q1, k1) = steps()[:2]
    queue.enqueue(k0)
    q1 = q1.clone().requires_grad_()
    loss = (q1 @ queue.negatives(q1, torch.float64).T).logsumexp(dim=1).mean()
    queue.enqueue(k1)
    queue.negatives(q1, torch.float64)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()

"""Library state under a framework's habits: copies (pickle, deepcopy, torch.save, .to, state_dict), a first call
under torch.inference_mode(), and a window too small for one call's keys."""

from __future__ import annotations

import copy
import io
import pickle
import warnings
from typing import Callable

import pytest
import torch
from reference import randn

from halp_loss import HaLPInfoNCE, KeyQueue, PrototypeBank


def build() -> HaLPInfoNCE:
    # The expected estimator is deterministic: a copy and the original must give the same losses exactly.
    return HaLPInfoNCE(
        num_prototypes=4, prototype_window=32, prototype_every=3, memory_bank_size=16, estimator="expected"
    )


def steps(count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (randn(8, 6, seed=seed + 2 * i, dtype=torch.float32), randn(8, 6, seed=seed + 2 * i + 1, dtype=torch.float32))
        for i in range(count)
    ]


def trained() -> HaLPInfoNCE:
    """A criterion whose queue is full and wrapped and whose bank has fitted."""
    criterion = build()
    for query, key in steps(6, seed=0):
        criterion(query.requires_grad_(), key).backward()
    assert criterion.queue.num_seen > criterion.queue.size and criterion.bank.ready
    return criterion


def losses(criterion: HaLPInfoNCE) -> list[float]:
    out = []
    for query, key in steps(5, seed=100):
        loss = criterion(query.requires_grad_(), key)
        loss.backward()
        out.append(loss.item())
    return out


def through_torch_save(criterion: HaLPInfoNCE) -> HaLPInfoNCE:
    buffer = io.BytesIO()
    torch.save(criterion, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def through_state_dict(criterion: HaLPInfoNCE) -> HaLPInfoNCE:
    fresh = build()
    fresh.load_state_dict(criterion.state_dict())
    return fresh


@pytest.mark.parametrize(
    "clone",
    [
        lambda c: pickle.loads(pickle.dumps(c)),
        copy.deepcopy,
        through_torch_save,
        lambda c: copy.deepcopy(c).to(torch.float64).to(torch.float32),
        through_state_dict,
    ],
    ids=["pickle", "deepcopy", "torch_save", "to", "state_dict"],
)
def test_a_copy_trains_on_as_the_original(clone: Callable[[HaLPInfoNCE], HaLPInfoNCE]) -> None:
    # Issue 19 item 7: after pickle the cached transposed queue no longer shared the queue's storage (off by up to 1).
    original = trained()
    copied = clone(original)
    assert losses(copied) == losses(original)
    assert torch.equal(copied.queue.recent(), original.queue.recent())
    assert torch.equal(copied.bank.recent_keys(), original.bank.recent_keys())


def test_a_first_call_under_inference_mode_does_not_break_training() -> None:
    # Issue 19 item 10: a fresh criterion in eval() under inference_mode (a validation sanity check) allocated its
    # queue as an inference tensor: "Inplace update to inference tensor outside InferenceMode" once training began.
    criterion, reference = build(), build()
    for mode in ("eval", "train"):
        getattr(criterion, mode)()
        with torch.inference_mode():
            criterion(*steps(1, seed=50)[0])
    criterion.train()
    reference(*steps(1, seed=50)[0])  # the train-mode call the other one made under inference mode
    assert losses(criterion) == losses(reference)
    with torch.inference_mode():  # and evaluating again in the middle of training
        criterion.eval()(*steps(1, seed=60)[0])
    query, key = steps(1, seed=70)[0]
    criterion.train()(query.requires_grad_(), key).backward()
    assert torch.isfinite(query.grad).all()


def test_bank_and_queue_first_used_under_inference_mode() -> None:
    bank, queue = PrototypeBank(num_prototypes=4, window=16, every=1), KeyQueue(16)
    with torch.inference_mode():
        bank.update(randn(8, 6, seed=0, dtype=torch.float32))
        queue.negatives(randn(4, 6, seed=1, dtype=torch.float32), torch.float32)
        queue.enqueue(randn(4, 6, seed=2, dtype=torch.float32))
    for i in range(4):
        bank.update(randn(8, 6, seed=10 + i, dtype=torch.float32))
        queue.negatives(randn(4, 6, seed=20 + i, dtype=torch.float32), torch.float32)
        queue.enqueue(randn(4, 6, seed=30 + i, dtype=torch.float32))
    assert bank.ready and not bank.keys.is_inference() and not bank.skipped.is_inference()
    assert queue.num_seen == 20 and not queue.keys.is_inference()
    assert torch.isfinite(bank.recent_keys()).all() and queue.recent().shape == (16, 6)


def test_a_window_smaller_than_one_calls_keys_warns_once() -> None:
    # Issue 19 item 17: SimCLR with B = 256 appends 512 keys per call to the default window of 256, silently.
    criterion = HaLPInfoNCE(num_prototypes=4, prototype_window=12)
    expected = r"appended 16 keys .* the window holds 12, .* \(HaLPInfoNCE: prototype_window\) to at least 16"
    with pytest.warns(UserWarning, match=expected) as caught:
        for seed in range(3):
            view1, view2 = (randn(8, 6, seed=seed + i, dtype=torch.float32).requires_grad_() for i in (0, 10))
            criterion(view1, view2)
    assert len([w for w in caught if "window holds" in str(w.message)]) == 1 and caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        roomy = HaLPInfoNCE(num_prototypes=4, prototype_window=16)
        roomy(randn(8, 6, seed=0).requires_grad_(), randn(8, 6, seed=1).requires_grad_())

"""PrototypeBank: ring buffer, refit schedule, train/eval, and exact resume from state_dict."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from halp_loss import PrototypeBank


def batches(count: int, size: int = 64, dim: int = 16, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, dim, generator=g) for _ in range(count)]


def test_window_holds_most_recent_keys_in_order() -> None:
    bank = PrototypeBank(num_prototypes=4, window=10, every=3)
    data = batches(5, size=4, dim=3)
    for keys in data:
        bank.update(keys)
    assert torch.allclose(bank.recent_keys(), F.normalize(torch.cat(data), dim=1)[-10:])
    bank.update(torch.randn(25, 3))  # more than a window in one call keeps the newest
    assert bank.num_seen == 45 and bank.recent_keys().shape == (10, 3)


def test_refit_schedule_and_ready() -> None:
    bank = PrototypeBank(num_prototypes=8, window=256, every=10)
    fits = [bank.update(keys) for keys in batches(25)]
    assert not any(fits[:3]) and fits[3]  # first fit once 256 keys have been seen
    assert [i for i, fit in enumerate(fits) if fit] == [3, 13, 23]
    assert bank.ready and bank.num_fits == 3
    assert torch.allclose(bank.prototypes.norm(dim=1), torch.ones(8), atol=1e-5)


def test_warmup_delays_first_fit() -> None:
    bank = PrototypeBank(num_prototypes=4, window=64, every=2, warmup=300)
    fits = [bank.update(keys) for keys in batches(6)]
    assert fits == [False] * 4 + [True, False]


def test_eval_mode_freezes_prototypes() -> None:
    bank = PrototypeBank(num_prototypes=4, window=64, every=1)
    bank.eval()
    for keys in batches(3):
        assert not bank.update(keys)
    assert not bank.ready and bank.num_seen == 192


def test_state_dict_resumes_identically() -> None:
    data = batches(40)
    full = PrototypeBank(num_prototypes=8, window=256, every=10)
    history = []
    for keys in data:
        full.update(keys)
        history.append(full.prototypes.clone())

    first = PrototypeBank(num_prototypes=8, window=256, every=10)
    for keys in data[:17]:
        first.update(keys)
    state = first.state_dict()
    resumed = PrototypeBank(num_prototypes=8, window=256, every=10)  # dim unknown until loaded
    resumed.load_state_dict(state)
    assert resumed.ready and resumed.num_seen == 17 * 64 and resumed.calls_since_fit == first.calls_since_fit
    for step, keys in enumerate(data[17:], start=17):
        resumed.update(keys)
        assert torch.equal(resumed.prototypes, history[step])


def test_keys_of_another_dim_rejected_and_arguments_validated() -> None:
    bank = PrototypeBank(num_prototypes=4, window=8, dim=16)
    with pytest.raises(ValueError, match="keys must have 16 columns"):
        bank.update(torch.randn(4, 8))
    with pytest.raises(ValueError, match="window"):
        PrototypeBank(num_prototypes=20, window=10)
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        PrototypeBank(every=0)
    with pytest.raises(ValueError, match="cannot fit"):
        PrototypeBank(num_prototypes=4, window=8).refit()

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
    with pytest.warns(UserWarning, match="appended 25 keys .* the window holds 10"):
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


@pytest.mark.parametrize("warmup, first_fit", [(40, 2), (0, 0), (5, 0)])
def test_a_warmup_below_the_window_fits_on_the_keys_seen_so_far(warmup: int, first_fit: int) -> None:
    # Issue 19 item 9: a warmup below the window was raised to the window without a word.
    bank = PrototypeBank(num_prototypes=4, window=64, every=100, warmup=warmup)
    data = batches(4, size=16, dim=5)
    fits = [bank.update(keys) for keys in data]
    assert fits == [call == first_fit for call in range(4)] and bank.warmup == warmup
    # Those prototypes are the fit (the same k-means seed, fit 0) of the keys seen up to that call.
    seen = F.normalize(torch.cat(data[: first_fit + 1]), dim=1)
    alone = PrototypeBank(num_prototypes=4, window=seen.shape[0], every=1)
    alone.update(seen)
    assert torch.allclose(alone.prototypes, bank.prototypes, atol=1e-6)


def test_a_first_batch_smaller_than_num_prototypes_waits_for_enough_keys() -> None:
    bank = PrototypeBank(num_prototypes=4, window=64, every=100, warmup=0)
    assert [bank.update(keys) for keys in batches(3, size=3, dim=5)] == [False, True, False]
    assert bank.num_fits == 1


def test_eval_mode_freezes_the_bank() -> None:
    # Issue 10: in eval mode update still appended keys and advanced the counters.
    bank = PrototypeBank(num_prototypes=4, window=64, every=1)
    for keys in batches(2):
        bank.update(keys)
    before = {name: tensor.clone() for name, tensor in bank.state_dict().items() if name != "_extra_state"}
    counters = bank.get_extra_state()
    bank.eval()
    for keys in batches(3, seed=1):
        assert not bank.update(keys)
    assert bank.get_extra_state() == counters
    assert all(torch.equal(tensor, bank.state_dict()[name]) for name, tensor in before.items())
    with pytest.raises(ValueError, match="keys must have 16 columns"):
        bank.update(torch.randn(4, 8))  # still checked
    bank.train()
    assert bank.update(batches(1, seed=2)[0]) and bank.num_seen == 192


def test_keys_without_direction_are_left_out_of_the_fits() -> None:
    bank = PrototypeBank(num_prototypes=4, window=32, every=2)
    data = batches(4, size=8, dim=3)
    data[1][2] = float("nan")
    data[1][5, 0] = float("inf")
    data[2][0] = 0.0
    with pytest.warns(RuntimeWarning, match=r"3 of the 32 keys in the window .* the fit uses the other 29"):
        fits = [bank.update(keys) for keys in data]
    assert fits == [False, False, False, True]
    assert bank.num_skipped == 3 and bank.num_seen == 32
    window = bank.recent_keys()
    assert torch.isfinite(window).all() and (window.abs().sum(dim=1) == 0).sum() == 3
    assert torch.isfinite(bank.prototypes).all()
    assert torch.allclose(bank.prototypes.norm(dim=1), torch.ones(4), atol=1e-6)
    # The prototypes are those of the usable keys alone.
    clean = PrototypeBank(num_prototypes=4, window=29, every=1, warmup=0)
    clean.update(window[window.abs().sum(dim=1) > 0])  # fit 0: the same k-means seed
    assert torch.allclose(clean.prototypes, bank.prototypes, atol=1e-6)


def test_too_few_usable_keys_skip_the_fit() -> None:
    bank = PrototypeBank(num_prototypes=4, window=8, every=1)
    keys = torch.randn(8, 5)
    keys[:5] = float("nan")
    with pytest.warns(RuntimeWarning, match="fewer than num_prototypes = 4 remain, so the bank keeps its prototypes"):
        assert not bank.update(keys)
    assert not bank.ready and bank.num_skipped == 5
    with pytest.raises(ValueError, match="cannot fit 4 prototypes on the 3 usable keys of the window"):
        bank.refit()
    assert bank.update(torch.randn(4, 5)) and bank.ready  # the next call that brings enough keys fits


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


@pytest.mark.parametrize(
    "saved, built, message",
    [
        (dict(window=256), dict(window=128), r"window \(HaLPInfoNCE: prototype_window\) = 256, .* built with 128"),
        (dict(num_prototypes=20), dict(num_prototypes=10), "num_prototypes = 20, but this bank was built with 10"),
        (dict(), dict(dim=8), "dim = 16, but this bank has dim = 8"),
    ],
)
def test_state_of_another_configuration_is_refused(saved: dict, built: dict, message: str) -> None:
    # Issue 10: these loaded silently and failed at a later step.
    config = dict(num_prototypes=8, window=64)
    source = PrototypeBank(**{**config, **saved})
    for keys in batches(5):
        source.update(keys)
    target = PrototypeBank(**{**config, **built})
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(source.state_dict())


def test_state_round_trips_the_skipped_count_and_old_states_load() -> None:
    bank = PrototypeBank(num_prototypes=4, window=16)
    keys = torch.randn(16, 4)
    keys[0] = float("nan")
    with pytest.warns(RuntimeWarning):
        bank.update(keys)
    resumed = PrototypeBank(num_prototypes=4, window=16)
    resumed.load_state_dict(bank.state_dict())
    assert resumed.num_skipped == 1 and resumed.num_seen == 16 and torch.equal(resumed.prototypes, bank.prototypes)
    state = bank.state_dict()
    state["_extra_state"] = {k: v for k, v in state["_extra_state"].items() if k != "num_skipped"}
    resumed.load_state_dict(state)  # written before the count existed
    assert resumed.num_skipped == 0
    del state["_extra_state"]["num_fits"]
    with pytest.raises(ValueError, match=r"lacks \['num_fits'\]"):
        resumed.load_state_dict(state)
    # A bank that has seen keys loads the state of one that has not, and becomes as fresh.
    resumed.load_state_dict(PrototypeBank(num_prototypes=4, window=16).state_dict())
    assert resumed.dim is None and not resumed.ready


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
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got 'a'"):
        PrototypeBank(seed="a")

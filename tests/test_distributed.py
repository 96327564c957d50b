"""Two gloo processes on the CPU: identical prototypes on both ranks, SimCLR gathering with correct labels, and the
built-in MoCo queue with and without gathering keys."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from reference import moco_cross_entropy

from halp_loss import HaLPInfoNCE, PrototypeBank
from halp_loss.distributed import gather_rows
from halp_loss.functional import nt_xent

WORLD = 2
BATCH = 8
DIM = 16
QUEUE = 20  # K: wraps around during the four MoCo steps
MOCO_STEPS = range(10, 14)


def local_views(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(BATCH, DIM, generator=g, dtype=torch.float64), torch.randn(
        BATCH, DIM, generator=g, dtype=torch.float64
    )


def moco_pair(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's (query, key) at a MoCo step: uneven batches at the second step (rank 1 has 3 rows fewer)."""
    query, key = local_views(rank, step)
    rows = BATCH - 3 * rank if step == MOCO_STEPS[1] else BATCH
    return query[:rows], key[:rows]


def worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {}
        # Each rank sees its own keys; the bank gathers them, so both ranks cluster the same window.
        bank = PrototypeBank(num_prototypes=4, window=32, every=2)
        for step in range(6):
            bank.update(local_views(rank, step)[0] + rank)
        results["prototypes"] = bank.prototypes
        results["keys"] = bank.recent_keys()
        results["uneven"] = gather_rows(torch.full((rank + 1, 2), float(rank)))

        z1, z2 = (v.requires_grad_() for v in local_views(rank, 99))
        loss = nt_xent(z1, z2, 0.1, gather_distributed=True)
        loss.backward()
        results["gathered_loss"] = loss.detach()
        results["grads"] = (z1.grad, z2.grad)
        # Issue 19 item 11: unequal per-rank batches aborted the process inside gloo.
        messages = []
        for loss_fn in (
            lambda a, b: nt_xent(a, b, 0.1, gather_distributed=True),
            HaLPInfoNCE(gather_distributed=True, memory_bank_size=0),
        ):
            try:
                loss_fn(*(v[: BATCH - rank].requires_grad_() for v in local_views(rank, 98)))
            except ValueError as error:
                messages.append(str(error))
        results["unequal"] = messages

        criterion = HaLPInfoNCE(temperature=0.1, gather_distributed=True, prototype_window=32, num_prototypes=4)
        for step in range(4):
            a, b = (v.requires_grad_() for v in local_views(rank, step))
            criterion(a, b).backward()
        results["criterion_prototypes"] = criterion.bank.prototypes

        for gather in (True, False):
            criterion = HaLPInfoNCE(temperature=0.1, halp_weight=0.0, memory_bank_size=QUEUE, gather_distributed=gather)
            losses = []
            for step in MOCO_STEPS:
                query, key = moco_pair(rank, step)
                loss = criterion(query.requires_grad_(), key)
                loss.backward()
                losses.append(loss.detach())
            results[f"queue_gather_{gather}"] = (criterion.queue.recent(), losses)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks(tmp_path: Path) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))
    check_moco_queues(r0, r1)

    assert torch.equal(r0["prototypes"], r1["prototypes"])
    assert torch.equal(r0["criterion_prototypes"], r1["criterion_prototypes"])
    # The window holds both ranks' keys in rank order.
    expected = torch.cat([torch.cat([local_views(r, s)[0] + r for r in range(WORLD)]) for s in range(6)])
    assert torch.allclose(r0["keys"].double(), F.normalize(expected, dim=1)[-32:], atol=1e-6)
    assert torch.equal(r0["uneven"], torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]))
    for result in (r0, r1):
        assert len(result["unequal"]) == 2
        assert all("same number of rows on every rank, got [16, 14] in rank order" in message for message in result["unequal"])

    # Gathered NT-Xent: each rank's rows see every rank's views, so the mean over ranks is the loss of the global batch.
    z1 = torch.cat([local_views(r, 99)[0] for r in range(WORLD)])
    z2 = torch.cat([local_views(r, 99)[1] for r in range(WORLD)])
    global_loss = nt_xent(z1, z2, 0.1)
    assert torch.allclose((r0["gathered_loss"] + r1["gathered_loss"]) / 2, global_loss, atol=1e-10)
    assert not torch.allclose(r0["gathered_loss"], nt_xent(*local_views(0, 99), 0.1))
    # Gradients reach each rank's own rows: summed over ranks they are the global loss's gradient times WORLD.
    g1, g2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    (nt_xent(g1, g2, 0.1) * WORLD).backward()
    for view, grad in enumerate((g1.grad, g2.grad)):
        gathered = torch.cat([r0["grads"][view], r1["grads"][view]])
        assert torch.allclose(gathered, grad, atol=1e-10)


def check_moco_queues(*results: dict) -> None:
    """With gather_distributed every rank enqueues all ranks' keys in rank order (one queue, as MoCo keeps it);
    without, each rank keeps its own; either way each loss is MoCo InfoNCE over that rank's queue as it stood."""
    for gather in (True, False):
        for rank, result in enumerate(results):
            queue, losses = result[f"queue_gather_{gather}"]
            history: list[torch.Tensor] = []
            for step, loss in zip(MOCO_STEPS, losses):
                query, key = moco_pair(rank, step)
                negatives = F.normalize(torch.cat(history), dim=1)[-QUEUE:] if history else query[:0]
                assert torch.allclose(loss, moco_cross_entropy(query, key, negatives, 0.1), atol=1e-10)
                history += [moco_pair(r, step)[1] for r in range(WORLD)] if gather else [key]
            assert torch.allclose(queue, F.normalize(torch.cat(history), dim=1)[-QUEUE:], atol=1e-12)
    assert torch.equal(results[0]["queue_gather_True"][0], results[1]["queue_gather_True"][0])
    assert not torch.equal(results[0]["queue_gather_False"][0], results[1]["queue_gather_False"][0])


def test_one_gather_of_the_keys_per_step_feeds_both_the_queue_and_the_bank(monkeypatch):
    """With the built-in queue gathering keys and the bank fed, a step gathers the keys once for both (as a world of
    two ranks holding the same rows: every gathered row appears twice)."""
    import halp_loss.bank
    import halp_loss.key_queue
    import halp_loss.loss

    calls = []

    def gather_twice(rows: torch.Tensor) -> torch.Tensor:
        calls.append(rows.shape[0])
        return torch.cat([rows, rows])

    for module in (halp_loss.loss, halp_loss.bank, halp_loss.key_queue):
        monkeypatch.setattr(module, "gather_rows", gather_twice)
    for module in (halp_loss.loss, halp_loss.bank):
        monkeypatch.setattr(module, "world_size", lambda: WORLD)
    monkeypatch.setattr(halp_loss.bank, "broadcast_", lambda tensor: tensor)
    criterion = HaLPInfoNCE(num_prototypes=4, prototype_window=32, memory_bank_size=(64, DIM), gather_distributed=True)
    query, key = local_views(0, 0)
    criterion(query.float().requires_grad_(), key.float())
    assert calls == [BATCH]  # one gather, not one for the queue and one for the bank
    assert criterion.queue.num_seen == criterion.bank.num_seen == WORLD * BATCH
    calls.clear()
    HaLPInfoNCE(halp_weight=0.0, memory_bank_size=(64, DIM), gather_distributed=True)(query.float(), key.float())
    assert calls == [BATCH]  # without the HaLP term only the queue gathers

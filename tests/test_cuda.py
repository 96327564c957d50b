"""CUDA paths: run where a GPU is present (skipped on CPU-only machines such as CI)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from halp_loss import HaLPInfoNCE, hallucinate_positives, spherical_kmeans
from halp_loss.functional import sampled_halp_term

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_sphere(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator("cuda").manual_seed(seed), device="cuda"), dim=1)


def test_fused_term_equals_explicit_positives_on_cuda() -> None:
    q, k, protos = cuda_sphere(64, 128, 0), cuda_sphere(64, 128, 1), cuda_sphere(20, 128, 2)
    term = sampled_halp_term(q, k, protos, generator=torch.Generator("cuda").manual_seed(3))
    out = hallucinate_positives(k, protos, generator=torch.Generator("cuda").manual_seed(3))
    sims = torch.einsum("bd,bmd->bm", q.double(), out.positives.double()) / 0.07
    keep = out.keep.double()
    assert term.loss.item() == pytest.approx((-(keep * sims).sum() / keep.sum()).item(), abs=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_on_cuda(dtype: torch.dtype) -> None:
    encoder = torch.nn.Linear(64, 128).cuda()
    x = torch.randn(64, 64, device="cuda")
    queue = cuda_sphere(16384, 128, 4)
    criterion = HaLPInfoNCE(objective="infonce").cuda()
    with torch.autocast("cuda", dtype=dtype):
        loss = criterion(encoder(x), encoder(x + 0.1).detach(), queue.to(dtype), prototypes=cuda_sphere(20, 128, 5))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(encoder.weight.grad).all()


def test_training_step_never_waits_on_the_device_between_refits() -> None:
    criterion = HaLPInfoNCE(prototype_every=1000).cuda()
    queue = cuda_sphere(16384, 128, 6)  # negatives as rows
    for step in range(5):  # fill the bank and fit once (the fit reads a scalar per k-means iteration)
        criterion(cuda_sphere(64, 128, 10 + step).requires_grad_(), cuda_sphere(64, 128, 20 + step), queue)
    assert criterion.bank.ready
    q = cuda_sphere(64, 128, 7).requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        criterion(q, cuda_sphere(64, 128, 8), queue).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(q.grad).all()


def test_built_in_queue_step_never_waits_on_the_device() -> None:
    criterion = HaLPInfoNCE(prototype_every=1000, memory_bank_size=16384)  # the queue follows the first call
    for step in range(5):  # fill the bank and fit once
        criterion(cuda_sphere(64, 128, 30 + step).requires_grad_(), cuda_sphere(64, 128, 40 + step)).backward()
    criterion.queue.enqueue(cuda_sphere(16384, 128, 11))
    assert criterion.bank.ready and criterion.queue.keys.is_cuda
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(2):  # the second call writes the first call's keys in place
            q = cuda_sphere(64, 128, 50 + step).requires_grad_()
            criterion(q, cuda_sphere(64, 128, 60 + step)).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(q.grad).all() and criterion.queue.num_seen == 5 * 64 + 16384 + 2 * 64


def test_kmeans_and_bank_stay_on_device() -> None:
    result = spherical_kmeans(cuda_sphere(256, 128, 9), 20, generator=torch.Generator("cuda").manual_seed(0))
    assert result.centroids.is_cuda and torch.allclose(result.centroids.norm(dim=1), torch.ones(20, device="cuda"))

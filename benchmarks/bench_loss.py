"""Cost of HaLP over plain InfoNCE, of the closed-form generator over a materializing one, and of k-means;
then the two HaLP estimators (sampled with M positives vs the exact expectation): cost and gradient noise.

Run: ``python benchmarks/bench_loss.py [--device cuda] [--threads N] [--rounds R] [--clock wall|cpu]``. Sizes are
the released NTU settings: B = 64, K = 16384, D = 128, M = 100, P = 20. Prints markdown tables; ratios compare
timings of one run, the losses' timed in R interleaved rounds (median), so that a change of the machine's load hits
every row alike. With explicit negatives the baseline is the plain InfoNCE that normalizes its negatives too. On a
CPU shared with other jobs, ``--clock cpu`` (the process's CPU time) is the steadier measure.

Beside each loss's time: the aten ops one forward + backward dispatches (views included, counted by a
``TorchDispatchMode``) at a step between two bank refits. On a GPU each op is a kernel launch (or a view), and at
these sizes launches, not arithmetic, bound the step. Unlike times, the counts are exact and do not depend on the
machine's load (``tests/test_performance.py`` holds them to a bound).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.benchmark import Timer

from halp_loss import HaLPInfoNCE, hallucinate_positives, spherical_kmeans

B, K, D, M, P, T = 64, 16384, 128, 100, 20, 0.07
STEPS = 10  # one bank refit per measured block, as in training
DRAWS = 100  # independent draws of the sampled estimator for the spread of its gradient


def plain_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    """MoCo's InfoNCE as usually written: cross-entropy over concatenated logits, the (D, K) queue's columns unit."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], dim=1) / T
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def plain_info_nce_normalizing(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """The same with the (K, D) negatives normalized too, as ``negatives=queue.T`` makes HaLPInfoNCE do."""
    return plain_info_nce(q, k, F.normalize(negatives, dim=1).T)


@torch.no_grad()
def materializing_positives(
    anchor: torch.Tensor, protos: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The released code's formulation: a Python loop over anchors, explicit positives, (M, P, D) repeats."""
    positives, keeps = [], []
    for k in anchor:
        sims = protos @ k
        nearest = sims.argmax()
        others = torch.cat([torch.arange(nearest), torch.arange(nearest + 1, P)]).to(k.device)
        target = others[torch.randint(P - 1, (M,), device=k.device)]
        p_s, p0 = protos[target], protos[nearest].expand(M, D)
        cos_w = (p_s @ k).clamp(-1, 1)
        w = torch.acos(cos_w)
        a, b = (p0 - p_s) @ k, 1 - (p_s * p0).sum(1)
        t_max = torch.atan2(a * torch.sin(w), b + a * cos_w) / w
        t = (1 - lam * torch.rand(M, device=k.device)) * t_max
        h = (torch.sin((1 - t) * w)[:, None] * k + torch.sin(t * w)[:, None] * p_s) / torch.sin(w)[:, None]
        repeated = protos.expand(M, P, D)
        keeps.append(torch.einsum("mpd,md->mp", repeated, h).argmax(1) == nearest)
        positives.append(h)
    return torch.stack(positives), torch.stack(keeps)


class DispatchCounter(TorchDispatchMode):
    """Counts every aten op dispatched while active, views included."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(step: Callable[[], torch.Tensor]) -> int:
    """Aten ops dispatched by ``step()`` and the backward pass of the loss it returns."""
    with DispatchCounter() as counter:
        step().backward()
    return counter.count


def ops_between_refits(criterion: HaLPInfoNCE, q: torch.Tensor, k: torch.Tensor, *negatives: torch.Tensor) -> int:
    """Aten ops of one forward + backward of ``criterion(q, k, *negatives)`` at a step between two bank refits (HaLP
    active once the bank is ready), on a fresh leaf query as in training. One step runs first: the first step after
    a fit computes the prototypes' walk tables, which the following steps reuse."""
    fits = criterion.bank.num_fits
    criterion(q.detach().clone().requires_grad_(), k, *negatives).backward()
    query = q.detach().clone().requires_grad_()
    ops = count_ops(lambda: criterion(query, k, *negatives))
    if criterion.bank.num_fits != fits:
        raise RuntimeError("the counted steps refitted the bank")
    return ops


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""``--clock``: wall time, or the CPU time of this process, which a machine shared with other jobs inflates less (time
spent waiting for a core is not counted; on a GPU only wall time measures the device)."""

clock = CLOCKS["wall"]


def measure(stmt: str, env: dict, label: str, min_run_time: float) -> float:
    timer = Timer(stmt=stmt, globals=env, label=label, num_threads=torch.get_num_threads(), timer=clock)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def ready_criterion(
    device: str, queue: torch.Tensor, *, explicit: bool, halp_weight: float, estimator: str
) -> HaLPInfoNCE:
    """A criterion with a fitted bank (HaLP active) and, without ``explicit`` negatives, a full built-in queue."""
    criterion = HaLPInfoNCE(
        halp_weight=halp_weight, estimator=estimator, memory_bank_size=None if explicit else (K, D)
    ).to(device)
    if halp_weight > 0:
        for _ in range(4):  # the 256 keys of the window: the bank fits
            criterion.bank.update(F.normalize(torch.randn(B, D, device=device), dim=1))
        assert criterion.bank.ready
    if not explicit:
        criterion.queue.enqueue(queue.T)
    return criterion


def run(device: str, min_run_time: float, rounds: int) -> list[tuple[str, float, str, str]]:
    """Rows ``(what, seconds per call (median over ``rounds`` interleaved rounds), ratio, aten ops per call)``."""
    torch.manual_seed(0)
    queue = F.normalize(torch.randn(D, K, device=device), dim=0)
    negatives = queue.T
    q = torch.randn(B, D, device=device, requires_grad=True)
    k = torch.randn(B, D, device=device)
    keys = F.normalize(torch.randn(256, D, device=device), dim=1)
    protos = spherical_kmeans(keys, P).centroids
    sync = "torch.cuda.synchronize()" if device.startswith("cuda") else "pass"
    env = dict(
        q=q,
        k=k,
        queue=queue,
        negatives=negatives,
        plain=plain_info_nce,
        keys=keys,
        protos=protos,
        hallucinate=hallucinate_positives,
        materializing=materializing_positives,
        kmeans=spherical_kmeans,
        STEPS=STEPS,
        torch=torch,
    )
    loop = "for _ in range(STEPS):\n    {}.backward()\n" + sync
    query = q.detach().clone().requires_grad_()
    # (what, statement, its globals, ops, baseline): the losses are timed in interleaved rounds, each ratio against
    # its baseline measured in the same rounds (explicit negatives against the InfoNCE that normalizes them too).
    losses = [
        (
            "plain InfoNCE fwd+bwd (cross-entropy over concatenated logits)",
            "plain(q, k, queue)",
            env,
            count_ops(lambda: plain_info_nce(query, k, queue)),
            None,
        ),
        (
            "plain InfoNCE fwd+bwd, negatives normalized (F.normalize(queue.T))",
            "plain_normalizing(q, k, negatives)",
            dict(env, plain_normalizing=plain_info_nce_normalizing),
            count_ops(lambda: plain_info_nce_normalizing(query, k, negatives)),
            None,
        ),
    ]
    variants = [
        (0.0, "sampled", "HaLPInfoNCE(halp_weight=0) fwd+bwd (our InfoNCE)"),
        (2.0, "sampled", "HaLPInfoNCE fwd+bwd, sampled, bank refit every 10 calls"),
        (2.0, "expected", 'HaLPInfoNCE(estimator="expected") fwd+bwd, bank refit every 10 calls'),
    ]
    for weight, estimator, what in variants:
        for explicit in (False, True):
            criterion = ready_criterion(device, queue, explicit=explicit, halp_weight=weight, estimator=estimator)
            ops = ops_between_refits(criterion, q, k, *([negatives] if explicit else []))
            call = "criterion(q, k, negatives)" if explicit else "criterion(q, k)"
            where = "negatives=queue.T (normalized inside)" if explicit else "memory_bank_size=K (built-in queue)"
            losses.append((f"{what}, {where}", call, dict(env, criterion=criterion), ops, 1 if explicit else 0))
    times: list[list[float]] = [[] for _ in losses]
    for _ in range(rounds):
        for (what, call, scope, _, _), measured in zip(losses, times):
            measured.append(measure(loop.format(call), scope, what, min_run_time / rounds) / STEPS)
    seconds = [statistics.median(measured) for measured in times]
    baseline = seconds[0]
    names = ("InfoNCE", "InfoNCE normalizing its negatives")
    rows = []
    for (what, _, _, ops, against), elapsed in zip(losses, seconds):
        ratio = "1.00" if against is None else f"{elapsed / seconds[against]:.2f} x {names[against]}"
        rows.append((what, elapsed, ratio, str(ops)))
    closed = measure(f"hallucinate(keys[:64], protos); {sync}", env, "closed form", min_run_time)
    naive = measure(f"materializing(keys[:64], protos, 0.8); {sync}", env, "materializing", min_run_time)
    fit = measure(f"kmeans(keys, 20); {sync}", env, "k-means", min_run_time)
    return rows + [
        ("materializing generator + filter (loop over batch)", naive, f"{naive / baseline:.2f} x InfoNCE", ""),
        (
            "hallucinate_positives (closed form, B x M x D output)",
            closed,
            f"{naive / closed:.1f} x faster than materializing",
            "",
        ),
        ("spherical_kmeans 256 x 128 -> 20", fit, "", ""),
    ]


def frozen_queue_criterion(queue: torch.Tensor, **kwargs: object) -> HaLPInfoNCE:
    """A criterion whose built-in queue holds ``queue``'s K keys and stays frozen (eval mode): every call scores
    against the same negatives, as passing ``queue.T`` would, without normalizing them each call."""
    criterion = HaLPInfoNCE(memory_bank_size=queue.shape[::-1], **kwargs).to(queue.device)
    criterion.queue.enqueue(queue.T)
    return criterion.eval()


def query_gradient(criterion: HaLPInfoNCE, q: torch.Tensor, k: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    q = q.detach().requires_grad_()
    criterion(q, k, prototypes=protos).backward()
    return q.grad


def run_estimators(device: str, min_run_time: float) -> list[tuple[str, str, float, float, float, float]]:
    """HaLPInfoNCE fwd+bwd with each estimator (given prototypes, so no bank refits; K negatives in a frozen
    built-in queue), and the spread of dL/dq over DRAWS independent draws of the sampled estimator (the expected
    one is deterministic).

    Returns rows ``(objective, estimator, seconds, std, relative std, gap)``: ``std`` is the mean over entries
    of the std of dL/dq across draws, ``relative std`` that over the RMS of the HaLP term's share of dL/dq (the
    expected estimator's), and ``gap`` the distance from the mean of the draws' gradients to the expected
    estimator's gradient, over the norm of the latter's HaLP share.
    """
    torch.manual_seed(0)
    queue = F.normalize(torch.randn(D, K, device=device), dim=0)
    q = torch.randn(B, D, device=device, requires_grad=True)
    k = torch.randn(B, D, device=device)
    recent = torch.cat([F.normalize(k, dim=1), F.normalize(torch.randn(256 - B, D, device=device), dim=1)])
    protos = spherical_kmeans(recent, P).centroids
    sync = "torch.cuda.synchronize()" if device.startswith("cuda") else "pass"
    rows = []
    for objective in ("align", "infonce"):
        criteria = {
            f"sampled, M = {M}": frozen_queue_criterion(
                queue, objective=objective, num_positives=M, generator=torch.Generator(device).manual_seed(0)
            ),
            "expected": frozen_queue_criterion(queue, objective=objective, estimator="expected"),
        }
        exact = query_gradient(criteria["expected"], q, k, protos)
        halp_share = exact - query_gradient(frozen_queue_criterion(queue, halp_weight=0.0), q, k, protos)
        for name, criterion in criteria.items():
            env = dict(criterion=criterion, q=q, k=k, protos=protos, torch=torch)
            stmt = f"criterion(q, k, prototypes=protos).backward(); {sync}"
            seconds = measure(stmt, env, f"{name} {objective}", min_run_time)
            draws = 3 if name == "expected" else DRAWS
            grads = torch.stack([query_gradient(criterion, q, k, protos) for _ in range(draws)])
            std = grads.std(dim=0).mean()
            gap = (grads.mean(dim=0) - exact).norm() / halp_share.norm()
            relative = std / halp_share.square().mean().sqrt()
            rows.append((objective, name, seconds, std.item(), relative.item(), gap.item()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds of the loss timings (median)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="what a time is (default: wall)")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    )
    threads = torch.get_num_threads()
    print(f"device: {args.device} ({name}), threads: {threads}, torch {torch.__version__}, {args.clock} time")
    print(f"B={B} K={K} D={D} M={M} P={P}\n")
    print("| what | time per call | ratio | aten ops per call |\n|---|---|---|---|")
    for what, seconds, ratio, ops in run(args.device, args.min_run_time, args.rounds):
        print(f"| {what} | {seconds * 1e3:.3f} ms | {ratio} | {ops} |")

    print(f"\nHaLP estimators: HaLPInfoNCE fwd+bwd, given prototypes; dL/dq over {DRAWS} draws of the sampled one")
    print("\n| objective | estimator | time per call | std of dL/dq | / RMS of HaLP's dL/dq | mean vs expected |")
    print("|---|---|---|---|---|---|")
    for objective, name, seconds, std, relative, gap in run_estimators(args.device, args.min_run_time):
        print(f"| {objective} | {name} | {seconds * 1e3:.3f} ms | {std:.2e} | {relative:.2%} | {gap:.2%} |")


if __name__ == "__main__":
    main()

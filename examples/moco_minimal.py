"""The shortest complete MoCo loop with HaLP: encoder, momentum encoder, (D, K) queue, enqueue.

Plain MoCo (InfoNCE over the queue) becomes MoCo + HaLP with two changed lines, marked ``HaLP change``:

    (plain)  loss = info_nce(q, k, queue.T, temperature=0.2)              # from halp_loss.functional
    (HaLP)   criterion = HaLPInfoNCE(temperature=0.2, halp_weight=1.0)    # once, before the loop
             loss = criterion(q, k, queue.T)

Runs in seconds on scikit-learn's digits (8x8 images flattened to 64 pixels) on a CPU.

Usage:
    python examples/moco_minimal.py --steps 200
"""

from __future__ import annotations

import argparse
import copy
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn

from halp_loss import HaLPInfoNCE


def augment(x: Tensor) -> Tensor:
    """A cheap view of flattened 8x8 digits: random pixel dropout and Gaussian noise."""
    return x * (torch.rand_like(x) > 0.2) + 0.1 * torch.randn_like(x)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, float]:
    """Train for ``--steps`` steps, printing the loss terms; returns the last step's terms."""
    parser = argparse.ArgumentParser(description="Minimal MoCo + HaLP on digits.")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--queue-size", type=int, default=1024, help="K, keys in the MoCo queue")
    parser.add_argument("--print-every", type=int, default=25)
    args = parser.parse_args(argv)
    if args.queue_size % args.batch_size:
        parser.error("--queue-size must be a multiple of --batch-size (whole batches are enqueued)")
    torch.manual_seed(0)

    data = torch.from_numpy(load_digits().data / 16.0).float()  # (1797, 64) pixels in [0, 1]
    encoder = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128))
    momentum_encoder = copy.deepcopy(encoder).requires_grad_(False)
    queue = F.normalize(torch.randn(128, args.queue_size), dim=0)  # (D, K): MoCo's layout, one key per column
    queue_ptr = 0
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.05, momentum=0.9)
    criterion = HaLPInfoNCE(temperature=0.2, halp_weight=1.0)  # HaLP change 1/2 (plain MoCo: no criterion object)

    for step in range(1, args.steps + 1):
        x = data[torch.randint(len(data), (args.batch_size,))]
        q = encoder(augment(x))
        with torch.no_grad():
            for p_q, p_k in zip(encoder.parameters(), momentum_encoder.parameters()):
                p_k.mul_(0.99).add_(p_q.detach(), alpha=0.01)
            k = F.normalize(momentum_encoder(augment(x)), dim=1)
        loss = criterion(q, k, queue.T)  # HaLP change 2/2 (plain MoCo: functional.info_nce(q, k, queue.T, 0.2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # Enqueue after the loss, as MoCo does: this step's keys must not be its own negatives.
        queue[:, queue_ptr : queue_ptr + args.batch_size] = k.T
        queue_ptr = (queue_ptr + args.batch_size) % args.queue_size

        if step % args.print_every == 0 or step == args.steps:
            terms = criterion.last  # floats: loss, infonce, halp, kept_fraction, mean_t (0 until prototypes exist)
            print(
                f"step {step:4d}  loss {terms['loss']:.3f}  infonce {terms['infonce']:.3f}  halp {terms['halp']:.3f}"
                f"  kept {terms['kept_fraction']:.3f}  mean t {terms['mean_t']:.3f}  prototypes {criterion.bank.ready}"
            )
    return criterion.last


if __name__ == "__main__":
    main()

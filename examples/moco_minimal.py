"""The shortest complete MoCo loop with HaLP: encoder, momentum encoder, and a loss that keeps MoCo's queue.

Ported from lightly's MoCo example, two lines change, marked ``HaLP change``; ``loss = criterion(q, k)`` and the
rest of the loop stay as they are:

    (lightly)  from lightly.loss import NTXentLoss
               criterion = NTXentLoss(temperature=0.2, memory_bank_size=(1024, 128))
    (HaLP)     from halp_loss import HaLPInfoNCE
               criterion = HaLPInfoNCE(temperature=0.2, halp_weight=1.0, memory_bank_size=(1024, 128))

The criterion keeps the (K, D) queue of normalized keys, scores each step against the keys of earlier steps and
enqueues after the loss, as MoCo does; ``criterion.state_dict()`` holds it for checkpoints. With
``halp_weight=0.0`` it is plain MoCo.

Runs in seconds on scikit-learn's digits (8x8 images flattened to 64 pixels) on a CPU.

Usage:
    python examples/moco_minimal.py --steps 200
"""

from __future__ import annotations

import argparse
import copy
from typing import Optional, Sequence

import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn

from halp_loss import HaLPInfoNCE  # HaLP change 1/2 (lightly: from lightly.loss import NTXentLoss)


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
    torch.manual_seed(0)

    data = torch.from_numpy(load_digits().data / 16.0).float()  # (1797, 64) pixels in [0, 1]
    encoder = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128))
    momentum_encoder = copy.deepcopy(encoder).requires_grad_(False)
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.05, momentum=0.9)
    # HaLP change 2/2 (lightly: NTXentLoss(temperature=0.2, memory_bank_size=(args.queue_size, 128))).
    criterion = HaLPInfoNCE(temperature=0.2, halp_weight=1.0, memory_bank_size=(args.queue_size, 128))

    for step in range(1, args.steps + 1):
        x = data[torch.randint(len(data), (args.batch_size,))]
        q = encoder(augment(x))
        with torch.no_grad():
            for p_q, p_k in zip(encoder.parameters(), momentum_encoder.parameters()):
                p_k.mul_(0.99).add_(p_q.detach(), alpha=0.01)
            k = momentum_encoder(augment(x))
        loss = criterion(q, k)  # InfoNCE against the queue, + HaLP; then k is enqueued
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        if step % args.print_every == 0 or step == args.steps:
            terms = criterion.last  # floats: loss, infonce, halp, kept_fraction, mean_t (0 until prototypes exist)
            print(
                f"step {step:4d}  loss {terms['loss']:.3f}  infonce {terms['infonce']:.3f}  halp {terms['halp']:.3f}"
                f"  kept {terms['kept_fraction']:.3f}  mean t {terms['mean_t']:.3f}  prototypes {criterion.bank.ready}"
            )
    return criterion.last


if __name__ == "__main__":
    main()

"""SimCLR on scikit-learn's digits: plain NT-Xent against HaLP, same seeds, budget and augmentations.

The two-line change from the baseline to HaLP is in ``make_criterion`` and ``train``:

    criterion = partial(nt_xent, temperature=T)      ->  criterion = HaLPInfoNCE(temperature=T, ...)
    loss = criterion(z1, z2)                          (the call is the same: SimCLR mode takes the two views)

Digits (1,797 8x8 images, bundled with scikit-learn, no download) is an easy dataset: raw pixels already reach
about 0.98 kNN top-1, and both methods reach about 0.99 kNN and linear top-1, with differences within the spread
over seeds. This script proves the plumbing and the drop-in change on real images; it is not a research claim
about HaLP. The defaults (3 seeds x 2 methods x 60 epochs) took 139 s on two idle Xeon cores and 30 s on a GPU.

Usage:
    python examples/simclr_digits.py                       # defaults: 3 seeds, both methods
    python examples/simclr_digits.py --epochs 5 --seeds 0  # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from halp_loss import HaLPInfoNCE
from halp_loss.functional import nt_xent

METHODS = ("baseline", "halp")
Criterion = Callable[[Tensor, Tensor], Tensor]


class Split(NamedTuple):
    """Stratified 70/30 split of digits; images are (N, 1, 8, 8) in [0, 1]."""

    train_images: Tensor
    train_labels: np.ndarray
    test_images: Tensor
    test_labels: np.ndarray


def load_split(split_seed: int = 0) -> Split:
    """The same held-out split for every training seed, so seeds vary the training only."""
    pixels, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        pixels, labels, test_size=0.3, stratify=labels, random_state=split_seed
    )

    def to_images(x: np.ndarray) -> Tensor:
        return torch.from_numpy(x / 16.0).float().reshape(-1, 1, 8, 8)  # digits pixels are 0..16

    return Split(to_images(x_train), y_train, to_images(x_test), y_test)


def augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """One random view per image, drawn on the images' device in a single batched pass.

    A random affine warp (rotation up to 15 degrees, scale 0.85-1.15 as a crop-and-resize, shifts up to
    1 pixel), additive Gaussian noise, then random erasing of a 3x3 patch with probability 0.5. All draws
    come from ``generator``, so the baseline and HaLP runs of a seed see exactly the same views.
    """
    n, device = images.shape[0], images.device

    def uniform(low: float, high: float, size: tuple[int, ...] = (n,)) -> Tensor:
        return low + (high - low) * torch.rand(size, generator=generator, device=device)

    angle = uniform(-math.pi / 12, math.pi / 12)
    scale = uniform(0.85, 1.15)
    shift = uniform(-0.25, 0.25, (n, 2))  # affine_grid coordinates span [-1, 1] over 8 pixels: 0.25 = 1 pixel
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    views = F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
    views = views + 0.1 * torch.randn(views.shape, generator=generator, device=device)

    size = 3
    top = torch.randint(0, 8 - size + 1, (n, 1, 1), generator=generator, device=device)
    left = torch.randint(0, 8 - size + 1, (n, 1, 1), generator=generator, device=device)
    rows = torch.arange(8, device=device).view(1, 8, 1)
    cols = torch.arange(8, device=device).view(1, 1, 8)
    patch = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    erase = uniform(0.0, 1.0) < 0.5
    return views.masked_fill((patch & erase[:, None, None])[:, None], 0.0)


class Encoder(nn.Module):
    """A small CNN for 8x8 images: ``features`` (evaluated) and a projection ``head`` (trained on).

    As in SimCLR, the loss sees the head's output and the evaluation uses the features before the head.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128, embed_dim: int = 64) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(1, width),
            *block(width, 2 * width),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            *block(2 * width, feature_dim),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True), nn.Linear(feature_dim, embed_dim)
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def make_criterion(method: str, args: argparse.Namespace, steps_per_epoch: int, seed: int) -> Criterion:
    """The loss of each method; the HaLP one is the only change from the baseline."""
    if method == "baseline":
        return partial(nt_xent, temperature=args.temperature)
    # SimCLR mode feeds the bank 2B anchors per call (each view anchors the other). A window of 2B keys
    # (256 for the default B = 128: the released window) holds both views of the latest batch, so the
    # prototypes always describe the current encoder; refitting every 10 steps is about once an epoch here.
    # 20 prototypes (the released P) over 128 images of 10 classes leave about 6 images per cell. The bank
    # waits `halp_warmup_epochs` before its first fit because k-means on a random encoder's embeddings gives
    # meaningless cells; the released code likewise starts HaLP from a plain-MoCo checkpoint. Until then the
    # loss equals the baseline's NT-Xent, so both runs of a seed share their first epochs exactly.
    return HaLPInfoNCE(
        temperature=args.temperature,
        halp_weight=args.halp_weight,
        num_prototypes=args.num_prototypes,
        lam=args.lam,
        prototype_window=2 * args.batch_size,
        prototype_every=args.prototype_every,
        prototype_warmup=args.halp_warmup_epochs * steps_per_epoch * 2 * args.batch_size,
        seed=seed,  # k-means seeding
        generator=torch.Generator(device=args.device).manual_seed(seed),  # the positives' draws
    )


def train(method: str, seed: int, split: Split, args: argparse.Namespace) -> tuple[Encoder, dict[str, float]]:
    """Train one encoder; the baseline and HaLP share this loop, seeds and augmentation stream.

    Returns the encoder and, for HaLP, the mean of its loss terms over the last epoch.
    """
    torch.manual_seed(seed)
    device = torch.device(args.device)
    model = Encoder().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    images = split.train_images.to(device)
    # Drop the last partial batch: every step then has the same number of negatives and bank keys.
    steps_per_epoch = images.shape[0] // args.batch_size
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs * steps_per_epoch)
    criterion = make_criterion(method, args, steps_per_epoch, seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    last_epoch: list[dict[str, float]] = []
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(images.shape[0], generator=generator, device=device)
        for step in range(steps_per_epoch):
            batch = images[order[step * args.batch_size : (step + 1) * args.batch_size]]
            z1, z2 = model(augment(batch, generator)), model(augment(batch, generator))
            loss = criterion(z1, z2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if isinstance(criterion, HaLPInfoNCE) and epoch == args.epochs - 1:
                last_epoch.append(criterion.last)
    terms = {name: statistics.fmean(row[name] for row in last_epoch) for name in last_epoch[0]} if last_epoch else {}
    return model, terms


@torch.no_grad()
def embed(model: Encoder, images: Tensor, device: str) -> np.ndarray:
    """Frozen pre-head features in eval mode (BatchNorm running statistics)."""
    model.eval()
    return model.features(images.to(device)).cpu().numpy()


def evaluate(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict[str, float]:
    """kNN (k = 5, cosine) and linear-probe (logistic regression on standardized features) top-1 fractions."""
    knn = KNeighborsClassifier(n_neighbors=5, metric="cosine").fit(train_x, train_y)
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(train_x, train_y)
    return {"knn_top1": float(knn.score(test_x, test_y)), "linear_top1": float(linear.score(test_x, test_y))}


def summarize(runs: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Mean, population std and per-seed values of each metric across seeds."""
    out: dict[str, Any] = {}
    for name in runs[0]:
        values = [run[name] for run in runs]
        out[name] = statistics.fmean(values)
        out[f"{name}_std"] = statistics.pstdev(values)
    out["per_seed"] = {name: [run[name] for run in runs] for name in runs[0]}
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=60, help="training epochs per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (>= 3 to average)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--temperature", type=float, default=0.2, help="T of NT-Xent and of the HaLP term")
    parser.add_argument("--halp-weight", type=float, default=1.0, help="mu: weight of the HaLP term")
    parser.add_argument("--lam", type=float, default=0.8, help="positives fall in [(1 - lam) t_max, t_max]")
    parser.add_argument("--num-prototypes", type=int, default=20)
    parser.add_argument("--prototype-every", type=int, default=10, help="bank refit period in steps")
    parser.add_argument("--halp-warmup-epochs", type=int, default=10, help="plain NT-Xent epochs before HaLP starts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--no-flush-denormal",
        action="store_true",
        help="keep denormal floats on the CPU (default: flush them to zero, which CPUs without fast denormal "
        "arithmetic need for speed)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/simclr_digits"), help="folder for metrics.json")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Run both methods on every seed, print the table and write ``--out/metrics.json``; returns the metrics."""
    args = parse_args(argv)
    torch.set_flush_denormal(not args.no_flush_denormal)
    start = time.perf_counter()
    split = load_split()
    flat = [split.train_images.flatten(1).numpy(), split.train_labels, split.test_images.flatten(1).numpy()]
    raw = evaluate(*flat, split.test_labels)

    per_method: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
    diagnostics: list[dict[str, float]] = []
    for seed in args.seeds:
        for method in METHODS:
            tic = time.perf_counter()
            model, terms = train(method, seed, split, args)
            features = [embed(model, images, args.device) for images in (split.train_images, split.test_images)]
            result = evaluate(features[0], split.train_labels, features[1], split.test_labels)
            per_method[method].append(result)
            if terms:
                diagnostics.append(terms)
            extra = f"  last epoch: kept {terms['kept_fraction']:.3f}, halp {terms['halp']:.3f}" if terms else ""
            print(
                f"seed {seed} {method:8s} knn {result['knn_top1']:.4f}  linear {result['linear_top1']:.4f}"
                f"  ({time.perf_counter() - tic:.1f} s){extra}",
                flush=True,
            )

    summaries = {method: summarize(runs) for method, runs in per_method.items()}
    if diagnostics:
        summaries["halp"]["last_epoch_terms"] = summarize(diagnostics)
    wall_time = time.perf_counter() - start

    print(f"\nTop-1 on the held-out 30 % ({len(split.test_labels)} images), mean +- std over seeds {args.seeds}:")
    print(f"{'':26s}{'kNN (k=5)':>20s}{'linear probe':>20s}")
    print(f"{'raw pixels (same probes)':26s}{raw['knn_top1']:>20.4f}{raw['linear_top1']:>20.4f}")
    for method, label in zip(METHODS, ("SimCLR (NT-Xent)", "SimCLR + HaLP")):
        row = summaries[method]
        cells = [f"{row[name]:.4f} +- {row[name + '_std']:.4f}" for name in ("knn_top1", "linear_top1")]
        print(f"{label:26s}{cells[0]:>20s}{cells[1]:>20s}")
    print(
        "Digits is easy (raw pixels are already strong): this demo checks the plumbing and the drop-in change, "
        "not HaLP's benefit."
    )
    print(f"wall time {wall_time:.1f} s")

    config = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    metrics = {**summaries, "raw_pixels": raw, "config": config, "wall_time_s": wall_time}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


if __name__ == "__main__":
    main()

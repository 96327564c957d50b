"""Batched skeleton augmentations vs a per-sample numpy loop of the same transforms.

The released code augments each sample in numpy inside DataLoader workers; ``skeleton.data.augment`` transforms
the whole batch at once with torch, on the batch's device. Both sides below compute the released
transforms (temporal crop-resize to 64 frames, then shear or joint corruption) on NTU-layout input
(3, 300, 25, 2). Throughput is samples/s in one process; the numpy loop always runs on the CPU, the batched
transforms on ``--device`` (default cpu; with cuda the batch is already on the GPU, as in training).

    .venv/bin/python -m benchmarks.bench_augment [--batch-sizes 64 256] [--min-run-time 1.0] [--threads N] [--device cuda]

Run from the repository root, as a module: it imports the pipeline as ``examples.skeleton``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.utils.benchmark as benchmark

from examples.skeleton.data.augment import pretrain_view, shear_or_corrupt, temporal_crop_resize


def crop_resize_one(sample: np.ndarray, num_frames: int, rng: np.random.Generator, out_frames: int = 64) -> np.ndarray:
    """One sample's random crop (ratio U(0.1, 1), at least 64 frames) resized linearly to ``out_frames``."""
    length = min(max(int(np.floor(num_frames * rng.uniform(0.1, 1.0))), 64), num_frames)
    start = int(rng.integers(0, num_frames - length + 1))
    source = np.maximum((np.arange(out_frames) + 0.5) * length / out_frames - 0.5, 0.0)
    lower = source.astype(np.int64)
    upper = np.minimum(lower + 1, length - 1)
    weight = (source - lower)[None, :, None, None]
    window = sample[:, start : start + length]
    return window[:, lower] * (1 - weight) + window[:, upper] * weight


def shear_or_corrupt_one(sample: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One sample's shear (p = 0.5) or joint corruption of 15 joints (zeroed or mixed, p = 0.5 each)."""
    if rng.random() < 0.5:
        matrix = np.eye(3) + rng.uniform(-1, 1, size=(3, 3)) * (1 - np.eye(3))
        return np.einsum("ij,jtvm->itvm", matrix, sample)
    out = sample.copy()
    joints = rng.choice(25, 15, replace=False)
    if rng.random() < 0.5:
        out[:, :, joints] = 0
    else:
        out[:, :, joints] = np.einsum("ij,jtvm->itvm", rng.uniform(-1, 1, size=(3, 3)), sample[:, :, joints])
    return out


def per_sample(data: np.ndarray, num_frames: np.ndarray, rng: np.random.Generator, spatial: bool, crop: bool):
    """The per-sample loop, stacked into a batch tensor as a DataLoader's collate would."""
    views = []
    for sample, count in zip(data, num_frames):
        view = crop_resize_one(sample, int(count), rng) if crop else sample
        views.append(shear_or_corrupt_one(view, rng) if spatial else view)
    return torch.from_numpy(np.stack(views).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="device of the batched transforms (cpu, cuda, ...)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    generator = torch.Generator(device).manual_seed(0)
    cases = {
        "crop-resize": (
            lambda x, n: temporal_crop_resize(x, n, generator=generator),
            lambda d, n: per_sample(d, n, rng, spatial=False, crop=True),
        ),
        "shear or corrupt": (
            lambda x, n: shear_or_corrupt(x, generator=generator),
            lambda d, n: per_sample(d, n, rng, spatial=True, crop=False),
        ),
        "full pretrain view": (
            lambda x, n: pretrain_view(x, n, generator=generator),
            lambda d, n: per_sample(d, n, rng, spatial=True, crop=True),
        ),
    }
    rows = []
    for batch in args.batch_sizes:
        data = rng.normal(size=(batch, 3, 300, 25, 2)).astype(np.float32)
        num_frames = rng.integers(30, 301, size=batch)
        x, n = torch.from_numpy(data).to(device), torch.from_numpy(num_frames).to(device)
        for name, (batched, looped) in cases.items():
            times = []
            for function, inputs in ((batched, (x, n)), (looped, (data, num_frames))):
                timer = benchmark.Timer(
                    stmt="function(*inputs)",
                    globals={"function": function, "inputs": inputs},
                    num_threads=args.threads,
                )
                times.append(timer.blocked_autorange(min_run_time=args.min_run_time).median)
            rows.append((name, batch, batch / times[1], batch / times[0], times[1] / times[0]))
    print(f"batched on {device}, {args.threads} torch CPU thread(s); samples/s in one process (higher is better)\n")
    print(f"| transform | batch | per-sample numpy loop (CPU) | batched torch ({device.type}) | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for name, batch, looped, batched, ratio in rows:
        print(f"| {name} | {batch} | {looped:,.0f} | {batched:,.0f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()

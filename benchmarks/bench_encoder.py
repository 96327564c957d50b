"""Benchmark the released recurrent encoder: whole-sequence GRU calls vs the released step-by-step loop,
and the pretraining throughput of a preset.

    .venv/bin/python -m benchmarks.bench_encoder              # paper-size encoder, CPU, float32 and bf16
    .venv/bin/python -m benchmarks.bench_encoder --device cuda --amp none bf16 fp16 --repeats 20

Run from the repository root, as a module: it imports the pipeline as ``examples.skeleton``.

The released model (HaLP / CMD) feeds a bidirectional ``nn.GRU`` one frame at a time with the carried state;
``skeleton.models.encoders.RecurrentEncoder`` computes the same function (tested) with whole-sequence calls.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils import benchmark

from examples.skeleton.commands import load_splits
from examples.skeleton.config import fit_to_dataset, load_recipe, recipe_path
from examples.skeleton.models.encoders import EmbeddingNet, RecurrentEncoder, flatten_frames
from examples.skeleton.training.loop import Precision
from examples.skeleton.training.pretrain import Pretraining


class StepByStepEncoder(nn.Module):
    """The released formulation: a bidirectional GRU called once per frame, state carried between calls."""

    def __init__(self, encoder: RecurrentEncoder, num_layers: int, hidden_size: int) -> None:
        super().__init__()
        self.input_norm = encoder.input_norm
        self.gru = nn.GRU(150, hidden_size, num_layers, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor) -> Tensor:
        frames = self.input_norm(flatten_frames(x).transpose(1, 2)).transpose(1, 2)
        state = None
        for t in range(frames.shape[1]):
            output, state = self.gru(frames[:, t : t + 1], state)
        return output[:, -1]


def time_forward_backward(model: nn.Module, x: Tensor, precision: Precision, repeats: int) -> float:
    """Median seconds of one forward + backward pass (after one warm-up pass)."""

    def step() -> None:
        with precision.autocast():
            out = model(x)
        out.float().square().mean().backward()

    step()
    timer = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads())
    return timer.timeit(repeats).median


def pretraining_throughput(recipe: str, device: torch.device, amp: str, steps: int) -> float:
    """Samples/s of full pretraining steps (augmentation, both encoders, HaLP loss with its queue, optimizer), on the
    synthetic data with the recipe's model, queue and batch size."""
    cfg = load_recipe(recipe_path(recipe, "synthetic"), "synthetic")
    cfg.device, cfg.amp = str(device), amp
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or threads)  # as skeleton_moco.py runs the recipe
    train_set, _ = load_splits(cfg, val=False)
    fit_to_dataset(cfg, len(train_set))
    with tempfile.TemporaryDirectory() as out:
        run = Pretraining(cfg, Path(out), device, train_set, None, progress=False)
        batches = (batch for _ in itertools.count() for batch in run.loader)  # the steps may outlast an epoch
        x, num_frames, _ = next(batches)
        for _ in range(5):  # warm-up; also fills the prototype window (256 keys) so HaLP is active when timed
            run.train_step(run.model, x, num_frames)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            x, num_frames, _ = next(batches)
            run.train_step(run.model, x, num_frames)
        if device.type == "cuda":
            torch.cuda.synchronize()
        torch.set_num_threads(threads)
        return steps * cfg.pretrain.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", nargs="+", default=["none", "bf16"], choices=["none", "bf16", "fp16"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--hidden-size", type=int, default=1024)
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timed forward+backward passes per entry")
    parser.add_argument("--recipe", default="small", help="recipe whose pretraining throughput is measured")
    parser.add_argument("--throughput-steps", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    rows = []
    shape = f"B={args.batch_size}, T={args.frames}, {args.num_layers}x{args.hidden_size}"
    for amp in args.amp:
        precision = Precision(amp, device)
        whole = EmbeddingNet(RecurrentEncoder(args.hidden_size, args.num_layers)).to(device)
        stepwise = StepByStepEncoder(whole.backbone, args.num_layers, args.hidden_size).to(device)
        x = torch.randn(args.batch_size, 3, args.frames, 25, 2, device=device)
        t_step = time_forward_backward(stepwise, x, precision, args.repeats)
        t_whole = time_forward_backward(whole.backbone, x, precision, args.repeats)
        rows.append((f"encoder fwd+bwd, {shape}, amp={amp}", f"{1e3 * t_step:.0f} ms", f"{1e3 * t_whole:.0f} ms",
                     f"{t_step / t_whole:.2f}x"))  # fmt: skip
    for amp in args.amp:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rate = pretraining_throughput(args.recipe, device, amp, args.throughput_steps)
        memory = f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else ""
        rows.append((f"pretraining step, recipe {args.recipe}, amp={amp}", "", f"{rate:.0f} samples/s{memory}", ""))

    print(f"\ndevice: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}\n")
    print("| measurement | step-by-step (released) | whole-sequence (ours) | speed-up |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

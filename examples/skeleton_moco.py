"""HaLP skeleton pipeline: MoCo, then MoCo + HaLP pretraining, and the kNN / linear / semi-supervised /
transfer evaluations of the paper (Shah et al., CVPR 2023), on NTU RGB+D 60/120, PKU-MMD II or a synthetic
dataset.

    python examples/skeleton_moco.py                      # whole pipeline on synthetic data, CPU, minutes
    python examples/skeleton_moco.py prepare --dataset ntu60 --raw RAW --out data/ntu60
    python examples/skeleton_moco.py pretrain --dataset ntu60-xsub --data-root data/ntu60 --out runs/ntu60
    torchrun --nproc_per_node 4 examples/skeleton_moco.py pretrain ...      # DDP
    python examples/skeleton_moco.py linear --init-from runs/ntu60/checkpoints/last.pt --out runs/ntu60
    python examples/skeleton_moco.py knn | semi --ratio 0.01 | transfer --dataset pku2-xsub ...

``--preset paper`` (default for real datasets) is the paper's recipe; ``--preset cpu`` (default for the
synthetic data) a small one. Every preset value has a flag (see ``COMMAND --help``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `skeleton` package next to this file

from skeleton import commands  # noqa: E402
from skeleton.bounds import bounded  # noqa: E402
from skeleton.config import AMP_MODES, PRESETS, add_config_arguments  # noqa: E402
from skeleton.data.datasets import DATASET_NAMES  # noqa: E402
from skeleton.data.prepare import add_prepare_arguments, run_prepare  # noqa: E402
from skeleton.fileio import InputError  # noqa: E402

# command -> (handler, config sections with flags, sections whose flags carry no prefix, help)
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], tuple[str, ...], tuple[str, ...], str]] = {
    "pretrain": (
        commands.pretrain_command,
        ("model", "pretrain", "augment", "knn"),
        ("pretrain",),
        "MoCo / MoCo+HaLP pretraining",
    ),
    "knn": (commands.knn_command, ("knn",), ("knn",), "1-NN evaluation of a pretrained encoder"),
    "linear": (commands.linear_command, ("linear",), ("linear",), "linear evaluation of a pretrained encoder"),
    "semi": (commands.semi_command, ("finetune", "semi"), ("finetune", "semi"), "semi-supervised fine-tuning"),
    "transfer": (commands.transfer_command, ("finetune",), ("finetune",), "fine-tune on another dataset"),
    "supervised": (
        commands.supervised_command,
        ("model", "supervised"),
        ("supervised",),
        "supervised upper bound: encoder + linear head from scratch on all labels",
    ),
}
PIPELINE_SECTIONS = ("model", "pretrain", "augment", "knn", "linear")


def _add_common_arguments(parser: argparse.ArgumentParser, resumable: bool) -> None:
    group = parser.add_argument_group("common options")
    group.add_argument("--dataset", choices=DATASET_NAMES, help="dataset (default: synthetic, or the checkpoint's)")
    group.add_argument("--data-root", help="folder of the prepared dataset (the output of `prepare`)")
    group.add_argument(
        "--synthetic", nargs="+", metavar="NAME=VALUE", help="synthetic dataset options, e.g. num_classes=5"
    )
    group.add_argument("--out", help="run folder (default: a new folder under runs/)")
    group.add_argument("--preset", choices=PRESETS, help="cpu for synthetic data, paper otherwise (default)")
    group.add_argument("--device", help="cuda, cpu, cuda:1, ... (default: cuda when available)")
    group.add_argument("--seed", type=bounded(int, "seed"), help="seed of initialization, data order and augmentations")
    group.add_argument("--amp", choices=AMP_MODES, help="mixed precision (default none)")
    group.add_argument("--num-workers", type=bounded(int, "num_workers"), help="DataLoader worker processes")
    group.add_argument(
        "--threads", type=bounded(int, "threads"), help="CPU threads of torch ops (default: the preset's, else torch's)"
    )
    group.add_argument(
        "--no-flush-denormal",
        action="store_true",
        help="keep denormal floats on the CPU (default: flush them to zero, as CPUs without fast denormal "
        "arithmetic can slow several-fold on tiny gradients and optimizer moments)",
    )
    group.add_argument(
        "--max-steps", type=bounded(int, "max_steps"), help="stop after this many training steps (smoke tests)"
    )
    group.add_argument("--init-from", help="checkpoint to start from (evaluation: the pretrained encoder)")
    if resumable:
        group.add_argument("--resume", help="continue the run of this checkpoint exactly where it stopped")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common_arguments(parser, resumable=True)
    add_config_arguments(parser, PIPELINE_SECTIONS, unprefixed=("pretrain",))
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_prepare_arguments(subparsers.add_parser("prepare", help="convert raw NTU / PKU-MMD files"))
    for name, (_, sections, unprefixed, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        _add_common_arguments(sub, resumable=name == "pretrain")
        add_config_arguments(sub, sections, unprefixed)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a command; returns its exit code.

    Exit codes: 0 success, 1 ``prepare --strict`` with skipped files, 2 a usage error (argparse) or an input that
    is not what it must be (a missing or truncated data file, an unreadable checkpoint, another dataset's folder:
    one line naming the path on stderr, no traceback), 130 an interrupted pretraining (checkpoint saved).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "prepare":
        return run_prepare(args)
    # Denormals cost time where the CPU computes them in microcode, and nothing here needs values below 1e-38.
    torch.set_flush_denormal(not args.no_flush_denormal)
    try:
        if args.command is None:
            return commands.pipeline_command(args)
        return COMMANDS[args.command][0](args)
    except (InputError, FileNotFoundError) as error:
        print(f"{parser.prog}{f' {args.command}' if args.command else ''}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

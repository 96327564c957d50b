"""The command line of ``examples/skeleton_moco.py``.

    skeleton_moco.py                                   # the whole pipeline on the synthetic data (CPU, minutes)
    skeleton_moco.py --dataset nwucla --data-root data # pretrain -> kNN -> linear with the small-data recipe
    skeleton_moco.py prepare --dataset sbu --raw RAW --out data/sbu
    skeleton_moco.py pretrain --config configs/ntu60/released.yaml --data-root data/ntu60 --out runs/ntu60
    torchrun --nproc_per_node 4 examples/skeleton_moco.py pretrain ...      # DDP
    skeleton_moco.py linear | knn | semi | transfer --init-from runs/ntu60/checkpoints/last.pt --out runs/ntu60
    skeleton_moco.py supervised --dataset nwucla --data-root data           # the supervised upper bound

Every setting of a recipe (configs/) has a flag; ``COMMAND --help`` lists them. Errors in the command line or the
inputs are one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import typing
import warnings
from collections.abc import Sequence
from typing import Any, Callable, NoReturn, Optional

import torch

from . import commands
from .bounds import bounded
from .config import AMP_MODES, ENCODERS, RECIPE_ALIASES, add_config_arguments
from .data.prepare import add_prepare_arguments, run_prepare
from .data.registry import DATASET_NAMES
from .data.synthetic import SyntheticConfig
from .fileio import InputError

Handler = Callable[[argparse.Namespace], int]

# command -> (handler, config sections with flags, help)
COMMANDS: dict[str, tuple[Handler, tuple[str, ...], str]] = {
    "pretrain": (
        commands.pretrain_command,
        ("model", "loss", "pretrain", "augment", "knn"),
        "MoCo / MoCo+HaLP pretraining",
    ),
    "knn": (commands.knn_command, ("knn",), "1-NN evaluation of a pretrained encoder"),
    "linear": (commands.linear_command, ("linear",), "linear evaluation of a pretrained encoder"),
    "semi": (commands.semi_command, ("finetune", "semi"), "semi-supervised fine-tuning on a fraction of the labels"),
    "transfer": (commands.transfer_command, ("finetune",), "fine-tune a pretrained encoder on another dataset"),
    "supervised": (
        commands.supervised_command,
        ("model", "supervised", "augment"),
        "supervised upper bound: encoder + linear head from scratch on all labels",
    ),
}
PIPELINE_SECTIONS = ("model", "loss", "pretrain", "augment", "knn", "linear")
RECIPES = ("released", "small", *RECIPE_ALIASES)


def parse_synthetic_option(text: str) -> tuple[str, Any]:
    """``"num_classes=5"`` -> ``("num_classes", 5)``, typed by ``skeleton.data.synthetic.SyntheticConfig``
    (an argparse ``type``: a bad option is a one-line usage error)."""
    hints = typing.get_type_hints(SyntheticConfig)
    name, sep, value = text.partition("=")
    if not sep or name not in hints:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of {', '.join(sorted(hints))}, got {text!r}")
    try:
        return name, hints[name](value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be {hints[name].__name__}, got {value!r}") from None


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``prog: error: ...; see --help``), not the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_common_arguments(parser: argparse.ArgumentParser, resumable: bool) -> None:
    group = parser.add_argument_group("common options")
    group.add_argument(
        "--dataset",
        choices=DATASET_NAMES,
        metavar="NAME",
        help=f"dataset, one of: {', '.join(DATASET_NAMES)} (default: synthetic, or the checkpoint's)",
    )
    group.add_argument("--data-root", help="folder of the prepared dataset (the output of `prepare`, or your own)")
    group.add_argument(
        "--layout", help="skeleton layout of a custom folder: a built-in name or a layout file (default: the folder's)"
    )
    group.add_argument("--config", metavar="FILE", help="recipe file (default: configs/<dataset>/<recipe>.yaml)")
    group.add_argument(
        "--recipe",
        "--preset",
        dest="recipe",
        choices=RECIPES,
        metavar="NAME",
        help="recipe of configs/: released (NTU RGB+D, PKU-MMD II; needs a GPU) or small (everything else; minutes on "
        "a CPU); paper and cpu are their old names (default: the dataset's)",
    )
    group.add_argument(
        "--synthetic",
        nargs="+",
        metavar="NAME=VALUE",
        type=parse_synthetic_option,
        help="synthetic dataset options, e.g. num_classes=5",
    )
    group.add_argument("--out", help="run folder (default: a new folder under runs/)")
    group.add_argument("--device", help="cuda, cpu, cuda:1, ... (default: the recipe's)")
    group.add_argument("--seed", type=bounded(int, "seed"), help="seed of initialization, data order and augmentations")
    group.add_argument("--amp", choices=AMP_MODES, help="mixed precision (default: the recipe's)")
    group.add_argument("--num-workers", type=bounded(int, "num_workers"), help="DataLoader worker processes")
    group.add_argument("--threads", type=bounded(int, "threads"), help="CPU threads of torch ops (default: torch's)")
    group.add_argument(
        "--no-flush-denormal",
        action="store_true",
        help="keep denormal floats on the CPU (default: flush them to zero, as CPUs without fast denormal "
        "arithmetic can slow several-fold on tiny gradients and optimizer moments)",
    )
    group.add_argument(
        "--max-steps",
        type=bounded(int, "max_steps"),
        help="stop after this many training steps of this command (not kept by a later --resume)",
    )
    group.add_argument("--init-from", metavar="CHECKPOINT", help="checkpoint to start from (evaluation: the encoder)")
    if resumable:
        group.add_argument("--resume", metavar="CHECKPOINT", help="continue the run of this checkpoint exactly")
    group.add_argument(
        "--print-config", action="store_true", help="print the resolved recipe (JSON) and exit"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="skeleton_moco.py",
        description=__doc__.split("\n\n")[0] + f"\n\nencoders: {', '.join(ENCODERS)}",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common_arguments(parser, resumable=True)
    add_config_arguments(parser, PIPELINE_SECTIONS)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    add_prepare_arguments(subparsers.add_parser("prepare", help="convert a raw dataset into the prepared layout"))
    for name, (_, sections, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        _add_common_arguments(sub, resumable=name == "pretrain")
        add_config_arguments(sub, sections)
    return parser


def _print_config(args: argparse.Namespace) -> int:
    cfg = commands.recipe_config(args)
    commands.check_data_options(cfg)
    print(cfg.to_json())
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a command; returns its exit code.

    Exit codes: 0 success; 1 ``prepare --strict`` with skipped files, or a training run that diverged (one line
    saying where; nothing is written as a result); 2 a usage error or an input that is not what it must be (a missing
    or truncated data file, an unreadable checkpoint, another dataset's folder: one line naming the flag or the path
    on stderr, no traceback); 130 an interrupted pretraining (checkpoint saved).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"{parser.prog}{f' {args.command}' if args.command else ''}"
    # A warning reads as one line for the user ("prog: warning: ..."), not with the source line that raised it.
    python_format = warnings.formatwarning
    warnings.formatwarning = lambda message, *_: f"{prog}: warning: {message}\n"
    try:
        return _run(args, prog)
    finally:
        warnings.formatwarning = python_format


def _run(args: argparse.Namespace, prog: str) -> int:
    if args.command == "prepare":
        return run_prepare(args)
    # Denormals cost time where the CPU computes them in microcode, and nothing here needs values below 1e-38.
    torch.set_flush_denormal(not args.no_flush_denormal)
    try:
        if args.print_config:
            return _print_config(args)
        if args.command is None:
            return commands.pipeline_command(args)
        return COMMANDS[args.command][0](args)
    except (InputError, commands.UsageError, FileNotFoundError, ValueError) as error:
        return _fail(prog, error, 2)
    except FloatingPointError as error:
        return _fail(prog, error, 1)


def _fail(prog: str, error: Any, code: int) -> int:
    print(f"{prog}: error: {error}", file=sys.stderr)
    return code

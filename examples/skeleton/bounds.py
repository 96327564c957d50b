"""Valid ranges of the pipeline's numeric settings, checked when a flag is parsed.

A value out of range is an argparse error that names the flag (``argument --pretrain-batch-size: expected an integer
>= 1, got '0'``), where it used to end in a ZeroDivisionError deep in the sampler or a NaN loss. The ranges are keyed
by the setting's name, which means the same in every section (``epochs`` of pretraining and of the linear probe).
The loss's settings are not here: ``halp_loss.HaLPInfoNCE`` validates its own arguments, and the pipeline
builds the criterion before any work to report them (``skeleton.commands``).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

Number = Union[int, float]


@dataclass(frozen=True)
class Bounds:
    """An interval of valid values: ``low <= value <= high``, or ``low < value`` with ``low_open``; a missing
    end is unbounded."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False

    def contains(self, value: Number) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        """The interval in words: ``>= 1``, ``> 0``, ``in [0, 1]`` or ``in (0, 1]``."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


AT_LEAST_ONE = Bounds(1)
NON_NEGATIVE = Bounds(0)
POSITIVE = Bounds(0, low_open=True)
UNIT = Bounds(0, 1)
POSITIVE_UNIT = Bounds(0, 1, low_open=True)

SETTING_BOUNDS: dict[str, Bounds] = {
    # model
    "hidden_size": AT_LEAST_ONE,
    "num_layers": AT_LEAST_ONE,
    "stgcn_width": AT_LEAST_ONE,
    "tcn_width": AT_LEAST_ONE,
    "embed_dim": AT_LEAST_ONE,
    "clip_frames": AT_LEAST_ONE,
    # pretraining and the classifier protocols
    "epochs": AT_LEAST_ONE,
    "halp_start_epoch": NON_NEGATIVE,
    "steps": AT_LEAST_ONE,
    "memory_bank_size": AT_LEAST_ONE,
    "batch_size": Bounds(2),  # BatchNorm, and a contrastive batch, need two different sequences
    "lr": POSITIVE,
    "momentum": UNIT,
    "weight_decay": NON_NEGATIVE,
    "lr_milestones": NON_NEGATIVE,
    "key_momentum": UNIT,
    "knn_every": NON_NEGATIVE,
    "save_every": NON_NEGATIVE,
    "eval_every": AT_LEAST_ONE,
    # augmentations
    "crop_min_ratio": POSITIVE_UNIT,
    "crop_min_frames": AT_LEAST_ONE,
    "shear": NON_NEGATIVE,
    "corrupt_prob": UNIT,
    "mirror_prob": UNIT,
    "foreshorten": UNIT,
    "rotate_degrees": NON_NEGATIVE,
    # kNN and semi-supervised protocols
    "chunk_size": AT_LEAST_ONE,
    "ratio": POSITIVE_UNIT,
    "repeats": AT_LEAST_ONE,
    # common flags
    "seed": NON_NEGATIVE,  # HaLPInfoNCE seeds its bank with it
    "num_workers": NON_NEGATIVE,
    "threads": AT_LEAST_ONE,
    "max_steps": AT_LEAST_ONE,
}
"""Valid values of each numeric setting, by name."""


def bounded(
    kind: Callable[[str], Number], name: str, allow: tuple[str, ...] = ()
) -> Callable[[str], Union[Number, str]]:
    """An argparse ``type`` that parses a finite ``kind`` (``int`` or ``float``) within ``SETTING_BOUNDS[name]``.

    Args:
        kind: ``int`` or ``float``.
        name: the setting, a key of ``SETTING_BOUNDS`` (a name without bounds is only checked to be finite).
        allow: words accepted as they are besides numbers (``("auto",)``).

    Returns:
        The parsing function; it raises ``argparse.ArgumentTypeError``, which argparse reports as
        ``argument --FLAG: MESSAGE`` with exit code 2.
    """
    bounds = SETTING_BOUNDS.get(name)
    expected = f"{'an integer' if kind is int else 'a finite number'}{f' {bounds.describe()}' if bounds else ''}"
    expected += "".join(f" or {word!r}" for word in allow)

    def parse(text: str) -> Union[Number, str]:
        if text in allow:
            return text
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not math.isfinite(value) or (bounds is not None and not bounds.contains(value)):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse

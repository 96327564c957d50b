"""The datasets the pipeline knows: the one place that maps a dataset name to what it is.

A *family* is one raw dataset as ``prepare --dataset`` reads it and as its prepared folder is named
(``DATA_ROOT/<family>/<benchmark>/``); a *dataset name* (``--dataset`` of the training commands) is a family with
one of its evaluation benchmarks, e.g. ``ntu60-xsub`` or ``sbu-fold3``. Families with a single protocol also
answer to their bare name (``nwucla``, ``msr-action3d``; ``sbu`` is its first fold). ``custom`` is any folder in
the prepared layout, ``synthetic`` the generated data set. What ``prepare`` reads for each family is declared by
its adapter (``FORMATS``).

Example:
    >>> spec = dataset_spec("nwucla")
    >>> spec.family, spec.benchmark, spec.layout, spec.num_classes
    ('nwucla', 'xview', 'kinect_v1', 10)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .formats import RawFormat
from .formats.msr_action3d import MSR_ACTION3D
from .formats.ntu import NTU60, NTU120
from .formats.nwucla import NWUCLA
from .formats.pku import PKU2
from .formats.sbu import SBU

RELEASED_RECIPE = "released"
"""The published NTU / PKU-MMD training recipe."""
SMALL_RECIPE = "small"
"""The recipe for small datasets, whose schedule follows the dataset's size."""


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset name stands for.

    Attributes:
        name: the canonical dataset name, e.g. ``"ntu60-xsub"`` or ``"nwucla-xview"`` (an alias such as
            ``"nwucla"`` resolves to its canonical spec).
        family: the raw dataset, as ``prepare --dataset`` names it and its prepared folder is called:
            ``"ntu60"``, ``"ntu120"``, ``"pku2"``, ``"nwucla"``, ``"sbu"``, ``"msr-action3d"``, or ``"custom"`` /
            ``"synthetic"``.
        benchmark: the evaluation protocol, the sub-folder of the prepared family folder: ``"xsub"``, ``"xview"``,
            ``"xset"``, ``"fold1"`` .. ``"fold5"``; ``""`` for custom and synthetic data.
        num_classes: size of the label space; None where it comes from the data (custom: its labels; synthetic:
            its configuration).
        layout: name of the skeleton layout of the prepared samples (``"kinect_v2"``, ``"kinect_v1"``,
            ``"openni15"``); None where the data says it (custom, synthetic).
        num_bodies: body slots M of a prepared sample; None where the data says it.
        default_recipe: the training recipe used when none is named: ``RELEASED_RECIPE`` for NTU and PKU-MMD,
            ``SMALL_RECIPE`` for every other dataset.
    """

    name: str
    family: str
    benchmark: str
    num_classes: Optional[int]
    layout: Optional[str]
    num_bodies: Optional[int]
    default_recipe: str


FORMATS: dict[str, RawFormat] = {fmt.family: fmt for fmt in (NTU60, NTU120, PKU2, NWUCLA, SBU, MSR_ACTION3D)}
"""The raw formats ``prepare`` reads, by family: each declares its benchmarks, classes, layout and bodies."""
FAMILIES: tuple[str, ...] = tuple(FORMATS)
"""The family names: ``prepare --dataset`` choices and prepared folder names."""

RELEASED_RECIPE_FAMILIES = frozenset({"ntu60", "ntu120", "pku2"})
"""The families the published recipe was made for; every other dataset defaults to the small-data recipe."""

ALIASES: dict[str, str] = {"nwucla": "nwucla-xview", "msr-action3d": "msr-action3d-xsub", "sbu": "sbu-fold1"}
"""Short names of datasets with one protocol (SBU: its first fold) -> canonical names."""


def _build() -> dict[str, DatasetSpec]:
    specs = {
        "synthetic": DatasetSpec("synthetic", "synthetic", "", None, None, None, SMALL_RECIPE),
        "custom": DatasetSpec("custom", "custom", "", None, None, None, SMALL_RECIPE),
    }
    for family, fmt in FORMATS.items():
        recipe = RELEASED_RECIPE if family in RELEASED_RECIPE_FAMILIES else SMALL_RECIPE
        for benchmark in fmt.benchmarks:
            name = f"{family}-{benchmark}"
            specs[name] = DatasetSpec(name, family, benchmark, fmt.num_classes, fmt.layout, fmt.num_bodies, recipe)
    for alias, name in ALIASES.items():
        specs[alias] = specs[name]
    return specs


DATASETS: dict[str, DatasetSpec] = _build()
"""Every dataset name the commands accept (canonical names and aliases) -> its spec."""
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)
"""The dataset names, for ``--dataset`` choices."""


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a dataset name.

    Args:
        name: a name from ``DATASET_NAMES``.

    Returns:
        Its spec (an alias gives the canonical spec).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    return DATASETS[name]

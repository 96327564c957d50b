"""The benchmarks: NTU RGB+D 60/120, PKU-MMD II and NW-UCLA split rules, class counts, published sizes
(SPEC section 3), and the frame and body axes of the prepared layout."""

from __future__ import annotations

from .layouts import KINECT_V1, KINECT_V2

NUM_JOINTS = KINECT_V2.num_joints
"""Joints of NTU RGB+D and PKU-MMD (Kinect v2)."""
NUM_BODIES = 2
"""Bodies per sample in the prepared NTU / PKU-MMD layout (the two most active)."""
MAX_FRAMES = 300
"""Frame axis length of the prepared layout; longer recordings keep their first 300 frames."""

MAX_BODIES_READ = 4
"""Bodies per frame considered when reading NTU files; further bodies in a frame are ignored."""

NTU60_XSUB_TRAIN_PERFORMERS: frozenset[int] = frozenset(
    {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
)
NTU120_XSUB_TRAIN_PERFORMERS: frozenset[int] = NTU60_XSUB_TRAIN_PERFORMERS | frozenset(
    {45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89,
     91, 92, 93, 94, 95, 97, 98, 100, 103}
)  # fmt: skip
XVIEW_TRAIN_CAMERAS: frozenset[int] = frozenset({2, 3})

NTU60_MAX_SETUP, NTU60_MAX_ACTION = 17, 60
NTU120_MAX_SETUP, NTU120_MAX_ACTION = 32, 120
NTU_MAX_CAMERA, NTU120_MAX_PERFORMER, NTU_MAX_REPLICATION = 3, 106, 2

FULL_FILE_COUNTS: dict[str, int] = {"ntu60": 56_880, "ntu120": 114_480, "nwucla": 1_484}
"""Number of skeleton files of the complete releases (NTU: before removing the missing-skeleton lists)."""

MISSING_COUNTS: dict[str, int] = {"ntu60": 302, "ntu120": 535, "nwucla": 0}
"""Sizes of the official missing-skeleton lists (NW-UCLA has none)."""

PUBLISHED_SPLIT_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("ntu60", "xsub"): (40_091, 16_487),
    ("ntu60", "xview"): (37_646, 18_932),
    ("ntu120", "xsub"): (63_026, 50_919),
    ("ntu120", "xset"): (54_468, 59_477),
    ("nwucla", "xview"): (1_020, 464),
}
"""(train, val) sample counts after removing the missing-skeleton list (SPEC section 3.1)."""

NWUCLA_ACTIONS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)
"""NW-UCLA action ids (``aAA`` in file names); label = position in this tuple (a07 and a10 do not exist)."""
NWUCLA_TRAIN_VIEWS: frozenset[int] = frozenset({1, 2})
"""NW-UCLA cross-view protocol: views 1 and 2 train, view 3 tests."""
NWUCLA_JOINTS = KINECT_V1.num_joints
NWUCLA_BODIES = 1

PREPARED_SLOTS: dict[str, tuple[int, int]] = {
    "ntu60": (NUM_JOINTS, NUM_BODIES),
    "ntu120": (NUM_JOINTS, NUM_BODIES),
    "pku2": (NUM_JOINTS, NUM_BODIES),
    "nwucla": (NWUCLA_JOINTS, NWUCLA_BODIES),
}
"""(joints V, bodies M) of a prepared sample of each dataset family."""

NUM_CLASSES: dict[str, int] = {"ntu60": 60, "ntu120": 120, "pku2": 51, "nwucla": len(NWUCLA_ACTIONS)}
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "ntu60": ("xsub", "xview"),
    "ntu120": ("xsub", "xset"),
    "pku2": ("xsub", "xview"),
    "nwucla": ("xview",),
}
SPLITS: tuple[str, ...] = ("train", "val")


def ntu_is_training(dataset: str, benchmark: str, setup: int, camera: int, performer: int) -> bool:
    """Return whether an NTU sample belongs to the training side of a benchmark.

    Args:
        dataset: ``"ntu60"`` or ``"ntu120"`` (selects the x-sub performer list).
        benchmark: ``"xsub"``, ``"xview"`` or ``"xset"``.
        setup: 1-based setup id (``Sxxx``).
        camera: 1-based camera id (``Cxxx``).
        performer: 1-based performer id (``Pxxx``).

    Returns:
        True for the training split, False for the validation (test) split.

    Raises:
        ValueError: if ``dataset`` or ``benchmark`` is not one of the NTU benchmarks.
    """
    if dataset not in ("ntu60", "ntu120") or benchmark not in BENCHMARKS[dataset]:
        raise ValueError(f"unknown NTU benchmark {dataset!r}/{benchmark!r}; expected one of {BENCHMARKS}")
    if benchmark == "xsub":
        train = NTU60_XSUB_TRAIN_PERFORMERS if dataset == "ntu60" else NTU120_XSUB_TRAIN_PERFORMERS
        return performer in train
    if benchmark == "xview":
        return camera in XVIEW_TRAIN_CAMERAS
    return setup % 2 == 0

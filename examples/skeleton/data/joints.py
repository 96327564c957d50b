"""Kinect v2 skeleton constants and the NTU RGB+D / PKU-MMD benchmark split rules (SPEC section 3)."""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 25
NUM_BODIES = 2
NUM_COORDS = 3
MAX_FRAMES = 300
"""Frame axis length of the prepared layout; longer recordings keep their first 300 frames."""

MAX_BODIES_READ = 4
"""Bodies per frame considered when reading NTU files; further bodies in a frame are ignored."""

JOINT_NAMES: tuple[str, ...] = (
    "spine_base",
    "spine_mid",
    "neck",
    "head",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "left_hand",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "right_hand",
    "left_hip",
    "left_knee",
    "left_ankle",
    "left_foot",
    "right_hip",
    "right_knee",
    "right_ankle",
    "right_foot",
    "spine_shoulder",
    "left_hand_tip",
    "left_thumb",
    "right_hand_tip",
    "right_thumb",
)
"""Kinect v2 joint order (index = 0-based joint id)."""

JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}

BONE_PAIRS_1BASED: tuple[tuple[int, int], ...] = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
    (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (21, 21),
    (22, 23), (23, 8), (24, 25), (25, 12),
)  # fmt: skip
"""(joint, parent) pairs of the bone modality, 1-based, as in the reference (SPEC section 3.3)."""

BONE_PARENTS: np.ndarray = np.array([parent - 1 for _, parent in BONE_PAIRS_1BASED], dtype=np.int64)
"""``BONE_PARENTS[v]`` is the 0-based joint whose position is subtracted from joint ``v`` for bones."""

# Pre-normalization anchors (0-based): body 0's spine mid is the origin, spine base -> spine mid is
# turned to +z and left shoulder -> right shoulder to +x.
CENTER_JOINT = JOINT_INDEX["spine_mid"]
Z_AXIS_JOINTS = (JOINT_INDEX["spine_base"], JOINT_INDEX["spine_mid"])
X_AXIS_JOINTS = (JOINT_INDEX["left_shoulder"], JOINT_INDEX["right_shoulder"])

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

NTU_FULL_FILE_COUNTS: dict[str, int] = {"ntu60": 56_880, "ntu120": 114_480}
"""Number of ``.skeleton`` files of the complete releases (before removing the missing-skeleton lists)."""

NTU_MISSING_COUNTS: dict[str, int] = {"ntu60": 302, "ntu120": 535}
"""Sizes of the official missing-skeleton lists."""

PUBLISHED_SPLIT_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("ntu60", "xsub"): (40_091, 16_487),
    ("ntu60", "xview"): (37_646, 18_932),
    ("ntu120", "xsub"): (63_026, 50_919),
    ("ntu120", "xset"): (54_468, 59_477),
}
"""(train, val) sample counts after removing the missing-skeleton list (SPEC section 3.1)."""

NUM_CLASSES: dict[str, int] = {"ntu60": 60, "ntu120": 120, "pku2": 51}
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "ntu60": ("xsub", "xview"),
    "ntu120": ("xsub", "xset"),
    "pku2": ("xsub", "xview"),
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

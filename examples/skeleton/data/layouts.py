"""Skeleton layouts: which joints a sequence has, how they connect, and which ones anchor the pre-normalization.

Two Kinect layouts share their first 20 joints (same order, same meaning):

- :data:`KINECT_V2` — 25 joints, NTU RGB+D 60/120 and PKU-MMD (SPEC section 3.1);
- :data:`KINECT_V1` — 20 joints, NW-UCLA (Kinect v1 has no spine shoulder, hand tips or thumbs).

Every part of the pipeline that depends on the joints (encoders, the ST-GCN graph, bone modality, joint
corruption) takes the layout from the number of joints of the data (:func:`layout_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

NUM_COORDS = 3

# Pre-normalization anchors (0-based), the same joints in both layouts: the second spine joint is the origin,
# spine base -> second spine joint is turned to +z and left shoulder -> right shoulder to +x.
CENTER_JOINT = 1
Z_AXIS_JOINTS = (0, 1)
X_AXIS_JOINTS = (4, 8)


@dataclass(frozen=True)
class SkeletonLayout:
    """A skeleton's joints and bones.

    Attributes:
        name: short identifier.
        joint_names: joint names by 0-based index.
        parents: ``parents[v]`` is the joint bone ``v`` points from (``parents[v] == v`` for the root); the bone
            modality is ``x[v] - x[parents[v]]``.
        graph_center: the joint ST-GCN measures hop distances from.
    """

    name: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    graph_center: int

    def __post_init__(self) -> None:
        if len(self.parents) != len(self.joint_names):
            raise ValueError(f"{self.name}: {len(self.joint_names)} joints but {len(self.parents)} parents")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @cached_property
    def index(self) -> dict[str, int]:
        """Joint name -> 0-based index."""
        return {name: i for i, name in enumerate(self.joint_names)}

    @property
    def bone_parents(self) -> np.ndarray:
        """``parents`` as an int64 array."""
        return np.array(self.parents, dtype=np.int64)


def _parents_from_pairs(pairs_1based: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    return tuple(parent - 1 for _, parent in sorted(pairs_1based))


KINECT_V2_BONE_PAIRS_1BASED: tuple[tuple[int, int], ...] = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
    (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (21, 21),
    (22, 23), (23, 8), (24, 25), (25, 12),
)  # fmt: skip
"""(joint, parent) pairs of the bone modality, 1-based, as in the reference (SPEC section 3.3)."""

KINECT_V2 = SkeletonLayout(
    name="kinect_v2",
    joint_names=(
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
    ),  # fmt: skip
    parents=_parents_from_pairs(KINECT_V2_BONE_PAIRS_1BASED),
    graph_center=20,  # spine shoulder
)

# Kinect v1 has no spine shoulder; its shoulder centre (joint 3, 1-based) takes that role: bones point toward
# it as they point toward the spine shoulder in the NTU pairs, and it is the graph centre.
KINECT_V1_BONE_PAIRS_1BASED: tuple[tuple[int, int], ...] = (
    (1, 2), (2, 3), (3, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9), (11, 10),
    (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19),
)  # fmt: skip

KINECT_V1 = SkeletonLayout(
    name="kinect_v1",
    # Joints 5-20 (1-based) are Kinect v2's: the shoulders, arms, hips and legs.
    joint_names=("hip_center", "spine", "shoulder_center", "head", *KINECT_V2.joint_names[4:20]),
    parents=_parents_from_pairs(KINECT_V1_BONE_PAIRS_1BASED),
    graph_center=2,  # shoulder centre
)

LAYOUTS: dict[int, SkeletonLayout] = {layout.num_joints: layout for layout in (KINECT_V2, KINECT_V1)}


def layout_for(num_joints: int) -> SkeletonLayout:
    """The layout of data with ``num_joints`` joints.

    Raises:
        ValueError: if no layout has that many joints.
    """
    if num_joints not in LAYOUTS:
        known = ", ".join(f"{n} ({layout.name})" for n, layout in LAYOUTS.items())
        raise ValueError(f"no skeleton layout has {num_joints} joints; known: {known}")
    return LAYOUTS[num_joints]

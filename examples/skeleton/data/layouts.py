"""Skeleton layouts as data: which joints a sequence has, how they connect, and which ones anchor the
pre-normalization.

A ``SkeletonLayout`` declares its joints (names, in the order of the data's joint axis), its bones (the
parent of each joint; the root is its own parent), the centre of the ST-GCN graph, and the anchors of the
pre-normalization: the origin joint, the "up" pair turned to +z (+y for 2-D data) and the "across" pair turned
to +x (3-D data only). Built in (``BUILT_IN_LAYOUTS``):

- ``kinect_v2`` — 25 joints: NTU RGB+D 60/120 and PKU-MMD;
- ``kinect_v1`` — 20 joints: NW-UCLA and MSR Action3D (after reordering; no spine shoulder, hand tips or
  thumbs; its first 20 joints mean what Kinect v2's first 20 do, except the spine and shoulder centre);
- ``openni15`` — 15 joints: the OpenNI skeleton of SBU Kinect Interaction, in its native order;
- ``coco17`` — 17 keypoints: the COCO keypoints most 2-D video pose estimators output.

Any other skeleton is declared in a layout file (``layout.yaml`` / ``layout.yml`` / ``layout.json``), read by
``read_layout``; ``resolve_layout`` takes a built-in name, a file or a layout. A file names joints, not
indices::

    name: my_pose                 # optional; default: the file's name
    joints: [pelvis, chest, head, left_hand, right_hand]
    parents:                      # every joint's parent; the one root maps to null
      pelvis: null
      chest: pelvis
      head: chest
      left_hand: chest
      right_hand: chest
    center: chest                 # ST-GCN graph centre (default: the root)
    origin: pelvis                # pre-normalization: the origin joint
    up: [pelvis, chest]           # this pair is turned to +z (3-D) or +y (2-D)
    across: [left_hand, right_hand]  # this pair is turned to +x (3-D only)

Example:
    >>> layout = resolve_layout("openni15")
    >>> layout.num_joints, layout.joint_names[layout.origin], layout.root == layout.graph_center
    (15, 'torso', True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Union

from ..fileio import InputError

NUM_COORDS = 3
"""Coordinates per joint of the Kinect recordings ``prepare`` reads (x, y, z)."""
COORDINATE_COUNTS = (2, 3)
"""Coordinates per joint the pipeline accepts: image keypoints (x, y) or positions (x, y, z)."""
LAYOUT_FILES = ("layout.yaml", "layout.yml", "layout.json")
"""Names of a layout file in a custom data folder, tried in this order."""
FILE_FIELDS = ("name", "joints", "parents", "center", "origin", "up", "across")
"""The fields of a layout file (``name`` and ``center`` optional)."""


@dataclass(frozen=True)
class SkeletonLayout:
    """A skeleton's joints, bones, graph centre and pre-normalization anchors (all joints as 0-based indices).

    Attributes:
        name: short identifier.
        joint_names: joint names by index, unique.
        parents: ``parents[v]`` is the joint bone ``v`` hangs from; the single root is its own parent and every
            joint reaches it (the bones form a tree).
        graph_center: the joint ST-GCN measures hop distances from.
        origin: the joint the pre-normalization moves to the origin (body 0, every frame).
        up: ``(from, to)``: the pre-normalization turns ``to - from`` to +z (3-D) or +y (2-D).
        across: ``(from, to)``: turned to +x after ``up`` (3-D only).

    Raises:
        ValueError: naming the layout and the field, if the joints are not unique, an index is out of range, the
            bones do not form one tree, or an anchor pair repeats a joint.
    """

    name: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    graph_center: int
    origin: int
    up: tuple[int, int]
    across: tuple[int, int]

    def __post_init__(self) -> None:
        # Sequences as tuples (a layout read back from JSON has lists), so that layouts compare and hash by value.
        for name in ("joint_names", "parents", "up", "across"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problem = _tree_problem(self.joint_names, self.parents)
        for what, joint in (("graph_center", self.graph_center), ("origin", self.origin), *_pair_items(self)):
            if problem is None and not 0 <= joint < len(self.joint_names):
                problem = f"{what}: joint {joint} is not in 0..{len(self.joint_names) - 1}"
        for what, pair in (("up", self.up), ("across", self.across)):
            if problem is None and (len(pair) != 2 or pair[0] == pair[1]):
                problem = f"{what}: expected two different joints, got {pair}"
        if problem is not None:
            raise ValueError(f"skeleton layout {self.name!r}: {problem}")

    @property
    def num_joints(self) -> int:
        """V."""
        return len(self.joint_names)

    @cached_property
    def index(self) -> dict[str, int]:
        """Joint name -> index."""
        return {name: i for i, name in enumerate(self.joint_names)}

    @property
    def root(self) -> int:
        """The joint that is its own parent."""
        return next(joint for joint, parent in enumerate(self.parents) if joint == parent)

    def to_dict(self) -> dict[str, Any]:
        """The layout in the layout-file form (joint names, the root's parent None), for files and checkpoints.

        ``layout_from_dict`` reads it back to an equal layout.
        """
        names = self.joint_names
        return {
            "name": self.name,
            "joints": list(names),
            "parents": {names[v]: None if p == v else names[p] for v, p in enumerate(self.parents)},
            "center": names[self.graph_center],
            "origin": names[self.origin],
            "up": [names[j] for j in self.up],
            "across": [names[j] for j in self.across],
        }


def _pair_items(layout: SkeletonLayout) -> list[tuple[str, int]]:
    return [(f"{what}[{i}]", joint) for what, pair in (("up", layout.up), ("across", layout.across))
            for i, joint in enumerate(pair)]  # fmt: skip


def _tree_problem(names: tuple[str, ...], parents: tuple[int, ...]) -> str | None:
    """What keeps joints and parents from being one tree of uniquely named joints; None if nothing does."""
    if not names:
        return "joints: no joints"
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        return f"joints: repeated names {duplicates}"
    if len(parents) != len(names):
        return f"parents: {len(names)} joints but {len(parents)} parents"
    outside = [(names[v], p) for v, p in enumerate(parents) if not 0 <= p < len(names)]
    if outside:
        return f"parents: {outside[0][0]}'s parent {outside[0][1]} is not a joint index"
    roots = [names[v] for v, p in enumerate(parents) if v == p]
    if len(roots) != 1:
        return f"parents: expected exactly one root (a joint that is its own parent / has parent null), got {roots}"
    for joint in range(len(names)):
        seen = {joint}
        while parents[joint] != joint:
            joint = parents[joint]
            if joint in seen:
                return f"parents: the bones through {names[joint]} form a cycle, not a tree"
            seen.add(joint)
    return None


def _parents_from_pairs(pairs_1based: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    return tuple(parent - 1 for _, parent in sorted(pairs_1based))


KINECT_V2_BONE_PAIRS_1BASED: tuple[tuple[int, int], ...] = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
    (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (21, 21),
    (22, 23), (23, 8), (24, 25), (25, 12),
)  # fmt: skip
"""(joint, parent) pairs of the released code's bone modality, 1-based."""

KINECT_V2 = SkeletonLayout(
    name="kinect_v2",
    joint_names=(
        "spine_base", "spine_mid", "neck", "head", "left_shoulder", "left_elbow", "left_wrist", "left_hand",
        "right_shoulder", "right_elbow", "right_wrist", "right_hand", "left_hip", "left_knee", "left_ankle",
        "left_foot", "right_hip", "right_knee", "right_ankle", "right_foot", "spine_shoulder", "left_hand_tip",
        "left_thumb", "right_hand_tip", "right_thumb",
    ),  # fmt: skip
    parents=_parents_from_pairs(KINECT_V2_BONE_PAIRS_1BASED),
    graph_center=20,  # spine shoulder
    # The 2s-AGCN pre-normalization: spine mid at the origin, spine base -> spine mid to +z, shoulders to +x.
    origin=1,
    up=(0, 1),
    across=(4, 8),
)

# Kinect v1 has no spine shoulder; its shoulder centre (joint 3, 1-based) takes that role: bones point toward
# it as they point toward the spine shoulder in the Kinect v2 pairs, and it is the graph centre.
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
    origin=1,  # the same anchors as Kinect v2: spine, hip centre -> spine, left -> right shoulder
    up=(0, 1),
    across=(4, 8),
)

OPENNI15 = SkeletonLayout(
    name="openni15",
    joint_names=(
        "head", "neck", "torso", "left_shoulder", "left_elbow", "left_hand", "right_shoulder", "right_elbow",
        "right_hand", "left_hip", "left_knee", "left_foot", "right_hip", "right_knee", "right_foot",
    ),  # fmt: skip
    # Rooted at the neck, the graph centre, as the Kinect layouts are rooted at theirs; the hips hang from the torso.
    parents=(1, 1, 1, 1, 3, 4, 1, 6, 7, 2, 9, 10, 2, 12, 13),
    graph_center=1,
    origin=2,  # torso, the counterpart of the Kinect spine mid
    up=(2, 1),  # torso -> neck
    across=(3, 6),  # left -> right shoulder
)

COCO17 = SkeletonLayout(
    name="coco17",
    joint_names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
        "right_knee", "left_ankle", "right_ankle",
    ),  # fmt: skip
    # COCO has no neck or pelvis keypoint and its drawn skeleton has cycles (the shoulder and hip lines); this
    # tree hangs the shoulders from the nose (where a neck would join), each hip from its shoulder (the torso's
    # sides) and the face from the nose, which is root and graph centre.
    parents=(0, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14),
    graph_center=0,
    # The hip midpoint is not a keypoint. The left hip stands in for the pelvis: the hips move least with
    # gestures, and left hip -> left shoulder (one side of the torso) keeps its length through arm, head and
    # leg motion, which makes it the steadiest up direction and, for 2-D data, scale; either side would do.
    origin=11,
    up=(11, 5),
    across=(5, 6),  # left -> right shoulder, as the other layouts
)

BUILT_IN_LAYOUTS: dict[str, SkeletonLayout] = {
    layout.name: layout for layout in (KINECT_V2, KINECT_V1, OPENNI15, COCO17)
}
"""The built-in layouts by name."""

LayoutSpec = Union[SkeletonLayout, str, os.PathLike]
"""A layout, a built-in layout's name, or the path of a layout file."""


def layout_for(num_joints: int) -> SkeletonLayout:
    """The built-in layout of data with ``num_joints`` joints, when exactly one built-in has that many.

    Raises:
        ValueError: if no built-in layout has that many joints (saying how to declare one), or more than one does.
    """
    matches = [layout for layout in BUILT_IN_LAYOUTS.values() if layout.num_joints == num_joints]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(f"{layout.name} ({layout.num_joints})" for layout in BUILT_IN_LAYOUTS.values())
    if matches:
        names = ", ".join(layout.name for layout in matches)
        raise ValueError(f"{num_joints} joints fit several built-in layouts ({names}); name one")
    raise ValueError(
        f"no built-in skeleton layout has {num_joints} joints (built in: {known}); declare the skeleton in a"
        f" layout file ({' / '.join(LAYOUT_FILES)} in the data folder, or pass its path) with the fields"
        f" {', '.join(FILE_FIELDS)}"
    )


def resolve_layout(spec: LayoutSpec) -> SkeletonLayout:
    """A layout from a built-in name, a layout file's path, or a layout (returned as it is).

    Raises:
        InputError: (a ``ValueError``) for a string that is neither a built-in name nor an existing file, or, naming
            the file and field, for an invalid layout file.
    """
    if isinstance(spec, SkeletonLayout):
        return spec
    if isinstance(spec, str) and spec in BUILT_IN_LAYOUTS:
        return BUILT_IN_LAYOUTS[spec]
    path = Path(spec)
    if not path.is_file():
        raise InputError(
            f"layout {str(spec)!r} is neither a built-in layout ({', '.join(BUILT_IN_LAYOUTS)}) nor a layout file"
        )
    return read_layout(path)


def find_layout_file(folder: Path) -> Path | None:
    """The layout file of a data folder (see ``LAYOUT_FILES``), or None."""
    return next((folder / name for name in LAYOUT_FILES if (folder / name).is_file()), None)


def read_layout(path: str | os.PathLike) -> SkeletonLayout:
    """Read a layout file: JSON (``.json``) or YAML (any other suffix; needs PyYAML, in the ``examples`` extra).

    Raises:
        InputError: naming the file (and the field), if it cannot be read or parsed or does not declare a
            valid layout (see ``layout_from_dict``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: unreadable layout file ({error})") from None
    try:
        content = json.loads(text, object_pairs_hook=_unique_keys) if path.suffix == ".json" else _load_yaml(text)
    except ValueError as error:  # json.JSONDecodeError, or a repeated key
        raise InputError(f"{path}: not valid JSON ({error})") from None
    except Exception as error:  # yaml.YAMLError and its subclasses
        raise InputError(f"{path}: not valid YAML ({error})") from None
    return layout_from_dict(content, source=str(path), default_name=path.parent.name or path.stem)


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """A mapping from its (key, value) pairs, refusing a repeated key (JSON and YAML parsers keep the last one
    silently, which would drop e.g. a joint's first parent)."""
    keys = [key for key, _ in pairs]
    repeated = sorted({str(key) for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"repeated keys {repeated}")
    return dict(pairs)


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load`` refusing repeated mapping keys."""
    import yaml  # only YAML layout files need PyYAML

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        pairs = [(loader.construct_object(key, deep=True), loader.construct_object(value, deep=True))
                 for key, value in node.value]  # fmt: skip
        try:
            return _unique_keys(pairs)
        except ValueError as error:
            raise yaml.constructor.ConstructorError(None, None, str(error), node.start_mark) from None

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: plain data only, no Python objects


def layout_from_dict(content: Any, *, source: str = "layout", default_name: str = "custom") -> SkeletonLayout:
    """A layout from its file form (see the module docstring; ``SkeletonLayout.to_dict`` writes it).

    Args:
        content: the parsed file: a mapping with the fields of ``FILE_FIELDS``.
        source: what to name in errors (the file).
        default_name: the layout's name when ``content`` has none.

    Raises:
        InputError: ``"<source>: <field>: <problem>"`` for a missing, unknown or ill-typed field, an unknown
            joint name, or joints and parents that do not form one tree.
    """

    def fail(where: str, problem: str) -> InputError:
        return InputError(f"{source}: {where}: {problem}")

    if not isinstance(content, Mapping):
        expected = f"expected a mapping of the fields {', '.join(FILE_FIELDS)}"
        raise fail("top level", f"{expected}, got {type(content).__name__}")
    unknown = sorted(set(map(str, content)) - set(FILE_FIELDS))
    if unknown:
        raise fail(unknown[0], f"unknown field; expected {', '.join(FILE_FIELDS)}")
    for required in ("joints", "parents", "origin", "up", "across"):
        if required not in content:
            raise fail(required, "missing")
    name = content.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise fail("name", f"expected a non-empty string, got {name!r}")
    joints = content["joints"]
    if not isinstance(joints, list) or not all(isinstance(joint, str) and joint for joint in joints):
        raise fail("joints", f"expected a list of joint names (strings), got {joints!r}")
    index = {joint: i for i, joint in enumerate(joints)}

    def joint(where: str, value: Any) -> int:
        if not isinstance(value, str) or value not in index:
            raise fail(where, f"{value!r} is not one of the joints")
        return index[value]

    def pair(where: str) -> tuple[int, int]:
        value = content[where]
        if not isinstance(value, list) or len(value) != 2:
            raise fail(where, f"expected a list of two joint names [from, to], got {value!r}")
        return joint(f"{where}[0]", value[0]), joint(f"{where}[1]", value[1])

    parents = content["parents"]
    if not isinstance(parents, Mapping):
        raise fail("parents", f"expected a mapping joint -> parent joint (null for the root), got {parents!r}")
    for child in parents:
        joint(f"parents.{child}", child)
    missing = [j for j in joints if j not in parents]
    if missing:
        raise fail("parents", f"no parent given for {missing} (give the root null)")
    parent_index = tuple(
        i if parents[j] is None else joint(f"parents.{j}", parents[j]) for i, j in enumerate(joints)
    )
    up, across = pair("up"), pair("across")
    origin = joint("origin", content["origin"])
    problem = _tree_problem(tuple(joints), parent_index)
    if problem is not None:
        field_name, _, detail = problem.partition(": ")
        raise fail(field_name, detail)
    root = next(i for i, p in enumerate(parent_index) if i == p)
    center = joint("center", content["center"]) if "center" in content else root
    try:
        return SkeletonLayout(name, tuple(joints), parent_index, center, origin, up, across)
    except ValueError as error:
        raise fail("layout", str(error)) from None

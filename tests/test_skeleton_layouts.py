"""Skeleton layouts as data: the built-ins are trees with sensible anchors; layout files round-trip and every
invalid field is named; inference from the joint count; pre-normalization of 15- and 17-joint data, 3-D and 2-D."""

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skeleton.data import layouts
from skeleton.data.layouts import (
    BUILT_IN_LAYOUTS,
    COCO17,
    KINECT_V1,
    KINECT_V2,
    OPENNI15,
    SkeletonLayout,
    find_layout_file,
    layout_for,
    layout_from_dict,
    read_layout,
    resolve_layout,
)
from skeleton.data.prenormalize import coordinate_frame, prenormalize
from skeleton.fileio import InputError

SMALL = {
    "name": "small",
    "joints": ["pelvis", "chest", "head", "left_hand", "right_hand"],
    "parents": {"pelvis": None, "chest": "pelvis", "head": "chest", "left_hand": "chest", "right_hand": "chest"},
    "center": "chest",
    "origin": "pelvis",
    "up": ["pelvis", "chest"],
    "across": ["left_hand", "right_hand"],
}


def _depth(layout: SkeletonLayout, joint: int) -> int:
    """Bones from ``joint`` up to the root, by walking parents (at most V steps, else the test fails)."""
    for steps in range(layout.num_joints):
        if layout.parents[joint] == joint:
            return steps
        joint = layout.parents[joint]
    raise AssertionError(f"{layout.name}: no root reached")


@pytest.mark.parametrize("layout", BUILT_IN_LAYOUTS.values(), ids=list(BUILT_IN_LAYOUTS))
def test_built_in_layouts_are_trees_rooted_at_their_graph_centre(layout):
    assert BUILT_IN_LAYOUTS[layout.name] is layout
    assert len(set(layout.joint_names)) == layout.num_joints == len(layout.parents)
    roots = [v for v, p in enumerate(layout.parents) if v == p]
    assert roots == [layout.root] == [layout.graph_center]
    depths = [_depth(layout, v) for v in range(layout.num_joints)]
    assert depths[layout.root] == 0 and all(d > 0 for v, d in enumerate(depths) if v != layout.root)
    # A tree: V - 1 bones, each child's parent one step nearer the root.
    assert sum(v != p for v, p in enumerate(layout.parents)) == layout.num_joints - 1
    assert all(depths[p] == depths[v] - 1 for v, p in enumerate(layout.parents) if v != p)
    # Left and right limbs mirror each other: a left joint's parent is the left (or a central) joint.
    for v, p in enumerate(layout.parents):
        name, parent = layout.joint_names[v], layout.joint_names[p]
        if name.startswith("left_"):
            assert not parent.startswith("right_"), (name, parent)
        if name.startswith("left_") and parent.startswith("left_"):
            mirrored = layout.index["right_" + name[5:]]
            assert layout.parents[mirrored] == layout.index["right_" + parent[5:]]
    assert layout_from_dict(layout.to_dict()) == layout


def test_built_in_anchors_are_the_stated_joints():
    def names(layout, *joints):
        return tuple(layout.joint_names[j] for j in joints)

    assert names(KINECT_V2, KINECT_V2.origin, *KINECT_V2.up, *KINECT_V2.across) == (
        "spine_mid", "spine_base", "spine_mid", "left_shoulder", "right_shoulder")  # fmt: skip
    assert names(KINECT_V1, KINECT_V1.origin, *KINECT_V1.up, *KINECT_V1.across) == (
        "spine", "hip_center", "spine", "left_shoulder", "right_shoulder")  # fmt: skip
    assert OPENNI15.joint_names == (
        "head", "neck", "torso", "left_shoulder", "left_elbow", "left_hand", "right_shoulder", "right_elbow",
        "right_hand", "left_hip", "left_knee", "left_foot", "right_hip", "right_knee", "right_foot")  # fmt: skip
    assert names(OPENNI15, OPENNI15.origin, *OPENNI15.up, *OPENNI15.across, OPENNI15.graph_center) == (
        "torso", "torso", "neck", "left_shoulder", "right_shoulder", "neck")  # fmt: skip
    assert COCO17.joint_names[:7] == (
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder")  # fmt: skip
    assert COCO17.joint_names[-2:] == ("left_ankle", "right_ankle")
    assert names(COCO17, COCO17.origin, *COCO17.up, *COCO17.across) == (
        "left_hip", "left_hip", "left_shoulder", "left_shoulder", "right_shoulder")  # fmt: skip


def test_layout_for_infers_only_unambiguous_joint_counts(monkeypatch):
    assert [layout_for(v).name for v in (25, 20, 15, 17)] == ["kinect_v2", "kinect_v1", "openni15", "coco17"]
    with pytest.raises(ValueError) as error:
        layout_for(18)
    message = str(error.value)
    assert "no built-in skeleton layout has 18 joints" in message and "layout.yaml" in message
    assert "coco17 (17)" in message and "origin" in message
    twin = SkeletonLayout("twin", OPENNI15.joint_names, OPENNI15.parents, 1, 2, (2, 1), (3, 6))
    monkeypatch.setitem(layouts.BUILT_IN_LAYOUTS, "twin", twin)
    with pytest.raises(ValueError, match="15 joints fit several built-in layouts .*openni15, twin.*name one"):
        layout_for(15)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_layout_file_round_trip(tmp_path, suffix):
    path = tmp_path / "pose" / f"layout{suffix}"
    path.parent.mkdir()
    if suffix == ".json":
        path.write_text(json.dumps(SMALL))
    else:
        path.write_text(
            "name: small\njoints: [pelvis, chest, head, left_hand, right_hand]\nparents:\n  pelvis: null\n"
            "  chest: pelvis\n  head: chest\n  left_hand: chest\n  right_hand: chest\ncenter: chest\n"
            "origin: pelvis\nup: [pelvis, chest]\nacross: [left_hand, right_hand]\n"
        )
    layout = read_layout(path)
    assert layout == SkeletonLayout("small", tuple(SMALL["joints"]), (0, 0, 1, 1, 1), 1, 0, (0, 1), (3, 4))
    assert layout.to_dict() == SMALL and layout_from_dict(layout.to_dict()) == layout
    assert find_layout_file(path.parent) == path and find_layout_file(tmp_path) is None
    assert resolve_layout(path) == layout and resolve_layout(str(path)) == layout
    assert resolve_layout("coco17") is COCO17 and resolve_layout(OPENNI15) is OPENNI15
    unnamed = {key: value for key, value in SMALL.items() if key not in ("name", "center")}
    path.write_text(json.dumps(unnamed))  # JSON is YAML too
    defaulted = read_layout(path)
    assert defaulted.name == "pose" and defaulted.graph_center == defaulted.root == 0  # folder name, root


def _with(**changes):
    content = {key: value for key, value in SMALL.items() if changes.get(key, 0) is not None}
    content.update({key: value for key, value in changes.items() if value is not None})
    return content


@pytest.mark.parametrize(
    "content, field, problem",
    [
        ([1, 2], "top level", "expected a mapping"),
        (_with(bones=[]), "bones", "unknown field"),
        (_with(joints=None), "joints", "missing"),
        (_with(parents=None), "parents", "missing"),
        (_with(origin=None), "origin", "missing"),
        (_with(up=None), "up", "missing"),
        (_with(across=None), "across", "missing"),
        (_with(name=""), "name", "non-empty string"),
        (_with(joints="pelvis chest"), "joints", "list of joint names"),
        (_with(joints=["pelvis", 3]), "joints", "list of joint names"),
        (_with(joints=["a", "a", "b", "c", "d"], parents={"a": None, "b": "a", "c": "a", "d": "a"}, center="a",
               origin="a", up=["a", "b"], across=["c", "d"]), "joints", "repeated names ['a']"),  # fmt: skip
        (_with(parents=["pelvis"]), "parents", "mapping joint -> parent"),
        (_with(parents={**SMALL["parents"], "tail": "pelvis"}), "parents.tail", "'tail' is not one of the joints"),
        (_with(parents={k: v for k, v in SMALL["parents"].items() if k != "head"}), "parents", "no parent given"),
        (_with(parents={**SMALL["parents"], "head": "neck"}), "parents.head", "'neck' is not one of the joints"),
        (_with(parents={**SMALL["parents"], "chest": None}), "parents", "exactly one root"),
        (_with(parents={**SMALL["parents"], "pelvis": "head"}), "parents", "exactly one root"),
        (_with(parents={**SMALL["parents"], "chest": "head"}), "parents", "form a cycle"),
        (_with(center="tail"), "center", "'tail' is not one of the joints"),
        (_with(origin=1), "origin", "1 is not one of the joints"),
        (_with(up=["pelvis"]), "up", "list of two joint names"),
        (_with(up="pelvis"), "up", "list of two joint names"),
        (_with(across=["left_hand", "knee"]), "across[1]", "'knee' is not one of the joints"),
        (_with(across=["chest", "chest"]), "layout", "across: expected two different joints"),
    ],
)
def test_every_invalid_layout_field_is_named(tmp_path, content, field, problem):
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError) as error:
        read_layout(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {field}: ") and problem in message, message


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("layout.json", b'{"joints": [', "not valid JSON"),
        ("layout.yaml", b"joints: [a, b\nparents: {", "not valid YAML"),
        ("repeated.yaml", b"joints: [a, b, c]\nparents: {a: null, b: a, c: b, c: a}\norigin: a\nup: [a, b]\n"
         b"across: [b, c]\n", "not valid YAML .*repeated keys \\['c'\\]"),
        ("repeated.json", b'{"joints": ["a"], "joints": ["b"]}', "not valid JSON \\(repeated keys \\['joints'\\]\\)"),
        ("binary.yaml", b"\xff\xfe\x00", "unreadable layout file"),
    ],
)  # fmt: skip
def test_unreadable_layout_files_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=f"{path}: {message}"):
        read_layout(path)


def test_an_unknown_layout_name_is_named():
    with pytest.raises(ValueError, match="'kinect_v3' is neither a built-in layout .* nor a layout file"):
        resolve_layout("kinect_v3")


def test_layout_fields_from_json_lists_compare_equal():
    """dataclasses.asdict -> JSON -> SkeletonLayout(**fields), as a checkpoint stores it, gives back an equal layout."""
    fields = json.loads(json.dumps(dataclasses.asdict(COCO17)))
    assert isinstance(fields["parents"], list)
    again = SkeletonLayout(**fields)
    assert again == COCO17 and hash(again) == hash(COCO17) and again.index["right_ankle"] == 16


def test_layout_constructor_validates():
    with pytest.raises(ValueError, match="'bad': graph_center: joint 5 is not in 0..4"):
        SkeletonLayout("bad", tuple(SMALL["joints"]), (0, 0, 1, 1, 1), 5, 0, (0, 1), (3, 4))
    with pytest.raises(ValueError, match="'bad': up\\[1\\]: joint -1 is not in 0..4"):
        SkeletonLayout("bad", tuple(SMALL["joints"]), (0, 0, 1, 1, 1), 1, 0, (0, -1), (3, 4))
    with pytest.raises(ValueError, match="'bad': parents: 5 joints but 4 parents"):
        SkeletonLayout("bad", tuple(SMALL["joints"]), (0, 0, 1, 1), 1, 0, (0, 1), (3, 4))
    with pytest.raises(ValueError, match="'bad': parents: head's parent 7 is not a joint index"):
        SkeletonLayout("bad", tuple(SMALL["joints"]), (0, 0, 7, 1, 1), 1, 0, (0, 1), (3, 4))
    with pytest.raises(ValueError, match="'bad': joints: no joints"):
        SkeletonLayout("bad", (), (), 0, 0, (0, 1), (0, 1))


def _rotation_3d(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _posed(layout: SkeletonLayout, coords: int, rng: np.random.Generator, frames: int = 6) -> np.ndarray:
    """A random body 0 (and a second body) of ``layout`` whose ``up`` and ``across`` pairs are perpendicular in
    frame 0, placed anywhere; (1, C, T, V, 2)."""
    joints = rng.normal(scale=0.3, size=(coords, frames, layout.num_joints, 2))
    first = joints[:, 0, :, 0]
    first[:, layout.up[1]] = first[:, layout.up[0]] + np.eye(coords)[-1 if coords == 3 else 1] * 0.5
    if coords == 3:
        if layout.across[0] not in layout.up:  # coco17's left shoulder is in both pairs
            first[:, layout.across[0]] = first[:, layout.up[0]] + np.array([-0.2, 0.0, 0.2])
        first[:, layout.across[1]] = first[:, layout.across[0]] + np.array([0.4, 0.0, 0.0])
        turn = _rotation_3d(rng)
    else:
        angle = rng.uniform(-math.pi, math.pi)
        turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        # the same up pair in every frame: the averaged up direction is frame 0's
        pair = first[:, [layout.up[1]]] - first[:, [layout.up[0]]]
        joints[:, :, layout.up[1], 0] = joints[:, :, layout.up[0], 0] + pair
    scale = 1.0 if coords == 3 else 250.0  # pixels
    offset = rng.uniform(1.0, 3.0, size=(coords, 1, 1, 1)) * scale
    return (np.einsum("ij,jtvm->itvm", turn, joints) * scale + offset)[None]


@pytest.mark.parametrize("layout", [OPENNI15, COCO17], ids=lambda layout: layout.name)
def test_prenormalize_3d_puts_the_anchors_where_stated(layout):
    data = _posed(layout, 3, np.random.default_rng(1))
    out = prenormalize(data, layout).astype(np.float64)[0]
    np.testing.assert_allclose(out[:, :, layout.origin, 0], 0.0, atol=1e-6)  # the origin joint, every frame
    first = out[:, 0, :, 0]
    np.testing.assert_allclose(first[:, layout.up[1]] - first[:, layout.up[0]], [0.0, 0.0, 0.5], atol=1e-6)
    across = first[:, layout.across[1]] - first[:, layout.across[0]]
    np.testing.assert_allclose(across / np.linalg.norm(across), [1.0, 0.0, 0.0], atol=1e-6)
    assert coordinate_frame(out[None], layout)[0] == "prenormalized"
    assert coordinate_frame(data, layout)[0] == "camera"


@pytest.mark.parametrize("layout", [OPENNI15, COCO17], ids=lambda layout: layout.name)
def test_prenormalize_2d_centres_turns_up_to_y_and_scales(layout):
    data = _posed(layout, 2, np.random.default_rng(2))
    out = prenormalize(data, layout).astype(np.float64)[0]
    assert out.shape == (2, 6, layout.num_joints, 2)
    np.testing.assert_allclose(out[:, :, layout.origin, 0], 0.0, atol=1e-6)
    # The up pair is rigid here: in every frame it points along +y with unit length (it was 0.5 * 250 px).
    up = out[:, :, layout.up[1], 0] - out[:, :, layout.up[0], 0]
    np.testing.assert_allclose(up, np.tile([[0.0], [1.0]], (1, 6)), atol=1e-6)
    # A similarity transform: distances between joints scale by one factor, nothing else changes.
    before = np.linalg.norm(data[0, :, 0, :, 0][:, :, None] - data[0, :, 0, :, 0][:, None, :], axis=0)
    after = np.linalg.norm(out[:, 0, :, 0][:, :, None] - out[:, 0, :, 0][:, None, :], axis=0)
    np.testing.assert_allclose(after, before / 125.0, atol=1e-5)
    assert coordinate_frame(out[None], layout)[0] == "prenormalized"
    assert coordinate_frame(data, layout)[0] == "image"


def _reference_2d(data: np.ndarray, layout: SkeletonLayout) -> np.ndarray:
    """The 2-D steps written as loops in float64 for one sample whose body 0 has every frame (no padding)."""
    x = np.array(data[0], dtype=np.float64)  # (2, T, V, M)
    frames = x.shape[1]
    present = [bool(np.any(x[:, t, layout.origin, 0] != 0)) for t in range(frames)]
    centers = []
    for t in range(frames):
        earlier = [s for s in range(t + 1) if present[s]]
        source = earlier[-1] if earlier else present.index(True)
        centers.append(x[:, source, layout.origin, 0].copy())
    ups, lengths = np.zeros(2), []
    for t in range(frames):
        a, b = x[:, t, layout.up[0], 0], x[:, t, layout.up[1], 0]
        if np.any(a != 0) and np.any(b != 0):
            ups += b - a
            lengths.append(float(np.linalg.norm(b - a)))
    angle = math.pi / 2 - math.atan2(ups[1], ups[0])
    turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    out = np.zeros_like(x)
    for t in range(frames):
        for v in range(x.shape[2]):
            for m in range(x.shape[3]):
                if np.any(x[:, t, v, m] != 0):
                    out[:, t, v, m] = turn @ (x[:, t, v, m] - centers[t]) / float(np.median(lengths))
    return out[None]


def test_prenormalize_2d_matches_a_loop_with_missing_keypoints():
    rng = np.random.default_rng(3)
    data = rng.uniform(50.0, 600.0, size=(1, 2, 7, 17, 2))
    data[0, :, 0, COCO17.origin, 0] = 0.0  # the origin keypoint lost in frame 0: frame 1's is used
    data[0, :, 3:5, COCO17.origin, 0] = 0.0  # and in frames 3-4: frame 2's
    data[0, :, 5, COCO17.up[1], 0] = 0.0  # an up keypoint lost: frame 5 counts neither for direction nor scale
    data[0, :, :, 4, 1] = 0.0  # a keypoint body 1 never has stays zero
    out = prenormalize(data, COCO17)
    np.testing.assert_allclose(out, _reference_2d(data, COCO17), atol=1e-5, rtol=0)
    assert np.all(out[0, :, :, 4, 1] == 0)


def test_prenormalize_2d_degenerate_bodies_stay_finite():
    data = np.zeros((3, 2, 5, 15, 1))
    data[1] = 7.0  # every joint in one place: no up direction, no scale
    data[2, :, :, :, 0] = np.random.default_rng(4).normal(size=(2, 5, 15))
    data[2, :, :, OPENNI15.up[1], 0] = data[2, :, :, OPENNI15.up[0], 0]  # a zero-length up pair
    out = prenormalize(data, OPENNI15)
    assert np.isfinite(out).all() and np.all(out[0] == 0)
    np.testing.assert_allclose(out[1], 0.0)
    expected = data[2] - data[2][:, :, [OPENNI15.origin]]  # centred, neither turned nor scaled
    np.testing.assert_allclose(out[2], np.where(data[2] != 0, expected, 0.0), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    angle=st.floats(-math.pi, math.pi),
    scale=st.floats(0.05, 50.0),
    shift=st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)),
)
def test_prenormalize_2d_is_invariant_to_similarity_transforms(seed, angle, scale, shift):
    """Where a person stands in the image, how large they appear and how the camera is rolled do not matter:
    moving, scaling and turning every keypoint of a sequence gives the same pre-normalized sequence."""
    data = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(1, 2, 5, 17, 2))
    turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = scale * np.einsum("ij,njtvm->nitvm", turn, data) + np.array(shift)[None, :, None, None, None]
    # The transform can land a joint on exactly (0, 0), which would read as missing; not for continuous draws.
    assert np.all(np.any(moved != 0, axis=1))
    np.testing.assert_allclose(prenormalize(moved, COCO17), prenormalize(data, COCO17), atol=1e-4, rtol=0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shift=st.tuples(*[st.floats(-5.0, 5.0)] * 3))
def test_prenormalize_3d_is_invariant_to_rigid_motions(seed, shift):
    """The same for 3-D data and any rotation and translation (SBU's 15 joints, two bodies), when body 0's across
    pair is perpendicular to its up pair in frame 0. Otherwise the second turn (across to +x, about their common
    normal) tilts the up pair by an amount that depends on the orientation, as in the reference."""
    rng = np.random.default_rng(seed)
    data = rng.uniform(-1.0, 1.0, size=(1, 3, 4, 15, 2))
    first = data[0, :, 0, :, 0]
    up = first[:, OPENNI15.up[1]] - first[:, OPENNI15.up[0]]
    across = rng.uniform(-1.0, 1.0, size=3)
    first[:, OPENNI15.across[1]] = first[:, OPENNI15.across[0]] + across - (across @ up) / (up @ up) * up
    moved = np.einsum("ij,njtvm->nitvm", _rotation_3d(rng), data) + np.array(shift)[None, :, None, None, None]
    np.testing.assert_allclose(prenormalize(moved, OPENNI15), prenormalize(data, OPENNI15), atol=1e-4, rtol=0)

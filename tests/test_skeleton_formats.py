"""NTU .skeleton and PKU-MMD II file formats: parsing, writing, errors, body selection."""

import numpy as np
import pytest
from einops import rearrange
from raw_files import (
    recording_from_bodies,
    write_ntu_skeleton_files,
    write_pku_labels,
    write_pku_skeleton,
    write_pku_split,
    write_skeleton,
)
from skeleton.data.formats.ntu import (
    NtuSampleId,
    SkeletonRecording,
    kept_bodies,
    motion_energy,
    parse_skeleton,
    read_skeleton,
    select_bodies,
)
from skeleton.data.formats.pku import PkuSegment, read_pku_labels, read_pku_skeleton, read_pku_split
from skeleton.data.formats.text import SkeletonFormatError, parse_number_lines
from skeleton.data.layouts import BUILT_IN_LAYOUTS
from skeleton.data.registry import ALIASES, DATASET_NAMES, FORMATS, dataset_spec
from skeleton.data.synthetic import SyntheticConfig, generate_synthetic

JOINT_LINE = (
    "0.2180969 0.1727094 3.785934 275.8023 181.5316 1035.602 519.6083 -0.2504337 -0.1014316 0.9508911 -0.1511244 2"
)
BODY_LINE = "72057594037931101 0 1 1 1 1 0 0.04187758 -0.2011418 2"


def _text(frames, newline="\n"):
    """A .skeleton text from a list of frames, each a list of bodies, each a list of 25 joint lines."""
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for body_line, joints in bodies:
            lines += [body_line, str(len(joints)), *joints]
    return newline.join(lines) + newline


def test_sample_names():
    sample = NtuSampleId.parse("S017C003P020R002A060.skeleton")
    assert sample == NtuSampleId(setup=17, camera=3, performer=20, replication=2, action=60)
    assert sample.name == "S017C003P020R002A060"
    assert NtuSampleId.parse("/data/x/S001C001P001R001A001").action == 1
    for bad in ("S01C001P001R001A001", "S001C001P001R001A001.txt", "random.skeleton"):
        with pytest.raises(ValueError, match="NTU sample name"):
            NtuSampleId.parse(bad)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_parse_real_format_lines(newline):
    joints = [JOINT_LINE] * 24 + ["8.094816E-05 -1.2E+00 3.5e-01 1 2 3 4 0 0 0 1 1"]
    other = ("18446744073709551615 0 0 0 0 0 1 0 0 2", [JOINT_LINE] * 25)
    text = _text([[(BODY_LINE, joints)], [], [(BODY_LINE, joints), other]], newline)
    recording = parse_skeleton(text)
    assert recording.num_frames == 3 and recording.body_counts.tolist() == [1, 0, 2]
    assert recording.body_ids.tolist() == [72057594037931101, 72057594037931101, 2**64 - 1]  # exact, 64-bit
    assert recording.joints.shape == (3, 25, 12)
    np.testing.assert_allclose(recording.joints[0, 0, :3], [0.2180969, 0.1727094, 3.785934])
    np.testing.assert_allclose(recording.joints[0, 24, :3], [8.094816e-05, -1.2, 0.35])
    np.testing.assert_allclose(recording.body_info[0], [0, 1, 1, 1, 1, 0, 0.04187758, -0.2011418, 2])
    slots = recording.body_slots()
    assert slots.shape == (4, 3, 25, 3) and not slots[:, 1].any() and not slots[2:].any()


@pytest.mark.parametrize("crlf, exponent", [(False, False), (True, False), (False, True), (True, True)])
def test_write_read_round_trip(tmp_path, crlf, exponent):
    rng = np.random.default_rng(0)
    counts = np.array([0, 1, 3, 4, 2, 0])
    total = counts.sum()
    joints = rng.normal(size=(total, 25, 12)) * np.array([1] * 3 + [300] * 4 + [1] * 5)
    joints *= 10.0 ** -rng.integers(0, 6, (total, 25, 12))  # some tiny values, printed in exponent notation
    joints[..., 11] = rng.integers(0, 3, (total, 25))  # tracking state
    recording = SkeletonRecording(
        body_counts=counts,
        body_ids=rng.integers(0, 2**63, size=total, dtype=np.int64).astype(np.uint64) * np.uint64(2),
        body_info=np.concatenate(
            [rng.integers(0, 3, (total, 6)), rng.normal(size=(total, 2)), rng.integers(0, 3, (total, 1))], axis=1
        ),
        joints=joints,
    )
    path = tmp_path / "S001C001P001R001A001.skeleton"
    write_skeleton(path, recording, crlf=crlf, exponent=exponent)
    raw = path.read_bytes()
    assert (b"\r\n" in raw) == crlf and b"E-" in raw
    assert (b" 0.0" in raw) != exponent  # fixed notation appears only without the exponent option
    back = read_skeleton(path)
    np.testing.assert_array_equal(back.body_counts, counts)
    np.testing.assert_array_equal(back.body_ids, recording.body_ids)
    np.testing.assert_allclose(back.joints, recording.joints, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(back.body_info, recording.body_info, rtol=1e-6)


@pytest.mark.parametrize(
    "mutate, line, message",
    [
        (lambda lines: lines.__setitem__(5, "1 2 3"), 6, "expected 12 values, got 3"),
        (lambda lines: lines.__setitem__(9, lines[9].replace("3.785934", "3.78x")), 10, "non-numeric value '3.78x'"),
        (lambda lines: lines.__setitem__(9, lines[9].replace("3.785934", "nan")), 10, "non-finite"),
        (lambda lines: lines.__setitem__(3, "24"), 4, "expected 25 joints, got 24"),
        (lambda lines: lines.__setitem__(2, "7205759403793110x 0 1 1 1 1 0 0.04 -0.2 2"), 3, "body id"),
        (lambda lines: lines.__setitem__(2, BODY_LINE + " 7"), 3, "expected 10 values, got 11"),
        (lambda lines: lines.__setitem__(1, "one"), 2, "non-negative integer"),
        (lambda lines: lines.__setitem__(0, "3"), 58, "file ends early"),  # declares one frame more than it has
        (lambda lines: lines.__delitem__(slice(40, None)), 41, "file ends early"),  # truncated mid-body
        (lambda lines: lines.append("1"), 58, "unexpected content after the 2 declared frames"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, mutate, line, message):
    lines = _text([[(BODY_LINE, [JOINT_LINE] * 25)], [(BODY_LINE, [JOINT_LINE] * 25)]]).splitlines()
    mutate(lines)
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text("\r\n".join(lines) + "\r\n")
    with pytest.raises(SkeletonFormatError) as error:
        read_skeleton(path)
    assert error.value.line == line and error.value.path == str(path)
    assert message in str(error.value) and str(error.value).startswith(f"{path}:{line}: ")


def test_motion_energy_matches_direct_computation():
    rng = np.random.default_rng(1)
    bodies = rng.normal(size=(3, 10, 25, 3)) * np.array([[[[1.0]]], [[[0.1]]], [[[2.0]]]])
    bodies[0, [2, 5]] = 0  # empty frames are left out of the std
    bodies[2] = 0
    expected = [sum(b[np.any(b != 0, axis=(1, 2))][..., c].std() for c in range(3)) for b in bodies[:2]]
    np.testing.assert_allclose(motion_energy(bodies), [*expected, 0.0], rtol=1e-10)


def test_body_selection_with_three_and_four_bodies():
    rng = np.random.default_rng(2)
    spread = np.array([0.05, 1.0, 0.3, 0.6])  # body energies in slot order
    slots = rng.normal(size=(4, 6, 25, 3)) * spread[:, None, None, None]
    recording = recording_from_bodies(slots)
    assert recording.body_counts.tolist() == [4] * 6
    np.testing.assert_allclose(kept_bodies(recording), slots[[1, 3]])  # the two most energetic, highest first
    np.testing.assert_allclose(select_bodies(slots[:3]), slots[[1, 2]])


def test_a_fifth_body_in_a_frame_is_ignored():
    five = SkeletonRecording(
        body_counts=np.array([5]),
        body_ids=np.arange(5, dtype=np.uint64),
        body_info=np.zeros((5, 9)),
        joints=np.arange(1.0, 6.0)[:, None, None] * np.ones((5, 25, 12)),
    )
    assert five.body_slots()[:, 0, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_kept_bodies_truncates_to_300_frames():
    bodies = np.ones((1, 320, 25, 3))
    bodies[0, 300:] = 2.0
    kept = kept_bodies(recording_from_bodies(bodies))
    assert kept.shape == (2, 300, 25, 3) and kept[0].max() == 1.0 and not kept[1].any()


@pytest.mark.parametrize("extra_bodies", [0, 2])
def test_synthetic_skeleton_files_read_back(tmp_path, extra_bodies):
    samples = generate_synthetic(SyntheticConfig(max_frames=30, min_frames=10), np.arange(0, 2520, 113))
    paths = write_ntu_skeleton_files(samples, tmp_path, crlf=True, exponent=True, extra_bodies=extra_bodies)
    for path, sample, count in zip(paths, samples.data, samples.num_frames):
        recording = read_skeleton(path)
        assert recording.num_frames == count
        lost = ~np.any(sample[..., 0] != 0, axis=(0, 2))[:count]
        assert (recording.body_counts[lost] == 0).all()  # a lost frame is a frame without body
        assert recording.body_counts.max() == (2 if sample[..., 1].any() else 1) + extra_bodies
        expected = rearrange(sample[:, :count], "c t v m -> m t v c")
        kept = kept_bodies(recording)
        np.testing.assert_allclose(kept[0], expected[0], atol=1e-6)
        if sample[..., 1].any() or not extra_bodies:
            np.testing.assert_allclose(kept[1], expected[1], atol=1e-6)
        else:
            assert kept[1].any()  # a ghost outranks an absent second performer


def test_pku_files_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    bodies = rng.normal(size=(7, 2, 25, 3))
    bodies[3] = 0
    write_pku_skeleton(tmp_path / "A01N01-L.txt", bodies, crlf=True)
    np.testing.assert_allclose(read_pku_skeleton(tmp_path / "A01N01-L.txt"), bodies, rtol=1e-6, atol=1e-12)
    segments = [PkuSegment(3, 10, 52, 1.0, 0), PkuSegment(51, 60, 100, 2.0, 0)]
    write_pku_labels(tmp_path / "label.txt", segments, crlf=True)
    back = read_pku_labels(tmp_path / "label.txt")
    rows = [(s.action, s.start, s.end, s.confidence, s.line) for s in back]
    assert rows == [(3, 10, 52, 1.0, 1), (51, 60, 100, 2.0, 2)]
    assert back[0].frames("reference") == (10, 52) and back[0].frames("inclusive") == (9, 52)
    with pytest.raises(ValueError, match="frame convention"):
        back[0].frames("1-based")
    write_pku_split(tmp_path / "cross_subject_v2.txt", ["A01N01-L", "A01N01-M"], ["A02N01-R"])
    assert read_pku_split(tmp_path / "cross_subject_v2.txt") == (["A01N01-L", "A01N01-M"], ["A02N01-R"])


def test_pku_errors(tmp_path):
    path = tmp_path / "A01N01-L.txt"
    path.write_text(" ".join(["0.5"] * 150) + "\n" + " ".join(["0.5"] * 149) + "\n")
    with pytest.raises(SkeletonFormatError, match=r"A01N01-L.txt:2: expected 150 values, got 149"):
        read_pku_skeleton(path)
    labels = tmp_path / "labels.txt"
    for text, line, message in [
        ("1,2,3,1\n1,2,3\n", 2, "expected 4 comma-separated values"),
        ("1,2,x,1\n", 1, "expected integers"),
        ("0,2,3,1\n", 1, "action ids are 1-based"),
    ]:
        labels.write_text(text)
        with pytest.raises(SkeletonFormatError, match=f"labels.txt:{line}: {message}"):
            read_pku_labels(labels)
    split = tmp_path / "cross_view_v2.txt"
    split.write_text("Training videos:\nA01N01-L\n")
    with pytest.raises(SkeletonFormatError, match="expected 4 lines"):
        read_pku_split(split)
    split.write_text("Training videos:\n , \nTest videos:\nA01N01-M\n")
    with pytest.raises(SkeletonFormatError, match="cross_view_v2.txt:2: empty list"):
        read_pku_split(split)


def test_registry_names_and_the_formats_layouts():
    for family, fmt in FORMATS.items():
        assert fmt.family == family
        # The adapter's joint count is its layout's, so the prepared arrays and the layout agree.
        assert BUILT_IN_LAYOUTS[fmt.layout].num_joints == fmt.num_joints
        for benchmark in fmt.benchmarks:
            spec = dataset_spec(f"{family}-{benchmark}")
            assert (spec.family, spec.benchmark, spec.num_classes, spec.layout, spec.num_bodies) == (
                family, benchmark, fmt.num_classes, fmt.layout, fmt.num_bodies,
            )  # fmt: skip
            assert spec.default_recipe == ("released" if family in ("ntu60", "ntu120", "pku2") else "small")
    for alias, name in ALIASES.items():
        assert dataset_spec(alias) is dataset_spec(name) and alias in DATASET_NAMES
    assert dataset_spec("sbu").benchmark == "fold1" and dataset_spec("msr-action3d").layout == "kinect_v1"
    for name in ("custom", "synthetic"):
        spec = dataset_spec(name)
        assert spec.family == name and spec.num_classes is None and spec.layout is None
    with pytest.raises(ValueError, match="unknown dataset 'ntu60-xset'; expected one of synthetic, custom, ntu60-xsub"):
        dataset_spec("ntu60-xset")


@pytest.mark.parametrize("separator", [None, ","])
def test_number_lines_whitespace_or_comma_separated(separator):
    join = " " if separator is None else ", "
    lines = [join.join(["1", "2.5E-01", "-3"]), "skipped", join.join(["4", "5", "6e2"])]
    values = parse_number_lines(lines, [0, 2], 3, "f.txt", separator)
    np.testing.assert_array_equal(values, [[1.0, 0.25, -3.0], [4.0, 5.0, 600.0]])
    with pytest.raises(SkeletonFormatError, match=r"f.txt:3: expected 3 values, got 2"):
        parse_number_lines([*lines[:2], join.join(["4", "5"])], [0, 2], 3, "f.txt", separator)


def test_an_empty_comma_field_is_named():
    with pytest.raises(SkeletonFormatError, match=r"f.txt:1: empty value \(two separators in a row\?\)"):
        parse_number_lines(["1,,3"], [0], 3, "f.txt", ",")

"""Test fixtures: writers of raw skeleton files in the exact formats of the real datasets (NTU RGB+D, PKU-MMD II,
NW-UCLA, SBU Kinect Interaction, MSR Action3D), so that the readers and ``prepare`` are tested end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from einops import rearrange
from skeleton.data.formats import NUM_COORDS
from skeleton.data.formats.msr_action3d import FILE_TO_KINECT_V1
from skeleton.data.formats.ntu import BODY_VALUES, JOINT_VALUES, NUM_JOINTS, SkeletonRecording
from skeleton.data.formats.nwucla import NWUCLA_JOINTS, NwuclaSampleId
from skeleton.data.formats.pku import FRAME_CONVENTIONS, SPLIT_FILES, VALUES_PER_FRAME, PkuSegment, sample_name
from skeleton.data.synthetic import SyntheticSamples, is_held_out


def write_ntu_skeleton_files(
    samples: SyntheticSamples,
    out_dir: str | os.PathLike,
    *,
    crlf: bool = False,
    exponent: bool = False,
    extra_bodies: int = 0,
    seed: int = 0,
) -> list[Path]:
    """Write samples as real-format NTU ``.skeleton`` files named after the samples.

    A dropped frame (all zeros) is written as a frame with no body; a missing second body is not listed.

    Args:
        samples: output of :func:`generate_synthetic`.
        out_dir: destination folder (created if needed).
        crlf: CRLF line endings.
        exponent: exponent notation for every non-integral value.
        extra_bodies: number of additional small, nearly static bodies (0-2) listed after the real ones in
            every frame, as Kinect ghosts; the NTU reader must discard them by motion energy, except that a
            ghost outranks an absent second body.
        seed: seed of the ghost bodies.

    Returns:
        The written paths, in sample order.

    Raises:
        ValueError: if ``extra_bodies`` is not in 0..2.
    """
    if not 0 <= extra_bodies <= 2:
        raise ValueError(f"extra_bodies must be in 0..2 (at most 4 bodies per frame), got {extra_bodies}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for sample, count, name in zip(samples.data, samples.num_frames, samples.names):
        bodies = rearrange(sample[:, :count].astype(np.float64), "c t v m -> m t v c")
        if extra_bodies:
            # A small blob far behind the performers: low spatial spread, so low energy.
            center = rng.uniform([-1.0, -0.5, 4.0], [1.0, 0.5, 4.5], size=(extra_bodies, 1, 1, 3))
            ghosts = center + rng.normal(0.0, 0.01, size=(extra_bodies, count, NUM_JOINTS, 3))
            ghosts[:, ~np.any(bodies[0] != 0, axis=(1, 2))] = 0.0  # lost frames lose every body
            # Ghosts come after the real bodies in each frame; an absent second body leaves slot 1 to them.
            bodies = np.concatenate([bodies, ghosts])
        path = out / f"{name}.skeleton"
        write_skeleton(path, recording_from_bodies(bodies), crlf=crlf, exponent=exponent)
        paths.append(path)
    return paths


def write_pku_files(
    samples: SyntheticSamples,
    out_dir: str | os.PathLike,
    *,
    samples_per_video: int = 4,
    frame_convention: str = "reference",
    crlf: bool = False,
    seed: int = 0,
) -> dict[str, str]:
    """Write samples as a PKU-MMD Phase II folder: ``skeleton/``, ``label/`` and the two split files.

    Samples of one performer and camera are concatenated into videos of up to ``samples_per_video`` actions,
    each preceded by a few frames holding its first pose; the label rows locate them under
    ``frame_convention``. Cameras 1-3 are the PKU views L, M, R; the splits follow the synthetic x-sub and
    x-view rules (:func:`skeleton.data.synthetic.is_held_out`).

    Args:
        samples: output of :func:`skeleton.data.synthetic.generate_synthetic`.
        out_dir: destination folder (created if needed).
        samples_per_video: action instances per video.
        frame_convention: ``"reference"`` ([start, end) 0-based) or ``"inclusive"`` (1-based, inclusive).
        crlf: CRLF line endings in skeleton and label files.
        seed: seed of the pause lengths.

    Returns:
        ``{PKU sample name: synthetic sample name}``, PKU names as ``prepare`` gives them (``<video>_<row>``).

    Raises:
        ValueError: for more than 3 cameras, an unknown frame convention or samples_per_video < 1.
    """
    if samples.camera.size and samples.camera.max() > 3:
        raise ValueError("PKU-MMD has 3 views (L, M, R); samples use more cameras")
    if frame_convention not in FRAME_CONVENTIONS:
        raise ValueError(f"frame_convention must be one of {FRAME_CONVENTIONS}, got {frame_convention!r}")
    if samples_per_video < 1:
        raise ValueError(f"samples_per_video must be >= 1, got {samples_per_video}")
    out = Path(out_dir)
    (out / "skeleton").mkdir(parents=True, exist_ok=True)
    (out / "label").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    first_index = 1 if frame_convention == "inclusive" else 0
    videos, train, names = [], {benchmark: [] for benchmark in SPLIT_FILES}, {}
    for performer, camera in sorted(set(zip(samples.performer.tolist(), samples.camera.tolist()))):
        members = np.flatnonzero((samples.performer == performer) & (samples.camera == camera))
        for chunk, start in enumerate(range(0, len(members), samples_per_video)):
            frames, segments = [], []
            length = 0
            video = f"A{performer:02d}N{chunk + 1:02d}-{'LMR'[camera - 1]}"
            for row, i in enumerate(members[start : start + samples_per_video], start=1):
                bodies = rearrange(samples.data[i, :, : samples.num_frames[i]], "c t v m -> t m v c")
                pause = int(rng.integers(3, 12))
                frames += [np.repeat(bodies[:1], pause, axis=0), bodies]
                length += pause
                stop = length + len(bodies)
                segments.append(PkuSegment(int(samples.labels[i]) + 1, length + first_index, stop, 1.0, row))
                names[sample_name(video, row)] = samples.names[i]
                length = stop
            write_pku_skeleton(out / "skeleton" / f"{video}.txt", np.concatenate(frames), crlf=crlf)
            write_pku_labels(out / "label" / f"{video}.txt", segments, crlf=crlf)
            videos.append(video)
            for benchmark, videos_of_split in train.items():
                if not is_held_out(benchmark, performer, camera):
                    videos_of_split.append(video)
    for benchmark, file_name in SPLIT_FILES.items():
        write_pku_split(out / file_name, train[benchmark], [v for v in videos if v not in train[benchmark]])
    return names


def write_skeleton(
    path: str | os.PathLike, recording: SkeletonRecording, *, crlf: bool = False, exponent: bool = False
) -> None:
    """Write a recording as a ``.skeleton`` file.

    The state, confidence and flag fields are written as integers, the others as numbers.

    Args:
        path: destination file.
        recording: content to write.
        crlf: end lines with ``\\r\\n`` instead of ``\\n``.
        exponent: write every non-integer field in exponent notation (``8.094816E-05``); otherwise the
            shortest of fixed and exponent notation, as the Kinect SDK prints.
    """
    number = "%.6E" if exponent else "%.7G"
    # clippedEdges, hand confidences/states and isRestricted are integers, then leanX leanY, trackingState
    body_format = "%d " + " ".join(["%d"] * 6 + [number] * 2 + ["%d"])
    joint_format = " ".join([number] * (JOINT_VALUES - 1) + ["%d"])  # the last field is the tracking state
    out = [str(recording.num_frames)]
    body = 0
    for count in recording.body_counts:
        out.append(str(int(count)))
        for _ in range(count):
            out.append(body_format % (int(recording.body_ids[body]), *recording.body_info[body]))
            out.append(str(NUM_JOINTS))
            out.extend(joint_format % tuple(row) for row in recording.joints[body].tolist())
            body += 1
    newline = "\r\n" if crlf else "\n"
    with open(path, "w", encoding="ascii", newline="") as handle:
        handle.write(newline.join(out) + newline)


def recording_from_bodies(bodies: np.ndarray, body_ids: np.ndarray | None = None) -> SkeletonRecording:
    """Build a recording from joint positions, listing in each frame the bodies that are non-zero there.

    The fields the pipeline does not use get plausible constants (tracked joints, zero orientation).

    Args:
        bodies: array (B, F, 25, 3) of positions in metres; an all-zero (body, frame) is not listed.
        body_ids: optional (B,) uint64 tracking ids; default: 64-bit ids like the Kinect's.

    Returns:
        The recording.
    """
    num_bodies, num_frames = bodies.shape[:2]
    if body_ids is None:
        body_ids = np.uint64(72057594037927936) + np.arange(num_bodies, dtype=np.uint64) * np.uint64(1_000_003)
    present = np.any(bodies != 0, axis=(2, 3)).T  # (F, B): frame-major, like the file
    frame_index, body_index = np.nonzero(present)
    joints = np.zeros((len(body_index), NUM_JOINTS, JOINT_VALUES))
    joints[:, :, :3] = bodies[body_index, frame_index]
    joints[:, :, 7] = 1.0  # orientW of the identity quaternion
    joints[:, :, 11] = 2.0  # trackingState "tracked"
    info = np.zeros((len(body_index), BODY_VALUES - 1))
    info[:, -1] = 2.0
    return SkeletonRecording(
        body_counts=present.sum(axis=1).astype(np.int64),
        body_ids=np.asarray(body_ids, dtype=np.uint64)[body_index],
        body_info=info,
        joints=joints,
    )


def write_pku_skeleton(path: str | os.PathLike, bodies: np.ndarray, *, crlf: bool = False) -> None:
    """Write (F, 2, 25, 3) joint positions as a PKU-MMD II skeleton file.

    Args:
        path: destination file.
        bodies: positions in metres; zeros for an absent body.
        crlf: CRLF line endings.
    """
    rows = rearrange(np.asarray(bodies, dtype=np.float64), "f m v c -> f (m v c)")
    line = " ".join(["%.7g"] * VALUES_PER_FRAME) + ("\r\n" if crlf else "\n")
    with open(path, "w", encoding="ascii", newline="") as handle:
        handle.write("".join(line % tuple(row) for row in rows.tolist()))


def write_pku_labels(path: str | os.PathLike, segments: list[PkuSegment], *, crlf: bool = False) -> None:
    """Write a PKU-MMD label file (``action,start,end,confidence`` rows)."""
    newline = "\r\n" if crlf else "\n"
    with open(path, "w", encoding="ascii", newline="") as handle:
        for segment in segments:
            handle.write(f"{segment.action},{segment.start},{segment.end},{segment.confidence:g}{newline}")


def write_pku_split(path: str | os.PathLike, train: list[str], test: list[str]) -> None:
    """Write a PKU-MMD split file with the official headers."""
    with open(path, "w", encoding="ascii") as handle:
        handle.write(f"Training videos: \n{', '.join(train)}\nValidation videos: \n{', '.join(test)}\n")


def write_nwucla(path: str | os.PathLike, joints: np.ndarray) -> Path:
    """Write ``joints`` (T, 20, 3) as an NW-UCLA JSON file; the label comes from the file name.

    Raises:
        ValueError: for a file name outside the NW-UCLA scheme or joints of the wrong shape.
    """
    path = Path(path)
    sample = NwuclaSampleId.parse(path.name)
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (NWUCLA_JOINTS, NUM_COORDS):
        raise ValueError(f"joints must have shape (T, {NWUCLA_JOINTS}, {NUM_COORDS}), got {joints.shape}")
    content = {"file_name": sample.name, "skeletons": joints.tolist(), "label": sample.label + 1}
    path.write_text(json.dumps(content))
    return path


def write_sbu(
    path: str | os.PathLike, bodies: np.ndarray, *, first_frame: int = 1, crlf: bool = True, number: str = "%.6g"
) -> Path:
    """Write (2, F, 15, 3) positions in metres as an SBU ``skeleton_pos.txt``, through the dataset's normalization.

    The normalized values are ``x = (1280 - 1000 X) / 2560``, ``y = (960 - 1000 Y) / 1920`` and
    ``z = 1000 Z * 7.8125 / 10000``; an absent person (all zero in a frame) is written as zeros.

    Args:
        path: the file (its folders are created).
        bodies: person 1 and person 2.
        first_frame: the frame number of the first line.
        crlf: CRLF line endings, as the released files.
        number: printf format of each value.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metres = np.asarray(bodies, dtype=np.float64)
    normalized = np.stack(
        [
            (1280 - 1000 * metres[..., 0]) / 2560,
            (960 - 1000 * metres[..., 1]) / 1920,
            1000 * metres[..., 2] * 7.8125 / 10000,
        ],
        axis=-1,
    )
    normalized = np.where(np.any(metres != 0, axis=(2, 3), keepdims=True), normalized, 0.0)
    rows = rearrange(normalized, "m f v c -> f (m v c)")
    newline = "\r\n" if crlf else "\n"
    lines = [
        ",".join([str(first_frame + f), *(number % value for value in row)]) for f, row in enumerate(rows.tolist())
    ]
    path.write_bytes("".join(line + newline for line in lines).encode("ascii"))
    return path


def write_msr(path: str | os.PathLike, joints: np.ndarray, *, number: str = "%.6f") -> Path:
    """Write (F, 20, 3) Kinect v1 positions as an MSR Action3D ``*_skeleton3D.txt`` (file joint order, confidence 1).

    Args:
        path: the file.
        joints: positions in metres in the Kinect v1 order; an all-zero frame is written as 20 zero lines.
        number: printf format of each coordinate.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    in_file_order = np.zeros_like(np.asarray(joints, dtype=np.float64))
    in_file_order[:, list(FILE_TO_KINECT_V1)] = joints
    lines = [
        " ".join([*(number % value for value in joint), "1.000000"])
        for frame in in_file_order.tolist()
        for joint in frame
    ]
    path.write_text("".join(line + "\n" for line in lines))
    return path

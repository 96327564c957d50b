"""A procedural skeleton-action dataset in the NTU RGB+D layout.

Every sample is a Kinect v2 skeleton (25 joints) driven by forward kinematics: performers have their own bone
lengths and motion style, each action class is a set of joint-angle trajectories (arms, legs, torso, root),
some classes are two-person interactions, and each sample is seen from one of several cameras placed around
the vertical axis. Duration, tempo, placement and facing vary per sample independently of the class, and
sensor noise and dropped frames are added, so the classes differ by how joints move, not by trivial cues.

The output is raw camera-space coordinates in metres, like the ``.skeleton`` files, with the two bodies in
the order the NTU reader selects them (highest motion energy first); ``skeleton.data.datasets.load_dataset``
pre-normalizes it. Samples are generated independently from ``(seed, index)``, so any subset is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from einops import rearrange

from .formats.ntu import NUM_BODIES, NUM_JOINTS, NtuSampleId, motion_energy
from .layouts import KINECT_V2

# Forward-kinematics tree: (joint, kinematic parent, rest offset in the parent's frame in metres). The body
# frame has x to the performer's left, y up and z forward. Listed parents-first.
_TREE: tuple[tuple[str, str | None, tuple[float, float, float]], ...] = (
    ("spine_base", None, (0.0, 0.0, 0.0)),
    ("spine_mid", "spine_base", (0.0, 0.27, 0.0)),
    ("spine_shoulder", "spine_mid", (0.0, 0.24, 0.0)),
    ("neck", "spine_shoulder", (0.0, 0.07, 0.0)),
    ("head", "neck", (0.0, 0.14, 0.01)),
    ("left_shoulder", "spine_shoulder", (0.17, -0.04, 0.0)),
    ("left_elbow", "left_shoulder", (0.0, -0.27, 0.0)),
    ("left_wrist", "left_elbow", (0.0, -0.24, 0.0)),
    ("left_hand", "left_wrist", (0.0, -0.07, 0.0)),
    ("left_hand_tip", "left_hand", (0.0, -0.08, 0.0)),
    ("left_thumb", "left_hand", (0.0, -0.04, 0.04)),
    ("right_shoulder", "spine_shoulder", (-0.17, -0.04, 0.0)),
    ("right_elbow", "right_shoulder", (0.0, -0.27, 0.0)),
    ("right_wrist", "right_elbow", (0.0, -0.24, 0.0)),
    ("right_hand", "right_wrist", (0.0, -0.07, 0.0)),
    ("right_hand_tip", "right_hand", (0.0, -0.08, 0.0)),
    ("right_thumb", "right_hand", (0.0, -0.04, 0.04)),
    ("left_hip", "spine_base", (0.09, -0.06, 0.0)),
    ("left_knee", "left_hip", (0.0, -0.42, 0.0)),
    ("left_ankle", "left_knee", (0.0, -0.40, 0.0)),
    ("left_foot", "left_ankle", (0.0, -0.06, 0.10)),
    ("right_hip", "spine_base", (-0.09, -0.06, 0.0)),
    ("right_knee", "right_hip", (0.0, -0.42, 0.0)),
    ("right_ankle", "right_knee", (0.0, -0.40, 0.0)),
    ("right_foot", "right_ankle", (0.0, -0.06, 0.10)),
)


class _Dof(NamedTuple):
    joint: str  # the joint whose local rotation it drives; "root" for translations
    axis: int  # 0 = x, 1 = y, 2 = z (rotation axis, or translation direction for the root)
    sign: float  # makes positive values the anatomical flexion / abduction
    one_sided: bool  # flexion-only joints move in [0, amplitude] instead of [-amplitude, amplitude]
    max_amplitude: float  # radians, or metres for translations


_DOFS: tuple[_Dof, ...] = (
    _Dof("spine_base", 1, 1.0, False, 1.2),  # turn
    _Dof("spine_base", 0, 1.0, False, 0.5),  # bow from the hips
    _Dof("spine_mid", 0, 1.0, False, 0.5),  # bend forward / back
    _Dof("spine_mid", 2, 1.0, False, 0.4),  # side bend
    _Dof("spine_shoulder", 1, 1.0, False, 0.6),  # twist
    _Dof("neck", 0, 1.0, False, 0.5),  # nod
    _Dof("left_shoulder", 0, -1.0, True, 2.8),  # arm forward and up
    _Dof("left_shoulder", 2, 1.0, True, 2.6),  # arm sideways and up
    _Dof("left_elbow", 0, -1.0, True, 2.3),
    _Dof("right_shoulder", 0, -1.0, True, 2.8),
    _Dof("right_shoulder", 2, -1.0, True, 2.6),
    _Dof("right_elbow", 0, -1.0, True, 2.3),
    _Dof("left_hip", 0, -1.0, True, 1.6),
    _Dof("left_hip", 2, 1.0, True, 0.7),
    _Dof("left_knee", 0, 1.0, True, 2.0),
    _Dof("right_hip", 0, -1.0, True, 1.6),
    _Dof("right_hip", 2, -1.0, True, 0.7),
    _Dof("right_knee", 0, 1.0, True, 2.0),
    _Dof("root", 1, 1.0, False, 0.25),  # up / down (jump, squat)
    _Dof("root", 2, 1.0, False, 0.4),  # step forward / back
)
_GROUPS: tuple[tuple[int, ...], ...] = (
    (9, 10, 11),  # right arm
    (6, 7, 8),  # left arm
    (6, 7, 8, 9, 10, 11),  # both arms, mirrored
    (12, 13, 14, 15, 16, 17, 18),  # legs
    (0, 1, 2, 3, 4, 5, 19),  # torso and stepping
)
_MIRROR = {6: 9, 7: 10, 8: 11}


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and variability of the synthetic dataset.

    The defaults give 10 classes x 12 performers x 3 cameras x 7 repetitions = 2520 samples of up to 100
    frames (1890 train / 630 val with ``benchmark="xsub"``), generated in a few seconds.

    Attributes:
        num_classes: action classes.
        num_performers: performers; with ``benchmark="xsub"`` every fourth one (4, 8, ...) is held out.
        num_cameras: cameras spread over -45..45 degrees around the vertical axis; with ``"xview"`` camera 1
            is held out, as NTU trains on cameras 2 and 3.
        repetitions: samples per (class, performer, camera); repetition r is NTU setup ``1 + r // 2``,
            replication ``1 + r % 2``.
        max_frames: length T of the frame axis (NTU uses 300; smaller keeps memory low).
        min_frames: shortest sequence; lengths are uniform in [min_frames, max_frames], whatever the class.
        two_person_fraction: fraction of classes (the last ones) that are two-person interactions.
        noise_std: sensor noise per coordinate, metres.
        distortion: bound of a per-sample random linear distortion of the recorded coordinates (a 3 x 3 matrix with
            ones on the diagonal and U(-distortion, distortion) elsewhere, applied in camera space, as an uncalibrated
            sensor would): the pre-normalization removes its rotation but not its shear, so raw joint distances and
            a random encoder see it, while the pretraining views, which shear too, teach invariance to it. 0: none.
        drop_frame_prob: probability that a frame is lost (all joints zero, as a frame with no body).
        benchmark: ``"xsub"`` (split by performer) or ``"xview"`` (split by camera) for ``load_dataset``.
        seed: everything is a deterministic function of it.
    """

    num_classes: int = 10
    num_performers: int = 12
    num_cameras: int = 3
    repetitions: int = 7
    max_frames: int = 100
    min_frames: int = 40
    two_person_fraction: float = 0.2
    noise_std: float = 0.005
    distortion: float = 1.5
    drop_frame_prob: float = 0.01
    benchmark: str = "xsub"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_classes", "num_performers", "num_cameras", "repetitions", "min_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_frames < self.min_frames:
            raise ValueError(f"max_frames ({self.max_frames}) must be >= min_frames ({self.min_frames})")
        if max(self.num_classes, self.num_performers, self.num_cameras, self.repetitions * 2) > 999:
            raise ValueError("ids must fit the 3-digit NTU naming scheme (at most 999 each)")
        if not 0.0 <= self.two_person_fraction <= 1.0 or not 0.0 <= self.drop_frame_prob < 1.0:
            raise ValueError("two_person_fraction must be in [0, 1] and drop_frame_prob in [0, 1)")
        if not (self.noise_std >= 0 and self.distortion >= 0):
            raise ValueError(
                f"noise_std and distortion must be >= 0, got noise_std={self.noise_std}, distortion={self.distortion}"
            )
        if self.benchmark not in ("xsub", "xview"):
            raise ValueError(f"benchmark must be 'xsub' or 'xview', got {self.benchmark!r}")
        if self.benchmark == "xsub" and self.num_performers < 4:
            raise ValueError("benchmark 'xsub' holds out every fourth performer: num_performers must be >= 4")
        if self.benchmark == "xview" and self.num_cameras < 2:
            raise ValueError("benchmark 'xview' holds out camera 1: num_cameras must be >= 2")

    @property
    def num_samples(self) -> int:
        """Total number of samples."""
        return self.num_classes * self.num_performers * self.num_cameras * self.repetitions


class SyntheticSamples(NamedTuple):
    """Generated samples (a tuple, so it unpacks as ``data, num_frames, labels, performer, camera, names``).

    Attributes:
        data: float32 (N, 3, T, 25, 2), camera coordinates in metres, zero after ``num_frames``.
        num_frames: int64 (N,), valid frames.
        labels: int64 (N,), 0-based classes.
        performer: int64 (N,), 1-based performer ids.
        camera: int64 (N,), 1-based camera ids.
        names: NTU-style names ``SsssCcccPpppRrrrAaaa``.
    """

    data: np.ndarray
    num_frames: np.ndarray
    labels: np.ndarray
    performer: np.ndarray
    camera: np.ndarray
    names: list[str]


def sample_ids(config: SyntheticConfig) -> list[NtuSampleId]:
    """The NTU ids of every sample, in generation order (cheap: nothing is generated).

    Args:
        config: the dataset configuration.

    Returns:
        One id per sample index.
    """
    grid = np.unravel_index(
        np.arange(config.num_samples),
        (config.num_classes, config.num_performers, config.num_cameras, config.repetitions),
    )
    return [
        NtuSampleId(setup=1 + r // 2, camera=k + 1, performer=p + 1, replication=1 + r % 2, action=c + 1)
        for c, p, k, r in zip(*(axis.tolist() for axis in grid))
    ]


def split_indices(config: SyntheticConfig, split: str) -> np.ndarray:
    """Indices of the samples of one split of ``config.benchmark``.

    Args:
        config: the dataset configuration.
        split: ``"train"`` or ``"val"``.

    Returns:
        Sorted int64 indices.

    Raises:
        ValueError: for an unknown split.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    held_out = np.array([is_held_out(config.benchmark, s.performer, s.camera) for s in sample_ids(config)])
    return np.flatnonzero(held_out if split == "val" else ~held_out)


def is_held_out(benchmark: str, performer: int, camera: int) -> bool:
    """Whether a synthetic sample belongs to the validation side of ``"xsub"`` or ``"xview"``.

    x-sub holds out every fourth performer (4, 8, ...); x-view holds out camera 1, as NTU trains on
    cameras 2 and 3.

    Raises:
        ValueError: for another benchmark.
    """
    if benchmark == "xsub":
        return performer % 4 == 0
    if benchmark == "xview":
        return camera == 1
    raise ValueError(f"benchmark must be 'xsub' or 'xview', got {benchmark!r}")


def generate_synthetic(config: SyntheticConfig, indices: np.ndarray | None = None) -> SyntheticSamples:
    """Generate the synthetic samples (all, or the given subset).

    Args:
        config: the dataset configuration.
        indices: sample indices to generate (default: all ``config.num_samples``); a sample is the same
            whichever subset it is generated in.

    Returns:
        The samples, in the order of ``indices``.

    Raises:
        ValueError: if an index is out of range.
    """
    indices = np.arange(config.num_samples) if indices is None else np.asarray(indices, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= config.num_samples):
        raise ValueError(f"indices must be in [0, {config.num_samples})")
    ids = sample_ids(config)
    chosen = [ids[i] for i in indices.tolist()]
    world = _World(config)
    data = np.zeros((len(indices), 3, config.max_frames, NUM_JOINTS, NUM_BODIES), dtype=np.float32)
    num_frames = np.zeros(len(indices), dtype=np.int64)
    chunk = 256
    for start in range(0, len(indices), chunk):
        draws = [world.draw(int(i), ids[i]) for i in indices[start : start + chunk]]
        data[start : start + chunk], num_frames[start : start + chunk] = world.render(draws)
    return SyntheticSamples(
        data=data,
        num_frames=num_frames,
        labels=np.array([sample.action - 1 for sample in chosen], dtype=np.int64),
        performer=np.array([sample.performer for sample in chosen], dtype=np.int64),
        camera=np.array([sample.camera for sample in chosen], dtype=np.int64),
        names=[sample.name for sample in chosen],
    )


class _Motion(NamedTuple):
    """Joint-angle trajectory parameters of one body: q_d(u) = env(u) * (offset_d + amplitude_d * wave_d(u))."""

    amplitude: np.ndarray  # (D,)
    offset: np.ndarray  # (D,)
    cycles: np.ndarray  # (D,)
    phase: np.ndarray  # (D,)


class _Draw(NamedTuple):
    """Everything random about one sample."""

    num_frames: int
    window: tuple[float, float]  # active part of the sequence, as fractions of its duration
    warp: float  # tempo modulation strength
    motions: tuple[_Motion, ...]  # one per body
    performers: tuple[int, ...]  # 0-based performer of each body
    facing: float  # yaw of body 0, radians
    position: np.ndarray  # (2,) floor position (x, z) of body 0
    partner_offset: float  # signed distance from the drawn position to body 0 along its facing; 0 if alone
    camera: int  # 0-based
    camera_distance: float  # metres from the scene centre
    camera_height: float  # metres above the floor
    noise: np.ndarray  # (T, 25, 2, 3)
    dropped: np.ndarray  # (T,) bool
    distortion: np.ndarray  # (3, 3) linear map of the recorded coordinates


class _World:
    """Class and performer tables of a configuration, and the per-sample renderer."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        rng = np.random.default_rng([config.seed, 0])
        num_two_person = round(config.num_classes * config.two_person_fraction)
        self.two_person = np.arange(config.num_classes) >= config.num_classes - num_two_person
        self.classes = [
            tuple(_class_motion(rng, c) for _ in range(2 if self.two_person[c] else 1))
            for c in range(config.num_classes)
        ]
        rng = np.random.default_rng([config.seed, 1])
        scale = rng.uniform(0.88, 1.12, size=(config.num_performers, 1, 1))
        bone = rng.uniform(0.94, 1.06, size=(config.num_performers, NUM_JOINTS, 1))
        offsets = np.array([offset for _, _, offset in _TREE])
        self.offsets = scale * bone * offsets  # (P, 25, 3) in _TREE order
        self.style = rng.uniform(0.85, 1.15, size=config.num_performers)
        if config.num_cameras == 1:
            self.camera_yaw = np.zeros(1)
        else:
            self.camera_yaw = np.radians(np.linspace(-45.0, 45.0, config.num_cameras))

    def draw(self, index: int, sample: NtuSampleId) -> _Draw:
        """Draw one sample's random variables from its own stream ``(seed, 3, index)``."""
        config = self.config
        rng = np.random.default_rng([config.seed, 3, index])
        num_frames = int(rng.integers(config.min_frames, config.max_frames + 1))
        performers = (sample.performer - 1, sample.performer % config.num_performers)
        motions = tuple(
            _Motion(
                amplitude=motion.amplitude * self.style[p] * rng.uniform(0.8, 1.2, size=len(_DOFS)),
                offset=motion.offset,
                cycles=motion.cycles,
                phase=motion.phase + rng.normal(0.0, 0.25, size=len(_DOFS)),
            )
            for motion, p in zip(self.classes[sample.action - 1], performers)
        )
        return _Draw(
            num_frames=num_frames,
            window=(rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)),
            warp=rng.uniform(-1.0, 1.0),
            motions=motions,
            performers=performers[: len(motions)],
            facing=rng.uniform(-0.4, 0.4),
            position=rng.uniform(-0.7, 0.7, size=2),
            # Which partner stands nearer the camera is random, so depth says nothing about the class.
            partner_offset=rng.choice([-0.5, 0.5]) * rng.uniform(1.0, 1.4) * (len(motions) > 1),
            camera=sample.camera - 1,
            camera_distance=rng.uniform(2.5, 3.5),
            camera_height=rng.uniform(0.6, 1.4),
            noise=config.noise_std
            * rng.standard_normal((config.max_frames, NUM_JOINTS, NUM_BODIES, 3), dtype=np.float32),
            dropped=rng.random(config.max_frames) < config.drop_frame_prob,
            # Drawn last, so that the other draws of a sample do not depend on whether it is distorted.
            distortion=np.eye(3) + (1 - np.eye(3)) * rng.uniform(-config.distortion, config.distortion, (3, 3)),
        )

    def render(self, draws: list[_Draw]) -> tuple[np.ndarray, np.ndarray]:
        """Turn draws into (B, 3, T, 25, 2) float32 camera coordinates and (B,) frame counts."""
        num_frames = np.array([draw.num_frames for draw in draws])
        steps = np.arange(self.config.max_frames)
        u = steps / np.maximum(num_frames[:, None] - 1, 1)  # (B, T), 0..1 over the valid frames
        lo, hi = (np.array([draw.window[i] for draw in draws])[:, None] for i in (0, 1))
        u = np.clip((u - lo) / (hi - lo), 0.0, 1.0)
        warp = np.array([draw.warp for draw in draws])[:, None]
        u = u + 0.05 * warp * np.sin(2 * np.pi * u)  # monotone tempo change (|slope change| < 0.32)
        envelope = np.sin(np.pi * u)[..., None]  # actions start and end at rest
        facing = np.array([draw.facing for draw in draws])
        root = np.stack([np.array([d.position[0], 0.0, d.position[1]]) for d in draws])  # (B, 3) floor point
        bodies = np.zeros((len(draws), self.config.max_frames, NUM_JOINTS, NUM_BODIES, 3))
        for body in range(NUM_BODIES):
            present = np.array([len(draw.motions) > body for draw in draws])
            if not present.any():
                continue
            rows = np.flatnonzero(present)
            motion = [draws[i].motions[body] for i in rows]
            angles = _trajectories(motion, u[rows], envelope[rows])
            yaw = facing[rows] + (np.pi if body else 0.0)
            # Partners stand face to face, centred on the drawn position; a single performer stands on it.
            forward = np.stack([np.sin(facing[rows]), np.zeros(len(rows)), np.cos(facing[rows])], -1)
            offset = np.array([draws[i].partner_offset for i in rows])
            base = root[rows] + (-offset if body else offset)[:, None] * forward
            offsets = self.offsets[[draws[i].performers[body] for i in rows]]
            bodies[rows, :, :, body] = _forward_kinematics(angles, offsets, yaw, base)
        bodies = self._to_camera(bodies, draws)
        bodies = np.einsum("bij,btvmj->btvmi", np.stack([draw.distortion for draw in draws]), bodies)
        bodies += np.stack([draw.noise for draw in draws])
        valid = (steps < num_frames[:, None]) & ~np.stack([draw.dropped for draw in draws])
        present = np.array([[len(draw.motions) > m for m in range(NUM_BODIES)] for draw in draws])
        keep = valid[:, :, None, None, None] & present[:, None, None, :, None]
        bodies = np.where(keep, bodies, 0.0).astype(np.float32)
        # The NTU reader orders bodies by motion energy; do the same so files written from these samples
        # read back identically.
        energy = motion_energy(rearrange(bodies, "b t v m c -> b m t v c"))
        swap = energy[:, 1] > energy[:, 0]
        bodies[swap] = bodies[swap][:, :, :, ::-1]
        return rearrange(bodies, "b t v m c -> b c t v m"), num_frames

    def _to_camera(self, bodies: np.ndarray, draws: list[_Draw]) -> np.ndarray:
        """World (floor at y = 0) to Kinect-like camera coordinates (y up, z = depth) of each draw's camera."""
        yaw = self.camera_yaw[[draw.camera for draw in draws]]
        distance = np.array([draw.camera_distance for draw in draws])
        height = np.array([draw.camera_height for draw in draws])
        center = np.stack([distance * np.sin(yaw), height, distance * np.cos(yaw)], -1)  # (B, 3)
        zero, one = np.zeros_like(yaw), np.ones_like(yaw)
        axes = np.stack(  # rows: camera x, y (up), z (viewing direction, toward the scene centre)
            [
                np.stack([-np.cos(yaw), zero, np.sin(yaw)], -1),
                np.stack([zero, one, zero], -1),
                np.stack([-np.sin(yaw), zero, -np.cos(yaw)], -1),
            ],
            axis=1,
        )
        relative = rearrange(bodies - center[:, None, None, None, :], "b t v m c -> b (t v m) c")
        return (relative @ axes.transpose(0, 2, 1)).reshape(bodies.shape)


def _class_motion(rng: np.random.Generator, label: int) -> _Motion:
    """Random joint-angle trajectory parameters of one body of a class.

    The main DOF group cycles with the class index (right arm, left arm, both arms, legs, torso), so any
    ten consecutive classes cover all body parts; a weaker secondary group is added at random.
    """
    amplitude = np.zeros(len(_DOFS))
    offset = np.zeros(len(_DOFS))
    cycles = rng.integers(1, 4, size=len(_DOFS)).astype(np.float64)
    phase = rng.uniform(0.0, 2 * np.pi, size=len(_DOFS))
    max_amplitude = np.array([dof.max_amplitude for dof in _DOFS])
    one_sided = np.array([dof.one_sided for dof in _DOFS])
    main = _GROUPS[label % len(_GROUPS)]
    groups = [(main, 1.0)]
    if rng.random() < 0.6:
        groups.append((_GROUPS[rng.integers(len(_GROUPS))], 0.4))
    for group, strength in groups:
        dofs = np.array(group)
        active = dofs[rng.random(len(dofs)) < 0.75]
        if active.size == 0:
            active = dofs[rng.integers(len(dofs), size=1)]
        amplitude[active] = strength * max_amplitude[active] * rng.uniform(0.35, 0.9, size=len(active))
        lows = np.where(one_sided[active], 0.0, -0.3)
        offset[active] = strength * max_amplitude[active] * rng.uniform(lows, 0.4)
    if main == _GROUPS[2]:  # both arms: the right arm mirrors the left, in phase or in anti-phase
        shift = np.pi * rng.integers(2)
        for left, right in _MIRROR.items():
            amplitude[right], offset[right], cycles[right] = amplitude[left], offset[left], cycles[left]
            phase[right] = phase[left] + shift
    return _Motion(amplitude=amplitude, offset=offset, cycles=cycles, phase=phase)


def _trajectories(motions: list[_Motion], u: np.ndarray, envelope: np.ndarray) -> np.ndarray:
    """DOF values (B, T, D) at normalized times u (B, T)."""
    amplitude, offset, cycles, phase = (np.stack(field)[:, None, :] for field in zip(*motions))
    wave = np.sin(2 * np.pi * cycles * u[..., None] + phase)
    one_sided = np.array([dof.one_sided for dof in _DOFS])
    wave = np.where(one_sided, 0.5 * (1.0 + wave), wave)
    return envelope * (offset + amplitude * wave)


def _rotation(angle: np.ndarray, axis: int) -> np.ndarray:
    """Rotation matrices (..., 3, 3) by ``angle`` (...) about coordinate axis 0, 1 or 2."""
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.zeros((*np.shape(angle), 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    matrix[..., axis, axis] = 1.0
    matrix[..., i, i] = c
    matrix[..., j, j] = c
    matrix[..., i, j] = -s
    matrix[..., j, i] = s
    return matrix


def _forward_kinematics(angles: np.ndarray, offsets: np.ndarray, yaw: np.ndarray, base: np.ndarray) -> np.ndarray:
    """World joint positions (B, T, 25, 3) in Kinect joint order.

    Args:
        angles: DOF values (B, T, D).
        offsets: per-body rest offsets (B, 25, 3) in ``_TREE`` order.
        yaw: facing of each body (B,), radians about the vertical axis.
        base: floor point under each body's root (B, 3).
    """
    batch, frames = angles.shape[:2]
    # Standing height of the root: hip, thigh and shin lengths plus the ankle's height above the floor.
    leg = [name for name, _, _ in _TREE].index("left_hip")
    height = -offsets[:, leg : leg + 3, 1].sum(-1) + 0.06
    heading = _rotation(yaw, 1)[:, None]  # (B, 1, 3, 3)
    translation = np.zeros((batch, frames, 3))
    for d, dof in enumerate(_DOFS):
        if dof.joint == "root":
            translation[..., dof.axis] = dof.sign * angles[..., d]
    origin = base[:, None] + np.array([0.0, 1.0, 0.0]) * height[:, None, None]
    origin = origin + (heading @ translation[..., None])[..., 0]
    frames_of: dict[str, np.ndarray] = {}
    positions = np.zeros((batch, frames, NUM_JOINTS, 3))
    for k, (name, parent, _) in enumerate(_TREE):
        frame = heading if parent is None else frames_of[parent]
        for d, dof in enumerate(_DOFS):
            if dof.joint == name:
                frame = frame @ _rotation(dof.sign * angles[..., d], dof.axis)
        if parent is None:
            positions[:, :, KINECT_V2.index[name]] = origin
        else:
            bone = frames_of[parent] @ offsets[:, None, k, :, None]  # (B, T, 3, 1)
            positions[:, :, KINECT_V2.index[name]] = positions[:, :, KINECT_V2.index[parent]] + bone[..., 0]
        frames_of[name] = frame
    return positions

"""The procedural synthetic dataset: layout, determinism, splits and that classes differ by motion only."""

import dataclasses

import numpy as np
import pytest
from skeleton.data.formats.ntu import NtuSampleId
from skeleton.data.prenormalize import prenormalize
from skeleton.data.synthetic import SyntheticConfig, generate_synthetic, sample_ids, split_indices

SMALL = SyntheticConfig(num_performers=8, repetitions=2, max_frames=60, min_frames=30)


@pytest.fixture(scope="module")
def small():
    return generate_synthetic(SMALL)


def test_layout(small):
    data, num_frames, labels, performer, camera, names = small
    n = SMALL.num_samples
    assert n == 10 * 8 * 3 * 2
    assert data.shape == (n, 3, 60, 25, 2) and data.dtype == np.float32
    assert num_frames.dtype == labels.dtype == np.int64
    assert num_frames.min() >= 30 and num_frames.max() <= 60
    assert set(labels.tolist()) == set(range(10))
    assert set(performer.tolist()) == set(range(1, 9)) and set(camera.tolist()) == {1, 2, 3}
    assert len(set(names)) == n
    for i in range(0, n, 37):
        sample = NtuSampleId.parse(names[i])
        assert (sample.action - 1, sample.performer, sample.camera) == (labels[i], performer[i], camera[i])
    after = np.arange(60)[None, :] >= num_frames[:, None]
    assert not np.any(np.moveaxis(data, 2, 1)[after])  # zero after the valid frames
    # Metres in camera space (scene within 6 m of the camera), times at most 1 + 2 * distortion by the sensor distortion.
    assert np.isfinite(data).all() and np.abs(data).max() < 6.0 * (1 + 2 * SMALL.distortion)


def test_bodies_dropped_frames_and_two_person_classes(small):
    data, num_frames, labels = small.data, small.num_frames, small.labels
    has_second = np.any(data[..., 1] != 0, axis=(1, 2, 3))
    two_person = {int(c) for c in np.unique(labels[has_second])}
    assert two_person == {8, 9}  # the last 20 % of the classes
    assert has_second[np.isin(labels, [8, 9])].all()
    frame_full = np.any(data[..., 0] != 0, axis=(1, 3))
    lost = [(~frame_full[i, : num_frames[i]]).sum() for i in range(len(data))]
    assert 0 < np.count_nonzero(lost) < len(data) // 2  # occasional, not systematic


def test_deterministic_and_subsets(small):
    again = generate_synthetic(SMALL)
    np.testing.assert_array_equal(small.data, again.data)
    subset = np.array([5, 3, 400])
    part = generate_synthetic(SMALL, subset)
    np.testing.assert_array_equal(part.data, small.data[subset])
    assert part.names == [small.names[i] for i in subset]
    other = generate_synthetic(SyntheticConfig(**{**SMALL.__dict__, "seed": 1}), subset)
    assert not np.allclose(other.data, part.data)
    with pytest.raises(ValueError, match="indices"):
        generate_synthetic(SMALL, np.array([SMALL.num_samples]))


def test_splits():
    train, val = split_indices(SMALL, "train"), split_indices(SMALL, "val")
    ids = sample_ids(SMALL)
    assert len(train) + len(val) == SMALL.num_samples and not set(train) & set(val)
    assert {ids[i].performer for i in val} == {4, 8}
    xview = SyntheticConfig(**{**SMALL.__dict__, "benchmark": "xview"})
    assert {ids[i].camera for i in split_indices(xview, "val")} == {1}
    assert {ids[i].camera for i in split_indices(xview, "train")} == {2, 3}
    with pytest.raises(ValueError, match="split"):
        split_indices(SMALL, "test")


def _nearest_centroid_accuracy(features, labels, train, val):
    mean, std = features[train].mean(0), features[train].std(0) + 1e-8
    features = (features - mean) / std
    centroids = np.stack([features[train][labels[train] == c].mean(0) for c in range(labels.max() + 1)])
    predicted = np.argmin(((features[val][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return (predicted == labels[val]).mean()


def test_classes_differ_by_motion_not_by_trivial_cues(small):
    data, num_frames, labels = small.data, small.num_frames, small.labels
    train = np.isin(np.arange(len(data)), split_indices(SMALL, "train"))
    val = ~train
    chance = 1 / SMALL.num_classes
    mean_position = np.stack([data[i, :, : num_frames[i], :, 0].mean(axis=(1, 2)) for i in range(len(data))])
    trivial = np.concatenate([num_frames[:, None], mean_position], axis=1).astype(np.float64)
    assert _nearest_centroid_accuracy(trivial, labels, train, val) < 2.5 * chance
    assert _nearest_centroid_accuracy(num_frames[:, None].astype(np.float64), labels, train, val) < 2 * chance
    normalized = prenormalize(data)
    motion = np.stack([normalized[i, :, : num_frames[i], :, 0].std(axis=1).ravel() for i in range(len(data))])
    assert _nearest_centroid_accuracy(motion, labels, train, val) > 0.7


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_classes": 0}, "num_classes must be >= 1"),
        ({"max_frames": 10}, "max_frames"),
        ({"benchmark": "xset"}, "benchmark must be"),
        ({"drop_frame_prob": 1.0}, "drop_frame_prob"),
        ({"num_performers": 1000}, "999"),
        ({"num_performers": 3}, "num_performers must be >= 4"),
        ({"benchmark": "xview", "num_cameras": 1}, "num_cameras must be >= 2"),
        ({"distortion": -0.5}, "distortion must be >= 0"),
        ({"noise_std": float("nan")}, "noise_std and distortion"),
    ],
)
def test_config_validation(options, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**options)


def test_each_sample_is_its_undistorted_recording_under_one_random_linear_map():
    """The distortion is drawn last from a sample's stream, so the same sample without it has the same motion,
    camera and noise; the two differ by one 3 x 3 map (up to the sensor noise, added after it): ones on the diagonal,
    off-diagonal entries within the bound, different per sample."""
    config = dataclasses.replace(SMALL, distortion=0.8, drop_frame_prob=0.0)
    indices = np.array([0, 77, 301])
    distorted = generate_synthetic(config, indices).data
    clean = generate_synthetic(dataclasses.replace(config, distortion=0.0), indices).data
    maps = []
    for recorded, source in zip(distorted, clean):
        present = np.any(source != 0, axis=0)  # (T, V, M)
        x, y = source[:, present].T.astype(np.float64), recorded[:, present].T.astype(np.float64)
        solution, *_ = np.linalg.lstsq(x, y, rcond=None)
        assert np.abs(x @ solution - y).max() < 0.1  # a few sensor-noise sigmas (5 mm) times the map's gain
        matrix = solution.T
        assert np.allclose(np.diag(matrix), 1.0, atol=0.05)
        assert np.abs(matrix - np.diag(np.diag(matrix))).max() <= 0.8 + 0.05
        maps.append(matrix)
    assert not np.allclose(maps[0], maps[1], atol=0.05)

"""spherical_kmeans: recovers clear clusters, handles empty clusters, deterministic, validates inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from halp_loss import KMeansResult, spherical_kmeans


def clustered(
    num_clusters: int, per_cluster: int, dim: int, spread: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(num_clusters, dim, generator=g), dim=1)
    points = centers.repeat_interleave(per_cluster, 0) + spread * torch.randn(
        num_clusters * per_cluster, dim, generator=g
    )
    return F.normalize(points, dim=1), centers


@pytest.mark.parametrize("seed", range(5))
def test_recovers_separated_clusters(seed: int) -> None:
    points, centers = clustered(20, 13, 128, 0.01, seed)
    result = spherical_kmeans(points, 20, generator=torch.Generator().manual_seed(seed))
    assert isinstance(result, KMeansResult)
    assert torch.allclose(result.centroids.norm(dim=1), torch.ones(20), atol=1e-5)
    # Every true center is matched by a centroid, and the assignments are the true partition.
    assert (centers @ result.centroids.T).max(dim=1).values.min() > 0.99
    truth = torch.arange(20).repeat_interleave(13)
    pairs = set(zip(truth.tolist(), result.assignments.tolist()))
    assert len(pairs) == 20 and len({a for _, a in pairs}) == 20
    assert 1 <= result.iterations < 50


def test_normalized_mean_fixed_point() -> None:
    # At convergence each centroid is the normalized mean of its points, and points go to the closest centroid.
    points, _ = clustered(5, 40, 16, 0.6, 2)
    result = spherical_kmeans(points, 5, iters=200, tol=0.0, generator=torch.Generator().manual_seed(0))
    means = F.normalize(torch.zeros(5, 16).index_add_(0, result.assignments, points), dim=1)
    assert torch.allclose(means, result.centroids, atol=1e-5)
    assert torch.equal(result.assignments, (points @ result.centroids.T).argmax(dim=1))


def test_empty_clusters_and_duplicate_points_handled() -> None:
    base = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(3)), dim=1)
    points = torch.cat([base.repeat(10, 1), base[:1] * 0.5 + 0.01])  # 4 distinct directions, 31 points
    result = spherical_kmeans(points, 6, init="random", generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(result.centroids).all()
    assert torch.allclose(result.centroids.norm(dim=1), torch.ones(6), atol=1e-5)
    same = spherical_kmeans(points.repeat(1, 1)[:1].repeat(20, 1), 20, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(same.centroids).all()


def test_deterministic_given_generator_and_fixed_iterations() -> None:
    points, _ = clustered(8, 32, 32, 0.5, 4)
    a = spherical_kmeans(points, 8, generator=torch.Generator().manual_seed(5))
    b = spherical_kmeans(points, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.assignments, b.assignments)
    fixed = spherical_kmeans(points, 8, iters=7, tol=None, generator=torch.Generator().manual_seed(5))
    assert fixed.iterations == 7
    double = spherical_kmeans(points.double(), 8, generator=torch.Generator().manual_seed(5))
    assert double.centroids.dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(x=torch.randn(10)), "x must be 2-D"),
        (dict(num_clusters=11), r"exceeds the number of points"),
        (dict(num_clusters=0), "num_clusters must be an integer >= 1"),
        (dict(init="forgy"), "init must be one of"),
        (dict(tol=-1.0), "tol must be None or a number >= 0"),
        (dict(x=torch.full((10, 4), float("inf"))), "non-finite"),
    ],
)
def test_bad_inputs(kwargs: dict, message: str) -> None:
    args = dict(x=torch.randn(10, 4), num_clusters=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        spherical_kmeans(args.pop("x"), args.pop("num_clusters"), **args)


def test_extreme_magnitudes_give_the_unit_scale_centroids() -> None:
    # Issue 10: points of 1e20 overflowed the float32 norm and gave zero centroids; tiny rows were refused.
    points, _ = clustered(4, 16, 8, 0.3, 6)
    plain = spherical_kmeans(points, 4, generator=torch.Generator().manual_seed(0))
    for scale in (1e20, 1e-30, 1e-40):
        scaled = spherical_kmeans(points * scale, 4, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(scaled.centroids.norm(dim=1), torch.ones(4), atol=1e-6)
        assert torch.equal(scaled.assignments, plain.assignments)
        assert torch.allclose(scaled.centroids, plain.centroids, atol=1e-4 if scale == 1e-40 else 1e-6)
    # Rows of wildly different magnitudes count by direction alone.
    magnitudes = torch.logspace(-30, 30, 64)[:, None]
    mixed = spherical_kmeans(points * magnitudes, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mixed.assignments, plain.assignments)


def test_points_that_cancel_keep_a_unit_centroid() -> None:
    # Found by the property tests: one cluster holding +x and -x has a zero mean, which normalized to a zero centroid.
    for points in (torch.tensor([[1.0], [-1.0]]), torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])):
        result = spherical_kmeans(points, 1, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(result.centroids.norm(dim=1), torch.ones(1))

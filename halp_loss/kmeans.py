"""Spherical k-means: cosine assignments, normalized-mean centroid updates, k-means++ seeding."""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from halp_loss._checks import check_matrix, check_positive_int, check_values, compute_dtype
from halp_loss.geometry import unit_rows

__all__ = ["KMeansResult", "spherical_kmeans"]

_INITS = ("kmeans++", "random")


class KMeansResult(NamedTuple):
    """Result of [`spherical_kmeans`][halp_loss.spherical_kmeans].

    Attributes:
        centroids: (C, D) unit-norm centroids.
        assignments: (N,) long, index of each point's centroid.
        iterations: number of update steps run.
    """

    centroids: Tensor
    assignments: Tensor
    iterations: int


def _kmeanspp(x: Tensor, num_clusters: int, generator: Optional[torch.Generator]) -> Tensor:
    """Greedy k-means++ seeding with the squared chordal distance ``2 - 2 cos`` (the sphere's k-means distance).

    Each step draws ``2 + log C`` candidates by D^2 weighting and keeps the one that lowers the total distance
    most, which avoids the merged clusters plain k-means++ often starts from.
    """
    n = x.shape[0]
    trials = 2 + int(math.log(num_clusters))
    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centroids = x[first]
    dist = (2.0 - 2.0 * (x @ centroids[0])).clamp_min(0.0)
    for _ in range(1, num_clusters):
        # When every point coincides with a centroid the weights are all zero: fall back to uniform.
        weights = torch.where(dist.sum() > 0, dist, torch.ones_like(dist))
        picks = torch.multinomial(weights, trials, replacement=True, generator=generator)
        candidate_dist = torch.minimum(dist, (2.0 - 2.0 * (x[picks] @ x.T)).clamp_min(0.0))
        best = candidate_dist.sum(dim=1).argmin()
        centroids = torch.cat([centroids, x[picks[best]][None]])
        dist = candidate_dist[best]
    return centroids


def _update(x: Tensor, assignments: Tensor, centroids: Tensor) -> Tensor:
    """Normalized means of the clusters; an empty cluster takes the point worst served by its centroid, and one
    whose points sum to zero keeps its centroid."""
    num_clusters = centroids.shape[0]
    sums = torch.zeros_like(centroids).index_add_(0, assignments, x)
    counts = torch.bincount(assignments, minlength=num_clusters)
    empty = counts == 0
    # Reseed empty clusters with the points farthest from their centroids, one distinct point per cluster.
    fit = (x * centroids[assignments]).sum(dim=1)
    worst = fit.argsort()[:num_clusters]
    rank = empty.long().cumsum(0) - 1
    reseed = x[worst[rank.clamp(0, worst.shape[0] - 1)]]
    means = unit_rows(torch.where(empty[:, None], reseed, sums))
    # Points that cancel (an antipodal pair) have no mean direction: such a cluster keeps its centroid.
    return torch.where(means.ne(0).any(dim=1, keepdim=True), means, centroids)


def spherical_kmeans(
    x: Tensor,
    num_clusters: int,
    *,
    iters: int = 50,
    tol: Optional[float] = 1e-4,
    init: str = "kmeans++",
    generator: Optional[torch.Generator] = None,
) -> KMeansResult:
    """Cluster points on the unit sphere by cosine similarity.

    Assignments go to the most similar centroid; each centroid becomes the normalized mean of its points, the
    standard fast stand-in for the Karcher mean the released HaLP code computes on the CPU. Runs on the input's
    device; the host reads back only the input check and, with ``tol`` set, one scalar per iteration.

    Args:
        x: (N, D) points; normalized inside; ``N >= num_clusters``.
        num_clusters: C, number of centroids.
        iters: maximum number of update steps.
        tol: stop once no centroid moves by more than this (1 - cosine between successive centroids).
            ``None`` runs exactly ``iters`` steps without the per-iteration read.
        init: ``"kmeans++"`` (greedy k-means++ seeding) or ``"random"`` (C distinct points drawn uniformly).
        generator: optional ``torch.Generator`` on ``x``'s device; the result is deterministic given it.

    Returns:
        [`KMeansResult`][halp_loss.KMeansResult] with ``centroids`` (C, D) unit-norm in float32 (float64 for float64
        input), ``assignments`` (N,) and the number of ``iterations`` run.

    Raises:
        ValueError: if ``x`` is not 2-D floating point, holds non-finite values or zero rows, if
            ``num_clusters`` is not in [1, N], or ``iters``, ``tol`` or ``init`` are invalid.

    Example:
        >>> points = torch.nn.functional.normalize(torch.randn(256, 128), dim=1)
        >>> result = spherical_kmeans(points, 20, generator=torch.Generator().manual_seed(0))
        >>> result.centroids.shape
        torch.Size([20, 128])
    """
    check_matrix(x, "x")
    check_positive_int(num_clusters, "num_clusters")
    if num_clusters > x.shape[0]:
        raise ValueError(f"num_clusters ({num_clusters}) exceeds the number of points x.shape[0] = {x.shape[0]}")
    check_positive_int(iters, "iters", minimum=0)
    if tol is not None and not tol >= 0:
        raise ValueError(f"tol must be None or a number >= 0, got {tol!r}")
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}")
    check_values(x, "x")
    return fit_unit_points(unit_rows(x.detach().to(compute_dtype(x))), num_clusters, iters, tol, init, generator)


@torch.no_grad()
def fit_unit_points(
    points: Tensor,
    num_clusters: int,
    iters: int,
    tol: Optional[float],
    init: str,
    generator: Optional[torch.Generator],
) -> KMeansResult:
    """[`spherical_kmeans`][halp_loss.spherical_kmeans] on unit-norm ``points`` without validating them, so that a
    caller holding already-normalized data (the prototype bank, every refit) reads nothing back from the device for
    checks."""
    if init == "kmeans++":
        centroids = _kmeanspp(points, num_clusters, generator)
    else:
        pick = torch.randperm(points.shape[0], generator=generator, device=points.device)[:num_clusters]
        centroids = points[pick]
    assignments = (points @ centroids.T).argmax(dim=1)
    steps = 0
    for steps in range(1, iters + 1):
        updated = _update(points, assignments, centroids)
        shift = 1.0 - (updated * centroids).sum(dim=1)
        centroids = updated
        assignments = (points @ centroids.T).argmax(dim=1)
        if tol is not None and float(shift.max()) <= tol:
            break
    return KMeansResult(centroids, assignments, steps)

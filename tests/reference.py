"""Independent float64 references of the method's geometry, and the seeded inputs the tests share.

The references materialize every positive as a vector and find the boundary by bisection on explicit dot
products, sharing nothing with the closed forms under test.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def slerp(k: np.ndarray, p: np.ndarray, t: float) -> np.ndarray:
    """Point at fraction t of the great-circle arc from unit vector k to unit vector p (not antipodal)."""
    w = np.arccos(np.clip(k @ p, -1.0, 1.0))
    if np.sin(w) < 1e-12:
        return k.copy()
    return (np.sin((1 - t) * w) * k + np.sin(t * w) * p) / np.sin(w)


def boundary_by_bisection(k: np.ndarray, p0: np.ndarray, ps: np.ndarray, iters: int = 200) -> float:
    """Smallest t in [0, 1] with slerp(k, ps, t) . (p0 - ps) = 0, by bisection (0 if it starts at the boundary)."""

    def gap(t: float) -> float:
        return slerp(k, ps, t) @ (p0 - ps)

    if gap(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if gap(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def kept(h: np.ndarray, prototypes: np.ndarray, nearest: int) -> bool:
    """The released code's rank filter: h's most similar prototype is still the anchor's."""
    return int(np.argmax(prototypes @ h)) == nearest


def moco_cross_entropy(
    query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MoCo's InfoNCE as usually written: cross-entropy over the concatenated logits ``[q . k, q . n_j] / T`` of
    normalized rows, the positive as label (0 when there are no negatives)."""
    q, k, n = (F.normalize(x, dim=1) for x in (query, key, negatives))
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ n.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Seeded standard normal tensor."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def sphere(n: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` seeded random unit vectors in ``d`` dimensions."""
    return F.normalize(randn(n, d, seed=seed, dtype=dtype), dim=1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


DEGENERATE_CASES = (
    "anchor_is_prototype",
    "duplicate_prototypes",
    "antipodal_target",
    "all_prototypes_equal",
    "tiny_values",
    "two_prototypes",
)


def degenerate_geometry(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(anchors, prototypes) in float32 for one of the :data:`DEGENERATE_CASES`, in 3-D."""
    g = torch.Generator().manual_seed(16)
    protos = F.normalize(torch.randn(4, 3, generator=g), dim=1)
    anchors = F.normalize(torch.randn(5, 3, generator=g), dim=1)
    if case == "anchor_is_prototype":
        anchors = protos.clone()
    elif case == "duplicate_prototypes":
        protos = torch.cat([protos, protos[:2]])
    elif case == "antipodal_target":
        protos = torch.stack([protos[0], -protos[0]])
        anchors = protos[:1].repeat(3, 1)
    elif case == "all_prototypes_equal":
        protos = protos[:1].repeat(4, 1)
    elif case == "tiny_values":
        anchors = anchors * 1e-15
    elif case == "two_prototypes":
        protos = protos[:2]
    return anchors, protos

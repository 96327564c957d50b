"""Draw HaLP's hallucinated positives on the unit sphere in 3-D (matplotlib).

Panel (a) follows one anchor ``k`` along the geodesic toward a target prototype ``p_s``: the walk stops at
``t_max``, where it reaches the boundary between the anchor's cell (nearest prototype ``p0``) and the target's
cell, and positives are drawn with ``t`` in ``[(1 - lam) t_max, t_max]``. Panels (b)-(d) show the positives of
three anchors for several ``lam``: kept positives, and those rejected by the rank filter because their walk
entered a third prototype's cell first. The sphere is coloured by nearest prototype (the cells).

The positives, their rank-filter flags, targets and ``t_max`` all come from ``halp_loss.hallucinate_positives``;
the script draws the cells and the geodesic curves around them.

Usage:
    python examples/visualize_halp.py --out docs/halp_sphere.png
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: the script only writes a file

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from mpl_toolkits.mplot3d import Axes3D  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # noqa: E402

from halp_loss import Hallucination, hallucinate_positives  # noqa: E402

ELEV, AZIM = 22.0, -58.0  # camera of every panel, in degrees
# Muted cells (the anchors' cell nearly white) so that the saturated anchors and positives stand out.
CELL_COLORS = ["#f4f4f4", "#c6dbef", "#fdd0a2", "#c7e9c0", "#dadaeb", "#fcc5c0"]
ANCHOR_COLORS = ["#08306b", "#7a0177", "#8c2d04"]
FILTERED_COLOR = "#e31a1c"


def view_direction() -> np.ndarray:
    """Unit vector from the sphere's centre toward the camera."""
    elev, azim = math.radians(ELEV), math.radians(AZIM)
    return np.array([math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)])


def frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An orthonormal frame whose third axis faces the camera: scenes are laid out in front of the viewer."""
    front = view_direction()
    right = np.cross([0.0, 0.0, 1.0], front)
    right /= np.linalg.norm(right)
    up = np.cross(front, right)
    return right, up, front


def on_sphere(polar_deg: float, azimuth_deg: float) -> np.ndarray:
    """A unit vector ``polar_deg`` away from the view direction, at ``azimuth_deg`` around it (0 = right)."""
    right, up, front = frame()
    polar, azimuth = math.radians(polar_deg), math.radians(azimuth_deg)
    direction = math.cos(azimuth) * right + math.sin(azimuth) * up
    return math.cos(polar) * front + math.sin(polar) * direction


def scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes (one facing the camera, a ring around it) and three anchors in the central cell.

    The ring is irregular (chosen by trying layouts) so that some walks cross a third prototype's cell before
    reaching their target's boundary, and get filtered.
    """
    ring = ((45, 90), (65, 121), (48, 183), (50, 235), (60, 327))
    prototypes = np.stack([on_sphere(0, 0)] + [on_sphere(polar, azimuth) for polar, azimuth in ring])
    anchors = np.stack([on_sphere(16, 95), on_sphere(20, 175), on_sphere(12, 285)])
    return torch.from_numpy(prototypes), torch.from_numpy(anchors)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points ``h(t)`` on the great circle from unit vector ``a`` to unit vector ``b``, one row per ``t``."""
    omega = math.acos(float(np.clip(a @ b, -1.0, 1.0)))
    return (np.sin((1.0 - t)[:, None] * omega) * a + np.sin(t[:, None] * omega) * b) / math.sin(omega)


def visible(points: np.ndarray, margin: float = 0.02) -> np.ndarray:
    """Mask of the points on the camera's hemisphere: matplotlib's 3-D axes do not hide occluded artists."""
    return points @ view_direction() > margin


def draw_curve(ax: Axes3D, points: np.ndarray, lift: float = 1.006, **style: object) -> None:
    """Plot a curve on the sphere with its hidden part removed (NaNs break the line)."""
    points = points * lift
    points = np.where(visible(points)[:, None], points, np.nan)
    ax.plot(points[:, 0], points[:, 1], points[:, 2], **style)


def draw_points(ax: Axes3D, points: np.ndarray, lift: float = 1.012, **style: object) -> None:
    """Scatter the visible points, lifted off the sphere so that the cells never cover them."""
    points = points[visible(points)] * lift
    ax.scatter(points[:, 0], points[:, 1], points[:, 2], depthshade=False, **style)


def visible_cell(prototypes: np.ndarray, index: int, samples: int = 1440) -> Optional[np.ndarray]:
    """Ordered boundary of the visible part of prototype ``index``'s cell, or None if the cell is hidden.

    The cell {x : x . (p_i - p_j) >= 0 for all j} cut by the camera's hemisphere {x : x . v >= 0} is an
    intersection of hemispheres, hence convex on the sphere: every great circle leaving an interior point ``c``
    in direction ``d`` exits it once, at the first root of some ``x(s) . n = (c . n) cos s + (d . n) sin s``,
    which is ``s = atan2(d . n, c . n) + pi / 2`` for a constraint ``n`` with ``c . n > 0``.
    """
    normals = np.concatenate([prototypes[index] - np.delete(prototypes, index, axis=0), view_direction()[None]])
    probe = np.random.default_rng(0).normal(size=(20000, 3))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    inside = probe[(probe @ normals.T > 1e-3).all(axis=1)]
    if len(inside) < 10:
        return None
    center = inside.mean(axis=0)
    center /= np.linalg.norm(center)
    e1 = np.cross(center, np.eye(3)[np.abs(center).argmin()])  # any axis not parallel to the centre
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(center, e1)
    alpha = np.linspace(0.0, 2.0 * np.pi, samples, endpoint=False)
    directions = np.cos(alpha)[:, None] * e1 + np.sin(alpha)[:, None] * e2
    exit_s = (np.arctan2(directions @ normals.T, center @ normals.T) + np.pi / 2).min(axis=1)
    return np.cos(exit_s)[:, None] * center + np.sin(exit_s)[:, None] * directions


def draw_cells(ax: Axes3D, prototypes: np.ndarray) -> None:
    """The visible sphere coloured by nearest prototype, with the cell boundaries, and the prototypes.

    Each cell is one polygon through its exact boundary: under the orthographic camera it covers exactly the
    cell's image, with crisp edges (a coloured mesh would show stair-steps and draw far slower).
    """
    for index in range(len(prototypes)):
        boundary = visible_cell(prototypes, index)
        if boundary is not None:
            cell = Poly3DCollection(
                [boundary],
                facecolor=CELL_COLORS[index % len(CELL_COLORS)],
                edgecolor="#525252",
                linewidth=1.3,
                zorder=0,
            )
            ax.add_collection3d(cell)
    draw_points(ax, prototypes, marker="*", s=260, color="black", edgecolor="white", linewidth=0.8, zorder=5)


def setup_axes(fig: plt.Figure, position: int, title: str) -> Axes3D:
    """A borderless 3-D panel of the 2x2 grid with the common camera."""
    ax = fig.add_subplot(2, 2, position, projection="3d", computed_zorder=False)
    ax.view_init(elev=ELEV, azim=AZIM)
    ax.set_proj_type("ortho")  # flat cell polygons then cover exactly the sphere's image
    ax.set_box_aspect((1, 1, 1), zoom=1.3)
    lim = 0.8
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), zlim=(-lim, lim))
    ax.set_axis_off()
    ax.set_title(title, fontsize=13, pad=0)
    return ax


def label(ax: Axes3D, point: np.ndarray, text: str, shift: tuple[float, float] = (0.0, 0.08), **style: object) -> None:
    """Write ``text`` next to ``point``, shifted by ``shift`` (right, up) as seen by the camera."""
    right, up, _ = frame()
    p = 1.02 * point + shift[0] * right + shift[1] * up
    ax.text(p[0], p[1], p[2], text, fontsize=12, ha="center", va="center", zorder=10, **style)


def panel_walk(ax: Axes3D, prototypes: torch.Tensor, anchor: torch.Tensor, target: int, lam: float) -> None:
    """One anchor, one target: the geodesic, ``t_max`` and the interval the positives are drawn from."""
    out = hallucinate_positives(
        anchor[None], prototypes, lam=lam, num_positives=400, generator=torch.Generator().manual_seed(0)
    )
    chosen = out.target[0] == target
    t_max = float(out.t_max[0, chosen][0])
    protos, k = prototypes.numpy(), anchor.numpy()
    p0, ps = protos[int(out.nearest[0])], protos[target]
    draw_cells(ax, protos)
    draw_curve(ax, slerp(k, ps, np.linspace(0, 1, 200)), color="#252525", lw=1.4, ls=(0, (3, 3)), zorder=2)
    draw_curve(ax, slerp(k, ps, np.linspace(0, t_max, 200)), color="#252525", lw=2.2, zorder=3)
    draw_curve(
        ax,
        slerp(k, ps, np.linspace((1 - lam) * t_max, t_max, 100)),
        color="#238b45",
        lw=6,
        solid_capstyle="round",
        zorder=3,
    )
    positives = out.positives[0, chosen].numpy()
    keep = out.keep[0, chosen].numpy()
    draw_points(ax, positives[keep], s=22, color="#00441b", zorder=6)
    draw_points(ax, k[None], s=140, color=ANCHOR_COLORS[0], edgecolor="white", linewidth=1.2, zorder=7)
    boundary = slerp(k, ps, np.array([t_max]))
    draw_points(ax, boundary, marker="D", s=70, color="white", edgecolor="black", linewidth=1.2, zorder=7)
    label(ax, k, "anchor $k$", color=ANCHOR_COLORS[0], fontweight="bold")
    label(ax, p0, "$p_0$ (nearest)", (0.25, -0.04))
    label(ax, ps, "$p_s$ (target)", (0.0, -0.08))
    label(ax, boundary[0], r"$t_{\max}$", (0.07, 0.03))


def panel_positives(ax: Axes3D, prototypes: torch.Tensor, anchors: torch.Tensor, out: Hallucination) -> None:
    """Several anchors, all targets: the walks up to ``t_max`` and the kept and filtered positives."""
    protos = prototypes.numpy()
    draw_cells(ax, protos)
    for i, k in enumerate(anchors.numpy()):
        for s in sorted(set(out.target[i].tolist())):
            t_max = float(out.t_max[i][out.target[i] == s][0])
            draw_curve(
                ax, slerp(k, protos[s], np.linspace(0, t_max, 60)), color=ANCHOR_COLORS[i], lw=0.8, alpha=0.7, zorder=2
            )
        positives, keep = out.positives[i].numpy(), out.keep[i].numpy()
        draw_points(ax, positives[keep], s=16, color=ANCHOR_COLORS[i], alpha=0.9, zorder=4)
        draw_points(ax, positives[~keep], marker="x", s=34, color=FILTERED_COLOR, linewidth=1.5, zorder=5)
        draw_points(ax, k[None], s=130, color=ANCHOR_COLORS[i], edgecolor="white", linewidth=1.2, zorder=7)


def render(out_path: Path, num_positives: int = 120, dpi: int = 110) -> None:
    """Render the four panels to ``out_path``."""
    prototypes, anchors = scene()
    fig = plt.figure(figsize=(12, 11.5))
    panel_walk(
        setup_axes(fig, 1, r"(a) the walk from $k$ toward $p_s$ ($\lambda = 0.8$)"),
        prototypes,
        anchors[0],
        target=4,
        lam=0.8,
    )
    for position, lam in zip((2, 3, 4), (0.0, 0.4, 0.8)):
        out = hallucinate_positives(
            anchors, prototypes, lam=lam, num_positives=num_positives, generator=torch.Generator().manual_seed(1)
        )
        hint = " (on the boundary)" if lam == 0 else " (default)" if lam == 0.8 else ""
        kept = float(out.keep.double().mean())
        ax = setup_axes(fig, position, f"({'abcd'[position - 1]}) $\\lambda = {lam:g}${hint}: {kept:.0%} kept")
        panel_positives(ax, prototypes, anchors, out)
    legend = [
        Line2D([], [], marker="*", ls="", color="black", markersize=14, label="prototype (cell centre)"),
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            color=ANCHOR_COLORS[0],
            markeredgecolor="white",
            markersize=11,
            label="anchor (detached key)",
        ),
        Line2D([], [], color="#252525", lw=2, label=r"geodesic walk up to $t_{\max}$"),
        Line2D([], [], color="#238b45", lw=6, label=r"$t \in [(1-\lambda)\,t_{\max},\ t_{\max}]$"),
        Line2D(
            [],
            [],
            marker="D",
            ls="",
            color="white",
            markeredgecolor="black",
            markersize=8,
            label=r"cell boundary at $t_{\max}$",
        ),
        Line2D([], [], marker="o", ls="", color="#555555", markersize=6, label="kept positive"),
        Line2D(
            [],
            [],
            marker="x",
            ls="",
            color=FILTERED_COLOR,
            markersize=8,
            markeredgewidth=1.5,
            label="filtered: nearer a third prototype",
        ),
    ]
    fig.legend(handles=legend, loc="lower center", ncol=4, fontsize=11, frameon=False)
    fig.suptitle(
        "HaLP: positives hallucinated along geodesics toward other prototypes, inside the anchor's cell",
        fontsize=15,
        y=0.985,
    )
    fig.subplots_adjust(left=0.0, right=1.0, top=0.95, bottom=0.07, wspace=0.0, hspace=0.06)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(description="Render HaLP's hallucinated positives on the unit sphere.")
    parser.add_argument("--out", type=Path, default=Path("docs/halp_sphere.png"))
    parser.add_argument("--positives", type=int, default=120, help="positives per anchor in panels (b)-(d)")
    parser.add_argument("--dpi", type=int, default=110)
    args = parser.parse_args(argv)
    render(args.out, args.positives, args.dpi)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()

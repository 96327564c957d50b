"""Skeleton sequence encoders: the released recurrent encoder, a true bidirectional GRU, ST-GCN and a temporal
convolution network.

Every encoder maps a batch of skeleton sequences ``(N, C, T, V, M)`` (coordinates, frames, joints, bodies) to
a feature vector ``(N, feature_dim)``. The skeleton layout (V joints, and the bones of the ST-GCN graph), C (3
for positions, 2 for image keypoints) and M are given at construction: Kinect v2, 3, 2 for NTU RGB+D; Kinect v1,
3, 1 for NW-UCLA; COCO-17, 2, 1 for a video pose estimator's keypoints. The projection head of contrastive
pretraining sits on top (``EmbeddingNet``); evaluation uses the features before it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from ..data.layouts import COORDINATE_COUNTS, KINECT_V2, SkeletonLayout

ENCODERS = ("gru", "bigru", "stgcn", "tcn")
"""``gru``: the released encoder (pairs of forward GRUs); ``bigru``: a true bidirectional GRU; ``stgcn``;
``tcn``: temporal convolutions over all joints' positions and velocities."""
DEFAULT_BODIES = 2
"""M of the default input (NTU RGB+D's two bodies)."""
WEIGHT_INITS = ("released", "pytorch")
"""Initial weights of ``EmbeddingNet``: ``released`` (see ``released_init_``) or PyTorch's defaults."""


def flatten_frames(x: Tensor) -> Tensor:
    """(N, C, T, V, M) -> (N, T, V*C*M), feature index ``v*C*M + c*M + m`` as the released code lays it out."""
    return rearrange(x, "n c t v m -> n t (v c m)")


class PairedGRU(nn.Module):
    """Stacked layers of two independent forward GRUs whose outputs are concatenated.

    The released encoder declares ``nn.GRU(bidirectional=True)`` but feeds it one frame at a time with the
    carried hidden state. With a sequence of length one, the "reverse" direction is just a second forward
    GRU with its own weights, so per layer the released model computes two forward GRUs over the frames and
    concatenates their outputs. Here each of them runs over the whole sequence in one
    ``nn.GRU`` call, which lets cuDNN / the CPU kernels batch the input projections of all frames.

    Args:
        input_size: features per frame.
        hidden_size: hidden units of each GRU (output is ``2 * hidden_size``).
        num_layers: stacked layers; layer ``l > 0`` reads the concatenated outputs of layer ``l - 1``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.forward_grus = nn.ModuleList()
        self.reverse_grus = nn.ModuleList()
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else 2 * hidden_size
            self.forward_grus.append(nn.GRU(layer_input, hidden_size, batch_first=True))
            self.reverse_grus.append(nn.GRU(layer_input, hidden_size, batch_first=True))

    def forward(self, x: Tensor) -> Tensor:
        """(N, T, input_size) -> (N, T, 2 * hidden_size), the last layer's outputs at every frame."""
        for forward_gru, reverse_gru in zip(self.forward_grus, self.reverse_grus):
            x = torch.cat([forward_gru(x)[0], reverse_gru(x)[0]], dim=-1)
        return x


class RecurrentEncoder(nn.Module):
    """BatchNorm over the V·C·M per-frame features (150 for NTU), then a 3-layer GRU; the feature summarizes
    the sequence.

    ``bidirectional=False`` is the released HaLP/CMD encoder (``PairedGRU``, feature = output at the
    last frame, ``2 * hidden_size`` wide). ``bidirectional=True`` is a true bidirectional ``nn.GRU`` whose
    feature is the final hidden state of each direction (the reverse one has read the whole sequence
    backwards), also ``2 * hidden_size`` wide.

    Args:
        hidden_size: hidden units per direction (released: 1024).
        num_layers: stacked layers (released: 3).
        bidirectional: use a true bidirectional GRU instead of the released pairs of forward GRUs.
        layout: the skeleton layout (V joints).
        num_bodies: M.
        num_coords: C, 3 or 2.

    Raises:
        ValueError: if ``num_coords`` is neither 2 nor 3.
    """

    def __init__(
        self,
        hidden_size: int = 1024,
        num_layers: int = 3,
        bidirectional: bool = False,
        layout: SkeletonLayout = KINECT_V2,
        num_bodies: int = DEFAULT_BODIES,
        num_coords: int = 3,
    ) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.feature_dim = 2 * hidden_size
        frame_features = layout.num_joints * _checked_coords(num_coords) * num_bodies
        self.input_norm = nn.BatchNorm1d(frame_features)
        self.rnn: nn.Module
        if bidirectional:
            self.rnn = nn.GRU(frame_features, hidden_size, num_layers, batch_first=True, bidirectional=True)
        else:
            self.rnn = PairedGRU(frame_features, hidden_size, num_layers)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, T, V, M) -> (N, 2 * hidden_size)."""
        frames = flatten_frames(x)
        frames = self.input_norm(frames.transpose(1, 2)).transpose(1, 2).contiguous()
        if self.bidirectional:
            _, final = self.rnn(frames)  # (num_layers * 2, N, hidden), last layer's directions at the end
            return torch.cat([final[-2], final[-1]], dim=-1)
        return self.rnn(frames)[:, -1]


def _checked_coords(num_coords: int) -> int:
    if num_coords not in COORDINATE_COUNTS:
        raise ValueError(
            f"num_coords must be one of {COORDINATE_COUNTS} (image keypoints or 3-D positions), got {num_coords}"
        )
    return num_coords


def spatial_partitions(parents: Sequence[int], center: int) -> Tensor:
    """The three normalized adjacency partitions of ST-GCN's "spatial" strategy, shape (3, V, V).

    Entry ``[k, i, j]`` weighs joint ``i``'s features into joint ``j``. Neighbours of ``j`` (itself included)
    fall into: the same hop distance from ``center`` as ``j`` (partition 0), closer to it (1), farther (2).
    Column ``j`` is divided by ``j``'s degree, so summed over partitions each joint averages its neighbours.

    Args:
        parents: ``parents[v]`` is the joint ``v`` connects to (``parents[v] == v`` for the root).
        center: the joint distances are measured from (spine shoulder for Kinect v2).
    """
    num_joints = len(parents)
    adjacency = np.eye(num_joints)
    for child, parent in enumerate(parents):
        adjacency[child, parent] = adjacency[parent, child] = 1.0
    hops = np.full(num_joints, -1)
    hops[center] = 0
    queue = deque([center])
    while queue:
        joint = queue.popleft()
        for neighbour in np.flatnonzero(adjacency[joint]):
            if hops[neighbour] < 0:
                hops[neighbour] = hops[joint] + 1
                queue.append(neighbour)
    normalized = adjacency / adjacency.sum(axis=0, keepdims=True)
    sender, receiver = np.meshgrid(np.arange(num_joints), np.arange(num_joints), indexing="ij")
    masks = (
        hops[sender] == hops[receiver],
        hops[sender] < hops[receiver],
        hops[sender] > hops[receiver],
    )
    return torch.tensor(np.stack([normalized * mask for mask in masks]), dtype=torch.float32)


class GraphConvBlock(nn.Module):
    """One ST-GCN block: spatial graph convolution, temporal convolution, residual connection.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        adjacency: (K, V, V) partitions; each gets its own 1x1 convolution and a learnable edge importance.
        stride: temporal stride.
        residual: add a (projected when shapes change) shortcut.
        temporal_kernel: frames seen by the temporal convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        adjacency: Tensor,
        stride: int = 1,
        residual: bool = True,
        temporal_kernel: int = 9,
    ) -> None:
        super().__init__()
        self.register_buffer("adjacency", adjacency)
        self.edge_importance = nn.Parameter(torch.ones_like(adjacency))
        self.partitions = adjacency.shape[0]
        self.spatial = nn.Conv2d(in_channels, out_channels * self.partitions, kernel_size=1)
        self.temporal = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(
                out_channels,
                out_channels,
                kernel_size=(temporal_kernel, 1),
                stride=(stride, 1),
                padding=(temporal_kernel // 2, 0),
            ),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: Optional[nn.Module] = None
        if residual and in_channels == out_channels and stride == 1:
            self.shortcut = nn.Identity()
        elif residual:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, T, V) -> (N, C_out, T / stride, V)."""
        n, _, t, v = x.shape
        messages = self.spatial(x).view(n, self.partitions, -1, t, v)
        aggregated = torch.einsum("nkctv,kvw->nctw", messages, self.adjacency * self.edge_importance)
        out = self.temporal(aggregated)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.activation(out)


class STGCNEncoder(nn.Module):
    """ST-GCN (Yan et al., 2018) as used by SkeletonCLR / AimCLR, with a configurable width.

    Ten blocks of widths ``w, w, w, w, 2w, 2w, 2w, 4w, 4w, 4w`` (temporal stride 2 entering ``2w`` and ``4w``)
    on the graph of the layout's bones, partitioned by hop distance from its graph centre; each body is encoded
    separately, features are averaged over frames, joints and bodies. ``width=64`` is the original ST-GCN; SkeletonCLR / AimCLR use a
    quarter of it (``width=16``).

    Args:
        width: channels of the first blocks; the feature is ``4 * width`` wide.
        layout: the skeleton layout: V joints, the bones and graph centre of the graph.
        num_coords: C, 3 or 2.

    Raises:
        ValueError: if ``num_coords`` is neither 2 nor 3.
    """

    def __init__(self, width: int = 64, layout: SkeletonLayout = KINECT_V2, num_coords: int = 3) -> None:
        super().__init__()
        self.feature_dim = 4 * width
        channels = _checked_coords(num_coords)
        adjacency = spatial_partitions(layout.parents, center=layout.graph_center)
        self.input_norm = nn.BatchNorm1d(channels * layout.num_joints)
        plan = [(channels, width, 1, False)] + [(width, width, 1, True)] * 3
        plan += [(width, 2 * width, 2, True)] + [(2 * width, 2 * width, 1, True)] * 2
        plan += [(2 * width, 4 * width, 2, True)] + [(4 * width, 4 * width, 1, True)] * 2
        self.blocks = nn.Sequential(
            *(GraphConvBlock(cin, cout, adjacency, stride, residual) for cin, cout, stride, residual in plan)
        )

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, T, V, M) -> (N, 4 * width)."""
        n, c, t, v, m = x.shape
        bodies = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)  # one sequence per body
        bodies = self.input_norm(bodies).view(n * m, v, c, t).permute(0, 2, 3, 1)
        features = self.blocks(bodies).mean(dim=(2, 3))
        return features.view(n, m, -1).mean(dim=1)


class TemporalConvEncoder(nn.Module):
    """Temporal convolutions over the positions and velocities of all joints of all bodies.

    Per frame, the V·C·M coordinates and their frame-to-frame differences (velocity; 0 at the first frame) form
    2·V·C·M channels, normalized by a BatchNorm; three 1-D convolutions of kernel 5 over time (widths ``w``,
    ``w``, ``2w``, the last two with stride 2), each followed by BatchNorm and ReLU, then the average and the
    maximum over frames, concatenated. Seeing every joint at every layer, it picks up whole-body coordination
    that a graph's local neighbourhoods need many layers for, at a fraction of ST-GCN's cost: the encoder of
    the ``cpu`` preset.

    Args:
        width: channels of the first layers; the feature is ``4 * width`` wide.
        layout: the skeleton layout (V joints).
        num_bodies: M.
        num_coords: C, 3 or 2.

    Raises:
        ValueError: if ``num_coords`` is neither 2 nor 3.
    """

    def __init__(
        self,
        width: int = 128,
        layout: SkeletonLayout = KINECT_V2,
        num_bodies: int = DEFAULT_BODIES,
        num_coords: int = 3,
    ) -> None:
        super().__init__()
        self.feature_dim = 4 * width
        channels = 2 * layout.num_joints * _checked_coords(num_coords) * num_bodies
        self.input_norm = nn.BatchNorm1d(channels)
        layers: list[nn.Module] = []
        for cin, cout, stride in ((channels, width, 1), (width, width, 2), (width, 2 * width, 2)):
            layers += [nn.Conv1d(cin, cout, 5, stride=stride, padding=2), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, T, V, M) -> (N, 4 * width)."""
        positions = rearrange(x, "n c t v m -> n (v c m) t")
        velocities = torch.diff(positions, dim=2, prepend=positions[:, :, :1])
        hidden = self.layers(self.input_norm(torch.cat([positions, velocities], dim=1)))
        return torch.cat([hidden.mean(dim=2), hidden.amax(dim=2)], dim=1)


def build_encoder(
    name: str,
    *,
    layout: SkeletonLayout = KINECT_V2,
    num_bodies: int = DEFAULT_BODIES,
    num_coords: int = 3,
    hidden_size: int = 1024,
    num_layers: int = 3,
    stgcn_width: int = 64,
    tcn_width: int = 128,
) -> nn.Module:
    """Build an encoder by name (see ``ENCODERS``) for inputs (N, C, T, V, M); it exposes ``feature_dim``.

    Args:
        name: one of ``ENCODERS``.
        layout: the skeleton layout of the data: V, and the graph of ``stgcn``.
        num_bodies: M.
        num_coords: C: 3 (positions) or 2 (image keypoints).
        hidden_size: GRU units per direction (``gru``, ``bigru``).
        num_layers: GRU layers (``gru``, ``bigru``).
        stgcn_width: first width of ``stgcn``.
        tcn_width: first width of ``tcn``.

    Raises:
        ValueError: for an unknown name, or ``num_coords`` neither 2 nor 3.

    Example:
        >>> from skeleton.data.layouts import COCO17
        >>> encoder = build_encoder("stgcn", layout=COCO17, num_bodies=1, num_coords=2, stgcn_width=8)
        >>> encoder(torch.zeros(4, 2, 16, 17, 1)).shape
        torch.Size([4, 32])
    """
    if name == "gru":
        return RecurrentEncoder(hidden_size, num_layers, False, layout, num_bodies, num_coords)
    if name == "bigru":
        return RecurrentEncoder(hidden_size, num_layers, True, layout, num_bodies, num_coords)
    if name == "stgcn":
        return STGCNEncoder(stgcn_width, layout, num_coords)
    if name == "tcn":
        return TemporalConvEncoder(tcn_width, layout, num_bodies, num_coords)
    raise ValueError(f"unknown encoder {name!r}; expected one of {ENCODERS}")


class EmbeddingNet(nn.Module):
    """An encoder followed by the projection head ``Linear(F, F) -> ReLU -> Linear(F, embed_dim)``.

    Args:
        backbone: encoder exposing ``feature_dim``.
        embed_dim: output dim of the head (128 in the paper).
        weight_init: ``"pytorch"`` keeps PyTorch's default initialization; ``"released"`` then applies
            ``released_init_``.

    Raises:
        ValueError: for a ``weight_init`` not in ``WEIGHT_INITS``.
    """

    def __init__(self, backbone: nn.Module, embed_dim: int = 128, weight_init: str = "pytorch") -> None:
        super().__init__()
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
        width = int(backbone.feature_dim)
        self.embed_dim = embed_dim
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, embed_dim))
        if weight_init == "released":
            released_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, T, V, M) -> (N, embed_dim), not normalized (the loss normalizes)."""
        return self.head(self.backbone(x))


@torch.no_grad()
def released_init_(net: EmbeddingNet) -> None:
    """Re-initialize ``net`` as the released HaLP/CMD code initializes its encoder, in place.

    The released builders apply ``xavier_uniform_`` (gain 1) to every 2-D parameter of the encoder and of its
    output layer, before the projection head's first layer is inserted in front of that output layer. Here that
    is every 2-D parameter of the backbone and the weight of the head's last ``Linear``: for the recurrent
    encoders the ``weight_ih`` and ``weight_hh`` of every layer and of both directions (the "reverse" one
    included), each (3 H, fan_in) gate stack drawn as one matrix, U(±sqrt(6 / (fan_in + 3 H))). Biases,
    BatchNorm and the head's first ``Linear`` keep PyTorch's defaults, as in the released code. ST-GCN and the
    temporal-convolution encoder have no 2-D parameter (their convolution kernels are 3-D or 4-D), so for them
    only the head's last layer changes.

    Args:
        net: the network to initialize.
    """
    for parameter in net.backbone.parameters():
        if parameter.dim() == 2:
            nn.init.xavier_uniform_(parameter)
    nn.init.xavier_uniform_(net.head[-1].weight)

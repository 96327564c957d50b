"""Skeleton encoders: the whole-sequence paired GRU equals the released step-by-step formulation; every encoder
on every built-in layout, 3-D and 2-D; the ST-GCN graph from the layout's bones."""

import math

import pytest
import torch
from skeleton.data.layouts import COCO17, KINECT_V1, KINECT_V2, OPENNI15, layout_from_dict
from skeleton.models.encoders import (
    ENCODERS,
    EmbeddingNet,
    RecurrentEncoder,
    STGCNEncoder,
    TemporalConvEncoder,
    build_encoder,
    flatten_frames,
    spatial_partitions,
)
from torch import nn


@torch.no_grad()
def _copy_bidirectional(encoder: RecurrentEncoder, gru: nn.GRU) -> None:
    """Give the paired GRUs of ``encoder`` the weights of a bidirectional ``gru``: direction ``""`` of layer ``l``
    to ``forward_grus[l]``, ``"_reverse"`` to ``reverse_grus[l]``."""
    for layer, pair in enumerate(zip(encoder.rnn.forward_grus, encoder.rnn.reverse_grus)):
        for suffix, target in zip(("", "_reverse"), pair):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(target, f"{name}_l0").copy_(getattr(gru, f"{name}_l{layer}{suffix}"))


def released_step_by_step(encoder: RecurrentEncoder, gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """The released model: a bidirectional nn.GRU fed one frame at a time with the carried state."""
    frames = flatten_frames(x)
    frames = encoder.input_norm(frames.transpose(1, 2)).transpose(1, 2)
    state = None
    for t in range(frames.shape[1]):
        output, state = gru(frames[:, t : t + 1], state)
    return output[:, -1]


@pytest.mark.parametrize("num_layers", [1, 3])
def test_paired_gru_equals_step_by_step_bidirectional_gru(num_layers):
    torch.manual_seed(0)
    encoder = RecurrentEncoder(hidden_size=24, num_layers=num_layers).double().eval()
    gru = nn.GRU(150, 24, num_layers, batch_first=True, bidirectional=True).double()
    _copy_bidirectional(encoder, gru)
    x = torch.randn(5, 3, 17, 25, 2, dtype=torch.float64)
    torch.testing.assert_close(encoder(x), released_step_by_step(encoder, gru, x), rtol=1e-10, atol=1e-10)


def test_paired_gru_gradients_match_step_by_step():
    torch.manual_seed(1)
    encoder = RecurrentEncoder(hidden_size=8, num_layers=2).double().eval()
    gru = nn.GRU(150, 8, 2, batch_first=True, bidirectional=True).double()
    _copy_bidirectional(encoder, gru)
    x = torch.randn(3, 3, 9, 25, 2, dtype=torch.float64)
    encoder(x).square().sum().backward()
    released_step_by_step(encoder, gru, x).square().sum().backward()
    torch.testing.assert_close(encoder.rnn.reverse_grus[1].weight_hh_l0.grad, gru.weight_hh_l1_reverse.grad)
    torch.testing.assert_close(encoder.rnn.forward_grus[0].weight_ih_l0.grad, gru.weight_ih_l0.grad)


def test_flatten_frames_feature_index():
    x = torch.zeros(1, 3, 2, 25, 2)
    x[0, 2, 1, 7, 1] = 1.0  # c = 2, t = 1, v = 7, m = 1
    flat = flatten_frames(x)
    assert flat.shape == (1, 2, 150)
    assert flat[0, 1].nonzero().item() == 7 * 6 + 2 * 2 + 1


def test_bidirectional_feature_is_final_state_of_each_direction():
    torch.manual_seed(0)
    encoder = RecurrentEncoder(hidden_size=6, num_layers=2, bidirectional=True).eval()
    x = torch.randn(2, 3, 11, 25, 2)
    frames = encoder.input_norm(flatten_frames(x).transpose(1, 2)).transpose(1, 2)
    outputs, _ = encoder.rnn(frames)
    expected = torch.cat([outputs[:, -1, :6], outputs[:, 0, 6:]], dim=1)
    torch.testing.assert_close(encoder(x), expected)


@pytest.mark.parametrize(
    "layout, bodies, coords",
    [(KINECT_V2, 2, 3), (KINECT_V1, 1, 3), (OPENNI15, 2, 3), (COCO17, 1, 2), (COCO17, 2, 2)],
    ids=["kinect_v2-2x3d", "kinect_v1-1x3d", "openni15-2x3d", "coco17-1x2d", "coco17-2x2d"],
)
@pytest.mark.parametrize("name", ENCODERS)
def test_encoders_shapes_and_gradients(name, layout, bodies, coords):
    torch.manual_seed(0)
    backbone = build_encoder(
        name, layout=layout, num_bodies=bodies, num_coords=coords, hidden_size=16, num_layers=2, stgcn_width=8,
        tcn_width=8,
    )  # fmt: skip
    net = EmbeddingNet(backbone, embed_dim=12)
    x = torch.randn(4, coords, 32, layout.num_joints, bodies, requires_grad=True)
    out = net(x)
    assert out.shape == (4, 12)
    assert backbone(x).shape == (4, backbone.feature_dim)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert x.grad.shape == x.shape and x.grad.abs().sum() > 0
    with pytest.raises(RuntimeError):  # an input of the other C (or V, M) does not fit the input norm
        net(torch.randn(4, 5 - coords, 32, layout.num_joints, bodies))


def test_unknown_encoder_or_coordinates():
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("lstm")
    for name in ENCODERS:
        with pytest.raises(ValueError, match=r"num_coords must be one of \(2, 3\).*got 4"):
            build_encoder(name, num_coords=4)


def _bones(parents) -> set[frozenset[int]]:
    return {frozenset((joint, parent)) for joint, parent in enumerate(parents) if joint != parent}


@pytest.mark.parametrize("layout", [OPENNI15, COCO17], ids=lambda layout: layout.name)
def test_stgcn_graph_comes_from_the_layout(layout):
    encoder = STGCNEncoder(width=4, layout=layout, num_coords=2)
    for block in encoder.blocks:
        torch.testing.assert_close(block.adjacency, spatial_partitions(layout.parents, layout.graph_center))
    support = encoder.blocks[0].adjacency.sum(dim=0) > 0
    edges = {frozenset((i, j)) for i, j in support.nonzero().tolist() if i != j}
    assert edges == _bones(layout.parents) and bool(support.diagonal().all())
    # Partition 1 ("closer to the centre") of the centre is empty; every other joint has its parent-side hop.
    hops = encoder.blocks[0].adjacency
    assert hops[1, :, layout.graph_center].sum() == 0
    assert all(hops[1, :, v].sum() > 0 for v in range(layout.num_joints) if v != layout.graph_center)


def test_stgcn_graph_of_a_declared_layout():
    """A layout read from its file form: the graph is its bones, centred where it says."""
    layout = layout_from_dict(
        {"joints": ["pelvis", "chest", "head", "left_hand", "right_hand"],
         "parents": {"pelvis": None, "chest": "pelvis", "head": "chest", "left_hand": "chest", "right_hand": "chest"},
         "center": "chest", "origin": "pelvis", "up": ["pelvis", "chest"], "across": ["left_hand", "right_hand"]}
    )  # fmt: skip
    encoder = build_encoder("stgcn", layout=layout, num_bodies=1, num_coords=2, stgcn_width=4)
    support = encoder.blocks[0].adjacency.sum(dim=0) > 0
    assert {frozenset((i, j)) for i, j in support.nonzero().tolist() if i != j} == {
        frozenset((0, 1)), frozenset((1, 2)), frozenset((1, 3)), frozenset((1, 4))
    }
    assert encoder(torch.randn(3, 2, 16, 5, 1)).shape == (3, 16)


def test_kinect_v1_graph_is_a_tree_rooted_at_the_shoulder_centre():
    parts = spatial_partitions(KINECT_V1.parents, KINECT_V1.graph_center)
    assert parts.shape == (3, 20, 20)
    support = (parts.sum(dim=0) > 0).int()
    assert torch.equal(support, support.T) and int(support.sum()) == 20 + 2 * 19
    # Kinect v1's first 20 joints mean NTU's first 20: every bone between two of them is the same in both
    # layouts, except those NTU routes through the spine shoulder (joint 21), which Kinect v1 lacks.
    for joint, parent in enumerate(KINECT_V2.parents[:20]):
        if parent < 20:
            assert KINECT_V1.parents[joint] == parent, KINECT_V1.joint_names[joint]
        else:
            assert KINECT_V1.parents[joint] == KINECT_V1.index["shoulder_center"]


def test_temporal_conv_encoder_sees_velocities():
    """A sequence and the same sequence shifted by a constant offset differ only in positions: the encoder's
    input holds both positions and frame-to-frame velocities (0 for the first frame)."""
    encoder = TemporalConvEncoder(width=4, layout=KINECT_V1, num_bodies=1)
    seen = []
    encoder.input_norm.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    x = torch.randn(2, 3, 10, 20, 1)
    encoder.eval()(x)
    channels = seen[0]
    assert channels.shape == (2, 2 * 60, 10)
    positions, velocities = channels.split(60, dim=1)
    torch.testing.assert_close(positions, flatten_frames(x).transpose(1, 2))
    torch.testing.assert_close(velocities[:, :, 1:], positions.diff(dim=2))
    assert velocities[:, :, 0].abs().max() == 0
    assert encoder.feature_dim == 16


def test_spatial_partitions_average_neighbours():
    center = KINECT_V2.index["spine_shoulder"]
    parts = spatial_partitions(KINECT_V2.parents, center)
    assert parts.shape == (3, 25, 25)
    torch.testing.assert_close(parts.sum(dim=(0, 1)), torch.ones(25, dtype=torch.float32))
    # The centre has no neighbour closer to itself; its neighbours are all farther.
    assert parts[1, :, center].sum() == 0
    assert parts[2, :, center].sum() > 0
    # Every edge of the tree appears in exactly one partition, in both directions.
    support = (parts.sum(dim=0) > 0).int()
    assert torch.equal(support, support.T)
    assert int(support.sum()) == 25 + 2 * 24


def test_stgcn_is_invariant_to_body_order():
    torch.manual_seed(0)
    encoder = STGCNEncoder(width=4).eval()
    x = torch.randn(2, 3, 16, 25, 2)
    torch.testing.assert_close(encoder(x), encoder(x.flip(-1)), rtol=1e-5, atol=1e-6)
    assert encoder.feature_dim == 16


def _uniform_std(bound: float) -> float:
    return bound / math.sqrt(3)


@pytest.mark.parametrize("name", ["gru", "bigru"])
def test_released_init_is_xavier_on_every_gru_weight_and_the_last_head_layer(name):
    hidden, features, embed = 256, 512, 32  # sizes at which xavier and PyTorch's bounds differ by 9-30 %
    nets = {}
    for weight_init in ("released", "pytorch"):
        torch.manual_seed(0)
        backbone = build_encoder(name, hidden_size=hidden, num_layers=2)
        nets[weight_init] = EmbeddingNet(backbone, embed, weight_init=weight_init)
    default = 1 / math.sqrt(hidden)  # PyTorch's GRU init: U(-1/sqrt(H), 1/sqrt(H)) for weights and biases
    weights = 0
    for weight_init, net in nets.items():
        for gru_name, parameter in net.backbone.rnn.named_parameters():
            rows, columns = parameter.shape[0], parameter.shape[-1]
            if "weight" in gru_name and weight_init == "released":
                bound = math.sqrt(6 / (rows + columns))  # the (3H, fan_in) gate stack as one matrix
                weights += 1
            else:  # biases keep PyTorch's init under both
                bound = default
            assert parameter.abs().max() <= bound, (weight_init, gru_name)
            assert parameter.std().item() == pytest.approx(
                _uniform_std(bound), rel=0.1 if parameter.dim() == 1 else 0.02
            )
        first, last = net.head[0], net.head[-1]
        assert first.weight.abs().max() <= 1 / math.sqrt(features)  # the head's first layer: PyTorch's init
        bound = math.sqrt(6 / (features + embed)) if weight_init == "released" else 1 / math.sqrt(features)
        assert last.weight.std().item() == pytest.approx(_uniform_std(bound), rel=0.02)
        assert last.bias.abs().max() <= 1 / math.sqrt(features)
        assert torch.equal(net.backbone.input_norm.weight, torch.ones(150))
    assert weights == 8  # weight_ih and weight_hh of 2 layers x 2 directions, the "reverse" one included
    reverse = "reverse_grus.1.weight_hh_l0" if name == "gru" else "weight_hh_l1_reverse"
    assert reverse in dict(nets["released"].backbone.rnn.named_parameters())


@pytest.mark.parametrize("name", ["stgcn", "tcn"])
def test_released_init_changes_only_the_last_head_layer_of_convolutional_encoders(name):
    states = {}
    for weight_init in ("released", "pytorch"):
        torch.manual_seed(0)
        states[weight_init] = EmbeddingNet(
            build_encoder(name, stgcn_width=8, tcn_width=8), 16, weight_init
        ).state_dict()
    changed = [key for key, value in states["released"].items() if not torch.equal(value, states["pytorch"][key])]
    assert changed == ["head.2.weight"]


def test_unknown_weight_init():
    with pytest.raises(ValueError, match=r"weight_init must be one of \('released', 'pytorch'\), got 'xavier'"):
        EmbeddingNet(build_encoder("tcn", tcn_width=8), 16, weight_init="xavier")

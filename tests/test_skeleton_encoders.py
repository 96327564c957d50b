"""Skeleton encoders: the whole-sequence paired GRU equals the released step-by-step formulation."""

import math

import pytest
import torch
from skeleton.data.layouts import KINECT_V1, KINECT_V2
from skeleton.models.encoders import (
    ENCODERS,
    EmbeddingNet,
    PairedGRU,
    RecurrentEncoder,
    STGCNEncoder,
    TemporalConvEncoder,
    build_encoder,
    flatten_frames,
    spatial_partitions,
)
from torch import nn


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
    encoder.rnn.load_bidirectional(gru)
    x = torch.randn(5, 3, 17, 25, 2, dtype=torch.float64)
    torch.testing.assert_close(encoder(x), released_step_by_step(encoder, gru, x), rtol=1e-10, atol=1e-10)


def test_paired_gru_gradients_match_step_by_step():
    torch.manual_seed(1)
    encoder = RecurrentEncoder(hidden_size=8, num_layers=2).double().eval()
    gru = nn.GRU(150, 8, 2, batch_first=True, bidirectional=True).double()
    encoder.rnn.load_bidirectional(gru)
    x = torch.randn(3, 3, 9, 25, 2, dtype=torch.float64)
    encoder(x).square().sum().backward()
    released_step_by_step(encoder, gru, x).square().sum().backward()
    torch.testing.assert_close(encoder.rnn.reverse_grus[1].weight_hh_l0.grad, gru.weight_hh_l1_reverse.grad)
    torch.testing.assert_close(encoder.rnn.forward_grus[0].weight_ih_l0.grad, gru.weight_ih_l0.grad)


def test_load_bidirectional_rejects_mismatched_gru():
    with pytest.raises(ValueError, match="bidirectional"):
        PairedGRU(150, 8, 2).load_bidirectional(nn.GRU(150, 8, 2, bidirectional=False))


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


@pytest.mark.parametrize("joints, bodies", [(25, 2), (20, 1)])
@pytest.mark.parametrize("name", ENCODERS)
def test_encoders_shapes_and_gradients(name, joints, bodies):
    torch.manual_seed(0)
    backbone = build_encoder(
        name, num_joints=joints, num_bodies=bodies, hidden_size=16, num_layers=2, stgcn_width=8, tcn_width=8
    )
    net = EmbeddingNet(backbone, embed_dim=12)
    x = torch.randn(4, 3, 32, joints, bodies)
    out = net(x)
    assert out.shape == (4, 12)
    assert backbone(x).shape == (4, backbone.feature_dim)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_unknown_encoder_or_layout():
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("lstm")
    with pytest.raises(ValueError, match="no skeleton layout has 18 joints"):
        build_encoder("stgcn", num_joints=18)


def test_kinect_v1_graph_is_a_tree_rooted_at_the_shoulder_centre():
    parts = spatial_partitions(KINECT_V1.bone_parents, KINECT_V1.graph_center)
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
    encoder = TemporalConvEncoder(width=4, num_joints=20, num_bodies=1)
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
    parts = spatial_partitions(KINECT_V2.bone_parents, center)
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

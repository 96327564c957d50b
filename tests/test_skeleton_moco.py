"""MoCo wrapper: momentum update, queue ring buffer, gradient routing, with HaLPInfoNCE."""

import pytest
import torch
import torch.nn.functional as F
from skeleton.models.moco import MoCo
from torch import nn

from halp_loss import HaLPInfoNCE


class TinyNet(nn.Module):
    embed_dim = 4

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))

    def forward(self, x):
        return self.body(x)


def test_key_encoder_is_a_frozen_copy():
    torch.manual_seed(0)
    moco = MoCo(TinyNet(), queue_size=10, momentum=0.9)
    for q, k in zip(moco.query.parameters(), moco.key.parameters()):
        assert torch.equal(q, k) and q is not k
        assert not k.requires_grad
    assert moco.queue.shape == (4, 10)
    torch.testing.assert_close(moco.queue.norm(dim=0), torch.ones(10))


def test_momentum_update_before_keys():
    torch.manual_seed(0)
    moco = MoCo(TinyNet(), queue_size=10, momentum=0.9)
    with torch.no_grad():
        for p in moco.query.parameters():
            p.add_(1.0)
    before = [k.clone() for k in moco.key.parameters()]
    x = torch.randn(5, 6)
    q, k = moco(x, x)
    for old, new, query in zip(before, moco.key.parameters(), moco.query.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * query)
    torch.testing.assert_close(k, moco.key(x))
    assert q.requires_grad and not k.requires_grad


def test_enqueue_is_a_ring_buffer_of_normalized_keys():
    moco = MoCo(TinyNet(), queue_size=5)
    keys = [torch.randn(3, 4) for _ in range(2)]
    for k in keys:
        moco.enqueue(k)
    expected = F.normalize(torch.cat(keys), dim=1)  # 6 keys into 5 slots: the 6th overwrote slot 0
    torch.testing.assert_close(moco.queue[:, 1:5].T, expected[1:5])
    torch.testing.assert_close(moco.queue[:, 0], expected[5])
    assert int(moco.queue_ptr) == 1


def test_enqueue_more_keys_than_slots_keeps_the_newest():
    moco = MoCo(TinyNet(), queue_size=3)
    keys = torch.randn(7, 4)
    moco.enqueue(keys)
    assert sorted(moco.queue.T.tolist()) == sorted(F.normalize(keys[-3:], dim=1).tolist())
    assert int(moco.queue_ptr) == 7 % 3


def test_gradient_reaches_only_the_query_encoder():
    torch.manual_seed(0)
    moco = MoCo(TinyNet(), queue_size=16)
    criterion = HaLPInfoNCE(halp_weight=0.0)
    x = torch.randn(8, 6)
    q, k = moco(x + 0.1 * torch.randn_like(x), x)
    loss = criterion(q, k, moco.queue.T)
    loss.backward()
    assert all(p.grad is not None for p in moco.query.parameters())
    assert all(p.grad is None for p in moco.key.parameters())
    assert torch.isfinite(loss)


def test_invalid_key_bn():
    with pytest.raises(ValueError, match="key_bn"):
        MoCo(TinyNet(), key_bn="global")

"""MoCo wrapper: the frozen key copy, the momentum update before the keys, gradient routing through the
library's criterion, which keeps the queue of keys (the wrapper keeps none)."""

import pytest
import torch
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


def test_key_encoder_is_a_frozen_copy_and_there_is_no_queue_here():
    torch.manual_seed(0)
    moco = MoCo(TinyNet(), momentum=0.9)
    for q, k in zip(moco.query.parameters(), moco.key.parameters()):
        assert torch.equal(q, k) and q is not k
        assert not k.requires_grad
    assert not any("queue" in name for name in moco.state_dict())


def test_momentum_update_before_keys():
    torch.manual_seed(0)
    moco = MoCo(TinyNet(), momentum=0.9)
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


def test_gradient_reaches_only_the_query_encoder_and_the_criterion_queues_the_keys():
    torch.manual_seed(0)
    moco = MoCo(TinyNet())
    criterion = HaLPInfoNCE(halp_weight=0.0, memory_bank_size=(16, 4))
    for step in range(2):
        moco.zero_grad()
        x = torch.randn(8, 6)
        q, k = moco(x + 0.1 * torch.randn_like(x), x)
        loss = criterion(q, k)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None for p in moco.query.parameters())
        assert all(p.grad is None for p in moco.key.parameters())
    assert criterion.queue.num_seen == 16


def test_invalid_key_bn():
    with pytest.raises(ValueError, match="key_bn"):
        MoCo(TinyNet(), key_bn="global")

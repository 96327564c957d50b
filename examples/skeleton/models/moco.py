"""MoCo (He et al., 2020): the query encoder and its momentum key encoder.

The queue of past keys is not here: the loss keeps it (``HaLPInfoNCE(memory_bank_size=(K, D))``), as a MoCo loop
that uses halp-loss the way its README shows would.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..config import KEY_BATCHNORM
from ..training.distributed import broadcast_, gather_rows, is_distributed, rank, world_size


class MoCo(nn.Module):
    """Query encoder and momentum key encoder.

    ``forward(query_view, key_view)`` returns the query embeddings (with gradient) and the keys (without), after
    the momentum update of the key encoder.

    Per-rank BatchNorm statistics let the key encoder "cheat" (the key and the query of a sample see the same batch
    statistics); ``key_bn="shuffle"`` encodes the keys of a batch permuted across ranks, as MoCo does, and
    ``key_bn="sync"`` uses statistics of the global batch. Without DDP the three are the same.

    Args:
        encoder: the query network (e.g. ``skeleton.models.encoders.EmbeddingNet``); the key network is a copy.
        momentum: m of the key update ``key <- m key + (1 - m) query``.
        key_bn: one of ``"shuffle"``, ``"sync"``, ``"local"``.

    Raises:
        ValueError: for an unknown ``key_bn``.
    """

    def __init__(self, encoder: nn.Module, momentum: float = 0.999, key_bn: str = "shuffle") -> None:
        super().__init__()
        if key_bn not in KEY_BATCHNORM:
            raise ValueError(f"key_bn must be one of {KEY_BATCHNORM}, got {key_bn!r}")
        self.momentum = momentum
        self.key_bn = key_bn
        self.query = encoder
        self.key = copy.deepcopy(encoder)
        if key_bn == "sync":
            self.key = nn.SyncBatchNorm.convert_sync_batchnorm(self.key)
        self.key.requires_grad_(False)

    def forward(self, query_view: Tensor, key_view: Tensor) -> tuple[Tensor, Tensor]:
        """Embed the query view (with gradient) and, after the momentum update, the key view (without)."""
        query = self.query(query_view)
        with torch.no_grad():
            self._momentum_update()
            key = self._encode_keys(key_view)
        return query, key

    @torch.no_grad()
    def _momentum_update(self) -> None:
        for key_param, query_param in zip(self.key.parameters(), self.query.parameters()):
            key_param.lerp_(query_param.detach(), 1.0 - self.momentum)

    def _encode_keys(self, views: Tensor) -> Tensor:
        if self.key_bn != "shuffle" or not is_distributed():
            return self.key(views)
        all_views = gather_rows(views)
        # Rank 0 draws the permutation (from the CPU generator, saved with the checkpoints) for everyone.
        permutation = broadcast_(torch.randperm(all_views.shape[0]).to(views.device))
        mine = permutation.view(world_size(), -1)[rank()]
        shuffled_keys = gather_rows(self.key(all_views[mine]))
        keys = torch.empty_like(shuffled_keys)
        keys[permutation] = shuffled_keys
        return keys.view(world_size(), -1, keys.shape[1])[rank()]

"""MoCo (He et al., 2020): query encoder, momentum key encoder and the queue of past keys."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skeleton.training.distributed import broadcast_, gather_rows, is_distributed, rank, world_size

KEY_BATCHNORM = ("shuffle", "sync", "local")
"""How the key encoder's BatchNorm sees the batch under DDP: MoCo's shuffling across ranks, synchronized
statistics (``nn.SyncBatchNorm``, CUDA only), or per-rank statistics. Without DDP all three are the same."""


class MoCo(nn.Module):
    """Query encoder, momentum key encoder and a (D, K) queue of normalized keys.

    ``forward(query_view, key_view)`` returns the query embeddings (with gradient) and the keys (without);
    the loss takes the queue's rows as negatives, ``queue.T``. Call :meth:`enqueue` with the keys after the
    optimizer step: under DDP it gathers every rank's keys first, so all ranks keep identical queues.

    Per-rank BatchNorm statistics let the key encoder "cheat" (the key and the query of a sample see the
    same batch statistics); ``key_bn="shuffle"`` encodes the keys of a batch permuted across ranks, as MoCo
    does, and ``key_bn="sync"`` uses statistics of the global batch.

    Args:
        encoder: the query network (e.g. :class:`~skeleton.models.encoders.EmbeddingNet`), exposing ``embed_dim``;
            the key network is a copy of it.
        queue_size: K, keys kept as negatives.
        momentum: m of the key update ``key <- m key + (1 - m) query``.
        key_bn: one of :data:`KEY_BATCHNORM`.
    """

    queue: Tensor
    queue_ptr: Tensor

    def __init__(self, encoder: nn.Module, queue_size: int = 16384, momentum: float = 0.999, key_bn: str = "shuffle"):
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
        self.register_buffer("queue", F.normalize(torch.randn(int(encoder.embed_dim), queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

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

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write the keys of all ranks (normalized) over the oldest entries of the queue."""
        keys = F.normalize(gather_rows(keys.detach()).to(self.queue.dtype), dim=1)
        size, arrived = self.queue.shape[1], keys.shape[0]
        keys = keys[-size:]  # more keys than slots: only the newest survive
        first = self.queue_ptr + arrived - keys.shape[0]
        slots = (first + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[:, slots] = keys.T
        self.queue_ptr.copy_((self.queue_ptr + arrived) % size)

"""KeyQueue: MoCo's FIFO queue of recent keys, kept by the loss so that a MoCo loop needs no queue code."""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from halp_loss._checks import check_matrix, check_positive_int, compute_dtype
from halp_loss._ring import write_ring, zero_buffer
from halp_loss.distributed import gather_rows
from halp_loss.geometry import unit_rows

__all__ = ["KeyQueue", "parse_memory_bank_size"]

MemoryBankSize = Union[None, int, Sequence[int]]


def parse_memory_bank_size(size: MemoryBankSize) -> tuple[int, Optional[int]]:
    """``(K, D)`` from a ``memory_bank_size`` argument: ``None`` or ``0`` (no queue) give ``(0, None)``, an int ``K``
    gives ``(K, None)`` (D taken from the first keys), a pair gives ``(K, D)`` as in lightly's
    ``NTXentLoss(memory_bank_size=(K, D))``.

    Raises:
        ValueError: unless ``size`` is ``None``, an integer ``K >= 0`` or a pair of integers ``(K >= 0, D >= 1)``.
    """
    expected = "memory_bank_size must be None, an integer K >= 0 or a pair (K, D) of integers with D >= 1"

    def is_int(value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    if size is None:
        return 0, None
    if is_int(size) and size >= 0:
        return int(size), None
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(map(is_int, size)) and size[0] >= 0 and size[1] >= 1:
        return int(size[0]), int(size[1])
    raise ValueError(f"{expected}, got {size!r}")


class KeyQueue(nn.Module):
    """FIFO queue of the ``size`` most recent keys, unit-norm and detached: the negatives of MoCo's InfoNCE.

    [`halp_loss.HaLPInfoNCE`][halp_loss.HaLPInfoNCE] keeps one when built with ``memory_bank_size``. Each call reads the
    negatives ([`negatives`][halp_loss.KeyQueue.negatives]) and then enqueues its keys
    ([`enqueue`][halp_loss.KeyQueue.enqueue]), so a step never scores its own keys, as in MoCo. Before ``size`` keys
    have arrived only the filled rows are negatives (the first call has none): the loss is then InfoNCE over every key
    seen so far, with no placeholder vectors in the softmax.

    [`enqueue`][halp_loss.KeyQueue.enqueue] writes its keys when the queue is next read
    ([`negatives`][halp_loss.KeyQueue.negatives], [`recent`][halp_loss.KeyQueue.recent], ``state_dict()``), in place,
    which costs no copy: a loss written with autograd keeps the rows it read until its backward, so writing them at once
    would change that loss's gradient. Call backward before the next read, as a training loop does; a backward that
    still needs rows overwritten in place raises autograd's error about a tensor modified in place rather than computing
    a wrong gradient. Keys that are not finite are stored as zero rows (negatives of logit 0), so one bad batch does not
    make the next ``size / batch`` losses NaN.

    Training mode only: in eval mode [`enqueue`][halp_loss.KeyQueue.enqueue] changes nothing. ``state_dict()`` holds the
    rows and the count of keys seen, so a resumed run scores the same negatives as an uninterrupted one; loading a state
    of another ``size`` or ``dim`` raises ``ValueError``, and a queue built without ``dim`` adopts the checkpoint's.

    Args:
        size: K, number of keys kept (>= 1).
        dim: D, the key width; ``None`` takes it from the first call. Give it when the queue is a buffer of a module
            that DDP broadcasts, whose buffers must have their final shapes before training starts.
        gather_distributed: under ``torch.distributed`` (initialized, world size > 1), enqueue the keys of every
            rank in rank order, so that all ranks hold the same queue (what MoCo does); otherwise each rank keeps
            its own keys.

    Raises:
        ValueError: for a ``size`` or ``dim`` that is not an integer >= 1.

    Example:
        >>> queue = KeyQueue(size=4096)
        >>> queries, keys = torch.randn(64, 128), torch.randn(64, 128)
        >>> queue.negatives(queries, torch.float32).shape   # nothing enqueued yet
        torch.Size([0, 128])
        >>> queue.enqueue(keys)
        >>> queue.negatives(queries, torch.float32).shape, queue.num_seen
        (torch.Size([64, 128]), 64)
    """

    keys: Tensor

    def __init__(self, size: int, dim: Optional[int] = None, *, gather_distributed: bool = False) -> None:
        super().__init__()
        check_positive_int(size, "size")
        if dim is not None:
            check_positive_int(dim, "dim")
        self.size = size
        self.declared_dim = dim
        self.gather_distributed = gather_distributed
        self.register_buffer("keys", zero_buffer((size, dim or 0)))
        self._written = 0
        # Keys waiting to be written at the next read, and how many arrived (more than size keeps the newest).
        self._pending: Optional[Tensor] = None
        self._pending_count = 0

    @property
    def num_seen(self) -> int:
        """Keys enqueued so far (all ranks' with ``gather_distributed``), including those not yet written."""
        return self._written + self._pending_count

    @property
    def dim(self) -> Optional[int]:
        """Key width, ``None`` until the first call (or a checkpoint) sets it."""
        return self.keys.shape[1] or None

    @property
    def num_filled(self) -> int:
        """Rows that hold keys: ``min(num_seen, size)``."""
        return min(self.num_seen, self.size)

    def negatives(self, query: Tensor, dtype: torch.dtype) -> Tensor:
        """The filled rows, to score ``query`` against: a (``num_filled``, D) view of the buffer, no copy.

        While nothing has been enqueued, the queue takes the query's width and device and ``dtype`` (so a queue
        built on the CPU, or without ``dim``, follows the first call rather than failing or casting every step).

        Args:
            query: (B, D) queries that will be scored against the rows.
            dtype: the dtype to hold keys in, if the queue is still empty (the call's compute dtype).

        Returns:
            (n, D) rows in insertion order modulo ``size``; n = 0 on the first call.

        Raises:
            ValueError: if ``query`` is not (B, ``dim``) floating point, or is on another device than a queue that
                holds keys.
        """
        self._flush()
        empty = self.num_seen == 0
        check_matrix(query, "query", self.declared_dim or (None if empty else self.dim))
        if empty:
            self._allocate(query.shape[1], query.device, dtype)
        if self.keys.device != query.device:
            raise ValueError(
                f"query is on {query.device} but the criterion's key queue is on {self.keys.device}; "
                "move the criterion with .to(device)"
            )
        # The buffer itself once full: a view would cost a dispatch per step.
        return self.keys if self.num_filled == self.size else self.keys[: self.num_filled]

    @torch.no_grad()
    def enqueue(self, keys: Tensor, *, normalized: bool = False) -> None:
        """Append keys, normalized and newest last (written at the next read); in eval mode do nothing.

        Args:
            keys: (B, D) keys; rows that are not finite are stored as zeros. Gathered from all ranks first with
                ``gather_distributed``.
            normalized: the rows are unit-norm already (or not finite), so skip normalizing them again.

        Raises:
            ValueError: if ``keys`` is not (B, D) floating point with the queue's width.
        """
        self._flush()  # a second enqueue before a read: write the first one now
        check_matrix(keys, "keys", self.dim)
        if not self.training:
            return
        if self.gather_distributed:
            keys = gather_rows(keys)
        rows = keys.detach() if normalized else unit_rows(keys.detach())
        self._pending = torch.where(torch.isfinite(rows).all(dim=1, keepdim=True), rows, 0.0)
        self._pending_count = keys.shape[0]

    @torch.no_grad()
    def write_unit_rows(self, rows: Tensor, *, gathered: bool = False) -> None:
        """Append rows now, in place, without normalizing: for a caller whose rows are unit where the key had a
        direction and entirely zero or NaN where it had none (as ``halp_loss.geometry.unit_rows`` returns them),
        and which keeps no tensor computed from the rows it read (as [`halp_loss.HaLPInfoNCE`][halp_loss.HaLPInfoNCE],
        which computes the query's gradient in the forward pass). In eval mode do nothing.

        Args:
            rows: (B, D) rows of the queue's width; NaN is stored as zero. Gathered from all ranks first with
                ``gather_distributed``.
            gathered: the rows are every rank's already (the caller gathered them for the prototype bank too).
        """
        if not self.training:
            return
        self._flush()
        if self.gather_distributed and not gathered:
            rows = gather_rows(rows)
        if self._written == 0:
            self._allocate(rows.shape[1], rows.device, compute_dtype(rows))
        self._write_ring(self.keys, rows.to(self.keys.dtype))

    def _write_ring(self, buffer: Tensor, rows: Tensor) -> None:
        """Append ``rows`` to the keys written so far in ``buffer`` (only the newest ``size`` if more arrived),
        wrapping around its end."""
        arrived = rows.shape[0]
        rows = rows if arrived <= self.size else rows[-self.size :]
        write_ring(buffer, rows, (self._written + arrived - rows.shape[0]) % self.size)
        self._written += arrived

    def recent(self) -> Tensor:
        """A copy of the keys in the queue, oldest first (``num_filled`` rows)."""
        self._flush()
        if self.num_seen <= self.size:
            return self.keys[: self.num_seen].clone()
        return self.keys.roll(-(self.num_seen % self.size), dims=0)

    def _flush(self) -> None:
        """Write the pending keys into the ring buffer, in place."""
        if self._pending is None:
            return
        if self._written == 0:
            self._allocate(self._pending.shape[1], self._pending.device, compute_dtype(self._pending))
        rows = self._pending.to(self.keys)
        self._pending, self._pending_count = None, 0
        self._write_ring(self.keys, rows)

    def _allocate(self, dim: int, device: torch.device, dtype: torch.dtype) -> None:
        """Hold keys of this width, device and dtype; only while the queue is empty, so nothing is lost."""
        if (self.dim, self.keys.device, self.keys.dtype) != (dim, device, dtype):
            self.keys = zero_buffer((self.size, dim), device=device, dtype=dtype)

    def get_extra_state(self) -> dict[str, int]:
        return {"num_seen": self.num_seen}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or "num_seen" not in state:
            raise ValueError(f"the checkpoint's key queue state lacks num_seen; it is not a KeyQueue state: {state!r}")
        check_positive_int(state["num_seen"], "the checkpoint's key queue counter num_seen", minimum=0)
        self._written = state["num_seen"]

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        self._flush()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "keys")
        if saved is not None:
            if saved.ndim != 2 or saved.shape[0] != self.size:
                raise ValueError(
                    f"the checkpoint's key queue holds {tuple(saved.shape)} keys, but this criterion was built with "
                    f"memory_bank_size K = {self.size}; build it with the checkpoint's K"
                )
            if saved.shape[1] and self.declared_dim is not None and saved.shape[1] != self.declared_dim:
                raise ValueError(
                    f"the checkpoint's key queue has dim = {saved.shape[1]}, but this criterion was built with "
                    f"memory_bank_size D = {self.declared_dim}"
                )
            # A queue that has not seen keys takes the saved width (checkpoints load into a fresh criterion).
            if saved.shape[1] != self.keys.shape[1]:
                self.keys = zero_buffer(saved.shape, dtype=saved.dtype, device=self.keys.device)
        self._pending, self._pending_count = None, 0
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, seen={self.num_seen}"

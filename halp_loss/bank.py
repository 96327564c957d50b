"""PrototypeBank: the recent keys and the prototypes fitted on them, with everything needed to resume."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from halp_loss._checks import check_matrix, check_positive_int, compute_dtype
from halp_loss.distributed import broadcast_, gather_rows, world_size
from halp_loss.geometry import unit_rows
from halp_loss.kmeans import fit_unit_points

__all__ = ["PrototypeBank"]


class PrototypeBank(nn.Module):
    """Ring buffer of the most recent keys and the spherical k-means prototypes refitted on it.

    The released HaLP code clusters the 256 most recently enqueued MoCo keys into 20 prototypes every 10
    iterations. ``update`` appends keys and, in training mode, refits on the first call at which ``warmup``
    keys have been seen (and the window is full), then every ``every`` calls. In eval mode the bank is frozen.

    The counters live in the module's extra state, so ``state_dict()`` holds everything needed to resume
    exactly where training stopped (the released code forgets its warm-up counter on resume). Each fit draws
    its k-means seeding from ``seed`` and the fit index, so a resumed run refits exactly as an uninterrupted
    one. Under ``torch.distributed`` (initialized, world size > 1) and with ``gather_distributed``, keys are
    gathered from all ranks in rank order and rank 0's prototypes are broadcast, so every rank holds
    bit-identical prototypes.

    Args:
        num_prototypes: P, number of prototypes.
        window: number of most recent keys clustered; ``window >= num_prototypes``.
        every: refit every this many ``update`` calls once ready.
        dim: embedding dim; ``None`` takes it from the first keys.
        warmup: keys that must have been seen before the first fit (default ``window``; the released code
            waits until its MoCo queue of K keys has been filled, i.e. ``2 K + 1``).
        kmeans_iters: maximum spherical k-means iterations per fit.
        kmeans_tol: spherical k-means tolerance; ``None`` runs all iterations without the per-iteration host read.
        seed: base seed of the k-means seeding.
        gather_distributed: gather keys from all ranks before appending them.

    Raises:
        ValueError: for non-positive sizes, ``window < num_prototypes`` or a negative ``kmeans_tol``.

    Example:
        >>> bank = PrototypeBank(num_prototypes=20, window=256, every=10)
        >>> for _ in range(4):
        ...     bank.update(torch.nn.functional.normalize(torch.randn(64, 128), dim=1))
        >>> bank.ready, bank.prototypes.shape
        (True, torch.Size([20, 128]))
    """

    keys: Tensor
    prototypes: Tensor

    def __init__(
        self,
        num_prototypes: int = 20,
        window: int = 256,
        every: int = 10,
        *,
        dim: Optional[int] = None,
        warmup: Optional[int] = None,
        kmeans_iters: int = 50,
        kmeans_tol: Optional[float] = 1e-4,
        seed: int = 0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        check_positive_int(num_prototypes, "num_prototypes", minimum=2)
        check_positive_int(window, "window")
        check_positive_int(every, "every")
        if window < num_prototypes:
            raise ValueError(f"window ({window}) must hold at least num_prototypes ({num_prototypes}) keys")
        if dim is not None:
            check_positive_int(dim, "dim")
        if warmup is not None:
            check_positive_int(warmup, "warmup", minimum=0)
        check_positive_int(kmeans_iters, "kmeans_iters")
        if kmeans_tol is not None and not kmeans_tol >= 0:
            raise ValueError(f"kmeans_tol must be None or a number >= 0, got {kmeans_tol!r}")
        self.num_prototypes = num_prototypes
        self.window = window
        self.every = every
        self.warmup = window if warmup is None else max(warmup, window)
        self.kmeans_iters = kmeans_iters
        self.kmeans_tol = kmeans_tol
        self.seed = seed
        self.gather_distributed = gather_distributed
        self.register_buffer("keys", torch.zeros(window, dim or 0))
        self.register_buffer("prototypes", torch.zeros(num_prototypes, dim or 0))
        self.num_seen = 0
        self.num_calls = 0
        self.num_fits = 0
        self.calls_since_fit = 0

    @property
    def ready(self) -> bool:
        """Whether prototypes have been fitted."""
        return self.num_fits > 0

    @property
    def dim(self) -> Optional[int]:
        return self.keys.shape[1] or None

    def recent_keys(self) -> Tensor:
        """The keys in the window, oldest first (fewer than ``window`` rows before it fills)."""
        filled = min(self.num_seen, self.window)
        start = (self.num_seen - filled) % self.window
        order = (torch.arange(filled, device=self.keys.device) + start) % self.window
        return self.keys[order]

    @torch.no_grad()
    def update(self, keys: Tensor) -> bool:
        """Append keys (normalized) to the window and refit the prototypes when due.

        Args:
            keys: (B, D) keys, e.g. the momentum encoder's output for this step.

        Returns:
            True if the prototypes were refitted by this call.

        Raises:
            ValueError: if ``keys`` is not (B, D) floating point with the bank's dim.
        """
        check_matrix(keys, "keys", self.dim)
        if self.gather_distributed:
            keys = gather_rows(keys)
        if self.dim is None:
            dtype = compute_dtype(keys)
            self.keys = torch.zeros(self.window, keys.shape[1], device=keys.device, dtype=dtype)
            self.prototypes = torch.zeros(self.num_prototypes, keys.shape[1], device=keys.device, dtype=dtype)
        arrived = keys.shape[0]
        keys = unit_rows(keys.detach().to(self.keys))[-self.window :]
        first_slot = self.num_seen + arrived - keys.shape[0]
        slots = (torch.arange(keys.shape[0], device=keys.device) + first_slot) % self.window
        self.keys[slots] = keys
        self.num_seen += arrived
        self.num_calls += 1
        self.calls_since_fit += 1
        due = self.calls_since_fit >= self.every or not self.ready
        if self.training and self.num_seen >= self.warmup and due:
            self.refit()
            return True
        return False

    @torch.no_grad()
    def refit(self) -> None:
        """Fit the prototypes on the current window now."""
        if self.num_seen < self.num_prototypes:
            raise ValueError(
                f"cannot fit {self.num_prototypes} prototypes on {self.num_seen} keys; call update() first"
            )
        generator = torch.Generator(device=self.keys.device).manual_seed(self.seed + self.num_fits)
        # The window holds normalized keys, so the fit skips spherical_kmeans's value checks (host reads).
        result = fit_unit_points(
            self.recent_keys(), self.num_prototypes, self.kmeans_iters, self.kmeans_tol, "kmeans++", generator
        )
        self.prototypes.copy_(result.centroids)
        if world_size() > 1 and self.gather_distributed:
            broadcast_(self.prototypes)
        self.num_fits += 1
        self.calls_since_fit = 0

    def get_extra_state(self) -> dict[str, int]:
        return {
            "num_seen": self.num_seen,
            "num_calls": self.num_calls,
            "num_fits": self.num_fits,
            "calls_since_fit": self.calls_since_fit,
        }

    def set_extra_state(self, state: Any) -> None:
        self.num_seen = int(state["num_seen"])
        self.num_calls = int(state["num_calls"])
        self.num_fits = int(state["num_fits"])
        self.calls_since_fit = int(state["calls_since_fit"])

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # A bank created without `dim` adopts the saved shapes, so checkpoints load into a fresh bank.
        for name in ("keys", "prototypes"):
            saved = state_dict.get(prefix + name)
            current = self._buffers[name]
            if saved is not None and current is not None and saved.shape != current.shape and current.numel() == 0:
                self._buffers[name] = torch.zeros(saved.shape, dtype=saved.dtype, device=current.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"num_prototypes={self.num_prototypes}, window={self.window}, every={self.every}, "
            f"warmup={self.warmup}, seen={self.num_seen}, fits={self.num_fits}"
        )

"""PrototypeBank: the recent keys and the prototypes fitted on them, with everything needed to resume."""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from torch import Tensor, nn

from halp_loss._checks import caller_stacklevel, check_matrix, check_positive_int, compute_dtype
from halp_loss._ring import write_ring, zero_buffer
from halp_loss.distributed import broadcast_, gather_rows, world_size
from halp_loss.geometry import WalkTables, unit_rows, walk_tables
from halp_loss.kmeans import fit_unit_points

__all__ = ["PrototypeBank"]

COUNTERS = ("num_seen", "num_calls", "num_fits", "calls_since_fit")
"""The schedule's counters, checkpointed in the extra state."""

MAX_UNCOUNTED = 64
"""Appended batches kept for the skipped-key count before it is taken anyway (bounds the memory they hold)."""


def stored_keys_usable(window: Tensor) -> Tensor:
    """(N,) bool, which keys of the window the fits use: keys without a direction were stored as zero rows."""
    return window.ne(0).any(dim=1)


def count_without_direction(rows: Tensor) -> Tensor:
    """How many of the appended ``rows`` had no direction (NaN, or zero), as a device-side count."""
    return (~(rows.abs().amax(dim=1) > 0)).sum()


class PrototypeBank(nn.Module):
    """Ring buffer of the most recent keys and the spherical k-means prototypes refitted on it.

    The released HaLP code clusters the 256 most recently enqueued MoCo keys into 20 prototypes every 10
    iterations. ``update`` appends keys and first fits on the first call at which ``warmup`` keys have been seen
    (by default a full window), on the keys the window holds then, at least ``num_prototypes`` usable ones; then it
    refits every ``every`` calls. In eval mode the bank is frozen: ``update`` checks its input and changes nothing.

    The ``keys`` buffer is the window's ring buffer, written lazily: appended keys reach it at the next fit,
    [`recent_keys`][halp_loss.PrototypeBank.recent_keys] or ``state_dict()``, and most batches, overwritten before any
    of those, are never written. Read the window with [`recent_keys`][halp_loss.PrototypeBank.recent_keys].

    Keys that are not finite, or are zero, have no direction. They count as seen but are stored as zero rows
    and left out of every fit, with a ``RuntimeWarning`` the first time and a running count in
    ``num_skipped``, so one bad batch does not poison the prototypes. Testing keys on arrival would read from
    the device every step; instead each refit reads one number, how many keys of the window are usable, and
    skips the fit (keeping the previous prototypes) when fewer than ``num_prototypes`` are.

    The counters live in the module's extra state, so ``state_dict()`` holds everything needed to resume
    exactly where training stopped (the released code forgets its warm-up counter on resume). Loading refuses
    a state whose ``window``, ``num_prototypes`` or ``dim`` differ from this bank's; a bank that has not seen
    keys yet adopts the saved ``dim``. Each fit draws its k-means seeding from ``seed`` and the fit index, so a
    resumed run refits exactly as an uninterrupted one. Under ``torch.distributed`` (initialized, world size
    > 1) and with ``gather_distributed``, keys are gathered from all ranks in rank order and rank 0's
    prototypes are broadcast, so every rank holds bit-identical prototypes.

    Args:
        num_prototypes: P, number of prototypes.
        window: number of most recent keys clustered; ``window >= num_prototypes``.
        every: refit every this many ``update`` calls once ready.
        dim: embedding dim; ``None`` takes it from the first keys.
        warmup: keys that must have been seen before the first fit, an integer >= 0 (default ``window``; the
            released code waits until its MoCo queue of K keys has been filled, i.e. ``2 K + 1``). Below
            ``window`` the first fit uses the keys seen so far, once ``num_prototypes`` of them are usable.
        kmeans_iters: maximum spherical k-means iterations per fit.
        kmeans_tol: spherical k-means tolerance; ``None`` runs all iterations without the per-iteration host read.
        seed: base seed of the k-means seeding, an integer >= 0.
        gather_distributed: gather keys from all ranks before appending them.

    Raises:
        ValueError: for non-positive sizes, ``window < num_prototypes``, a negative ``kmeans_tol`` or a seed that
            is not an integer >= 0.

    Example:
        >>> bank = PrototypeBank(num_prototypes=20, window=256, every=10)
        >>> for _ in range(4):
        ...     bank.update(torch.nn.functional.normalize(torch.randn(64, 128), dim=1))
        >>> bank.ready, bank.prototypes.shape
        (True, torch.Size([20, 128]))
    """

    keys: Tensor
    prototypes: Tensor
    skipped: Tensor

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
        check_positive_int(seed, "seed", minimum=0)
        self.num_prototypes = num_prototypes
        self.window = window
        self.every = every
        self.warmup = window if warmup is None else warmup
        self.kmeans_iters = kmeans_iters
        self.kmeans_tol = kmeans_tol
        self.seed = seed
        self.gather_distributed = gather_distributed
        self.register_buffer("keys", zero_buffer((window, dim or 0)))
        self.register_buffer("prototypes", zero_buffer((num_prototypes, dim or 0)))
        # A device-side count, so that counting costs no host read; checkpointed through the extra state.
        self.register_buffer("skipped", zero_buffer((), dtype=torch.long), persistent=False)
        self._warned = False
        self._warned_window = False
        self.num_seen = 0
        self.num_calls = 0
        self.num_fits = 0
        self.calls_since_fit = 0
        # Appended rows not yet written into the window (with their first slot), rows whose keys without a direction
        # are not counted yet, and the walk tables of the prototypes.
        self._unwritten: list[tuple[int, Tensor]] = []
        self._uncounted: list[Tensor] = []
        self._tables: Optional[WalkTables] = None

    @property
    def ready(self) -> bool:
        """Whether prototypes have been fitted."""
        return self.num_fits > 0

    @property
    def dim(self) -> Optional[int]:
        """Embedding dim, ``None`` until the first keys (or a checkpoint) set it."""
        return self.keys.shape[1] or None

    @property
    def num_skipped(self) -> int:
        """Keys stored as zero rows and left out of the fits because they were not finite or were zero (reads the
        count back from the device)."""
        return int(self.skipped) + sum(int(count_without_direction(rows)) for rows in self._uncounted)

    def recent_keys(self) -> Tensor:
        """The keys in the window, oldest first (fewer than ``window`` rows before it fills)."""
        self._write_pending()
        filled = min(self.num_seen, self.window)
        start = (self.num_seen - filled) % self.window
        order = (torch.arange(filled, device=self.keys.device) + start) % self.window
        return self.keys[order]

    @torch.no_grad()
    def update(self, keys: Tensor, *, normalized: bool = False) -> bool:
        """Append keys (normalized) to the window and refit the prototypes when due; in eval mode do nothing.

        Args:
            keys: (B, D) keys, e.g. the momentum encoder's output for this step. Rows that are not finite or are
                zero are counted in ``num_skipped`` and left out of the fits.
            normalized: the rows are unit-norm already (or NaN or zero), so skip normalizing them again.

        Returns:
            True if the prototypes were refitted by this call.

        Raises:
            ValueError: if ``keys`` is not (B, D) floating point with the bank's dim.
        """
        check_matrix(keys, "keys", self.dim)
        if not self.training:
            return False
        rows = keys.detach().to(self.keys.dtype if self.dim else compute_dtype(keys))
        if normalized:
            # Unit by the caller's word: a row without a direction (NaN, or zero) becomes a row of zeros.
            rows = torch.where(rows.abs().amax(dim=1, keepdim=True) > 0, rows, 0.0)
        return self.append_unit_rows(rows if normalized else unit_rows(rows))

    @torch.no_grad()
    def append_unit_rows(self, rows: Tensor, *, gathered: bool = False) -> bool:
        """[`update`][halp_loss.PrototypeBank.update] for rows that are unit already where the key had a direction and
        entirely zero or NaN where it had none, as ``halp_loss.geometry.unit_rows`` returns them (no validation).

        One write into the window, zeros in place of NaN; the keys without a direction are counted later, at the
        next fit or read of ``num_skipped``, so that a step spends no kernels on the count.

        Args:
            rows: (B, D) unit rows.
            gathered: the rows are every rank's already (the caller gathered them for the key queue too).

        Returns:
            True if the prototypes were refitted by this call.
        """
        if not self.training:
            return False
        if self.gather_distributed and not gathered:
            rows = gather_rows(rows)
        if not self.keys.shape[1]:
            dtype = compute_dtype(rows)
            self.keys = zero_buffer((self.window, rows.shape[1]), device=rows.device, dtype=dtype)
            self.prototypes = zero_buffer((self.num_prototypes, rows.shape[1]), device=rows.device, dtype=dtype)
            self.skipped = zero_buffer((), dtype=torch.long, device=rows.device).add_(self.skipped.to(rows.device))
        arrived = rows.shape[0]
        if arrived > self.window:
            self._warn_window_once(arrived)
            rows = rows[-self.window :]
        # Written when the window is next read (a fit, recent_keys, state_dict): of the keys arriving between two
        # fits only the last `window` are ever read, so most batches are never written.
        self._unwritten.append(((self.num_seen + arrived - rows.shape[0]) % self.window, rows))
        while sum(batch.shape[0] for _, batch in self._unwritten[1:]) >= self.window:
            self._unwritten.pop(0)
        self._uncounted.append(rows)
        if len(self._uncounted) >= MAX_UNCOUNTED:
            self._count_skipped()
        self.num_seen += arrived
        self.num_calls += 1
        self.calls_since_fit += 1
        due = self.calls_since_fit >= self.every or not self.ready
        return self.num_seen >= self.warmup and due and self._fit()

    def _write_pending(self) -> None:
        """Write the appended rows still due into the window, oldest first, zeros in place of NaN (keys without
        a direction)."""
        window = self.keys
        for start, rows in self._unwritten:
            write_ring(window, rows.to(window), start)
        self._unwritten.clear()

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        self._write_pending()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _count_skipped(self) -> None:
        """Add the keys without a direction among the rows appended since the last count to ``skipped``."""
        if self._uncounted:
            rows = torch.cat(self._uncounted)
            self._uncounted.clear()
            self.skipped += count_without_direction(rows)

    def walk_tables(self, dtype: torch.dtype) -> WalkTables:
        """The walk tables of the prototypes in ``dtype`` (``halp_loss.geometry.walk_tables``), computed once per
        fit: what the walks need from the prototypes alone (their cosines and the boundary ratios) costs no kernel
        between refits."""
        cached = self._tables
        if cached is None or cached.prototypes.dtype != dtype or cached.prototypes.device != self.prototypes.device:
            cached = self._tables = walk_tables(self.prototypes.to(dtype))
        return cached

    @torch.no_grad()
    def refit(self) -> None:
        """Fit the prototypes on the usable keys of the current window now.

        Raises:
            ValueError: if the window holds fewer usable keys than ``num_prototypes``.
        """
        if not self._fit():
            usable = int(stored_keys_usable(self.recent_keys()).sum())
            raise ValueError(
                f"cannot fit {self.num_prototypes} prototypes on the {usable} usable keys of the window "
                f"({self.num_seen} seen, {self.num_skipped} not finite or zero); call update() with more keys first"
            )

    def _fit(self) -> bool:
        """Fit on the window's usable keys if there are at least ``num_prototypes``; return whether it did."""
        self._count_skipped()
        window = self.recent_keys()
        usable = stored_keys_usable(window)
        # The one host read of a refit (the fit's input size depends on it).
        count = int(usable.sum())
        if count < window.shape[0]:
            self._warn_once(window.shape[0] - count, count)
            window = window[usable]
        if count < self.num_prototypes:
            return False
        generator = torch.Generator(device=self.keys.device).manual_seed(self.seed + self.num_fits)
        # The window holds unit (or left-out zero) keys, so the fit skips spherical_kmeans's value checks.
        result = fit_unit_points(window, self.num_prototypes, self.kmeans_iters, self.kmeans_tol, "kmeans++", generator)
        self.prototypes.copy_(result.centroids)
        if world_size() > 1 and self.gather_distributed:
            broadcast_(self.prototypes)
        self.num_fits += 1
        self.calls_since_fit = 0
        self._tables = None
        return True

    def _warn_window_once(self, arrived: int) -> None:
        if self._warned_window:
            return
        self._warned_window = True
        warnings.warn(
            f"PrototypeBank: one call appended {arrived} keys (all ranks' with gather_distributed; SimCLR mode "
            f"appends both views, 2 per sample) but the window holds {self.window}, so only the newest {self.window} "
            f"of them are clustered. Raise the window (HaLPInfoNCE: prototype_window) to at least {arrived}. "
            "Shown once.",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )

    def _warn_once(self, left_out: int, usable: int) -> None:
        if self._warned:
            return
        self._warned = True
        consequence = (
            f"fewer than num_prototypes = {self.num_prototypes} remain, so the bank keeps its prototypes"
            if usable < self.num_prototypes
            else f"the fit uses the other {usable}"
        )
        warnings.warn(
            f"PrototypeBank: {left_out} of the {left_out + usable} keys in the window are not finite or are zero "
            "and are left out of the fit; "
            f"{consequence}. Shown once; PrototypeBank.num_skipped counts such keys.",
            RuntimeWarning,
            stacklevel=caller_stacklevel(),
        )

    def get_extra_state(self) -> dict[str, int]:
        self._count_skipped()
        return {**{name: getattr(self, name) for name in COUNTERS}, "num_skipped": self.num_skipped}

    def set_extra_state(self, state: Any) -> None:
        missing = [name for name in COUNTERS if name not in state]
        if missing:
            raise ValueError(f"the checkpoint's prototype bank state lacks {missing}; it is not a PrototypeBank state")
        for name in COUNTERS:
            check_positive_int(state[name], f"the checkpoint's bank counter {name}", minimum=0)
            setattr(self, name, state[name])
        # Checkpoints written before skipped keys were counted have no count.
        self.skipped.fill_(state.get("num_skipped", 0))
        self._uncounted.clear()
        self._tables = None

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        self._unwritten.clear()
        saved = {name: state_dict.get(prefix + name) for name in ("keys", "prototypes")}
        if saved["keys"] is not None and saved["prototypes"] is not None:
            self._check_saved_shapes(saved["keys"].shape, saved["prototypes"].shape)
            # A bank that has not seen keys (dim 0) takes the saved dim, so checkpoints load into a fresh bank;
            # the other way round the bank becomes as unfed as the checkpoint.
            if saved["keys"].shape[1] != self.keys.shape[1]:
                for name, tensor in saved.items():
                    self._buffers[name] = zero_buffer(tensor.shape, dtype=tensor.dtype, device=self.keys.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check_saved_shapes(self, keys: torch.Size, prototypes: torch.Size) -> None:
        """Raise ``ValueError`` naming the setting if a saved state does not fit this bank's configuration."""
        for setting, saved, built in (
            ("window (HaLPInfoNCE: prototype_window)", keys[0], self.window),
            ("num_prototypes", prototypes[0], self.num_prototypes),
        ):
            if saved != built:
                raise ValueError(
                    f"the checkpoint's prototype bank has {setting} = {saved}, but this bank was built with {built}; "
                    "build it with the checkpoint's setting"
                )
        if keys[1] != prototypes[1]:
            raise ValueError(f"the checkpoint's prototype bank is inconsistent: keys {keys}, prototypes {prototypes}")
        if keys[1] and self.dim is not None and keys[1] != self.dim:
            raise ValueError(f"the checkpoint's prototype bank has dim = {keys[1]}, but this bank has dim = {self.dim}")

    def extra_repr(self) -> str:
        return (
            f"num_prototypes={self.num_prototypes}, window={self.window}, every={self.every}, "
            f"warmup={self.warmup}, seen={self.num_seen}, fits={self.num_fits}"
        )

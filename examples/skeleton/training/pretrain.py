"""MoCo pretraining with the HaLP loss: plain MoCo until ``loss.halp_start_epoch``, then MoCo + HaLP.

One ``Pretraining`` owns the model, the loss, the optimizer and the data of a run, trains epoch by
epoch and writes ``checkpoints/last.pt`` after every epoch (rank 0 under DDP). A checkpoint holds
everything needed to continue exactly: the query and key encoders, the loss (its queue of keys and its prototype
bank), the optimizer, the position in the epoch, the per-epoch history and every rank's RNG states.

The loss is used as the library's README tells users to: ``HaLPInfoNCE(memory_bank_size=(K, D),
gather_distributed=...)`` keeps MoCo's queue, and its ``prototype_warmup`` (the keys it must see before its first
prototype fit) is the number of keys of the epochs before ``halp_start_epoch``, so the criterion itself switches
the HaLP term on at the first step of that epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from halp_loss import HaLPInfoNCE

from ..config import RunConfig
from ..data.augment import pretrain_view
from ..data.datasets import SkeletonDataset
from ..models.moco import MoCo
from ..progress import ProgressBar
from . import distributed
from .checkpoint import InputSpec, build_embedding_net, restore_rng_state, rng_state, save_checkpoint
from .evaluation import RAW_KNN_FRAMES, evaluate_knn
from .loop import (
    EpochSampler,
    GracefulStop,
    Precision,
    format_row,
    loader_worker_init,
    lr_at,
    set_lr,
)

TERMS = ("loss", "infonce", "halp", "kept_fraction", "mean_t")
"""Per-step values of ``HaLPInfoNCE.last`` averaged into the epoch history."""

HALP_TERMS = ("kept_fraction", "mean_t")
"""Terms that exist only on steps where the HaLP term was computed."""

T = TypeVar("T")


def build_criterion(
    cfg: RunConfig, *, warmup: int = 0, generator: Optional[torch.Generator] = None
) -> HaLPInfoNCE:
    """The run's loss: ``halp_loss.HaLPInfoNCE`` keeping the queue of ``loss.memory_bank_size`` keys (gathered
    from all ranks under DDP) and fitting prototypes once it has seen ``warmup`` keys.

    Args:
        cfg: the run's configuration (its ``auto`` values resolved).
        warmup: keys the prototype bank sees before its first fit: those of the epochs before the HaLP phase.
        generator: draws the hallucinated positives (default: torch's global generator).

    Raises:
        ValueError: naming the argument, for a setting the criterion refuses.
    """
    loss = cfg.loss
    return HaLPInfoNCE(
        temperature=loss.temperature,
        halp_weight=loss.halp_weight,
        num_prototypes=loss.num_prototypes,
        num_positives=loss.num_positives,
        lam=loss.lam,
        objective=loss.objective,
        estimator=loss.estimator,
        prototype_window=loss.prototype_window,
        prototype_every=loss.prototype_every,
        prototype_warmup=warmup,
        memory_bank_size=(int(loss.memory_bank_size), cfg.model.embed_dim),
        gather_distributed=distributed.is_distributed(),
        seed=cfg.seed,
        generator=generator,
    )


@dataclass
class Position:
    """Where training stands: finished epochs, batches done in the current one, optimizer steps."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


class EpochStats:
    """Sums of the loss terms over an epoch's steps (the HaLP-only terms over the HaLP steps)."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(TERMS) + 2, device=device)  # terms, steps, HaLP steps

    def add(self, terms: dict[str, float], halp_active: bool) -> None:
        values = [terms[name] if (name not in HALP_TERMS or halp_active) else 0.0 for name in TERMS]
        self.sums += torch.tensor([*values, 1.0, float(halp_active)], device=self.sums.device)

    def means(self) -> dict[str, Optional[float]]:
        """Averages over the epoch and over ranks; ``None`` for HaLP terms of an epoch without HaLP."""
        sums = distributed.mean_over_ranks(self.sums).tolist()
        steps, halp_steps = sums[-2], sums[-1]
        means: dict[str, Optional[float]] = {}
        for name, total in zip(TERMS, sums):
            count = halp_steps if name in HALP_TERMS else steps
            means[name] = total / count if count > 0 else None
        return means


class Pretraining:
    """A pretraining run (see the module docstring).

    Args:
        cfg: the run's configuration, fitted to the training set (``skeleton.config.fit_to_dataset``).
        out_dir: run folder; checkpoints go to ``out_dir/checkpoints``.
        device: this rank's device.
        train_set: the training split.
        val_set: the validation split (rank 0: the baselines and the kNN monitor; None on other ranks).
        max_steps: stop after this many steps of this process (smoke tests, time limits); not saved, so a resumed
            run goes on to the end of its schedule unless given it again.
        progress: show progress bars (rank 0 only).
    """

    def __init__(
        self,
        cfg: RunConfig,
        out_dir: Path,
        device: torch.device,
        train_set: SkeletonDataset,
        val_set: Optional[SkeletonDataset],
        *,
        max_steps: Optional[int] = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.out_dir = out_dir
        self.device = device
        self.max_steps = max_steps
        self.is_main = distributed.is_main()
        self.progress = progress and self.is_main
        p = cfg.pretrain
        world = distributed.world_size()
        if p.batch_size % world:
            raise ValueError(f"batch size {p.batch_size} is not divisible by the {world} ranks")
        if p.key_bn == "sync" and world > 1 and device.type != "cuda":
            raise ValueError("key_bn='sync' needs CUDA (nn.SyncBatchNorm); use 'shuffle' on the CPU")
        rank = distributed.rank()
        self.train_set, self.val_set = train_set, val_set
        self.input = InputSpec.of(train_set)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = MoCo(build_embedding_net(cfg.model, self.input), p.key_momentum, p.key_bn).to(device)
        # Each rank draws its own augmentations and positives; both generators are saved with checkpoints.
        self.generators = {
            "augment": torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank),
            "positives": torch.Generator(device=device).manual_seed(cfg.seed * 1000 + 500 + rank),
        }
        torch.manual_seed(cfg.seed * 1000 + rank)
        self.optimizer = torch.optim.SGD(
            self.model.query.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay
        )
        self.precision = Precision(cfg.amp, device)
        self.sampler = EpochSampler(len(train_set), p.batch_size // world, cfg.seed, rank, world)
        self.loader = DataLoader(
            train_set,
            batch_size=p.batch_size // world,
            sampler=self.sampler,
            drop_last=True,
            num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=cfg.num_workers > 0,
            worker_init_fn=loader_worker_init,
        )
        self.position = Position()
        self.first_epoch = 0  # where this run started: 0, or the epoch of the checkpoint it was initialized from
        self.criterion = self._build_criterion()
        self.history: list[dict[str, Any]] = []
        self.baselines: dict[str, float] = {}
        self.stats = EpochStats(device)

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole schedule, from this run's first epoch."""
        return (self.cfg.pretrain.epochs - self.first_epoch) * self.steps_per_epoch

    def _build_criterion(self) -> HaLPInfoNCE:
        """The loss, its prototype warm-up the keys of this run's epochs before ``halp_start_epoch`` (at least one
        window of keys: the first prototypes are never fitted on fewer, as the released code waits for its queue)."""
        keys_per_epoch = self.steps_per_epoch * self.cfg.pretrain.batch_size
        warmup = max(0, self.cfg.loss.halp_start_epoch - self.first_epoch) * keys_per_epoch
        warmup = max(warmup, self.cfg.loss.prototype_window)
        return build_criterion(self.cfg, warmup=warmup, generator=self.generators["positives"]).to(self.device)

    # -- checkpoints -------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The checkpoint payload (call on every rank: it gathers the RNG states of all ranks)."""
        return {
            "config": self.cfg.to_dict(),
            "input": self.input.to_dict(),
            "model": self.model.state_dict(),
            "criterion": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "precision": self.precision.state_dict(),
            "position": vars(self.position).copy(),
            "first_epoch": self.first_epoch,
            "epoch_sums": self.stats.sums.cpu(),
            "history": self.history,
            "baselines": self.baselines,
            "rng": distributed.gather_objects(rng_state(self.generators)),
        }

    def save(self, name: str = "last.pt") -> Optional[Path]:
        """Write a checkpoint (rank 0); all ranks must call it."""
        payload = self.state()
        path = save_checkpoint(payload, self.checkpoint_dir / name) if self.is_main else None
        if distributed.is_distributed():
            torch.distributed.barrier()
        return path

    def resume(self, checkpoint: dict[str, Any]) -> None:
        """Continue the run of a checkpoint (as loaded by ``load_checkpoint``) exactly where it stopped."""
        self.first_epoch = checkpoint["first_epoch"]
        self.criterion = self._build_criterion()
        self._load_training_state(checkpoint)
        self.criterion.load_state_dict(checkpoint["criterion"])
        self.precision.load_state_dict(checkpoint["precision"])
        self.stats.sums.copy_(checkpoint["epoch_sums"])
        states = checkpoint["rng"]
        if len(states) == distributed.world_size():
            restore_rng_state(states[distributed.rank()], self.generators)
        elif self.is_main:
            print(f"checkpoint was written by {len(states)} ranks, now {distributed.world_size()}: fresh RNG states")

    def init_from(self, checkpoint: dict[str, Any]) -> None:
        """Start this run from another run's checkpoint: weights, optimizer, epoch and history.

        This is the paper's two-phase recipe: a plain MoCo run to epoch 200, then a HaLP run initialized from it.
        The loss starts afresh (its queue empty, its prototype bank unfitted) and the HaLP phase starts at
        ``halp_start_epoch`` counted as before.

        Raises:
            ValueError: for a checkpoint written in the middle of an epoch.
        """
        if checkpoint["position"]["batch"]:
            raise ValueError("that checkpoint was written in the middle of an epoch; --resume its run to finish it")
        self.first_epoch = checkpoint["position"]["epoch"]
        self.criterion = self._build_criterion()
        self._load_training_state(checkpoint)

    def _load_training_state(self, checkpoint: dict[str, Any]) -> None:
        InputSpec.from_dict(checkpoint["input"]).check(self.train_set, "the checkpoint's encoder")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.position = Position(**checkpoint["position"])
        self.history = list(checkpoint["history"])
        self.baselines = dict(checkpoint.get("baselines", {}))

    # -- training ----------------------------------------------------------------------------------------

    def run(self) -> str:
        """Train until ``cfg.pretrain.epochs``, or ``max_steps`` steps, or Ctrl-C / SIGTERM.

        Returns:
            ``"done"`` (last epoch reached), ``"max_steps"`` or ``"interrupted"``; a run that stops early
            writes ``last.pt`` at the step it stopped, from which ``--resume`` continues exactly.
        """
        p = self.cfg.pretrain
        if self.position.step == 0 and not self.baselines:
            self.baselines = self._measure_baselines()
        train_model = self.model
        if distributed.is_distributed():
            train_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,  # the queues are kept identical by enqueue's all-gather
            )
        steps_this_run = 0
        with GracefulStop() as stop:
            while self.position.epoch < p.epochs:
                epoch = self.position.epoch
                lr = lr_at(p.lr, p.lr_milestones, epoch, p.lr_schedule, p.epochs)
                set_lr(self.optimizer, lr)
                self.sampler.set_epoch(epoch, skip_batches=self.position.batch)
                self.model.train()
                self.criterion.train()
                bar = ProgressBar(
                    self.loader,
                    self.sampler.batches_per_epoch,
                    p.batch_size,
                    f"pretrain {epoch + 1}/{p.epochs}",
                    self.progress,
                    initial=self.position.batch,
                )
                started = time.perf_counter()
                rate = 0.0
                for x, num_frames, _ in bar:
                    terms, halp_active = self.train_step(train_model, x, num_frames)
                    self.stats.add(terms, halp_active)
                    self.position.batch += 1
                    self.position.step += 1
                    steps_this_run += 1
                    rate = bar.update(loss=terms["loss"], halp=terms["halp"])
                    out_of_steps = self.max_steps is not None and steps_this_run >= self.max_steps
                    if distributed.any_rank(stop.requested, self.device) or out_of_steps:
                        bar.close()
                        self.save()
                        return "max_steps" if out_of_steps else "interrupted"
                bar.close()
                self._finish_epoch(lr, rate, time.perf_counter() - started)
        return "done"

    def train_step(self, train_model: torch.nn.Module, x: Tensor, num_frames: Tensor) -> tuple[dict[str, float], bool]:
        """One optimizer step on a batch: two augmented views, MoCo forward, the loss (which then enqueues the keys
        and feeds its prototype bank), the update.

        Args:
            train_model: the MoCo model, DDP-wrapped under torch.distributed.
            x: (B, C, T, V, M) sequences; num_frames: (B,) valid frames.

        Returns:
            The loss terms (``HaLPInfoNCE.last``) and whether the HaLP term was active.
        """
        x = x.to(self.device, non_blocking=True)
        num_frames = num_frames.to(self.device, non_blocking=True)
        view = dict(
            out_frames=self.cfg.model.clip_frames, generator=self.generators["augment"], **vars(self.cfg.augment)
        )
        with torch.no_grad():
            query_view = pretrain_view(x, num_frames, **view)
            key_view = pretrain_view(x, num_frames, **view)
        with self.precision.autocast():
            query, key = train_model(query_view, key_view)
            loss = self.criterion(query, key)
        self.precision.backward_step(loss, self.optimizer)
        terms = self.criterion.last
        if not math.isfinite(terms["loss"]):
            raise FloatingPointError(
                f"pretraining diverged: non-finite loss at step {self.position.step + 1} (epoch "
                f"{self.position.epoch + 1}): {format_row(terms)}. The data was checked finite when it was loaded, so "
                "the model blew up: lower --pretrain-lr, or train without --amp fp16"
            )
        return terms, self.criterion.active

    def _finish_epoch(self, lr: float, samples_per_s: float, seconds: float) -> None:
        p = self.cfg.pretrain
        epoch = self.position.epoch
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "phase": "halp" if self.cfg.loss.halp_weight > 0 and epoch >= self.cfg.loss.halp_start_epoch else "moco",
            "lr": lr,
            **self.stats.means(),
            "samples_per_s": samples_per_s,
            "seconds": seconds,
            "knn_top1": None,
        }
        if self.device.type == "cuda":
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        last_epoch = epoch + 1 == p.epochs
        if p.knn_every > 0 and ((epoch + 1) % p.knn_every == 0 or last_epoch):
            row["knn_top1"] = self._monitor_knn()
        self.history.append(row)
        self.position = Position(epoch=epoch + 1, batch=0, step=self.position.step)
        self.stats = EpochStats(self.device)
        self.save()
        if p.save_every > 0 and (epoch + 1) % p.save_every == 0:
            self.save(f"epoch_{epoch + 1:04d}.pt")
        if epoch + 1 == self.cfg.loss.halp_start_epoch:
            self.save(f"epoch_{epoch + 1:04d}_moco.pt")  # the plain-MoCo checkpoint of the two-phase recipe
        if self.is_main:
            print(format_row(row), flush=True)

    def _monitor_knn(self) -> Optional[float]:
        """kNN top-1 of the current query encoder (rank 0; the other ranks wait)."""
        return self._on_main(lambda: self._knn(self.model.query.backbone, self.cfg.model.clip_frames))

    def _measure_baselines(self) -> dict[str, float]:
        """What pretraining has to beat, before the first step (rank 0; the other ranks wait): the 1-NN of the
        raw pre-normalized joints (``RAW_KNN_FRAMES`` frames) and the kNN of the encoder at its random init."""
        return (
            self._on_main(
                lambda: {
                    "raw_knn_top1": self._knn(nn.Flatten(), RAW_KNN_FRAMES),
                    "init_knn_top1": self._knn(self.model.query.backbone, self.cfg.model.clip_frames),
                }
            )
            or {}
        )

    def _knn(self, encoder: torch.nn.Module, clip_frames: int) -> float:
        assert self.val_set is not None
        return evaluate_knn(
            encoder,
            self.train_set,
            self.val_set,
            self.cfg.knn,
            device=self.device,
            precision=self.precision,
            num_workers=self.cfg.num_workers,
            clip_frames=clip_frames,
        )

    def _on_main(self, compute: Callable[[], T]) -> Optional[T]:
        """``compute()`` on rank 0 (None elsewhere), with the other ranks waiting at a barrier."""
        result = compute() if self.is_main else None
        if distributed.is_distributed():
            torch.distributed.barrier()
        return result

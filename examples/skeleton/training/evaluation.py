"""Evaluation protocols (docs/protocols.md): 1-NN on frozen features, linear probe, fine-tuning.

All of them read features before the projection head. Evaluation runs on one device. No number computed from a
diverged model is returned: features that are not finite, or a classifier loss that stops being finite, raise
``FloatingPointError`` saying where.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..config import SUBSETS, ClassifierConfig, KNNConfig
from ..data.augment import center_crop_resize, pretrain_view, temporal_crop_resize
from ..progress import ProgressBar
from .loop import EpochSampler, Precision, format_row, loader_worker_init, lr_at, set_lr

# The released protocol: training crops keep 50-100 % of the valid frames, evaluation the central 95 %.
TRAIN_CROP_RATIOS = (0.5, 1.0)
EVAL_CROP_RATIO = 0.95
RAW_KNN_FRAMES = 32
"""Frames of the raw-skeleton 1-NN baseline: the pre-normalized joints of the evaluation crop, flattened."""


def _loader(dataset: Dataset, batch_size: int, num_workers: int, device: torch.device, **kwargs: Any) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=loader_worker_init,
        **kwargs,
    )


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    precision: Precision,
    num_workers: int = 0,
    normalize: bool = True,
    clip_frames: int = 64,
) -> tuple[Tensor, Tensor]:
    """Features of the centre 95 % crop of every sample, resized to ``clip_frames`` (L2-normalized by default),
    with the labels.

    The encoder runs in eval mode (and is put back in the mode it was in); results are on ``device``.
    """
    was_training = encoder.training
    encoder.eval()
    features, labels = [], []
    for x, num_frames, label in _loader(dataset, batch_size, num_workers, device):
        clip = center_crop_resize(x.to(device, non_blocking=True), num_frames.to(device), EVAL_CROP_RATIO, clip_frames)
        with precision.autocast():
            features.append(encoder(clip).float())
        labels.append(label.to(device))
    encoder.train(was_training)
    stacked = torch.cat(features)
    if not bool(torch.isfinite(stacked).all()):
        raise FloatingPointError(
            "the encoder's features are not finite (a diverged or corrupt checkpoint?): no accuracy is computed from them"
        )
    return F.normalize(stacked, dim=1) if normalize else stacked, torch.cat(labels)


@torch.no_grad()
def nearest_neighbors(memory: Tensor, queries: Tensor, chunk_size: int = 8192) -> Tensor:
    """Index of the most similar memory row for each query (dot product; cosine for unit rows).

    The (queries x memory) similarity matrix is computed in ``chunk_size x chunk_size`` blocks keeping a
    running maximum, so memory stays bounded: 50k x 50k runs in a few hundred MB on a GPU.

    Args:
        memory: (N, F) features.
        queries: (M, F) features.
        chunk_size: rows of queries and of memory per block.

    Returns:
        (M,) long indices into ``memory``.
    """
    if memory.shape[0] == 0:
        raise ValueError("the kNN memory is empty")
    nearest = torch.empty(queries.shape[0], dtype=torch.long, device=queries.device)
    for q_start in range(0, queries.shape[0], chunk_size):
        block = queries[q_start : q_start + chunk_size]
        best = torch.full((block.shape[0],), -float("inf"), device=queries.device)
        best_index = torch.zeros(block.shape[0], dtype=torch.long, device=queries.device)
        for m_start in range(0, memory.shape[0], chunk_size):
            similarity, index = (block @ memory[m_start : m_start + chunk_size].T).max(dim=1)
            better = similarity > best
            best = torch.where(better, similarity, best)
            best_index = torch.where(better, index + m_start, best_index)
        nearest[q_start : q_start + chunk_size] = best_index
    return nearest


def knn_top1(
    train_features: Tensor, train_labels: Tensor, val_features: Tensor, val_labels: Tensor, chunk_size: int = 8192
) -> float:
    """1-NN top-1 accuracy (fraction) of the validation features against the training features."""
    predicted = train_labels[nearest_neighbors(train_features, val_features, chunk_size)]
    return float((predicted == val_labels).float().mean())


def evaluate_knn(
    encoder: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    cfg: KNNConfig,
    *,
    device: torch.device,
    precision: Precision,
    num_workers: int = 0,
    clip_frames: int = 64,
) -> float:
    """The kNN protocol: 1-NN, cosine, L2-normalized pre-head features, training set as memory."""
    kwargs = dict(
        batch_size=cfg.batch_size, device=device, precision=precision, num_workers=num_workers, clip_frames=clip_frames
    )
    train_features, train_labels = extract_features(encoder, train_set, **kwargs)
    val_features, val_labels = extract_features(encoder, val_set, **kwargs)
    return knn_top1(train_features, train_labels, val_features, val_labels, cfg.chunk_size)


def labelled_subset(labels: np.ndarray, ratio: float, seed: int, sampling: str = "per-class") -> np.ndarray:
    """Indices, sorted, of a random labelled subset of a training set.

    ``"released"`` draws as CMD's semi-supervised feeder (``random_select_data``): a random permutation of the
    N samples, without replacement and regardless of class, of which the first ``int(N * ratio)`` are kept. CMD
    shuffles with NumPy's global generator, which it never seeds; here it is seeded, and the subset equals
    CMD's after ``np.random.seed(seed)``. ``"per-class"`` draws ``round(ratio * n_c)`` samples, at least one, of
    every class c: every class is represented and the class frequencies are kept, which at 1 % of NTU-60
    (about 7 samples per class) CMD's draw leaves to chance.

    Args:
        labels: (N,) class of every training sample.
        ratio: labelled fraction, in (0, 1].
        seed: seed of the draw.
        sampling: ``"released"`` or ``"per-class"`` (``skeleton.config.SUBSETS``).

    Returns:
        (n,) int64 indices into ``labels``, ascending.

    Raises:
        ValueError: for a ratio outside (0, 1], an unknown ``sampling``, or a ``"released"`` draw of no sample
            (``int(N * ratio) == 0``).
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if sampling not in SUBSETS:
        raise ValueError(f"sampling must be one of {SUBSETS}, got {sampling!r}")
    if sampling == "released":
        count = int(len(labels) * ratio)  # truncated, as CMD does
        if count == 0:
            raise ValueError(f"ratio {ratio} of {len(labels)} samples selects int({len(labels) * ratio:g}) = 0")
        # A legacy RandomState: its permutation is the shuffle CMD's global generator performs.
        return np.sort(np.random.RandomState(seed).permutation(len(labels))[:count])
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, int(round(ratio * len(members))))
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen))


@dataclass
class ClassifierResult:
    """Top-1 accuracies (fractions) of a supervised protocol.

    Attributes:
        best_top1: the best validation top-1 over the counted epochs: every ``eval_every``-th epoch and the last
            (the released scripts': epochs 5, 10, ..., 80). Epochs in between never count, even where they were
            scored.
        last_top1: the last epoch's validation top-1.
        best_epoch: the (1-based) epoch of ``best_top1``, the first one on ties.
        history: one row per epoch; ``val_top1`` is ``None`` on epochs that were not scored.
    """

    best_top1: float
    last_top1: float
    best_epoch: int
    history: list[dict[str, Optional[float]]] = field(default_factory=list)


class ClassifierTraining:
    """Train ``Linear(F, classes)`` on an encoder: frozen in eval mode (linear probe) or fine-tuned.

    The released protocol: SGD with momentum, step schedule, training crops of 50-100 % of the valid frames,
    evaluation on the centre 95 % crop; the head starts from N(0, 0.01). With ``cfg.feature_norm="batchnorm"``
    the features pass a BatchNorm without affine parameters first (as MAE's linear probe; not in the released
    protocol). The best top-1 is taken over every
    ``cfg.eval_every``-th epoch and the last, as the released scripts (every 5th) test. For the linear probe,
    validation features do not change and are computed once, so every epoch is scored for the history at no
    cost; fine-tuning scores only the counted epochs, each of which costs a pass of the encoder.

    Args:
        encoder: feature extractor exposing ``feature_dim`` (modified in place when fine-tuning).
        num_classes: classifier outputs.
        cfg: the protocol's hyperparameters.
        finetune: train the encoder too (semi-supervised, transfer) instead of freezing it.
        device: training device.
        precision: mixed-precision mode.
        seed: seed of the data order and the crops.
        num_workers: DataLoader workers.
        max_steps: stop after this many steps in total (smoke tests).
        progress: show progress bars.
        clip_frames: frames of the training and evaluation clips.
        view_augment: keyword arguments of ``skeleton.data.augment.pretrain_view`` (crop, shear,
            corruption, rotation) to augment the training clips with, instead of the protocol's temporal crop alone.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        cfg: ClassifierConfig,
        *,
        finetune: bool,
        device: torch.device,
        precision: Precision,
        seed: int = 0,
        num_workers: int = 0,
        max_steps: Optional[int] = None,
        progress: bool = True,
        clip_frames: int = 64,
        view_augment: Optional[dict[str, Any]] = None,
    ) -> None:
        self.encoder = encoder.to(device)
        linear = nn.Linear(int(encoder.feature_dim), num_classes)
        nn.init.normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
        # Standardized features put every dimension on one scale, so one learning rate suits all of them.
        norm = nn.BatchNorm1d(linear.in_features, affine=False) if cfg.feature_norm == "batchnorm" else nn.Identity()
        self.head = nn.Sequential(norm, linear).to(device)
        self.cfg = cfg
        self.finetune = finetune
        self.device = device
        self.precision = precision
        self.seed = seed
        self.num_workers = num_workers
        self.max_steps = max_steps
        self.progress = progress
        self.clip_frames = clip_frames
        self.view_augment = view_augment
        self.encoder.requires_grad_(finetune)
        parameters = list(self.head.parameters()) + (list(self.encoder.parameters()) if finetune else [])
        self.optimizer = torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def _training_clip(self, x: Tensor, num_frames: Tensor) -> Tensor:
        if self.view_augment is not None:
            return pretrain_view(
                x, num_frames, out_frames=self.clip_frames, generator=self.generator, **self.view_augment
            )
        return temporal_crop_resize(
            x, num_frames, TRAIN_CROP_RATIOS, self.clip_frames, self.clip_frames, generator=self.generator
        )

    def _features(self, clip: Tensor) -> Tensor:
        if self.finetune:
            return self.encoder(clip)
        with torch.no_grad():
            return self.encoder(clip)

    @torch.no_grad()
    def _val_top1(self, val_set: Dataset, cached: Optional[tuple[Tensor, Tensor]]) -> float:
        features, labels = cached or self._val_features(val_set)
        self.head.eval()
        with self.precision.autocast():
            predicted = self.head(features).argmax(dim=1)
        self.head.train()
        return float((predicted == labels).float().mean())

    def _val_features(self, val_set: Dataset) -> tuple[Tensor, Tensor]:
        return extract_features(
            self.encoder,
            val_set,
            batch_size=self.cfg.batch_size,
            device=self.device,
            precision=self.precision,
            num_workers=self.num_workers,
            normalize=False,
            clip_frames=self.clip_frames,
        )

    def fit(self, train_set: Dataset, val_set: Dataset, description: str = "linear") -> ClassifierResult:
        """Train for ``cfg.epochs`` epochs (fewer when ``max_steps`` stops it); returns best and last top-1."""
        if len(train_set) < 2:
            raise ValueError(f"{description}: {len(train_set)} training sequence(s); BatchNorm needs batches of 2")
        cached_val = None if self.finetune else self._val_features(val_set)
        batch_size = min(self.cfg.batch_size, len(train_set))  # tiny labelled subsets still get batches
        sampler = EpochSampler(len(train_set), batch_size, self.seed)
        loader = _loader(
            train_set,
            batch_size,
            self.num_workers,
            self.device,
            sampler=sampler,
            drop_last=True,
            persistent_workers=self.num_workers > 0,  # reused every epoch
        )
        history: list[dict[str, Optional[float]]] = []
        counted: list[dict[str, Optional[float]]] = []  # the epochs the best is taken over
        steps = 0
        for epoch in range(self.cfg.epochs):
            lr = lr_at(self.cfg.lr, self.cfg.lr_milestones, epoch, self.cfg.lr_schedule, self.cfg.epochs)
            set_lr(self.optimizer, lr)
            sampler.set_epoch(epoch)
            self.encoder.train(self.finetune)
            bar = ProgressBar(
                loader, len(loader), batch_size, f"{description} {epoch + 1}/{self.cfg.epochs}", self.progress
            )
            loss_sum, correct, seen = torch.zeros((), device=self.device), torch.zeros((), device=self.device), 0
            for x, num_frames, label in bar:
                x, num_frames = x.to(self.device, non_blocking=True), num_frames.to(self.device)
                label = label.to(self.device)
                clip = self._training_clip(x, num_frames)
                with self.precision.autocast():
                    logits = self.head(self._features(clip)).float()
                loss = F.cross_entropy(logits, label)
                if not math.isfinite(float(loss.detach())):
                    raise FloatingPointError(
                        f"{description} diverged: non-finite loss at epoch {epoch + 1}, step {steps + 1}; no accuracy is "
                        "written (lower its learning rate?)"
                    )
                self.precision.backward_step(loss, self.optimizer)
                loss_sum += loss.detach() * len(label)
                correct += (logits.argmax(dim=1) == label).sum()
                seen += len(label)
                steps += 1
                bar.update(loss=float(loss.detach()))
                if self.max_steps is not None and steps >= self.max_steps:
                    break
            bar.close()
            stopping = self.max_steps is not None and steps >= self.max_steps
            counts = (epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == self.cfg.epochs or stopping
            history.append(
                {
                    "epoch": epoch + 1,
                    "lr": lr,
                    "train_loss": float(loss_sum) / max(seen, 1),
                    "train_top1": float(correct) / max(seen, 1),
                    "val_top1": self._val_top1(val_set, cached_val) if counts or cached_val is not None else None,
                }
            )
            if counts:
                counted.append(history[-1])
            if bar.line_based:  # no bar off a terminal: one line per epoch in the log instead
                print(f"{description} {epoch + 1}/{self.cfg.epochs} " + format_row(history[-1]), flush=True)
            if stopping:
                break
        best = max(counted, key=lambda row: row["val_top1"])
        return ClassifierResult(
            best_top1=best["val_top1"], last_top1=history[-1]["val_top1"], best_epoch=best["epoch"], history=history
        )


def finetune_on_subsets(
    encoder: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    num_classes: int,
    cfg: ClassifierConfig,
    *,
    ratio: float,
    repeats: int,
    seed: int,
    sampling: str = "per-class",
    **kwargs: Any,
) -> list[ClassifierResult]:
    """Semi-supervised protocol: fine-tune a fresh copy of ``encoder`` on ``repeats`` labelled subsets, drawn by
    ``labelled_subset`` with ``sampling`` and seeds ``seed``, ``seed + 1``, ...; ``kwargs`` go to
    ``ClassifierTraining``."""
    results = []
    for repeat in range(repeats):
        indices = labelled_subset(np.asarray(train_set.labels), ratio, seed + repeat, sampling)
        training = ClassifierTraining(
            copy.deepcopy(encoder), num_classes, cfg, finetune=True, seed=seed + repeat, **kwargs
        )
        results.append(training.fit(Subset(train_set, indices.tolist()), val_set, f"semi {repeat + 1}/{repeats}"))
    return results

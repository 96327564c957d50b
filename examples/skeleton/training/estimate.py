"""How long a run will take, measured on a few steps of its own model before it starts.

The banner of every pretraining run prints the estimate, and a recipe that cannot finish in reasonable time on the
device (the released 3 x 1024 GRU on a CPU) says so before any work. The probe runs on copies of the networks,
inside ``torch.random.fork_rng``, with its own generator and no collective call: the run itself draws exactly what
it would have drawn without it (resumes stay bit-identical), and under DDP rank 0 measures alone.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from halp_loss.functional import info_nce

from ..data.augment import center_crop_resize, pretrain_view

if TYPE_CHECKING:
    from .pretrain import Pretraining

PROBE_STEPS = 3
"""Timed steps after one warm-up step; the median is kept."""


def estimate_seconds(run: Pretraining, *, with_evaluation: bool) -> float:
    """Seconds the rest of ``run`` should take on this device: its remaining pretraining steps, the kNN monitor and
    the two baselines, and with ``with_evaluation`` the pipeline's kNN and linear probe.

    Args:
        run: a pretraining run, built (and resumed) but not started.
        with_evaluation: add the kNN and linear evaluation the whole pipeline runs after pretraining.
    """
    cfg, data = run.cfg, run.train_set
    batch = min(cfg.pretrain.batch_size, len(data))
    samples = [data[i] for i in range(batch)]
    x = torch.stack([sample[0] for sample in samples]).to(run.device)
    num_frames = torch.stack([sample[1] for sample in samples]).to(run.device)
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        step, forward = _probe(run, x, num_frames)
    per_sample = forward / batch
    position = run.position
    remaining = (cfg.pretrain.epochs - position.epoch) * run.steps_per_epoch - position.batch
    if run.max_steps is not None:
        remaining = min(remaining, run.max_steps)
    evaluated = len(data) + (len(run.val_set) if run.val_set is not None else 0)
    monitors = cfg.pretrain.epochs // cfg.pretrain.knn_every if cfg.pretrain.knn_every else 0
    seconds = remaining * step + (monitors + 1) * evaluated * per_sample  # + the random-init baseline
    if with_evaluation:
        seconds += evaluated * per_sample + cfg.linear.epochs * len(data) * per_sample
    return seconds


def _probe(run: Pretraining, x: torch.Tensor, num_frames: torch.Tensor) -> tuple[float, float]:
    """Median seconds of one training step (two views, query forward and backward, key forward, InfoNCE against a
    queue of the run's length) and of one evaluation forward pass, on copies of the networks."""
    cfg = run.cfg
    query, key = copy.deepcopy(run.model.query), copy.deepcopy(run.model.key)
    generator = torch.Generator(device=run.device).manual_seed(0)
    view = dict(out_frames=cfg.model.clip_frames, generator=generator, **vars(cfg.augment))
    negatives = F.normalize(torch.randn(int(cfg.loss.memory_bank_size), cfg.model.embed_dim, device=run.device), dim=1)

    def step() -> None:
        with torch.no_grad():
            query_view, key_view = pretrain_view(x, num_frames, **view), pretrain_view(x, num_frames, **view)
        with run.precision.autocast():
            q = query(query_view)
            with torch.no_grad():
                k = key(key_view)
            loss = info_nce(q, k, negatives, cfg.loss.temperature)
        loss.backward()

    def evaluate() -> None:
        with torch.no_grad(), run.precision.autocast():
            query.backbone(center_crop_resize(x, num_frames, 0.95, cfg.model.clip_frames))

    query.train()
    step_seconds = _median_seconds(step, run.device)
    query.eval()
    return step_seconds, _median_seconds(evaluate, run.device)


def _median_seconds(work: Callable[[], None], device: torch.device) -> float:
    times = []
    for attempt in range(PROBE_STEPS + 1):
        started = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if attempt:  # the first call warms caches and kernels up
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"3.2 min"``, ``"5.1 h"`` or ``"12 days"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"

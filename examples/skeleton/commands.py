"""The commands of ``examples/skeleton_moco.py``: each resolves its configuration, runs one protocol (or the
whole pipeline) and writes its outputs into the run folder.

Run folder (``--out``, default a new folder under ``runs/``): ``config.json``, ``checkpoints/``,
``pretrain_log.csv``, ``linear_log.csv`` (and ``semi_log.csv``, ``transfer_log.csv``), ``metrics.json``
(accuracies as fractions in [0, 1], per-epoch histories) and ``summary.png``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from skeleton.training import distributed
from skeleton.training.checkpoint import load_checkpoint, load_pretrained_encoder
from skeleton.config import RunConfig, from_dict, load_split, resolve_config, save_config
from skeleton.training.evaluation import ClassifierResult, ClassifierTraining, evaluate_knn, finetune_on_subsets
from skeleton.training.plots import plot_run
from skeleton.training.pretrain import Pretraining
from skeleton.training.runlog import results_table, update_metrics, write_csv
from skeleton.training.loop import Precision

METRICS_FILE = "metrics.json"
PLOT_FILE = "summary.png"


def _run_dir(out: Optional[str], command: str, dataset: str) -> Path:
    """``--out`` or a new ``runs/<time>-<command>-<dataset>`` folder, the same on every rank."""
    name = out or os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{dataset}")
    path = Path(distributed.gather_objects(name)[0])
    path.mkdir(parents=True, exist_ok=True)
    return path


def _set_threads(cfg: RunConfig) -> None:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)


def _record(out: Path, **entries: Any) -> dict[str, Any]:
    """Merge entries into ``metrics.json`` and redraw the summary plot."""
    metrics = update_metrics(out / METRICS_FILE, **entries)
    plot_run(metrics, out / PLOT_FILE)
    return metrics


# -- pretraining ------------------------------------------------------------------------------------------


def _pretrain_config(args: argparse.Namespace) -> tuple[RunConfig, Optional[dict[str, Any]]]:
    """Resolve the configuration of a pretraining run; also returns the checkpoint it starts from, if any.

    ``--resume`` continues a run with its saved configuration (flags given now override it, e.g. more
    ``--epochs``); ``--init-from`` starts a new run on another run's weights (the model section is taken
    from that checkpoint so the weights fit).
    """
    if args.resume and args.init_from:
        raise SystemExit("--resume and --init-from exclude each other")
    path = args.resume or args.init_from
    checkpoint = load_checkpoint(path) if path else None
    if checkpoint is None:
        return resolve_config(args, args.dataset or "synthetic"), None
    saved = from_dict(checkpoint["config"])
    if args.resume:
        return resolve_config(args, args.dataset or saved.dataset, base=saved), checkpoint
    cfg = resolve_config(args, args.dataset or saved.dataset)
    cfg.model = saved.model
    if cfg.dataset == saved.dataset:
        cfg.synthetic = saved.synthetic
    return cfg, checkpoint


def _pretrain(args: argparse.Namespace, command: str) -> tuple[Pretraining, str, Path]:
    """Run (or continue) pretraining; returns the run, its stop status and the run folder."""
    cfg, checkpoint = _pretrain_config(args)
    _set_threads(cfg)
    device = distributed.init_from_environment(cfg.device)
    resumed_run = Path(args.resume).resolve().parent.parent if args.resume else None  # RUN/checkpoints/last.pt
    out = _run_dir(args.out or (str(resumed_run) if resumed_run else None), command, cfg.dataset)
    run = Pretraining(cfg, out, device)
    if checkpoint is not None:
        (run.resume if args.resume else run.init_from)(checkpoint)
    if run.is_main:
        save_config(cfg, out / "config.json")
    status = run.run()
    if run.is_main:
        write_csv(run.history, out / "pretrain_log.csv")
        _record(
            out,
            dataset=cfg.dataset,
            num_classes=run.train_set.num_classes,
            pretrain_history=run.history,
            checkpoint=str(run.checkpoint_dir / "last.pt"),
        )
        print(f"pretraining {status}: {run.checkpoint_dir / 'last.pt'}", flush=True)
    return run, status, out


def pretrain_command(args: argparse.Namespace) -> int:
    """``pretrain``: MoCo, then MoCo + HaLP from ``--halp-start-epoch``; DDP under torchrun."""
    _, status, _ = _pretrain(args, "pretrain")
    distributed.shutdown()
    return 130 if status == "interrupted" else 0


def pipeline_command(args: argparse.Namespace) -> int:
    """No subcommand: pretraining, then kNN and linear evaluation of the result, and the results table."""
    started = time.perf_counter()
    run, status, out = _pretrain(args, "pipeline")
    distributed.shutdown()
    if status == "interrupted":
        return 130
    if not run.is_main:
        return 0
    cfg = run.cfg
    encoder = run.model.query.backbone
    precision = Precision(cfg.amp, run.device)
    val_set = run.val_set or load_split(cfg, "val")
    knn_top1 = evaluate_knn(
        encoder, run.train_set, val_set, cfg.knn, device=run.device, precision=precision, num_workers=cfg.num_workers
    )
    print(f"kNN top-1: {knn_top1:.4f}", flush=True)
    linear = _classifier(cfg, encoder, run.train_set, val_set, run.device, finetune=False, description="linear")
    write_csv(linear.history, out / "linear_log.csv")
    metrics = _record(
        out,
        chance=1.0 / run.train_set.num_classes,
        knn_top1=knn_top1,
        **_classifier_metrics("linear", linear),
        wall_time_s=time.perf_counter() - started,
    )
    print(results_table(metrics), flush=True)
    print(f"outputs in {out}", flush=True)
    return 0


# -- evaluation -------------------------------------------------------------------------------------------


def _evaluation_setup(
    args: argparse.Namespace, command: str, target_dataset: Optional[str] = None
) -> tuple[RunConfig, nn.Module, Path, torch.device]:
    """Configuration, pretrained encoder, run folder and device of an evaluation command."""
    if distributed.world_size() > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit(f"{command} runs on one device; start it without torchrun")
    if not args.init_from:
        raise SystemExit(f"{command} needs --init-from CHECKPOINT (a pretraining checkpoint)")
    encoder, source = load_pretrained_encoder(args.init_from)
    dataset = target_dataset or args.dataset or source.dataset
    cfg = resolve_config(args, dataset)
    cfg.model = source.model
    if dataset == source.dataset:
        cfg.synthetic = source.synthetic
    _set_threads(cfg)
    torch.manual_seed(cfg.seed)
    out = _run_dir(args.out, command, dataset)
    save_config(cfg, out / f"{command}_config.json")
    return cfg, encoder, out, torch.device(cfg.device)


def _classifier(
    cfg: RunConfig,
    encoder: nn.Module,
    train_set: Any,
    val_set: Any,
    device: torch.device,
    *,
    finetune: bool,
    description: str,
) -> ClassifierResult:
    training = ClassifierTraining(
        encoder,
        train_set.num_classes,
        cfg.finetune if finetune else cfg.linear,
        finetune=finetune,
        device=device,
        precision=Precision(cfg.amp, device),
        seed=cfg.seed,
        num_workers=cfg.num_workers,
        max_steps=cfg.max_steps,
    )
    return training.fit(train_set, val_set, description)


def _classifier_metrics(name: str, result: ClassifierResult) -> dict[str, Any]:
    return {
        f"{name}_top1": result.best_top1,
        f"{name}_top1_last": result.last_top1,
        f"{name}_history": result.history,
    }


def _finish(out: Path, cfg: RunConfig, train_set: Any, **entries: Any) -> int:
    metrics = _record(out, dataset=cfg.dataset, num_classes=train_set.num_classes, **entries)
    print(results_table(metrics), flush=True)
    print(f"outputs in {out}", flush=True)
    return 0


def knn_command(args: argparse.Namespace) -> int:
    """``knn``: 1-NN top-1 of a pretrained encoder's features."""
    cfg, encoder, out, device = _evaluation_setup(args, "knn")
    train_set, val_set = load_split(cfg, "train"), load_split(cfg, "val")
    top1 = evaluate_knn(
        encoder.to(device),
        train_set,
        val_set,
        cfg.knn,
        device=device,
        precision=Precision(cfg.amp, device),
        num_workers=cfg.num_workers,
    )
    return _finish(out, cfg, train_set, knn_top1=top1)


def linear_command(args: argparse.Namespace) -> int:
    """``linear``: linear probe on the frozen encoder."""
    cfg, encoder, out, device = _evaluation_setup(args, "linear")
    train_set, val_set = load_split(cfg, "train"), load_split(cfg, "val")
    result = _classifier(cfg, encoder, train_set, val_set, device, finetune=False, description="linear")
    write_csv(result.history, out / "linear_log.csv")
    return _finish(out, cfg, train_set, **_classifier_metrics("linear", result))


def semi_command(args: argparse.Namespace) -> int:
    """``semi``: fine-tune on ``--ratio`` of the labels, averaged over ``--repeats`` random subsets."""
    cfg, encoder, out, device = _evaluation_setup(args, "semi")
    train_set, val_set = load_split(cfg, "train"), load_split(cfg, "val")
    results = finetune_on_subsets(
        encoder,
        train_set,
        val_set,
        train_set.num_classes,
        cfg.finetune,
        ratio=cfg.semi.ratio,
        repeats=cfg.semi.repeats,
        seed=cfg.seed,
        device=device,
        precision=Precision(cfg.amp, device),
        num_workers=cfg.num_workers,
        max_steps=cfg.max_steps,
    )
    write_csv([{"repeat": i + 1, **row} for i, r in enumerate(results) for row in r.history], out / "semi_log.csv")
    best = np.array([r.best_top1 for r in results])
    return _finish(
        out,
        cfg,
        train_set,
        semi_ratio=cfg.semi.ratio,
        semi_top1=float(best.mean()),
        semi_top1_std=float(best.std()),
        semi_top1_last=float(np.mean([r.last_top1 for r in results])),
        semi_runs=[{"best_top1": r.best_top1, "last_top1": r.last_top1} for r in results],
    )


def transfer_command(args: argparse.Namespace) -> int:
    """``transfer``: fine-tune a pretrained encoder on another dataset (e.g. NTU-60 x-sub -> PKU-MMD II)."""
    if not args.dataset:
        raise SystemExit("transfer needs --dataset, the dataset to fine-tune on (e.g. pku2-xsub)")
    cfg, encoder, out, device = _evaluation_setup(args, "transfer", target_dataset=args.dataset)
    train_set, val_set = load_split(cfg, "train"), load_split(cfg, "val")
    result = _classifier(cfg, encoder, train_set, val_set, device, finetune=True, description="transfer")
    write_csv(result.history, out / "transfer_log.csv")
    return _finish(out, cfg, train_set, **_classifier_metrics("transfer", result))

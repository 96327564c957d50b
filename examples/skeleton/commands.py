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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from skeleton.config import (
    ClassifierConfig,
    RunConfig,
    check_input_layout,
    from_dict,
    load_split,
    resolve_config,
    save_config,
)
from skeleton.data.datasets import SkeletonDataset
from skeleton.training import distributed
from skeleton.training.checkpoint import build_embedding_net, encoder_from_checkpoint, load_checkpoint
from skeleton.training.evaluation import ClassifierResult, ClassifierTraining, evaluate_knn, finetune_on_subsets
from skeleton.training.loop import Precision
from skeleton.training.plots import plot_run
from skeleton.training.pretrain import Pretraining
from skeleton.training.runlog import results_table, update_metrics, write_csv

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
    cfg = resolve_config(args, args.dataset or saved.dataset, default=saved.preset)
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
            **run.baselines,
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
    assert run.val_set is not None
    data = Evaluation(cfg, run.model.query.backbone, out, run.device, run.train_set, run.val_set)
    knn_top1 = data.knn()
    print(f"kNN top-1: {knn_top1:.4f}", flush=True)
    linear = data.classifier(finetune=False, description="linear")
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


@dataclass
class Evaluation:
    """What an evaluation protocol runs on: the run's configuration, the encoder, its output folder and device,
    and the two splits."""

    cfg: RunConfig
    encoder: nn.Module
    out: Path
    device: torch.device
    train_set: SkeletonDataset
    val_set: SkeletonDataset

    def knn(self) -> float:
        return evaluate_knn(
            self.encoder.to(self.device),
            self.train_set,
            self.val_set,
            self.cfg.knn,
            device=self.device,
            precision=Precision(self.cfg.amp, self.device),
            num_workers=self.cfg.num_workers,
            clip_frames=self.cfg.model.clip_frames,
        )

    def classifier(
        self, *, finetune: bool, description: str, cfg: Optional[ClassifierConfig] = None
    ) -> ClassifierResult:
        """Train a linear head on the encoder (frozen, or fine-tuned with it) with ``cfg`` (default: the run's
        ``finetune`` or ``linear`` section)."""
        protocol = cfg or (self.cfg.finetune if finetune else self.cfg.linear)
        training = ClassifierTraining(
            self.encoder,
            self.train_set.num_classes,
            protocol,
            finetune=finetune,
            device=self.device,
            precision=Precision(self.cfg.amp, self.device),
            seed=self.cfg.seed,
            num_workers=self.cfg.num_workers,
            max_steps=self.cfg.max_steps,
            clip_frames=self.cfg.model.clip_frames,
            view_augment=view_augment(self.cfg, protocol),
        )
        return training.fit(self.train_set, self.val_set, description)


def view_augment(cfg: RunConfig, protocol: ClassifierConfig) -> Optional[dict[str, Any]]:
    """The pretraining views' settings when ``protocol`` trains on them (``augment="pretrain"``), else None."""
    return vars(cfg.augment) if protocol.augment == "pretrain" else None


def _evaluation_setup(
    args: argparse.Namespace, command: str, target_dataset: Optional[str] = None
) -> tuple[Evaluation, dict[str, float]]:
    """The evaluation of a pretrained encoder (``--init-from``), and the baselines its pretraining measured."""
    _single_device(command)
    if not args.init_from:
        raise SystemExit(f"{command} needs --init-from CHECKPOINT (a pretraining checkpoint)")
    checkpoint = load_checkpoint(args.init_from)
    encoder, source = encoder_from_checkpoint(checkpoint)
    dataset = target_dataset or args.dataset or source.dataset
    cfg = resolve_config(args, dataset, default=source.preset)
    cfg.model = source.model
    if dataset == source.dataset:
        cfg.synthetic = source.synthetic
        cfg.data_root = cfg.data_root or source.data_root
    evaluation = _evaluation(cfg, encoder, command, args.out)
    check_input_layout(cfg.model, evaluation.train_set, f"the encoder of {args.init_from}")
    return evaluation, dict(checkpoint.get("baselines", {}))


def _single_device(command: str) -> None:
    if distributed.world_size() > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit(f"{command} runs on one device; start it without torchrun")


def _evaluation(cfg: RunConfig, encoder: nn.Module, command: str, out_arg: Optional[str]) -> Evaluation:
    _set_threads(cfg)
    torch.manual_seed(cfg.seed)
    out = _run_dir(out_arg, command, cfg.dataset)
    save_config(cfg, out / f"{command}_config.json")
    return Evaluation(cfg, encoder, out, torch.device(cfg.device), load_split(cfg, "train"), load_split(cfg, "val"))


def _classifier_metrics(name: str, result: ClassifierResult) -> dict[str, Any]:
    return {
        f"{name}_top1": result.best_top1,
        f"{name}_top1_last": result.last_top1,
        f"{name}_best_epoch": result.best_epoch,
        f"{name}_history": result.history,
    }


def _finish(evaluation: Evaluation, **entries: Any) -> int:
    metrics = _record(
        evaluation.out,
        dataset=evaluation.cfg.dataset,
        num_classes=evaluation.train_set.num_classes,
        **entries,
    )
    print(results_table(metrics), flush=True)
    print(f"outputs in {evaluation.out}", flush=True)
    return 0


def knn_command(args: argparse.Namespace) -> int:
    """``knn``: 1-NN top-1 of a pretrained encoder's features."""
    evaluation, baselines = _evaluation_setup(args, "knn")
    return _finish(evaluation, knn_top1=evaluation.knn(), **baselines)


def linear_command(args: argparse.Namespace) -> int:
    """``linear``: linear probe on the frozen encoder."""
    evaluation, baselines = _evaluation_setup(args, "linear")
    result = evaluation.classifier(finetune=False, description="linear")
    write_csv(result.history, evaluation.out / "linear_log.csv")
    return _finish(evaluation, **_classifier_metrics("linear", result), **baselines)


def semi_command(args: argparse.Namespace) -> int:
    """``semi``: fine-tune on ``--ratio`` of the labels, averaged over ``--repeats`` random subsets."""
    evaluation, baselines = _evaluation_setup(args, "semi")
    cfg = evaluation.cfg
    results = finetune_on_subsets(
        evaluation.encoder,
        evaluation.train_set,
        evaluation.val_set,
        evaluation.train_set.num_classes,
        cfg.finetune,
        ratio=cfg.semi.ratio,
        repeats=cfg.semi.repeats,
        seed=cfg.seed,
        sampling=cfg.semi.subset,
        device=evaluation.device,
        precision=Precision(cfg.amp, evaluation.device),
        num_workers=cfg.num_workers,
        max_steps=cfg.max_steps,
        clip_frames=cfg.model.clip_frames,
        view_augment=view_augment(cfg, cfg.finetune),
    )
    write_csv(
        [{"repeat": i + 1, **row} for i, r in enumerate(results) for row in r.history], evaluation.out / "semi_log.csv"
    )
    best = np.array([r.best_top1 for r in results])
    return _finish(
        evaluation,
        semi_ratio=cfg.semi.ratio,
        semi_subset=cfg.semi.subset,
        semi_top1=float(best.mean()),
        semi_top1_std=float(best.std()),
        semi_top1_last=float(np.mean([r.last_top1 for r in results])),
        semi_runs=[{"best_top1": r.best_top1, "last_top1": r.last_top1, "best_epoch": r.best_epoch} for r in results],
        **baselines,
    )


def transfer_command(args: argparse.Namespace) -> int:
    """``transfer``: fine-tune a pretrained encoder on another dataset (e.g. NTU-60 x-sub -> PKU-MMD II)."""
    if not args.dataset:
        raise SystemExit("transfer needs --dataset, the dataset to fine-tune on (e.g. pku2-xsub)")
    evaluation, _ = _evaluation_setup(args, "transfer", target_dataset=args.dataset)
    result = evaluation.classifier(finetune=True, description="transfer")
    write_csv(result.history, evaluation.out / "transfer_log.csv")
    return _finish(evaluation, **_classifier_metrics("transfer", result))


def supervised_command(args: argparse.Namespace) -> int:
    """``supervised``: train the encoder and a linear head from scratch on all training labels, the upper bound
    self-supervised pretraining is measured against."""
    _single_device("supervised")
    if args.init_from:
        raise SystemExit("supervised trains from scratch; to fine-tune a checkpoint on all labels use semi --ratio 1")
    cfg = resolve_config(args, args.dataset or "synthetic")
    train_set = load_split(cfg, "train")
    cfg.model.num_joints, cfg.model.num_bodies = train_set.num_joints, train_set.num_bodies
    torch.manual_seed(cfg.seed)
    encoder = build_embedding_net(cfg).backbone
    evaluation = _evaluation(cfg, encoder, "supervised", args.out)
    result = evaluation.classifier(finetune=True, description="supervised", cfg=cfg.supervised)
    write_csv(result.history, evaluation.out / "supervised_log.csv")
    return _finish(evaluation, **_classifier_metrics("supervised", result))

"""The commands of ``examples/skeleton_moco.py``: each resolves its configuration, checks its inputs before any work,
prints one banner, runs one protocol (or the whole pipeline) and writes its outputs into the run folder.

Run folder (``--out``, default a new folder under ``runs/``): ``config.json``, ``checkpoints/``,
``pretrain_log.csv``, ``linear_log.csv`` (and ``semi_log.csv``, ``transfer_log.csv``), ``metrics.json``
(accuracies as fractions in [0, 1], per-epoch histories) and ``summary.png``. A folder belongs to one run: pretraining
refuses a folder that holds a run already (unless ``--resume``), an evaluation refuses a folder whose metrics come from
another checkpoint, and a lock keeps two processes from writing into one folder at once.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .config import (
    ClassifierConfig,
    RunConfig,
    apply_flags,
    explicit_settings,
    fit_to_dataset,
    flag_name,
    load_recipe,
    recipe_path,
)
from .data.datasets import SkeletonDataset, load_dataset
from .data.layouts import resolve_layout
from .data.registry import dataset_spec
from .data.synthetic import SyntheticConfig
from .training import distributed
from .training.checkpoint import InputSpec, build_embedding_net, encoder_from_checkpoint, load_checkpoint
from .training.estimate import estimate_seconds, format_duration
from .training.evaluation import ClassifierResult, ClassifierTraining, evaluate_knn, finetune_on_subsets
from .training.loop import Precision
from .training.pretrain import Pretraining, build_criterion
from .training.runlog import plot_run, results_table, update_metrics, write_csv

METRICS_FILE = "metrics.json"
PLOT_FILE = "summary.png"
LOCK_FILE = ".lock"


class UsageError(ValueError):
    """A command line that cannot run: a missing or conflicting option. ``skeleton_moco.py`` prints it as one line
    and exits with 2."""


# -- configuration -------------------------------------------------------------------------------------------


def recipe_config(args: argparse.Namespace, dataset: Optional[str] = None) -> RunConfig:
    """The recipe the command line names, with its flags applied.

    ``--config FILE`` reads that file; otherwise ``--recipe`` (default: the dataset's, ``released`` for NTU RGB+D
    and PKU-MMD, ``small`` for everything else) picks ``configs/<family>/<recipe>.yaml``. ``--dataset`` replaces the
    file's dataset.
    """
    name = dataset or args.dataset
    if args.config:
        cfg = load_recipe(Path(args.config), name)
    else:
        name = name or "synthetic"
        spec = dataset_spec(name)
        cfg = load_recipe(recipe_path(args.recipe or spec.default_recipe, spec.family), name)
    return apply_flags(cfg, args)


def check_data_arguments(cfg: RunConfig) -> None:
    """Refuse a dataset that needs a folder without one, and invalid data options, before any work."""
    spec = dataset_spec(cfg.dataset)
    if spec.family != "synthetic" and cfg.data_root is None:
        where = "the folder holding the split files" if spec.family == "custom" else "the output of `prepare`"
        raise UsageError(f"--dataset {cfg.dataset} needs --data-root DIR ({where})")
    check_data_options(cfg)


def check_data_options(cfg: RunConfig) -> None:
    """Refuse the data options that are wrong whatever the data (the synthetic set's, a layout that is neither
    built in nor a readable layout file) without opening any data: ``--print-config`` reports them too."""
    if dataset_spec(cfg.dataset).family == "synthetic":
        SyntheticConfig(**cfg.synthetic)
    if cfg.layout is not None:
        resolve_layout(cfg.layout)


def load_splits(cfg: RunConfig, *, val: bool = True) -> tuple[SkeletonDataset, Optional[SkeletonDataset]]:
    """The run's training split and (with ``val``) its validation split."""
    synthetic = SyntheticConfig(**cfg.synthetic) if dataset_spec(cfg.dataset).family == "synthetic" else None

    def split(name: str) -> SkeletonDataset:
        return load_dataset(cfg.dataset, name, cfg.data_root, synthetic=synthetic, layout=cfg.layout)

    return split("train"), split("val") if val else None


def _set_threads(cfg: RunConfig) -> None:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)


# -- run folders ---------------------------------------------------------------------------------------------


def run_dir(out: Optional[str], command: str, dataset: str) -> Path:
    """``--out`` or a new ``runs/<time>-<command>-<dataset>`` folder, the same on every rank.

    Raises:
        UsageError: if ``--out`` is a file.
    """
    name = out or os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{dataset}")
    path = Path(distributed.gather_objects(name)[0])
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file; expected a run folder (created if missing)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_fresh_run_folder(out: Path) -> None:
    """Refuse to start a new pretraining in a folder that holds a run already (its outputs would mix)."""
    held = [name for name in ("config.json", "checkpoints/last.pt", METRICS_FILE) if (out / name).exists()]
    if held:
        raise UsageError(
            f"--out {out} holds a run already ({', '.join(held)}); continue it with --resume "
            f"{out / 'checkpoints' / 'last.pt'}, or give another --out"
        )


def check_evaluation_folder(out: Path, checkpoint: Path) -> None:
    """Refuse an evaluation into a folder that belongs to another checkpoint's run: the one its ``metrics.json``
    names or, for a pretraining stopped before it recorded any result, the folder's own ``checkpoints/last.pt``."""
    owner = _folder_owner(out)
    if owner is not None and owner[0].resolve() != checkpoint.resolve():
        raise UsageError(f"--out {out} holds {owner[1]}; evaluate {checkpoint} into its own folder")


def _folder_owner(out: Path) -> Optional[tuple[Path, str]]:
    """The checkpoint a run folder belongs to, and the folder's contents in words."""
    metrics = out / METRICS_FILE
    if metrics.is_file():
        try:
            owner = json.loads(metrics.read_text(encoding="utf-8")).get("checkpoint")
        except (ValueError, AttributeError):
            owner = None  # an unreadable metrics.json is moved aside when it is next written
        if owner is not None:
            return Path(owner), f"the results of another run ({owner})"
    if (out / "config.json").is_file() or (out / "checkpoints").is_dir():  # a pretraining stopped before its metrics
        last = out / "checkpoints" / "last.pt"
        return last, (f"another run ({last})" if last.is_file() else "a pretraining stopped before its first checkpoint")
    return None


class RunLock:
    """An exclusive lock on a run folder for the life of a command (``<out>/.lock`` holding the process id).

    A lock left by a process that no longer exists is taken over.

    Raises:
        UsageError: on entering, if a live process holds the folder.
    """

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_FILE
        self.held = False

    def __enter__(self) -> RunLock:
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if _alive(self.path):
                    raise UsageError(
                        f"--out {self.path.parent} is in use by another run (process {self.path.read_text().strip()}); "
                        "wait for it or give another --out"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(str(os.getpid()))
            self.held = True
            return self
        raise UsageError(f"--out {self.path.parent}: cannot take its lock {self.path}")

    def __exit__(self, *exc: Any) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)


def _alive(lock: Path) -> bool:
    try:
        pid = int(lock.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, FileNotFoundError):
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _record(out: Path, **entries: Any) -> dict[str, Any]:
    """Merge entries into ``metrics.json`` and redraw the summary plot."""
    metrics = update_metrics(out / METRICS_FILE, **entries)
    plot_run(metrics, out / PLOT_FILE)
    return metrics


# -- the banner ----------------------------------------------------------------------------------------------


def print_banner(
    command: str,
    cfg: RunConfig,
    out: Path,
    train_set: SkeletonDataset,
    val_set: Optional[SkeletonDataset],
    seconds: Optional[float],
) -> None:
    """The one banner every run starts with: what it reads, what it runs, where it writes and how long it should
    take, with everything the recipe adapted to the data; a recipe far too slow for the device says so."""
    layout = train_set.layout
    halp = (
        f"HaLP weight {cfg.loss.halp_weight:g} from epoch {cfg.loss.halp_start_epoch}"
        if cfg.loss.halp_weight > 0
        else "HaLP off (MoCo alone)"
    )
    lines = [
        f"{command}: {cfg.dataset} ({train_set.num_classes} classes), train {len(train_set)}"
        + (f" / val {len(val_set)}" if val_set is not None else "")
        + f" sequences of {layout.num_joints} joints ({layout.name}) x {train_set.num_coords} coordinates x "
        f"{train_set.num_bodies} bodies",
        f"  recipe {cfg.recipe}: encoder {cfg.model.encoder}, {cfg.pretrain.epochs} pretraining epochs of batch "
        f"{cfg.pretrain.batch_size}, queue {cfg.loss.memory_bank_size}, {halp}; device {cfg.device}, "
        f"{torch.get_num_threads()} threads, "
        f"{cfg.num_workers} workers",
        *(f"  adapted: {note}" for note in cfg.adapted),
        f"  run folder: {out}",
    ]
    if seconds is not None:
        lines.append(f"  estimated time: {format_duration(seconds)} (measured on a few steps of this run's model)")
        if seconds > 6 * 3600:
            hint = "a GPU (--device cuda)" if cfg.device == "cpu" else "more GPUs (torchrun)"
            lines.append(
                f"  warning: this recipe needs about {format_duration(seconds)} on {cfg.device}; it is meant for {hint}"
                + (", or use --recipe small on a CPU" if cfg.recipe != "small" else "")
            )
    print("\n".join(lines), flush=True)


# -- pretraining ---------------------------------------------------------------------------------------------


SHAPE_SETTINGS = ("loss.memory_bank_size", "loss.prototype_window", "loss.num_prototypes", "model.")
"""Settings a resumed run cannot change: they give its model's and its loss's buffers their shapes."""


def _pretrain_config(args: argparse.Namespace) -> tuple[RunConfig, Optional[dict[str, Any]]]:
    """The configuration of a pretraining run, and the checkpoint it starts from, if any.

    ``--resume`` continues a run with its saved configuration (flags given now override it, e.g. more
    ``--pretrain-epochs``); ``--init-from`` starts a new run on another run's weights (the model section is that
    checkpoint's, so the weights fit).
    """
    if args.resume and args.init_from:
        raise UsageError("--resume and --init-from exclude each other")
    path = args.resume or args.init_from
    checkpoint = load_checkpoint(path) if path else None
    if checkpoint is None:
        return recipe_config(args), None
    saved = RunConfig.from_dict(checkpoint["config"])
    if args.resume:
        if args.dataset and dataset_spec(args.dataset).name != dataset_spec(saved.dataset).name:
            raise UsageError(f"--resume continues its run on {saved.dataset}; --dataset {args.dataset} cannot change")
        if args.config or args.recipe:
            option = "--config" if args.config else "--recipe"
            raise UsageError(f"--resume continues its run with its saved configuration; {option} cannot be given")
        fixed = [name for name in explicit_settings(args) if name.startswith(SHAPE_SETTINGS)]
        if fixed:
            section, _, field_name = fixed[0].partition(".")
            raise UsageError(f"--resume: {flag_name(section, field_name)} cannot change in a resumed run")
        cfg = apply_flags(saved, args)
        cfg.adapted = []
        return cfg, checkpoint
    cfg = recipe_config(args, args.dataset or saved.dataset)
    model_flags = [name for name in explicit_settings(args) if name.startswith("model.")]
    if model_flags:
        section, _, field_name = model_flags[0].partition(".")
        raise UsageError(f"--init-from keeps the checkpoint's encoder; {flag_name(section, field_name)} cannot change")
    cfg.model = saved.model
    return cfg, checkpoint


def _check_loss(cfg: RunConfig) -> None:
    """Build the criterion once to report a setting it refuses as a flag error, before any work."""
    try:
        build_criterion(cfg, warmup=0)
    except ValueError as error:
        message = str(error)
        name = next((field for field in vars(cfg.loss) if message.startswith(field)), None)
        raise UsageError(f"{flag_name('loss', name)}: {message}" if name else message) from None


def _pretrain(args: argparse.Namespace, command: str) -> tuple[Pretraining, str, Path]:
    """Run (or continue) pretraining; returns the run, its stop status and the run folder."""
    cfg, checkpoint = _pretrain_config(args)
    check_data_arguments(cfg)
    _set_threads(cfg)
    device = distributed.init_from_environment(cfg.device)
    resumed_run = Path(args.resume).resolve().parent.parent if args.resume else None  # RUN/checkpoints/last.pt
    out = run_dir(args.out or (str(resumed_run) if resumed_run else None), command, cfg.dataset)
    if not args.resume and distributed.is_main():
        check_fresh_run_folder(out)
    train_set, val_set = load_splits(cfg, val=distributed.is_main())
    if checkpoint is None or not args.resume:
        fit_to_dataset(cfg, len(train_set), distributed.world_size(), num_coords=train_set.num_coords)
    _check_loss(cfg)
    with RunLock(out) if distributed.is_main() else nullcontext():
        run = Pretraining(cfg, out, device, train_set, val_set, max_steps=args.max_steps)
        if checkpoint is not None:
            (run.resume if args.resume else run.init_from)(checkpoint)
        if run.is_main:
            seconds = estimate_seconds(run, with_evaluation=command == "pipeline")
            print_banner(command, cfg, out, train_set, val_set, seconds)
            cfg.save(out / "config.json")
        status = run.run()
        if run.is_main:
            write_csv(run.history, out / "pretrain_log.csv")
            _record(
                out,
                dataset=cfg.dataset,
                num_classes=train_set.num_classes,
                pretrain_history=run.history,
                checkpoint=str((run.checkpoint_dir / "last.pt").resolve()),
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
    with RunLock(out):
        data = Evaluation(cfg, run.model.query.backbone, out, run.device, run.train_set, run.val_set, args.max_steps)
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


# -- evaluation ----------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """What an evaluation protocol runs on: the run's configuration, the encoder, its output folder and device,
    the two splits and the step limit."""

    cfg: RunConfig
    encoder: nn.Module
    out: Path
    device: torch.device
    train_set: SkeletonDataset
    val_set: SkeletonDataset
    max_steps: Optional[int] = None

    def announce(self, command: str) -> None:
        """Print the banner and save the configuration as ``<command>_config.json``: called under the run folder's
        lock, so that a command refused by the lock writes nothing."""
        print_banner(command, self.cfg, self.out, self.train_set, self.val_set, None)
        self.cfg.save(self.out / f"{command}_config.json")

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
        ``finetune`` or ``linear`` section). The head's initial weights are drawn after seeding with the run's seed,
        so the pipeline's linear stage and ``linear --init-from`` on its checkpoint train the same head."""
        protocol = cfg or (self.cfg.finetune if finetune else self.cfg.linear)
        torch.manual_seed(self.cfg.seed)
        training = ClassifierTraining(
            self.encoder,
            self.train_set.num_classes,
            protocol,
            finetune=finetune,
            device=self.device,
            precision=Precision(self.cfg.amp, self.device),
            seed=self.cfg.seed,
            num_workers=self.cfg.num_workers,
            max_steps=self.max_steps,
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
    """The evaluation of a pretrained encoder (``--init-from``), and the baselines its pretraining measured.

    The configuration is the checkpoint's with every option given now on top (explicit options beat the
    checkpoint's); on another dataset than the checkpoint's, its data options (folder, layout, synthetic options)
    are not carried over.
    """
    _single_device(command)
    if not args.init_from:
        raise UsageError(f"{command} needs --init-from CHECKPOINT (a pretraining checkpoint, e.g. RUN/checkpoints/last.pt)")
    checkpoint = load_checkpoint(args.init_from)
    encoder, saved, spec = encoder_from_checkpoint(checkpoint)
    dataset = target_dataset or args.dataset or saved.dataset
    if dataset != saved.dataset:
        saved.dataset, saved.data_root, saved.layout, saved.synthetic = dataset, None, None, {}
    cfg = apply_flags(saved, args)
    cfg.adapted = []
    check_data_arguments(cfg)
    _set_threads(cfg)
    torch.manual_seed(cfg.seed)
    out = run_dir(args.out, command, cfg.dataset)
    check_evaluation_folder(out, Path(args.init_from))
    train_set, val_set = load_splits(cfg)
    assert val_set is not None
    spec.check(train_set, f"the encoder of {args.init_from}")
    fit_to_dataset(cfg, len(train_set), num_coords=train_set.num_coords)
    evaluation = Evaluation(cfg, encoder, out, torch.device(cfg.device), train_set, val_set, args.max_steps)
    return evaluation, dict(checkpoint.get("baselines", {}))


def _single_device(command: str) -> None:
    if distributed.world_size() > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(f"{command} runs on one device; start it without torchrun")


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
    with RunLock(evaluation.out):
        evaluation.announce("knn")
        return _finish(evaluation, knn_top1=evaluation.knn(), checkpoint=_owner(args), **baselines)


def linear_command(args: argparse.Namespace) -> int:
    """``linear``: linear probe on the frozen encoder."""
    evaluation, baselines = _evaluation_setup(args, "linear")
    with RunLock(evaluation.out):
        evaluation.announce("linear")
        result = evaluation.classifier(finetune=False, description="linear")
        write_csv(result.history, evaluation.out / "linear_log.csv")
        return _finish(evaluation, **_classifier_metrics("linear", result), checkpoint=_owner(args), **baselines)


def _owner(args: argparse.Namespace) -> str:
    return str(Path(args.init_from).resolve())


def semi_command(args: argparse.Namespace) -> int:
    """``semi``: fine-tune on ``--semi-ratio`` of the labels, averaged over ``--semi-repeats`` random subsets."""
    evaluation, baselines = _evaluation_setup(args, "semi")
    cfg = evaluation.cfg
    with RunLock(evaluation.out):
        evaluation.announce("semi")
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
            max_steps=evaluation.max_steps,
            clip_frames=cfg.model.clip_frames,
            view_augment=view_augment(cfg, cfg.finetune),
        )
        write_csv(
            [{"repeat": i + 1, **row} for i, r in enumerate(results) for row in r.history],
            evaluation.out / "semi_log.csv",
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
            checkpoint=_owner(args),
            **baselines,
        )


def transfer_command(args: argparse.Namespace) -> int:
    """``transfer``: fine-tune a pretrained encoder on another dataset (e.g. NTU-60 x-sub -> PKU-MMD II)."""
    if not args.dataset:
        raise UsageError("transfer needs --dataset, the dataset to fine-tune on (e.g. pku2-xsub)")
    evaluation, _ = _evaluation_setup(args, "transfer", target_dataset=args.dataset)
    with RunLock(evaluation.out):
        evaluation.announce("transfer")
        result = evaluation.classifier(finetune=True, description="transfer")
        write_csv(result.history, evaluation.out / "transfer_log.csv")
        return _finish(evaluation, **_classifier_metrics("transfer", result), checkpoint=_owner(args))


def supervised_command(args: argparse.Namespace) -> int:
    """``supervised``: train the encoder and a linear head from scratch on all training labels, the upper bound
    self-supervised pretraining is measured against."""
    _single_device("supervised")
    if args.init_from:
        raise UsageError("supervised trains from scratch; to fine-tune a checkpoint on all labels use semi --semi-ratio 1")
    cfg = recipe_config(args)
    check_data_arguments(cfg)
    _set_threads(cfg)
    out = run_dir(args.out, "supervised", cfg.dataset)
    check_fresh_run_folder(out)
    train_set, val_set = load_splits(cfg)
    assert val_set is not None
    fit_to_dataset(cfg, len(train_set), num_coords=train_set.num_coords)
    torch.manual_seed(cfg.seed)
    encoder = build_embedding_net(cfg.model, InputSpec.of(train_set)).backbone
    with RunLock(out):
        evaluation = Evaluation(cfg, encoder, out, torch.device(cfg.device), train_set, val_set, args.max_steps)
        evaluation.announce("supervised")
        result = evaluation.classifier(finetune=True, description="supervised", cfg=cfg.supervised)
        write_csv(result.history, out / "supervised_log.csv")
        return _finish(evaluation, **_classifier_metrics("supervised", result))

"""Run configuration: the ``paper`` and ``cpu`` presets, one command-line flag per value, JSON round trip.

Every value of a preset can be overridden by its flag; :func:`resolve_config` applies the flags given on the
command line to the preset and the result is saved with the run (``config.json`` and every checkpoint).
Flags are generated from the dataclass fields: in the section a command runs a field ``lr`` is ``--lr``;
in the other sections it carries the section name, e.g. ``--linear-lr`` in the whole pipeline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from halp_loss.functional import OBJECTIVES
from halp_loss.loss import ESTIMATORS
from skeleton.bounds import bounded
from skeleton.data.datasets import SkeletonDataset, load_dataset
from skeleton.data.synthetic import SyntheticConfig
from skeleton.models.encoders import ENCODERS, WEIGHT_INITS
from skeleton.models.moco import KEY_BATCHNORM
from skeleton.training.loop import LR_SCHEDULES

PRESETS = ("paper", "cpu")
FEATURE_NORMS = ("none", "batchnorm")
AUGMENTS = ("crop", "pretrain")
AMP_MODES = ("none", "bf16", "fp16")
SUBSETS = ("released", "per-class")
"""Labelled subsets of the semi-supervised protocol (:func:`skeleton.training.evaluation.labelled_subset`)."""
RELEASED_EVAL_EVERY = 5
"""The released classification scripts evaluate the test set after every 5th epoch and report the best of those."""


def _option(default: Any, help_text: str, choices: Optional[tuple[str, ...]] = None, flag: bool = True) -> Any:
    return field(default=default, metadata={"help": help_text, "choices": choices, "flag": flag})


@dataclass
class ModelConfig:
    """Encoder and projection head (SPEC section 3.2)."""

    encoder: str = _option("gru", "encoder: released paired-GRU, true bidirectional GRU, or ST-GCN", ENCODERS)
    hidden_size: int = _option(1024, "GRU hidden units per direction")
    num_layers: int = _option(3, "GRU layers")
    stgcn_width: int = _option(64, "ST-GCN base width (feature = 4x width; SkeletonCLR/AimCLR use 16)")
    tcn_width: int = _option(128, "temporal-convolution encoder base width (feature = 4x width)")
    embed_dim: int = _option(128, "output dim of the projection head")
    weight_init: str = _option(
        "pytorch",
        "released: xavier on the 2-D encoder weights (GRU) and the head's last layer; pytorch: defaults",
        WEIGHT_INITS,
    )
    clip_frames: int = _option(64, "frames of every clip the encoder sees (pretraining views, evaluation crops)")
    num_joints: int = _option(25, "joints V of the input, taken from the training data", flag=False)
    num_bodies: int = _option(2, "bodies M of the input, taken from the training data", flag=False)


@dataclass
class PretrainConfig:
    """MoCo pretraining with the HaLP loss from ``halp_start_epoch`` on (SPEC sections 2 and 3.2)."""

    epochs: int = _option(451, "total pretraining epochs (the run stops at this epoch)")
    halp_start_epoch: int = _option(200, "first epoch with the HaLP term; before it plain MoCo")
    batch_size: int = _option(64, "global batch size (split evenly over DDP ranks)")
    lr: float = _option(0.01, "SGD learning rate")
    momentum: float = _option(0.9, "SGD momentum")
    weight_decay: float = _option(1e-4, "SGD weight decay")
    lr_milestones: tuple[int, ...] = _option((351,), "epochs at which the learning rate is multiplied by 0.1")
    lr_schedule: str = _option("step", "step (x0.1 at the milestones) or cosine decay over the epochs", LR_SCHEDULES)
    queue_size: int = _option(16384, "MoCo queue length K")
    key_momentum: float = _option(0.999, "momentum m of the key encoder")
    key_bn: str = _option("shuffle", "key-encoder BatchNorm under DDP", KEY_BATCHNORM)
    temperature: float = _option(0.07, "temperature T of all logits")
    halp_weight: float = _option(2.0, "weight mu of the HaLP term")
    num_prototypes: int = _option(20, "prototypes P")
    num_positives: int = _option(100, "hallucinated positives M per anchor")
    lam: float = _option(0.8, "lambda: positives at t in [(1-lambda) t_max, t_max]")
    objective: str = _option("align", "HaLP term: released alignment, or InfoNCE per positive", OBJECTIVES)
    estimator: str = _option("sampled", "HaLP term from M sampled positives or their expectation", ESTIMATORS)
    prototype_window: int = _option(256, "most recent keys clustered into prototypes")
    prototype_every: int = _option(10, "refit the prototypes every this many steps")
    knn_every: int = _option(0, "kNN-evaluate every this many epochs during pretraining (0: never)")
    save_every: int = _option(0, "keep a checkpoint every this many epochs besides last.pt (0: never)")


@dataclass
class AugmentConfig:
    """The two random views of pretraining (SPEC section 3.3): temporal crop-resize, shear or joint corruption,
    and an optional rotation (not in the released recipe)."""

    crop_min_ratio: float = _option(0.1, "crops keep a fraction U(ratio, 1) of the valid frames...")
    crop_min_frames: int = _option(64, "...but at least this many (all when fewer are valid)")
    shear: float = _option(1.0, "bound of the shear coefficients")
    corrupt_prob: float = _option(0.5, "probability of joint corruption instead of shear")
    rotate_degrees: float = _option(0.0, "random rotation about each axis up to this angle (0: none)")


@dataclass
class ClassifierConfig:
    """Supervised training of a classifier on the encoder: linear probe or fine-tuning (SPEC section 4)."""

    epochs: int = _option(80, "training epochs")
    batch_size: int = _option(64, "batch size")
    lr: float = _option(0.005, "SGD learning rate")
    momentum: float = _option(0.9, "SGD momentum")
    weight_decay: float = _option(0.0, "SGD weight decay")
    lr_milestones: tuple[int, ...] = _option((50, 70), "epochs at which the learning rate is multiplied by 0.1")
    lr_schedule: str = _option("step", "step (x0.1 at the milestones) or cosine decay over the epochs", LR_SCHEDULES)
    eval_every: int = _option(1, "best top-1 over every this many epochs and the last (the released script: 5)")
    feature_norm: str = _option("none", "standardize the features before the linear layer", FEATURE_NORMS)
    augment: str = _option("crop", "training clips: the protocol's temporal crop, or the pretraining views", AUGMENTS)


@dataclass
class KNNConfig:
    """1-NN evaluation on pre-head features."""

    batch_size: int = _option(256, "batch size of feature extraction")
    chunk_size: int = _option(8192, "rows per block of the similarity matrix")


@dataclass
class SemiConfig:
    """Semi-supervised protocol: fine-tune on a labelled fraction of the training set."""

    ratio: float = _option(0.01, "labelled fraction of the training set")
    repeats: int = _option(5, "random labelled subsets to average over")
    subset: str = _option(
        "per-class", "released: int(N * ratio) at random (CMD); per-class: round(ratio * n_c), >= 1 each", SUBSETS
    )


@dataclass
class RunConfig:
    """Everything a run depends on; saved as ``config.json`` and inside every checkpoint."""

    preset: str = "paper"
    dataset: str = "synthetic"
    data_root: Optional[str] = None
    seed: int = 0
    device: str = "cpu"
    amp: str = "none"
    num_workers: int = 4
    threads: Optional[int] = None
    max_steps: Optional[int] = None
    synthetic: dict[str, Any] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    linear: ClassifierConfig = field(default_factory=ClassifierConfig)
    finetune: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(lr=0.01))
    supervised: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(lr=0.01))
    knn: KNNConfig = field(default_factory=KNNConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "pretrain": PretrainConfig,
    "augment": AugmentConfig,
    "linear": ClassifierConfig,
    "finetune": ClassifierConfig,
    "supervised": ClassifierConfig,
    "knn": KNNConfig,
    "semi": SemiConfig,
}


def default_preset(dataset: str) -> str:
    """The synthetic dataset defaults to the ``cpu`` preset, the real ones to ``paper``."""
    return "cpu" if dataset == "synthetic" else "paper"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def preset_config(preset: str, dataset: str) -> RunConfig:
    """The configuration of a preset for a dataset.

    ``paper`` is SPEC sections 3.2 and 4 (the NTU settings; PKU-MMD II pretrains longer, to epoch 1001 with
    the HaLP phase from 500 and the step at 801, with mu = 1 and linear lr 0.001), with the released code's
    xavier initialization, best top-1 over every 5th epoch and CMD's unstratified labelled subsets. ``cpu`` is a
    small recipe that runs the whole pipeline in minutes on two CPU cores and learns on real recordings (NW-UCLA)
    as well as on the synthetic data: a temporal-convolution encoder, relative crops, shear and rotation, cosine
    schedules; it keeps PyTorch's initialization, evaluation after every epoch and per-class labelled subsets.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
    cfg = RunConfig(preset=preset, dataset=dataset, device=default_device())
    if preset == "paper":
        if dataset.startswith("pku2"):
            cfg.pretrain.epochs, cfg.pretrain.halp_start_epoch, cfg.pretrain.lr_milestones = 1001, 500, (801,)
            cfg.pretrain.halp_weight = 1.0
            cfg.linear.lr = 0.001
        # The released code's initialization, test schedule and labelled subsets (README, "Differences from the
        # released code"); the dataclass defaults, which the cpu preset keeps, are this pipeline's own.
        cfg.model.weight_init = "released"
        for protocol in (cfg.linear, cfg.finetune, cfg.supervised):
            protocol.eval_every = RELEASED_EVAL_EVERY
        cfg.semi.subset = "released"
        return cfg
    # Small datasets (synthetic, NW-UCLA, a custom folder) are read in the main process.
    cfg.num_workers = 0
    cfg.model = ModelConfig(encoder="tcn", tcn_width=128, clip_frames=50)
    # Many short epochs of a fast encoder: on a dataset of ~1,000 sequences the ~200 steps of a dozen epochs
    # leave the encoder near its random initialization. The queue covers about one epoch of keys; the positives
    # of HaLP are scored against it ("infonce") because the released "align" term, which has no negatives,
    # pulls a briefly trained embedding toward the prototypes' common direction.
    cfg.pretrain = dataclasses.replace(
        cfg.pretrain,
        epochs=100,
        halp_start_epoch=50,
        batch_size=128,
        lr=0.1,
        lr_schedule="cosine",
        queue_size=1024,
        key_momentum=0.99,
        temperature=0.1,
        objective="infonce",
        knn_every=10,
    )
    # Real recordings are short (NW-UCLA: median 31 frames), so crops are relative, not at least 64 frames;
    # joint corruption of 60 % of the joints erases a single person, and a small rotation stands in for it.
    cfg.augment = AugmentConfig(crop_min_ratio=0.5, crop_min_frames=1, shear=1.0, corrupt_prob=0.0, rotate_degrees=17)
    # Standardized features: the probe converges in 30 epochs (NW-UCLA linear 0.84 vs 0.80 on raw features).
    cfg.linear = dataclasses.replace(cfg.linear, epochs=30, lr=0.1, lr_schedule="cosine", feature_norm="batchnorm")
    cfg.finetune = dataclasses.replace(cfg.finetune, epochs=30, lr=0.05, lr_schedule="cosine")
    # Trained from scratch on ~1,000 sequences, the encoder overfits the temporal crops alone (NW-UCLA 0.73); the
    # pretraining views and weight decay make it the upper bound it should be, given the epochs to fit them (seed 0:
    # 0.85 after 60 epochs, still at 0.83 train accuracy; 0.90 after 120; lr 0.1 fits worse, 0.82).
    cfg.supervised = dataclasses.replace(
        cfg.supervised, epochs=120, lr=0.05, weight_decay=5e-4, lr_schedule="cosine", augment="pretrain"
    )
    cfg.semi = SemiConfig(ratio=0.1, repeats=2)
    return cfg


def _flag(section: str, name: str, unprefixed: tuple[str, ...]) -> str:
    prefix = "" if section in (*unprefixed, "model") else f"{section}-"
    return "--" + (prefix + name).replace("_", "-")


def add_config_arguments(
    parser: argparse.ArgumentParser, sections: tuple[str, ...], unprefixed: tuple[str, ...]
) -> None:
    """Add one flag per field of the given sections (default: keep the preset's value).

    Args:
        parser: the (sub)command's parser.
        sections: section names of :class:`RunConfig` the command uses.
        unprefixed: sections whose flags go without prefix (the ``model`` section always does), e.g.
            ``linear`` for the ``linear`` command, so ``--epochs`` means the command's own epochs.
    """
    for section in sections:
        cls = SECTIONS[section]
        group = parser.add_argument_group(f"{section} options (override the preset)")
        hints = typing.get_type_hints(cls)
        for spec in dataclasses.fields(cls):
            if not spec.metadata["flag"]:
                continue
            kind = hints[spec.name]
            kwargs: dict[str, Any] = {"dest": f"{section}.{spec.name}", "default": None, "help": spec.metadata["help"]}
            if typing.get_origin(kind) is tuple:
                kwargs.update(type=bounded(int, spec.name), nargs="*", metavar="EPOCH")
            else:
                choices = spec.metadata["choices"]
                parse = bounded(kind, spec.name) if kind in (int, float) else kind  # out of range: argparse error
                kwargs.update(type=parse, choices=choices, metavar=None if choices else spec.name.upper())
            group.add_argument(_flag(section, spec.name, unprefixed), **kwargs)


def resolve_config(
    args: argparse.Namespace, dataset: str, base: Optional[RunConfig] = None, default: Optional[str] = None
) -> RunConfig:
    """The preset (or ``base``) with every flag given on the command line applied.

    Args:
        args: parsed arguments with ``preset``, the common flags and the section flags of
            :func:`add_config_arguments`.
        dataset: dataset the run uses (selects the preset's dataset-specific values).
        base: start from this configuration (e.g. the one of a resumed run) instead of a preset.
        default: the preset when ``--preset`` is not given (default: :func:`default_preset` of the dataset).
    """
    preset = args.preset or default or default_preset(dataset)
    cfg = base if base is not None else preset_config(preset, dataset)
    cfg = from_dict(to_dict(cfg))  # a copy
    cfg.dataset = dataset
    for name in ("data_root", "seed", "device", "amp", "num_workers", "threads", "max_steps"):
        if getattr(args, name, None) is not None:
            setattr(cfg, name, getattr(args, name))
    if getattr(args, "synthetic", None):
        cfg.synthetic = {**cfg.synthetic, **parse_synthetic(args.synthetic)}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, name = dest.split(".")
            setattr(getattr(cfg, section), name, tuple(value) if isinstance(value, list) else value)
    return cfg


def parse_synthetic(pairs: list[str]) -> dict[str, Any]:
    """``["num_classes=5", "noise_std=0.01"]`` -> ``{"num_classes": 5, "noise_std": 0.01}``, typed and checked
    against :class:`~skeleton.data.synthetic.SyntheticConfig`."""
    hints = typing.get_type_hints(SyntheticConfig)
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in hints:
            raise ValueError(f"--synthetic expects NAME=VALUE with NAME one of {sorted(hints)}, got {pair!r}")
        values[name] = hints[name](text)
    SyntheticConfig(**values)  # validates
    return values


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Inverse of :func:`to_dict` (tuples come back from JSON lists)."""
    values = dict(data)
    for section, cls in SECTIONS.items():
        fields = dict(values.get(section, {}))
        for spec in dataclasses.fields(cls):
            if isinstance(fields.get(spec.name), list):
                fields[spec.name] = tuple(fields[spec.name])
        values[section] = cls(**fields)
    return RunConfig(**values)


def save_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def check_input_layout(model: ModelConfig, dataset: SkeletonDataset, what: str) -> None:
    """Raise a ``ValueError`` naming both layouts when an encoder was built for other joints or bodies than the
    dataset's (e.g. an NTU checkpoint evaluated on NW-UCLA)."""
    if (model.num_joints, model.num_bodies) != (dataset.num_joints, dataset.num_bodies):
        raise ValueError(
            f"{what} takes {model.num_joints} joints x {model.num_bodies} bodies, but the data has "
            f"{dataset.num_joints} joints x {dataset.num_bodies} bodies"
        )


def load_split(cfg: RunConfig, split: str) -> SkeletonDataset:
    """The ``"train"`` or ``"val"`` split of the run's dataset (``cfg.synthetic`` configures the synthetic one)."""
    synthetic = SyntheticConfig(**cfg.synthetic) if cfg.dataset == "synthetic" else None
    return load_dataset(cfg.dataset, split, cfg.data_root, synthetic=synthetic)

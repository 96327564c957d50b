"""Run configuration: recipes as YAML files, one command-line flag per value, the values fitted to the dataset.

A recipe is a YAML file under ``configs/`` (``configs/<dataset family>/<recipe>.yaml``); it may start from another
with ``_base_: ../_base_/small.yaml`` and override what differs. The complete recipes are
``configs/_base_/released.yaml`` (the released NTU / PKU-MMD recipe) and ``configs/_base_/small.yaml`` (the small-data
recipe). ``load_recipe`` reads one into a ``RunConfig``, every section complete: a file that omits a value,
names an unknown one or gives it the wrong type is refused with the file and the key.

Flags are generated from the dataclass fields and override the recipe: the ``model`` and ``loss`` sections go
without prefix (``--encoder``, ``--temperature``, ``--memory-bank-size``: the loss's flags are
``halp_loss.HaLPInfoNCE``'s argument names), every other section carries its name (``--pretrain-epochs``,
``--linear-lr``, ``--augment-shear``), so a flag means the same in every command that has it.

Some values of the small-data recipe are ``auto``: ``fit_to_dataset`` resolves them from the size of the
training set (and adapts any batch or queue a training set cannot fill), and the run records what it chose.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .bounds import SETTING_BOUNDS, bounded
from .fileio import InputError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
"""The recipes shipped with the examples: ``configs/`` at the repository root."""
BASE_KEY = "_base_"
AUTO = "auto"
RECIPE_ALIASES = {"paper": "released", "cpu": "small"}
"""Names of the recipes before they were files (``--preset paper`` / ``--preset cpu``)."""
AMP_MODES = ("none", "bf16", "fp16")
LR_SCHEDULES = ("step", "cosine")
FEATURE_NORMS = ("none", "batchnorm")
CLASSIFIER_VIEWS = ("crop", "pretrain")
SUBSETS = ("released", "per-class")
KEY_BATCHNORM = ("shuffle", "sync", "local")
ENCODERS = ("gru", "bigru", "stgcn", "tcn")
WEIGHT_INITS = ("released", "pytorch")
OBJECTIVES = ("align", "infonce")
ESTIMATORS = ("sampled", "expected")

MaybeAuto = Union[int, str]


def _option(help_text: str, choices: Optional[tuple[str, ...]] = None, auto: bool = False) -> Any:
    return field(metadata={"help": help_text, "choices": choices, "auto": auto})


@dataclass
class ModelConfig:
    """The encoder and its projection head."""

    encoder: str = _option(
        "gru: the released pairs of forward GRUs; bigru: a true bidirectional GRU; stgcn: ST-GCN on the layout's "
        "graph; tcn: temporal convolutions over all joints' positions and velocities",
        ENCODERS,
    )
    hidden_size: int = _option("GRU hidden units per direction (gru, bigru)")
    num_layers: int = _option("GRU layers (gru, bigru)")
    stgcn_width: int = _option("ST-GCN base width; the feature is 4x as wide (stgcn)")
    tcn_width: int = _option("temporal-convolution base width; the feature is 4x as wide (tcn)")
    embed_dim: int = _option("output width of the projection head")
    weight_init: str = _option(
        "released: xavier on the 2-D encoder weights and the head's last layer; pytorch: PyTorch's defaults",
        WEIGHT_INITS,
    )
    clip_frames: int = _option("frames of every clip the encoder sees (pretraining views, evaluation crops)")


@dataclass
class LossConfig:
    """The criterion, ``halp_loss.HaLPInfoNCE`` (same argument names), and when its HaLP term starts."""

    temperature: float = _option("temperature T of every logit")
    halp_weight: float = _option("weight mu of the HaLP term (0: plain MoCo throughout)")
    halp_start_epoch: MaybeAuto = _option(
        "first pretraining epoch with the HaLP term; plain MoCo before it (auto: half of the epochs)", auto=True
    )
    num_prototypes: int = _option("prototypes P fitted on recent keys")
    num_positives: int = _option("hallucinated positives M per anchor (estimator sampled)")
    lam: float = _option("lambda: positives at t in [(1 - lambda) t_max, t_max]")
    objective: str = _option("HaLP term: the released alignment, or InfoNCE per positive", OBJECTIVES)
    estimator: str = _option("HaLP term from M sampled positives, or their exact expectation", ESTIMATORS)
    prototype_window: int = _option("most recent keys clustered into prototypes")
    prototype_every: int = _option("refit the prototypes every this many steps")
    memory_bank_size: MaybeAuto = _option(
        "MoCo queue length K (auto: half of the training set, at least a batch, at most 4096)", auto=True
    )


@dataclass
class PretrainConfig:
    """MoCo pretraining: schedule, optimizer and the momentum key encoder."""

    epochs: MaybeAuto = _option("pretraining epochs (auto: enough epochs for --pretrain-steps steps)", auto=True)
    steps: Optional[int] = _option("optimizer steps the auto epochs aim at (read only when epochs is auto)")
    batch_size: MaybeAuto = _option(
        "global batch size, split evenly over DDP ranks (auto: a quarter of the training set, at most 128)", auto=True
    )
    lr: float = _option("SGD learning rate")
    momentum: float = _option("SGD momentum")
    weight_decay: float = _option("SGD weight decay")
    lr_schedule: str = _option("step (x0.1 at the milestones) or cosine decay over the epochs", LR_SCHEDULES)
    lr_milestones: tuple[int, ...] = _option("epochs at which the step schedule multiplies the rate by 0.1")
    key_momentum: float = _option("momentum m of the key encoder")
    key_bn: str = _option("the key encoder's BatchNorm under DDP: MoCo's shuffle, sync or local", KEY_BATCHNORM)
    knn_every: int = _option("kNN-evaluate every this many epochs during pretraining (0: never)")
    save_every: int = _option("keep a checkpoint every this many epochs besides last.pt (0: never)")


@dataclass
class AugmentConfig:
    """The two random views of pretraining: temporal crop-resize, shear or joint corruption, a planar view change
    (2-D data), rotation."""

    crop_min_ratio: float = _option("crops keep a fraction U(ratio, 1) of the valid frames...")
    crop_min_frames: int = _option("...but at least this many (all of them when fewer are valid)")
    shear: float = _option("bound of the shear coefficients")
    corrupt_prob: float = _option("probability of joint corruption instead of shear")
    mirror_prob: float = _option("2-D data only: probability of a mirror image (a camera on the other side)")
    foreshorten: float = _option("2-D data only: the horizontal axis shrunk by up to this fraction (a turned camera)")
    rotate_degrees: float = _option("random rotation up to this angle about each axis (in-plane for 2-D data)")


@dataclass
class ClassifierConfig:
    """A classifier trained on the encoder: the linear probe (frozen encoder) or fine-tuning."""

    epochs: int = _option("training epochs")
    batch_size: int = _option("batch size (at most the training set)")
    lr: float = _option("SGD learning rate")
    momentum: float = _option("SGD momentum")
    weight_decay: float = _option("SGD weight decay")
    lr_schedule: str = _option("step (x0.1 at the milestones) or cosine decay over the epochs", LR_SCHEDULES)
    lr_milestones: tuple[int, ...] = _option("epochs at which the step schedule multiplies the rate by 0.1")
    eval_every: int = _option("best top-1 over every this many epochs and the last (the released scripts: 5)")
    feature_norm: str = _option("standardize the features before the linear layer", FEATURE_NORMS)
    augment: str = _option("training clips: the protocol's temporal crop, or the pretraining views", CLASSIFIER_VIEWS)


@dataclass
class KNNConfig:
    """1-NN evaluation on pre-head features."""

    batch_size: int = _option("batch size of feature extraction")
    chunk_size: int = _option("rows per block of the similarity matrix")


@dataclass
class SemiConfig:
    """The semi-supervised protocol: fine-tuning on a labelled fraction of the training set."""

    ratio: float = _option("labelled fraction of the training set")
    repeats: int = _option("random labelled subsets to average over")
    subset: str = _option(
        "released: int(N * ratio) at random (CMD); per-class: round(ratio * n_c), at least 1, of every class", SUBSETS
    )


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "loss": LossConfig,
    "pretrain": PretrainConfig,
    "augment": AugmentConfig,
    "linear": ClassifierConfig,
    "finetune": ClassifierConfig,
    "supervised": ClassifierConfig,
    "knn": KNNConfig,
    "semi": SemiConfig,
}
UNPREFIXED_SECTIONS = ("model", "loss")


@dataclass
class RunConfig:
    """Everything a run depends on; saved as ``config.json`` and inside every checkpoint.

    ``adapted`` lists what ``fit_to_dataset`` chose or changed for the training set's size.
    """

    recipe: str
    dataset: str
    num_workers: int
    threads: Optional[int]
    model: ModelConfig
    loss: LossConfig
    pretrain: PretrainConfig
    augment: AugmentConfig
    linear: ClassifierConfig
    finetune: ClassifierConfig
    supervised: ClassifierConfig
    knn: KNNConfig
    semi: SemiConfig
    data_root: Optional[str] = None
    layout: Optional[str] = None
    seed: int = 0
    device: str = "cpu"
    amp: str = "none"
    synthetic: dict[str, Any] = field(default_factory=dict)
    adapted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "configuration") -> RunConfig:
        """The inverse of ``to_dict`` (tuples come back from JSON and YAML lists), checking every key.

        Raises:
            InputError: naming ``source`` and the key, for a missing or unknown key or a value of the wrong type.
        """
        return _build(cls, data, source, "")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n")


# -- reading recipes ----------------------------------------------------------------------------------------


def recipe_path(recipe: str, family: str) -> Path:
    """The file of a recipe: ``configs/<family>/<recipe>.yaml`` if there is one, else ``configs/_base_/<recipe>.yaml``.

    Folder names spell the family with underscores (``configs/msr_action3d/``), as Python package names do.

    Raises:
        InputError: if neither exists (naming the recipes there are).
    """
    recipe = RECIPE_ALIASES.get(recipe, recipe)
    folder = family.replace("-", "_")
    for path in (CONFIG_DIR / folder / f"{recipe}.yaml", CONFIG_DIR / "_base_" / f"{recipe}.yaml"):
        if path.is_file():
            return path
    known = sorted({p.stem for p in CONFIG_DIR.glob("*/*.yaml")})
    raise InputError(f"no recipe {recipe!r} in {CONFIG_DIR}; known recipes: {', '.join(known)} (or --config FILE)")


def read_yaml(path: Path) -> dict[str, Any]:
    """A recipe file with its ``_base_`` chain merged in (the file's own values win, section by section).

    Raises:
        InputError: naming the file, if it is missing, not YAML, not a mapping, or its bases form a loop.
    """
    return _read_yaml(Path(path), ())


def _read_yaml(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise InputError(f"{path}: its {BASE_KEY} chain loops back to itself")
    if not path.is_file():
        raise InputError(f"config file {path} {'is a folder' if path.is_dir() else 'does not exist'}")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise InputError(f"{path}: not a readable YAML file{line} ({problem})") from None
    if not isinstance(content, dict):
        raise InputError(f"{path}: expected a mapping of settings, got {type(content).__name__}")
    base = content.pop(BASE_KEY, None)
    if base is None:
        return content
    merged = _read_yaml(path.parent / str(base), (*seen, path))
    for key, value in content.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def load_recipe(path: Path, dataset: Optional[str] = None) -> RunConfig:
    """The ``RunConfig`` of a recipe file (``dataset`` replaces the file's, if given).

    Raises:
        InputError: naming the file and the key, for anything ``RunConfig.from_dict`` refuses.
    """
    data = read_yaml(path)
    if dataset is not None:
        data["dataset"] = dataset
    return RunConfig.from_dict(data, str(path))


def _build(cls: type, data: Any, source: str, where: str) -> Any:
    """A dataclass of ``cls`` from a mapping, with every field's type checked (nested dataclasses recursively)."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: {where.rstrip('.') or 'the configuration'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {spec.name: spec for spec in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{source}: unknown setting {where}{unknown[0]} (known: {', '.join(fields)})")
    values = {}
    for name, spec in fields.items():
        key = f"{where}{name}"
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise InputError(f"{source}: the setting {key} is missing")
            continue
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, data[name], source, f"{key}.")
        else:
            values[name] = _typed(data[name], kind, spec, source, key)
    return cls(**values)


def _typed(value: Any, kind: Any, spec: dataclasses.Field, source: str, key: str) -> Any:
    """``value`` checked against the field's type (and choices); lists become tuples for tuple fields."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Union:  # Optional[X], or an int that may be "auto"
        if value is None and type(None) in args:
            return None
        if value == AUTO and spec.metadata.get("auto"):
            return AUTO
        kind = next(arg for arg in args if arg is not type(None))
        origin = typing.get_origin(kind)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
            raise InputError(f"{source}: {key} must be a list of integers, got {value!r}")
        return tuple(int(v) for v in value)
    if origin in (dict, list):
        if not isinstance(value, origin):
            raise InputError(f"{source}: {key} must be a {origin.__name__}, got {value!r}")
        return origin(value)
    if kind is float and _is_int(value):
        value = float(value)
    if kind is bool or not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"{source}: {key} must be {kind.__name__}, got {value!r}")
    choices = spec.metadata.get("choices")
    if choices and value not in choices:
        raise InputError(f"{source}: {key} must be one of {', '.join(choices)}, got {value!r}")
    bounds = SETTING_BOUNDS.get(spec.name)
    if kind in (int, float) and bounds is not None and not (math.isfinite(value) and bounds.contains(value)):
        raise InputError(f"{source}: {key} must be {bounds.describe()}, got {value!r}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- flags --------------------------------------------------------------------------------------------------


def flag_name(section: str, name: str) -> str:
    """The command-line flag of a setting: ``--encoder``, ``--memory-bank-size``, ``--linear-lr``, ..."""
    prefix = "" if section in UNPREFIXED_SECTIONS else f"{section}-"
    return "--" + (prefix + name).replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, sections: tuple[str, ...]) -> None:
    """Add one flag per setting of the given sections (default: the recipe's value)."""
    for section in sections:
        cls = SECTIONS[section]
        group = parser.add_argument_group(f"{section} settings (override the recipe)")
        hints = typing.get_type_hints(cls)
        for spec in dataclasses.fields(cls):
            kind = hints[spec.name]
            if typing.get_origin(kind) is Union and not spec.metadata["auto"]:  # Optional[X]: the flag gives an X
                kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
            kwargs: dict[str, Any] = {"dest": f"{section}.{spec.name}", "default": None, "help": spec.metadata["help"]}
            if typing.get_origin(kind) is tuple:
                kwargs.update(type=bounded(int, spec.name), nargs="*", metavar="EPOCH")
            elif spec.metadata["auto"]:
                kwargs.update(type=bounded(int, spec.name, allow=(AUTO,)), metavar="N|auto")
            elif kind in (int, float):
                kwargs.update(type=bounded(kind, spec.name), metavar=spec.name.upper())
            else:
                choices = spec.metadata["choices"]
                kwargs.update(choices=choices, metavar="{" + ",".join(choices) + "}")
            group.add_argument(flag_name(section, spec.name), **kwargs)


COMMON_SETTINGS = ("data_root", "layout", "seed", "device", "amp", "num_workers", "threads")


def apply_flags(cfg: RunConfig, args: argparse.Namespace) -> RunConfig:
    """A copy of ``cfg`` with every setting given on the command line (``--synthetic`` merged into the options)."""
    cfg = RunConfig.from_dict(cfg.to_dict())
    for name in COMMON_SETTINGS:
        if getattr(args, name, None) is not None:
            setattr(cfg, name, getattr(args, name))
    if getattr(args, "synthetic", None):  # (name, value) pairs
        cfg.synthetic = {**cfg.synthetic, **dict(args.synthetic)}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, name = dest.split(".")
            setattr(getattr(cfg, section), name, tuple(value) if isinstance(value, list) else value)
    return cfg


def explicit_settings(args: argparse.Namespace) -> list[str]:
    """The flags given on the command line, as ``section.name`` (and the common settings' names)."""
    given = [dest for dest, value in vars(args).items() if "." in dest and value is not None]
    return given + [name for name in COMMON_SETTINGS if getattr(args, name, None) is not None]


# -- fitting a recipe to the data ---------------------------------------------------------------------------

MAX_AUTO_BATCH = 128
MAX_AUTO_QUEUE = 4096


def fit_to_dataset(
    cfg: RunConfig, num_train: int, world_size: int = 1, *, num_coords: Optional[int] = None
) -> list[str]:
    """Resolve the recipe's ``auto`` values for a training set of ``num_train`` sequences (of ``num_coords``
    coordinates, when given), and adapt what that set cannot hold; returns what was chosen or changed (also appended
    to ``cfg.adapted``).

    Rules (the small-data recipe's, measured on NW-UCLA, SBU and MSR Action3D; ``docs/pipeline.md``):

    - ``pretrain.batch_size: auto``: a quarter of the training set, at most 128, rounded down to a multiple of the
      ranks under DDP: at least four batches per epoch, so a small set does not drop most of itself as a partial
      batch, and batches as large as the set allows;
    - ``loss.memory_bank_size: auto``: half of the training set, at least one batch, at most 4096: a queue longer
      than the set would hold each sample's own earlier keys as negatives;
    - ``pretrain.epochs: auto``: ``ceil(pretrain.steps / batches per epoch)``, a budget of optimizer steps whatever
      the set's size;
    - ``loss.halp_start_epoch: auto``: half of the pretraining epochs (plain MoCo first, as the released recipe);
    - any batch larger than the set (pretraining or a classifier protocol) becomes the set's size, rounded down to
      the ranks;
    - 3-D data: ``augment.mirror_prob`` and ``augment.foreshorten`` become 0, so that the run records what its views
      do (the planar view change is for 2-D keypoints; 3-D views never draw it).

    Raises:
        InputError: if the training set has fewer than 2 sequences (per rank under DDP), or ``pretrain.epochs`` is
            ``auto`` without ``pretrain.steps``, before any work.
    """
    if num_train < 2 * world_size:
        raise InputError(
            f"the training set holds {num_train} sequence(s); pretraining needs at least {2 * world_size} "
            f"(2 per rank), because every batch must hold two different sequences"
        )
    notes: list[str] = []
    p, loss = cfg.pretrain, cfg.loss
    if p.batch_size == AUTO:
        p.batch_size = max(2 * world_size, min(MAX_AUTO_BATCH, num_train // 4) // world_size * world_size)
        notes.append(f"pretrain.batch_size auto: {p.batch_size} for {num_train} training sequences")
    largest = num_train // world_size * world_size
    if p.batch_size > largest:
        notes.append(f"pretrain.batch_size {p.batch_size} -> {largest}: the training set holds {num_train}")
        p.batch_size = largest
    if loss.memory_bank_size == AUTO:
        loss.memory_bank_size = max(p.batch_size, min(MAX_AUTO_QUEUE, num_train // 2))
        notes.append(f"loss.memory_bank_size auto: {loss.memory_bank_size}")
    batches = num_train // p.batch_size
    if p.epochs == AUTO:
        if p.steps is None:
            raise InputError("pretrain.epochs auto needs pretrain.steps, the steps to aim at (--pretrain-steps N)")
        p.epochs = max(1, math.ceil(p.steps / batches))
        notes.append(f"pretrain.epochs auto: {p.epochs} ({batches} batches per epoch, about {p.steps} steps)")
    if loss.halp_start_epoch == AUTO:
        loss.halp_start_epoch = round(p.epochs / 2)
        notes.append(f"loss.halp_start_epoch auto: {loss.halp_start_epoch} (half of the epochs)")
    for name in ("linear", "finetune", "supervised"):
        protocol = getattr(cfg, name)
        if protocol.batch_size > num_train:
            notes.append(f"{name}.batch_size {protocol.batch_size} -> {num_train}: the training set holds {num_train}")
            protocol.batch_size = num_train
    planar = [name for name in ("mirror_prob", "foreshorten") if getattr(cfg.augment, name) > 0]
    if num_coords == 3 and planar:
        for name in planar:
            setattr(cfg.augment, name, 0.0)
        names = " and ".join(f"augment.{name}" for name in planar)
        notes.append(f"{names} -> 0: the planar view change is for 2-D keypoints, and this data is 3-D")
    cfg.adapted.extend(notes)
    return notes

"""Checkpoint files: atomic writes, loading, the random-number-generator states of a rank, what the encoder
reads (``InputSpec``), and the pretrained encoder read back for evaluation."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig, RunConfig
from ..data.datasets import SkeletonDataset
from ..data.layouts import SkeletonLayout
from ..fileio import InputError, atomic_write
from ..models.encoders import EmbeddingNet, build_encoder

PathLike = Union[str, Path]


def save_checkpoint(payload: dict[str, Any], path: PathLike) -> Path:
    """Write ``payload`` to ``path`` through a temporary file, so a crash never leaves a truncated checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: torch.save(payload, handle))
    return path


CHECKPOINT_KEYS = (
    "config",
    "input",
    "model",
    "criterion",
    "optimizer",
    "precision",
    "position",
    "first_epoch",
    "epoch_sums",
    "history",
    "rng",
)
"""What every checkpoint of ``pretrain`` holds (``Pretraining.state``)."""


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` onto the CPU, and check that it is one of ``pretrain``.

    Checkpoints hold Python and NumPy RNG states besides tensors, so this is a full unpickling
    (``weights_only=False``): load only checkpoints you trust.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        InputError: naming ``path``, if it cannot be unpickled (empty, truncated, random or another format), is
            not a dictionary, lacks one of ``CHECKPOINT_KEYS`` (e.g. a bare ``state_dict``) or holds a
            configuration this version cannot read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    expected = "expected a checkpoint written by pretrain, e.g. RUN/checkpoints/last.pt"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling arbitrary bytes can raise almost any exception type
        raise InputError(f"checkpoint {path} is unreadable ({type(error).__name__}: {error}); {expected}") from None
    if not isinstance(checkpoint, dict):
        raise InputError(f"checkpoint {path} holds a {type(checkpoint).__name__}; {expected}")
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise InputError(f"checkpoint {path} lacks {', '.join(repr(key) for key in missing)}; {expected}")
    _add_later_settings(checkpoint["config"])
    try:
        RunConfig.from_dict(checkpoint["config"], f"checkpoint {path}")
        InputSpec.from_dict(checkpoint["input"])
    except (TypeError, ValueError) as error:
        raise InputError(f"checkpoint {path}: this version cannot read its configuration ({error})") from None
    return checkpoint


# Settings added after checkpoints were first written, with the value that reproduces how those were trained.
LATER_SETTINGS = {("augment", "mirror_prob"): 0.0, ("augment", "foreshorten"): 0.0}


def _add_later_settings(config: Any) -> None:
    """Give a checkpoint's configuration the settings it predates (in place), so that it still loads."""
    for (section, name), value in LATER_SETTINGS.items():
        if isinstance(config, dict) and isinstance(config.get(section), dict):
            config[section].setdefault(name, value)


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """This process's RNG states: Python, NumPy, torch (CPU and current CUDA device) and ``generators``."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {name: generator.get_state() for name, generator in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Inverse of ``rng_state``."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


@dataclass(frozen=True)
class InputSpec:
    """What an encoder reads: sequences of a layout's joints, with C coordinates, of M bodies.

    Saved in every checkpoint, so that an encoder is rebuilt for its own input (a layout read from a data folder's
    file included) and refused on data of another shape.
    """

    layout: SkeletonLayout
    num_coords: int
    num_bodies: int

    @classmethod
    def of(cls, dataset: SkeletonDataset) -> InputSpec:
        return cls(dataset.layout, dataset.num_coords, dataset.num_bodies)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        fields = {key: tuple(map(_tuples, value)) if isinstance(value, list) else value
                  for key, value in data["layout"].items()}  # fmt: skip
        return cls(SkeletonLayout(**fields), int(data["num_coords"]), int(data["num_bodies"]))

    def describe(self) -> str:
        return f"{self.layout.num_joints} joints ({self.layout.name}) x {self.num_coords} coordinates x {self.num_bodies} bodies"

    def check(self, dataset: SkeletonDataset, what: str) -> None:
        """Raise ``skeleton.fileio.InputError`` naming both shapes when ``dataset`` is not this input (e.g. an
        NTU encoder evaluated on NW-UCLA)."""
        found = InputSpec.of(dataset)
        if (found.layout.num_joints, found.num_coords, found.num_bodies) != (
            self.layout.num_joints,
            self.num_coords,
            self.num_bodies,
        ):
            raise InputError(f"{what} reads {self.describe()}, but the data has {found.describe()}")


def _tuples(value: Any) -> Any:
    return tuple(map(_tuples, value)) if isinstance(value, list) else value


def build_embedding_net(model: ModelConfig, spec: InputSpec) -> EmbeddingNet:
    """The query network a run's model section describes for its input, initialized as ``model.weight_init`` says."""
    backbone = build_encoder(
        model.encoder,
        layout=spec.layout,
        num_coords=spec.num_coords,
        num_bodies=spec.num_bodies,
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        stgcn_width=model.stgcn_width,
        tcn_width=model.tcn_width,
    )
    return EmbeddingNet(backbone, model.embed_dim, model.weight_init)


def encoder_from_checkpoint(checkpoint: dict[str, Any]) -> tuple[nn.Module, RunConfig, InputSpec]:
    """The query encoder (without projection head) of a loaded pretraining checkpoint, the run's configuration and
    its input."""
    cfg = RunConfig.from_dict(checkpoint["config"])
    spec = InputSpec.from_dict(checkpoint["input"])
    net = build_embedding_net(cfg.model, spec)
    prefix = "query."
    net.load_state_dict({k[len(prefix) :]: v for k, v in checkpoint["model"].items() if k.startswith(prefix)})
    return net.backbone, cfg, spec

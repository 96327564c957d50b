"""Checkpoint files: atomic writes, loading, the random-number-generator states of a rank, and the
pretrained encoder read back for evaluation."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from skeleton.config import RunConfig, from_dict
from skeleton.fileio import InputError, atomic_write
from skeleton.models.encoders import EmbeddingNet, build_encoder

PathLike = Union[str, Path]


def save_checkpoint(payload: dict[str, Any], path: PathLike) -> Path:
    """Write ``payload`` to ``path`` through a temporary file, so a crash never leaves a truncated checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: torch.save(payload, handle))
    return path


CHECKPOINT_KEYS = ("config", "model", "criterion", "optimizer", "precision", "position", "epoch_sums", "history", "rng")
"""What every checkpoint of ``pretrain`` holds (``Pretraining.state``)."""


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` onto the CPU, and check that it is one of ``pretrain``.

    Checkpoints hold Python and NumPy RNG states besides tensors, so this is a full unpickling
    (``weights_only=False``): load only checkpoints you trust.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        InputError: naming ``path``, if it cannot be unpickled (empty, truncated, random or another format), is
            not a dictionary, lacks one of :data:`CHECKPOINT_KEYS` (e.g. a bare ``state_dict``) or holds a
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
    try:
        from_dict(checkpoint["config"])
    except (TypeError, ValueError) as error:
        raise InputError(f"checkpoint {path}: this version cannot read its configuration ({error})") from None
    return checkpoint


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
    """Inverse of :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


def build_embedding_net(cfg: RunConfig) -> EmbeddingNet:
    """The query network a run's model section describes, initialized as ``model.weight_init`` says."""
    model = cfg.model
    backbone = build_encoder(
        model.encoder,
        num_joints=model.num_joints,
        num_bodies=model.num_bodies,
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        stgcn_width=model.stgcn_width,
        tcn_width=model.tcn_width,
    )
    return EmbeddingNet(backbone, model.embed_dim, model.weight_init)


def encoder_from_checkpoint(checkpoint: dict[str, Any]) -> tuple[nn.Module, RunConfig]:
    """The query encoder (without projection head) of a loaded pretraining checkpoint, and the run's
    configuration."""
    cfg = from_dict(checkpoint["config"])
    net = build_embedding_net(cfg)
    prefix = "query."
    net.load_state_dict({k[len(prefix) :]: v for k, v in checkpoint["model"].items() if k.startswith(prefix)})
    return net.backbone, cfg

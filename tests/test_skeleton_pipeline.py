"""The skeleton_moco.py pipeline end to end on a tiny synthetic configuration, and its subcommands.

The tiny configuration and flags defined here are shared by the other skeleton tests."""

import json
import math
import pickle
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from skeleton.cli import main
from skeleton.commands import load_splits
from skeleton.config import RunConfig, load_recipe, recipe_path
from skeleton.training.checkpoint import load_checkpoint
from skeleton.training.pretrain import Pretraining

CPU = torch.device("cpu")
TINY_SYNTHETIC = {
    "num_classes": 4,
    "num_performers": 4,
    "num_cameras": 2,
    "repetitions": 4,
    "max_frames": 48,
    "min_frames": 24,
}
TINY_FLAGS = [
    "--device", "cpu", "--num-workers", "0",
    "--synthetic", *(f"{k}={v}" for k, v in TINY_SYNTHETIC.items()),
]  # fmt: skip
TINY_MODEL_FLAGS = ["--encoder", "gru", "--hidden-size", "16", "--num-layers", "1", "--clip-frames", "16"]
TINY_PRETRAIN_FLAGS = [
    "--pretrain-batch-size", "16", "--memory-bank-size", "64", "--pretrain-key-momentum", "0.9", "--pretrain-lr",
    "0.05", "--num-prototypes", "4", "--num-positives", "8", "--prototype-window", "32", "--prototype-every", "2",
    "--pretrain-knn-every", "0",
]  # fmt: skip
TINY = [*TINY_FLAGS, *TINY_MODEL_FLAGS, *TINY_PRETRAIN_FLAGS]
"""Every flag of the tiny configuration: 96 training sequences, a 16-unit GRU, 6 steps of batch 16 per epoch."""


def tiny_config(epochs: int = 3, halp_start_epoch: int = 1, **pretrain) -> RunConfig:
    """The configuration :data:`TINY` gives, built in Python (``pretrain`` overrides the pretrain section)."""
    cfg = load_recipe(recipe_path("small", "synthetic"))
    cfg.device, cfg.num_workers, cfg.synthetic = "cpu", 0, dict(TINY_SYNTHETIC)
    cfg.model.encoder, cfg.model.hidden_size, cfg.model.num_layers, cfg.model.clip_frames = "gru", 16, 1, 16
    loss = cfg.loss
    loss.memory_bank_size, loss.num_prototypes, loss.num_positives = 64, 4, 8
    loss.prototype_window, loss.prototype_every, loss.halp_start_epoch = 32, 2, halp_start_epoch
    p = cfg.pretrain
    p.batch_size, p.key_momentum, p.lr, p.epochs, p.lr_milestones, p.knn_every = 16, 0.9, 0.05, epochs, (2,), 0
    for name, value in pretrain.items():
        setattr(p, name, value)
    return cfg


def tiny_run(cfg: RunConfig, out: Path, max_steps: Optional[int] = None) -> Pretraining:
    """A :class:`Pretraining` of ``cfg`` on its own splits, without progress bars."""
    train_set, val_set = load_splits(cfg)
    return Pretraining(cfg, out, CPU, train_set, val_set, max_steps=max_steps, progress=False)


def pretrain_checkpoint(out: Path, *extra: str) -> Path:
    """``pretrain`` of the tiny configuration into ``out`` (2 steps unless ``extra`` says otherwise); its last.pt."""
    assert main(["pretrain", *TINY, "--pretrain-epochs", "1", "--max-steps", "2", "--out", str(out), *extra]) == 0
    return out / "checkpoints" / "last.pt"


def write_custom_folder(folder, num_joints=20, num_bodies=1, classes=3, per_class=8, frames=40, val_per_class=None):
    """A folder in the prepared (CMD) layout of class-dependent joint oscillations, with labels 0..classes-1."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    t = np.arange(frames)
    for split, count in (("train", per_class), ("val", val_per_class or max(1, per_class // 2))):
        labels = np.repeat(np.arange(classes), count)
        data = rng.normal(0, 0.01, size=(len(labels), 3, frames, num_joints, num_bodies)).astype(np.float32)
        for i, label in enumerate(labels):
            data[i, label % 3, :, 4:12] += np.sin(t * (label + 1) / 6)[:, None, None]
        data[:, :, 0, 1, 0] = 0.0  # body 0's spine mid at the origin in frame 0, as in pre-normalized data
        np.save(folder / f"{split}_data_joint.npy", data)
        np.save(folder / f"{split}_num_frame.npy", rng.integers(frames // 2, frames + 1, len(labels)))
        with open(folder / f"{split}_label.pkl", "wb") as handle:
            pickle.dump(([f"{split}{i}" for i in range(len(labels))], labels.tolist()), handle)
    return folder


def _without_times(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in rows]


def test_pipeline_smoke_and_its_linear_stage_equals_linear_init_from(tmp_path, capsys):
    out = tmp_path / "run"
    linear_flags = ["--linear-epochs", "3", "--linear-lr", "0.5", "--linear-lr-milestones", "2"]
    argv = [*TINY, "--out", str(out), "--pretrain-epochs", "4", "--halp-start-epoch", "2",
            "--pretrain-lr-milestones", "3", "--pretrain-knn-every", "2", *linear_flags]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    chance = 1.0 / metrics["num_classes"]
    assert metrics["num_classes"] == 4 and metrics["chance"] == chance
    assert metrics["knn_top1"] >= 2 * chance, metrics["knn_top1"]
    assert 0.0 <= metrics["linear_top1"] <= 1.0 and 0.0 <= metrics["linear_top1_last"] <= metrics["linear_top1"]
    history = metrics["pretrain_history"]
    assert [row["phase"] for row in history] == ["moco", "moco", "halp", "halp"]
    assert history[0]["kept_fraction"] is None and history[1]["halp"] == 0 and history[-1]["halp"] != 0
    assert 0.0 < history[-1]["kept_fraction"] <= 1.0
    assert [row["knn_top1"] is not None for row in history] == [False, True, False, True]
    assert len(metrics["linear_history"]) == 3
    for name in ("pretrain_log.csv", "linear_log.csv", "summary.png", "config.json", "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    assert (out / "checkpoints/epoch_0002_moco.pt").is_file()
    assert (out / "pretrain_log.csv").read_text().count("\n") == 5
    saved = json.loads((out / "config.json").read_text())
    assert saved["pretrain"]["epochs"] == 4 and saved["model"]["hidden_size"] == 16
    assert saved["loss"]["memory_bank_size"] == 64 and saved["pretrain"]["lr_milestones"] == [3]
    assert saved["synthetic"]["num_classes"] == 4
    table = capsys.readouterr().out
    assert "kNN (1-NN, cosine)" in table and "chance (4 classes)" in table

    # issue 19, item 2: the pipeline reseeds before its linear head, so `linear --init-from` on its checkpoint
    # with the same seed and settings trains the same head on the same batches.
    again = tmp_path / "linear"
    checkpoint = out / "checkpoints" / "last.pt"
    assert main(["linear", *TINY_FLAGS, "--init-from", str(checkpoint), "--out", str(again), *linear_flags]) == 0
    separate = json.loads((again / "metrics.json").read_text())
    assert separate["linear_history"] == metrics["linear_history"]
    assert separate["linear_top1"] == metrics["linear_top1"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained")
    return pretrain_checkpoint(out, "--halp-start-epoch", "0")


@pytest.mark.parametrize(
    "command, extra, key",
    [
        ("knn", [], "knn_top1"),
        ("linear", ["--linear-epochs", "2", "--linear-lr", "0.5"], "linear_top1"),
        ("semi", ["--semi-ratio", "0.25", "--semi-repeats", "2", "--finetune-epochs", "1"], "semi_top1"),
        ("semi", ["--semi-ratio", "0.5", "--semi-repeats", "1", "--finetune-epochs", "1", "--semi-subset", "released"],
         "semi_top1"),
        ("transfer", ["--dataset", "synthetic", "--finetune-epochs", "1"], "transfer_top1"),
    ],
)  # fmt: skip
def test_evaluation_commands_read_a_checkpoint(pretrained, tmp_path, command, extra, key):
    out = tmp_path / command
    assert main([command, *TINY_FLAGS, "--init-from", str(pretrained), "--out", str(out), *extra]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics[key] <= 1.0
    assert metrics["num_classes"] == 4
    if command == "semi":  # the small recipe's per-class subsets unless --semi-subset says otherwise
        assert metrics["semi_subset"] == ("released" if "--semi-subset" in extra else "per-class")
    assert (out / f"{command}_config.json").is_file()


def test_explicit_dataset_options_beat_the_checkpoints(pretrained, tmp_path):
    """Issue 19, item 5: `knn --synthetic num_classes=5` evaluates on 5 classes, not on the checkpoint's 4."""
    out = tmp_path / "knn5"
    argv = ["knn", *TINY_FLAGS, "num_classes=5", "--init-from", str(pretrained), "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["num_classes"] == 5
    assert json.loads((out / "knn_config.json").read_text())["synthetic"]["num_classes"] == 5
    plain = tmp_path / "knn4"  # without the option: the checkpoint's dataset
    assert main(["knn", "--device", "cpu", "--init-from", str(pretrained), "--out", str(plain)]) == 0
    assert json.loads((plain / "metrics.json").read_text())["num_classes"] == 4


def test_bf16_autocast_on_cpu(tmp_path):
    cfg = tiny_config(halp_start_epoch=0)
    cfg.amp = "bf16"
    run = tiny_run(cfg, tmp_path, max_steps=4)
    assert run.run() == "max_steps"
    last = run.criterion.last
    assert all(math.isfinite(value) for value in last.values()), last
    assert last["kept_fraction"] > 0  # the HaLP term ran under autocast too


def test_the_criterion_keeps_the_queue_and_starts_halp_at_its_epoch(tmp_path):
    """The queue is the criterion's (memory_bank_size keys of the embedding's width), the HaLP term is off for
    the epochs before halp_start_epoch and on from its first step, switched by the criterion's warm-up."""
    run = tiny_run(tiny_config(epochs=2, halp_start_epoch=1), tmp_path)
    assert run.criterion.queue.keys.shape == (64, 128)
    assert not hasattr(run.model, "queue")
    assert run.run() == "done"
    assert [row["phase"] for row in run.history] == ["moco", "halp"]
    assert run.history[0]["halp"] == 0 and run.history[0]["kept_fraction"] is None
    assert run.history[1]["halp"] != 0 and run.history[1]["kept_fraction"] > 0
    assert run.criterion.active and run.criterion.bank.ready


def test_pipeline_on_a_custom_kinect_v1_folder(tmp_path, capsys):
    """--dataset custom on a 20-joint, 1-body folder with the small recipe: the layout and the class count come
    from the files, the checkpoint records the input, and metrics carry the baselines."""
    data = write_custom_folder(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["--dataset", "custom", "--data-root", str(data), "--recipe", "small", "--device", "cpu",
            "--out", str(out), "--tcn-width", "8", "--clip-frames", "16", "--pretrain-batch-size", "8",
            "--memory-bank-size", "32", "--pretrain-epochs", "2", "--halp-start-epoch", "1", "--num-prototypes", "3",
            "--num-positives", "4", "--prototype-window", "16", "--prototype-every", "2", "--pretrain-knn-every", "1",
            "--linear-epochs", "2"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_classes"] == 3 and metrics["dataset"] == "custom"
    for key in ("raw_knn_top1", "init_knn_top1", "knn_top1", "linear_top1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["raw_knn_top1"] > 0.9  # the classes differ by an oscillation the raw joints show
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["encoder"] == "tcn" and saved["recipe"] == "small"
    checkpoint = out / "checkpoints" / "last.pt"
    spec = load_checkpoint(checkpoint)["input"]
    assert (spec["layout"]["name"], len(spec["layout"]["joint_names"]), spec["num_coords"], spec["num_bodies"]) == (
        "kinect_v1",
        20,
        3,
        1,
    )
    table = capsys.readouterr().out
    assert "baseline: 1-NN on the raw pre-normalized joints" in table and "at random init" in table
    knn_out = tmp_path / "knn"
    assert main(["knn", "--dataset", "custom", "--data-root", str(data), "--device", "cpu",
                 "--init-from", str(checkpoint), "--out", str(knn_out)]) == 0  # fmt: skip
    again = json.loads((knn_out / "metrics.json").read_text())
    assert again["knn_top1"] == pytest.approx(metrics["knn_top1"])
    assert again["raw_knn_top1"] == metrics["raw_knn_top1"]  # the baselines travel with the checkpoint


def test_supervised_command(tmp_path, capsys):
    data = write_custom_folder(tmp_path / "data")
    out = tmp_path / "supervised"
    argv = ["supervised", "--dataset", "custom", "--data-root", str(data), "--recipe", "small", "--device", "cpu",
            "--tcn-width", "8", "--clip-frames", "16", "--supervised-epochs", "3", "--supervised-batch-size", "8",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["supervised_top1_last"] <= metrics["supervised_top1"] <= 1.0
    assert len(metrics["supervised_history"]) == 3
    assert (out / "supervised_log.csv").is_file()
    capsys.readouterr()
    assert main([*argv[:-1], str(tmp_path / "other"), "--init-from", "x.pt"]) == 2
    assert "trains from scratch" in capsys.readouterr().err

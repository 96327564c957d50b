"""The skeleton_moco.py pipeline end to end on a tiny synthetic configuration, its subcommands, and the
configuration presets."""

import json
import math
import pickle

import numpy as np
import pytest
import skeleton_moco  # examples/ is on sys.path (tests/conftest.py)
import torch
from skeleton.config import (
    RunConfig,
    from_dict,
    preset_config,
    resolve_config,
    to_dict,
)
from skeleton.training.checkpoint import build_embedding_net
from skeleton.training.pretrain import Pretraining

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
TINY_MODEL_FLAGS = ["--encoder", "gru", "--hidden-size", "16", "--num-layers", "1"]
TINY_PRETRAIN_FLAGS = [
    "--batch-size", "16", "--queue-size", "64", "--key-momentum", "0.9", "--lr", "0.05",
    "--num-prototypes", "4", "--num-positives", "8", "--prototype-window", "32", "--prototype-every", "2",
]  # fmt: skip


def tiny_config(**pretrain) -> RunConfig:
    """A configuration that pretrains in seconds: 96 training samples, a 16-unit GRU, 6 steps per epoch."""
    cfg = preset_config("cpu", "synthetic")
    cfg.device, cfg.num_workers, cfg.synthetic = "cpu", 0, dict(TINY_SYNTHETIC)
    cfg.model.encoder, cfg.model.hidden_size, cfg.model.num_layers = "gru", 16, 1
    p = cfg.pretrain
    p.batch_size, p.queue_size, p.key_momentum, p.lr = 16, 64, 0.9, 0.05
    p.num_prototypes, p.num_positives, p.prototype_window, p.prototype_every = 4, 8, 32, 2
    p.epochs, p.halp_start_epoch, p.lr_milestones, p.knn_every = 3, 1, (2,), 0
    for name, value in pretrain.items():
        setattr(p, name, value)
    return cfg


def test_pipeline_smoke(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*TINY_FLAGS, *TINY_MODEL_FLAGS, *TINY_PRETRAIN_FLAGS, "--out", str(out), "--epochs", "4",
            "--halp-start-epoch", "2", "--lr-milestones", "3", "--knn-every", "2",
            "--linear-epochs", "3", "--linear-lr", "0.5", "--linear-lr-milestones", "2"]  # fmt: skip
    assert skeleton_moco.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    chance = 1.0 / metrics["num_classes"]
    assert metrics["num_classes"] == 4 and metrics["chance"] == chance
    assert metrics["knn_top1"] >= 2 * chance, metrics["knn_top1"]
    assert 0.0 <= metrics["linear_top1"] <= 1.0 and 0.0 <= metrics["linear_top1_last"] <= metrics["linear_top1"]
    history = metrics["pretrain_history"]
    assert [row["phase"] for row in history] == ["moco", "moco", "halp", "halp"]
    assert history[0]["kept_fraction"] is None and history[-1]["halp"] != 0
    assert 0.0 < history[-1]["kept_fraction"] <= 1.0
    assert [row["knn_top1"] is not None for row in history] == [False, True, False, True]
    assert len(metrics["linear_history"]) == 3
    for name in ("pretrain_log.csv", "linear_log.csv", "summary.png", "config.json", "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    assert (out / "checkpoints/epoch_0002_moco.pt").is_file()
    assert (out / "pretrain_log.csv").read_text().count("\n") == 5
    saved = json.loads((out / "config.json").read_text())
    assert saved["pretrain"]["epochs"] == 4 and saved["model"]["hidden_size"] == 16
    assert saved["synthetic"]["num_classes"] == 4
    table = capsys.readouterr().out
    assert "kNN (1-NN, cosine)" in table and "chance (4 classes)" in table


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained")
    argv = ["pretrain", *TINY_FLAGS, *TINY_MODEL_FLAGS, *TINY_PRETRAIN_FLAGS, "--out", str(out),
            "--epochs", "1", "--halp-start-epoch", "0"]  # fmt: skip
    assert skeleton_moco.main(argv) == 0
    return out / "checkpoints" / "last.pt"


@pytest.mark.parametrize(
    "command, extra, key",
    [
        ("knn", [], "knn_top1"),
        ("linear", ["--epochs", "2", "--lr", "0.5"], "linear_top1"),
        ("semi", ["--ratio", "0.25", "--repeats", "2", "--epochs", "1"], "semi_top1"),
        ("semi", ["--ratio", "0.5", "--repeats", "1", "--epochs", "1", "--subset", "released"], "semi_top1"),
        ("transfer", ["--dataset", "synthetic", "--epochs", "1"], "transfer_top1"),
    ],
)
def test_evaluation_commands_read_a_checkpoint(pretrained, tmp_path, command, extra, key):
    out = tmp_path / command
    assert skeleton_moco.main([command, *TINY_FLAGS, "--init-from", str(pretrained), "--out", str(out), *extra]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics[key] <= 1.0
    assert metrics["num_classes"] == 4
    if command == "semi":  # the cpu preset's per-class subsets unless --subset says otherwise
        assert metrics["semi_subset"] == ("released" if "--subset" in extra else "per-class")


def test_evaluation_needs_a_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="--init-from"):
        skeleton_moco.main(["linear", *TINY_FLAGS, "--out", str(tmp_path)])


def test_bf16_autocast_on_cpu(tmp_path):
    cfg = tiny_config(halp_start_epoch=0)
    cfg.amp, cfg.max_steps = "bf16", 4
    run = Pretraining(cfg, tmp_path, torch.device("cpu"), progress=False)
    assert run.run() == "max_steps"
    last = run.criterion.last
    assert all(math.isfinite(value) for value in last.values()), last
    assert last["kept_fraction"] > 0  # the HaLP term ran under autocast too


def test_paper_preset_is_the_released_recipe():
    cfg = preset_config("paper", "ntu60-xsub")
    assert (cfg.model.encoder, cfg.model.hidden_size, cfg.model.num_layers, cfg.model.embed_dim) == (
        "gru",
        1024,
        3,
        128,
    )
    p = cfg.pretrain
    assert (p.lr, p.momentum, p.weight_decay, p.batch_size) == (0.01, 0.9, 1e-4, 64)
    assert (p.queue_size, p.key_momentum, p.temperature) == (16384, 0.999, 0.07)
    assert (p.halp_start_epoch, p.epochs, p.lr_milestones) == (200, 451, (351,))
    assert (p.halp_weight, p.num_prototypes, p.num_positives, p.lam) == (2.0, 20, 100, 0.8)
    assert (p.prototype_window, p.prototype_every, p.objective) == (256, 10, "align")
    assert (cfg.linear.epochs, cfg.linear.lr, cfg.linear.lr_milestones, cfg.linear.batch_size) == (
        80,
        0.005,
        (50, 70),
        64,
    )
    assert (cfg.linear.momentum, cfg.linear.weight_decay) == (0.9, 0.0)
    assert (cfg.finetune.lr, cfg.finetune.epochs, cfg.finetune.lr_milestones) == (0.01, 80, (50, 70))
    pku = preset_config("paper", "pku2-xsub")
    assert (pku.pretrain.halp_start_epoch, pku.pretrain.epochs, pku.pretrain.lr_milestones) == (500, 1001, (801,))
    assert (pku.pretrain.halp_weight, pku.linear.lr) == (1.0, 0.001)
    for paper in (cfg, pku):  # the released initialization, test schedule and labelled subsets
        assert (paper.model.weight_init, paper.semi.subset) == ("released", "released")
        assert paper.linear.eval_every == paper.finetune.eval_every == paper.supervised.eval_every == 5
    cfg.model.hidden_size, cfg.model.num_layers = 32, 1
    head = build_embedding_net(cfg).head[-1].weight  # (128, 64): xavier std 0.102, PyTorch's 0.072
    assert head.std().item() == pytest.approx(math.sqrt(6 / (64 + 128)) / math.sqrt(3), rel=0.03)


def test_cpu_preset_keeps_its_own_evaluation_choices():
    cpu = preset_config("cpu", "synthetic")
    assert (cpu.model.weight_init, cpu.semi.subset) == ("pytorch", "per-class")
    assert cpu.linear.eval_every == cpu.finetune.eval_every == cpu.supervised.eval_every == 1


def test_flags_override_the_preset_and_config_round_trips():
    parser = skeleton_moco.build_parser()
    args = parser.parse_args(["linear", "--epochs", "7", "--lr-milestones", "3", "5", "--seed", "4"])
    cfg = resolve_config(args, "ntu60-xview")
    assert (cfg.preset, cfg.linear.epochs, cfg.linear.lr_milestones, cfg.seed) == ("paper", 7, (3, 5), 4)
    assert cfg.pretrain.epochs == 451  # another section keeps the preset
    args = parser.parse_args(["--linear-epochs", "9", "--queue-size", "128", "--encoder", "stgcn"])
    cfg = resolve_config(args, "synthetic")
    assert (cfg.preset, cfg.linear.epochs, cfg.pretrain.queue_size, cfg.model.encoder) == ("cpu", 9, 128, "stgcn")
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg


def _write_custom_folder(folder, num_joints=20, num_bodies=1, classes=3, per_class=8, frames=40):
    """A prepared-layout folder of class-dependent joint oscillations, with labels 0..classes-1."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    t = np.arange(frames)
    for split, count in (("train", per_class), ("val", per_class // 2)):
        labels = np.repeat(np.arange(classes), count)
        data = rng.normal(0, 0.01, size=(len(labels), 3, frames, num_joints, num_bodies)).astype(np.float32)
        for i, label in enumerate(labels):
            data[i, label % 3, :, 4:12] += np.sin(t * (label + 1) / 6)[:, None, None]
        data[:, :, 0, 1, 0] = 0.0  # body 0's spine mid at the origin in frame 0, as in pre-normalized data
        np.save(folder / f"{split}_data_joint.npy", data)
        np.save(folder / f"{split}_num_frame.npy", rng.integers(frames // 2, frames + 1, len(labels)))
        with open(folder / f"{split}_label.pkl", "wb") as handle:
            pickle.dump(([f"{split}{i}" for i in range(len(labels))], labels.tolist()), handle)


def test_pipeline_on_a_custom_kinect_v1_folder(tmp_path, capsys):
    """--dataset custom on a 20-joint, 1-body folder with the cpu preset: the layout and the class count come
    from the files, and metrics carry the baselines."""
    data = tmp_path / "data"
    _write_custom_folder(data)
    out = tmp_path / "run"
    argv = ["--dataset", "custom", "--data-root", str(data), "--preset", "cpu", "--device", "cpu", "--out", str(out),
            "--tcn-width", "8", "--clip-frames", "16", "--batch-size", "8", "--queue-size", "32", "--epochs", "2",
            "--halp-start-epoch", "1", "--num-prototypes", "3", "--num-positives", "4", "--prototype-window", "16",
            "--prototype-every", "2", "--knn-every", "1", "--linear-epochs", "2"]  # fmt: skip
    assert skeleton_moco.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_classes"] == 3 and metrics["dataset"] == "custom"
    for key in ("raw_knn_top1", "init_knn_top1", "knn_top1", "linear_top1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["raw_knn_top1"] > 0.9  # the classes differ by an oscillation the raw joints show
    saved = json.loads((out / "config.json").read_text())
    assert (saved["model"]["encoder"], saved["model"]["num_joints"], saved["model"]["num_bodies"]) == ("tcn", 20, 1)
    table = capsys.readouterr().out
    assert "baseline: 1-NN on the raw pre-normalized joints" in table and "at random init" in table
    checkpoint = out / "checkpoints" / "last.pt"
    knn_out = tmp_path / "knn"
    assert skeleton_moco.main(["knn", "--dataset", "custom", "--data-root", str(data), "--device", "cpu",
                               "--init-from", str(checkpoint), "--out", str(knn_out)]) == 0  # fmt: skip
    again = json.loads((knn_out / "metrics.json").read_text())
    assert again["knn_top1"] == pytest.approx(metrics["knn_top1"])
    assert again["raw_knn_top1"] == metrics["raw_knn_top1"]  # the baselines travel with the checkpoint

    ntu_like = tmp_path / "ntu_like"
    _write_custom_folder(ntu_like, num_joints=25, num_bodies=2)
    with pytest.raises(ValueError, match="takes 20 joints x 1 bodies, but the data has 25 joints x 2 bodies"):
        skeleton_moco.main(["linear", "--dataset", "custom", "--data-root", str(ntu_like), "--device", "cpu",
                            "--init-from", str(checkpoint), "--out", str(tmp_path / "linear")])  # fmt: skip


def test_supervised_command(tmp_path):
    data = tmp_path / "data"
    _write_custom_folder(data)
    out = tmp_path / "supervised"
    argv = [
        "supervised",
        "--dataset",
        "custom",
        "--data-root",
        str(data),
        "--preset",
        "cpu",
        "--device",
        "cpu",
        "--tcn-width",
        "8",
        "--clip-frames",
        "16",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--out",
        str(out),
    ]
    assert skeleton_moco.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["supervised_top1_last"] <= metrics["supervised_top1"] <= 1.0
    assert len(metrics["supervised_history"]) == 3
    assert (out / "supervised_log.csv").is_file()
    with pytest.raises(SystemExit, match="trains from scratch"):
        skeleton_moco.main([*argv, "--init-from", "x.pt"])

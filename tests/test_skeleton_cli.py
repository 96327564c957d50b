"""The command line a newcomer reads: --help names every dataset and encoder, --print-config shows the resolved
recipe, and every usage or input error is one line on stderr with exit code 2 (issue 19, items 13, 14, 16)."""

import json
import warnings

import pytest
from skeleton import commands
from skeleton.cli import main
from skeleton.config import ENCODERS, RunConfig
from skeleton.data.registry import DATASET_NAMES
from test_skeleton_pipeline import TINY, TINY_FLAGS, pretrain_checkpoint, write_custom_folder


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's errors and --help
        return stop.code


def one_line_error(argv, capsys) -> str:
    """Run ``argv``, check that it exits with 2 and writes one line on stderr; return that line."""
    capsys.readouterr()
    code = _exit_code(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err  # no usage dump, no traceback
    assert "skeleton_moco.py" in err and "error: " in err, err
    return err


@pytest.mark.parametrize("command", [[], ["pretrain"], ["knn"], ["supervised"]])
def test_help_lists_every_dataset_and_the_encoders(command, capsys):
    assert _exit_code([*command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere, even inside names
    for name in DATASET_NAMES:
        assert name in text.replace("- ", "-"), name
    if command in ([], ["pretrain"], ["supervised"]):
        for encoder in ENCODERS:
            assert encoder in text, encoder


def test_print_config_prints_the_resolved_recipe_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--print-config", "--dataset", "nwucla", "--pretrain-lr", "0.3", "--seed", "5"]) == 0
    cfg = RunConfig.from_dict(json.loads(capsys.readouterr().out))
    assert (cfg.recipe, cfg.dataset, cfg.pretrain.lr, cfg.seed) == ("small", "nwucla", 0.3, 5)
    assert main(["pretrain", "--print-config", "--recipe", "released"]) == 0
    assert RunConfig.from_dict(json.loads(capsys.readouterr().out)).loss.memory_bank_size == 16384
    assert list(tmp_path.iterdir()) == []  # no run folder, no data read


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--synthetic", "distortion=-1"], "distortion must be >= 0"),
        (["--dataset", "custom", "--data-root", "x", "--layout", "nosuch"], "layout 'nosuch' is neither a built-in"),
    ],
)
def test_print_config_refuses_data_options_wrong_whatever_the_data(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--print-config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "ntu61"], "argument --dataset: invalid choice: 'ntu61'"),
        (["knn", "--dataset", "nw-ucla"], "argument --dataset: invalid choice: 'nw-ucla'"),
        (["pretrain", "--encoder", "lstm"], "argument --encoder: invalid choice: 'lstm'"),
        (["pretrain", "--recipe", "huge"], "argument --recipe/--preset: invalid choice: 'huge'"),
        (["--synthetic", "num_classes=abc"], "num_classes must be int, got 'abc'"),
        (["--synthetic", "colours=3"], "expected NAME=VALUE with NAME one of"),
        (["pretrain", "--pretrain-batch-size", "0"], "argument --pretrain-batch-size: expected an integer >= 2 or 'auto', got '0'"),
        (["pretrain", "--epochs", "3"], "unrecognized arguments: --epochs 3"),
    ],
)  # fmt: skip
def test_a_mistyped_flag_or_choice_is_one_line(argv, message, capsys):
    assert message in one_line_error(argv, capsys)


def test_missing_options_are_one_line_usage_errors(tmp_path, capsys):
    err = one_line_error(["knn", "--device", "cpu", "--out", str(tmp_path / "k")], capsys)
    assert "knn needs --init-from CHECKPOINT" in err
    err = one_line_error(["linear", "--device", "cpu"], capsys)
    assert "linear needs --init-from" in err
    err = one_line_error(["pretrain", "--dataset", "custom", "--device", "cpu", "--out", str(tmp_path / "p")], capsys)
    assert "--dataset custom needs --data-root DIR" in err
    err = one_line_error(["transfer", "--init-from", "x.pt", "--device", "cpu"], capsys)
    assert "transfer needs --dataset" in err


def test_out_an_existing_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    err = one_line_error(["pretrain", *TINY, "--out", str(tmp_path / "file")], capsys)
    assert f"--out {tmp_path / 'file'} is a file; expected a run folder" in err
    assert (tmp_path / "file").read_text() == "not a folder"


def test_a_setting_the_criterion_refuses_names_its_flag(tmp_path, capsys):
    err = one_line_error(["pretrain", *TINY, "--num-prototypes", "1", "--out", str(tmp_path / "run")], capsys)
    assert "--num-prototypes" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.fixture(scope="module")
def kinect_v1(tmp_path_factory):
    """A 20-joint, 1-body custom folder, a 25-joint one, and a 2-step checkpoint pretrained on the first."""
    root = tmp_path_factory.mktemp("layouts")
    v1 = write_custom_folder(root / "v1", num_joints=20, per_class=6)
    v2 = write_custom_folder(root / "v2", num_joints=25, num_bodies=2, per_class=6)
    model = ["--encoder", "tcn", "--tcn-width", "4", "--clip-frames", "8"]
    out = root / "run"
    checkpoint = pretrain_checkpoint(out, "--dataset", "custom", "--data-root", str(v1), *model)
    return v1, v2, checkpoint


def test_resume_refuses_a_changed_shape_or_dataset_naming_the_flag(kinect_v1, capsys):
    _, _, checkpoint = kinect_v1
    for flag, value in (("--memory-bank-size", "128"), ("--tcn-width", "8"), ("--num-prototypes", "5")):
        err = one_line_error(["pretrain", "--resume", str(checkpoint), flag, value], capsys)
        assert f"--resume: {flag} cannot change in a resumed run" in err
    err = one_line_error(["pretrain", "--resume", str(checkpoint), "--dataset", "synthetic"], capsys)
    assert "--resume continues its run on custom; --dataset synthetic cannot change" in err
    for option in (["--recipe", "released"], ["--config", "configs/_base_/small.yaml"]):
        err = one_line_error(["pretrain", "--resume", str(checkpoint), *option], capsys)
        assert f"--resume continues its run with its saved configuration; {option[0]} cannot be given" in err


def test_init_from_refuses_another_encoder(kinect_v1, tmp_path, capsys):
    v1, _, checkpoint = kinect_v1
    argv = ["pretrain", "--init-from", str(checkpoint), "--dataset", "custom", "--data-root", str(v1)]
    err = one_line_error([*argv, "--encoder", "gru", "--out", str(tmp_path / "run")], capsys)
    assert "--init-from keeps the checkpoint's encoder; --encoder cannot change" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["knn", "--init-from", "{ckpt}"],
        ["linear", "--init-from", "{ckpt}", "--linear-epochs", "1"],
        ["semi", "--init-from", "{ckpt}", "--finetune-epochs", "1"],
        ["pretrain", "--init-from", "{ckpt}"],
        ["pretrain", "--resume", "{ckpt}"],
    ],
)
def test_a_checkpoint_of_another_layout_is_one_line(kinect_v1, tmp_path, argv, capsys):
    """Issue 19, item 13: a 20-joint, 1-body encoder on 25-joint, 2-body data."""
    _, v2, checkpoint = kinect_v1
    argv = [arg.replace("{ckpt}", str(checkpoint)) for arg in argv]
    data = ["--data-root", str(v2)] if "--resume" in argv else ["--dataset", "custom", "--data-root", str(v2)]
    err = one_line_error([*argv, *data, "--device", "cpu", "--out", str(tmp_path / "out")], capsys)
    assert "reads 20 joints (kinect_v1) x 3 coordinates x 1 bodies, but the data has 25 joints" in err, err


def test_evaluation_exit_codes_on_the_synthetic_data(tmp_path, capsys):
    """A good run exits 0; asking for a missing checkpoint is one line with exit 2."""
    missing = tmp_path / "missing.pt"
    err = one_line_error(["knn", *TINY_FLAGS, "--init-from", str(missing)], capsys)
    assert f"checkpoint {missing} does not exist" in err
    err = one_line_error(["pretrain", *TINY, "--resume", str(missing)], capsys)
    assert f"checkpoint {missing} does not exist" in err


def test_warnings_read_as_one_line_during_a_command_only(monkeypatch):
    seen = []

    def command(args):
        seen.append(warnings.formatwarning("odd data", UserWarning, "x.py", 7))
        return 0

    monkeypatch.setattr(commands, "pipeline_command", command)
    python_format = warnings.formatwarning
    assert main([]) == 0
    assert seen == ["skeleton_moco.py: warning: odd data\n"]  # no file, line or category: the message is the news
    assert warnings.formatwarning is python_format


@pytest.mark.parametrize("halp", [["--halp-weight", "2", "--halp-start-epoch", "2"], ["--halp-weight", "0"]])
def test_every_run_starts_with_one_banner(tmp_path, capsys, halp):
    """Dataset, split sizes, classes, layout, recipe and its HaLP phase, run folder and an estimate, before training."""
    out = tmp_path / "run"
    assert main(["pretrain", *TINY, *halp, "--pretrain-epochs", "2", "--max-steps", "2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = lines[: next(i for i, line in enumerate(lines) if line.startswith("  estimated time: ")) + 1]
    assert head[0] == (
        "pretrain: synthetic (4 classes), train 96 / val 32 sequences of 25 joints (kinect_v2) x 3 coordinates x 2 bodies"
    )
    phase = "HaLP weight 2 from epoch 2" if halp[1] == "2" else "HaLP off (MoCo alone)"
    assert head[1].startswith(f"  recipe small: encoder gru, 2 pretraining epochs of batch 16, queue 64, {phase}; ")
    assert f"  run folder: {out}" in head
    assert not any(line.startswith("epoch=") for line in head)  # the banner comes before any training

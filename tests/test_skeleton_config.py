"""Recipes as files (configs/): every file loads strictly, the released recipe is the paper's, flags override a
recipe, and the auto values and clamps of fit_to_dataset, down to a 3-sequence custom folder end to end."""

import dataclasses
import json
import math
import typing

import pytest
from skeleton.bounds import SETTING_BOUNDS
from skeleton.cli import build_parser, main
from skeleton.commands import recipe_config
from skeleton.config import (
    AUTO,
    CONFIG_DIR,
    SECTIONS,
    RunConfig,
    fit_to_dataset,
    load_recipe,
    read_yaml,
    recipe_path,
)
from skeleton.data.layouts import KINECT_V2
from skeleton.data.registry import DATASET_NAMES, dataset_spec
from skeleton.fileio import InputError
from skeleton.training.checkpoint import InputSpec, build_embedding_net
from test_skeleton_pipeline import write_custom_folder

RECIPE_FILES = sorted(CONFIG_DIR.glob("*/*.yaml"))


def test_the_recipe_files_are_there():
    names = {f"{path.parent.name}/{path.stem}" for path in RECIPE_FILES}
    assert {"_base_/released", "_base_/small", "ntu60/released", "pku2/released", "synthetic/small"} <= names


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_recipe_file_loads_and_its_values_are_in_bounds(path):
    cfg = load_recipe(path)
    assert isinstance(cfg, RunConfig) and cfg.recipe in ("released", "small")
    assert cfg.dataset in DATASET_NAMES
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg
    if path.parent.name != "_base_":
        spec = dataset_spec(cfg.dataset)
        assert recipe_path(cfg.recipe, spec.family) == path  # the file the command line finds for its dataset
    for section in SECTIONS:
        for name, value in dataclasses.asdict(getattr(cfg, section)).items():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                if name in SETTING_BOUNDS and item not in (None, AUTO):
                    assert SETTING_BOUNDS[name].contains(item), (path, section, name, item)


def test_every_numeric_setting_outside_the_loss_has_bounds():
    """The loss's settings are validated by the criterion itself (see test_skeleton_cli); every other number
    is checked when its flag is parsed."""
    for section, cls in SECTIONS.items():
        if section == "loss":
            continue
        hints = typing.get_type_hints(cls)
        for spec in dataclasses.fields(cls):
            kind = hints[spec.name]
            numeric = kind in (int, float) or typing.get_origin(kind) in (tuple, typing.Union)
            if numeric:
                assert spec.name in SETTING_BOUNDS, f"{section}.{spec.name} has a flag but no bounds"


@pytest.mark.parametrize("dataset", sorted(DATASET_NAMES))
def test_every_dataset_has_its_default_recipe(dataset):
    spec = dataset_spec(dataset)
    cfg = load_recipe(recipe_path(spec.default_recipe, spec.family), dataset)
    assert cfg.dataset == dataset and cfg.recipe == spec.default_recipe


def test_released_recipe_is_the_papers():
    cfg = load_recipe(recipe_path("released", "ntu60"))
    assert (cfg.model.encoder, cfg.model.hidden_size, cfg.model.num_layers, cfg.model.embed_dim) == ("gru", 1024, 3, 128)
    p, loss = cfg.pretrain, cfg.loss
    assert (p.lr, p.momentum, p.weight_decay, p.batch_size) == (0.01, 0.9, 1e-4, 64)
    assert (loss.memory_bank_size, p.key_momentum, loss.temperature) == (16384, 0.999, 0.07)
    assert (loss.halp_start_epoch, p.epochs, p.lr_schedule, p.lr_milestones) == (200, 451, "step", (351,))
    assert (loss.halp_weight, loss.num_prototypes, loss.num_positives, loss.lam) == (2.0, 20, 100, 0.8)
    assert (loss.prototype_window, loss.prototype_every, loss.objective) == (256, 10, "align")
    linear = cfg.linear
    assert (linear.epochs, linear.lr, linear.lr_milestones, linear.batch_size, linear.eval_every) == (
        80,
        0.005,
        (50, 70),
        64,
        5,
    )
    assert (linear.momentum, linear.weight_decay, linear.feature_norm) == (0.9, 0.0, "none")
    assert (cfg.finetune.lr, cfg.finetune.epochs, cfg.finetune.lr_milestones) == (0.01, 80, (50, 70))
    pku = load_recipe(recipe_path("released", "pku2"))
    assert pku.dataset == "pku2-xsub"
    assert (pku.loss.halp_start_epoch, pku.pretrain.epochs, pku.pretrain.lr_milestones) == (500, 1001, (801,))
    assert (pku.loss.halp_weight, pku.linear.lr) == (1.0, 0.001)
    assert pku.model == cfg.model and pku.augment == cfg.augment  # the rest is the base's
    for paper in (cfg, pku):  # the released initialization, test schedule and labelled subsets
        assert (paper.model.weight_init, paper.semi.subset) == ("released", "released")
        assert paper.linear.eval_every == paper.finetune.eval_every == paper.supervised.eval_every == 5
    small_gru = dataclasses.replace(cfg.model, hidden_size=32, num_layers=1)
    head = build_embedding_net(small_gru, InputSpec(KINECT_V2, 3, 2)).head[-1].weight  # (128, 64)
    assert head.std().item() == pytest.approx(math.sqrt(6 / (64 + 128)) / math.sqrt(3), rel=0.03)  # xavier: 0.102


def test_small_recipe_keeps_its_own_evaluation_choices():
    small = load_recipe(recipe_path("small", "synthetic"))
    assert small.dataset == "synthetic"
    assert (small.model.weight_init, small.semi.subset, small.linear.feature_norm) == ("pytorch", "per-class", "batchnorm")
    assert small.linear.eval_every == small.finetune.eval_every == small.supervised.eval_every == 1


def test_unknown_recipe_names_the_known_ones():
    with pytest.raises(InputError, match="no recipe 'huge' .*known recipes: released, small"):
        recipe_path("huge", "ntu60")
    assert recipe_path("paper", "ntu60") == recipe_path("released", "ntu60")
    assert recipe_path("cpu", "nwucla") == recipe_path("small", "nwucla")


# -- strict reading -----------------------------------------------------------------------------------------


def _recipe(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(f"_base_: {CONFIG_DIR / '_base_' / 'small.yaml'}\n{text}")
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("pretrain:\n  epochz: 3\n", "unknown setting pretrain.epochz"),
        ("loss:\n  memory_bank_size: 1.5\n", "loss.memory_bank_size must be int, got 1.5"),
        ("pretrain:\n  epochs: many\n", "pretrain.epochs must be int, got 'many'"),
        ("pretrain:\n  lr: fast\n", "pretrain.lr must be float, got 'fast'"),
        ("pretrain:\n  lr_milestones: 3\n", "pretrain.lr_milestones must be a list of integers, got 3"),
        ("model:\n  encoder: lstm\n", "model.encoder must be one of gru, bigru, stgcn, tcn, got 'lstm'"),
        ("model:\n  hidden_size: true\n", "model.hidden_size must be int, got True"),
        ("linear: 3\n", "linear must be a mapping, got 3"),
        ("colour: blue\n", "unknown setting colour"),
    ],
)
def test_a_bad_value_is_refused_naming_the_file_and_the_key(tmp_path, text, message):
    path = _recipe(tmp_path, text)
    with pytest.raises(InputError, match=f"^{path}: {message}"):
        load_recipe(path)


def test_a_missing_key_is_refused_naming_the_file_and_the_key(tmp_path):
    base = (CONFIG_DIR / "_base_" / "small.yaml").read_text()
    path = tmp_path / "no_lr.yaml"
    path.write_text(base.replace("  lr: 0.1\n", "", 1))
    assert path.read_text() != base
    with pytest.raises(InputError, match=f"^{path}: the setting pretrain.lr is missing"):
        load_recipe(path)


def test_a_base_loop_a_missing_base_and_a_file_that_is_not_a_mapping(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(InputError, match=f"{tmp_path / 'a.yaml'}: its _base_ chain loops back to itself"):
        read_yaml(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("_base_: nowhere.yaml\n")
    with pytest.raises(InputError, match=f"config file {tmp_path / 'nowhere.yaml'} does not exist"):
        load_recipe(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match=f"{tmp_path / 'd.yaml'}: expected a mapping of settings, got list"):
        load_recipe(tmp_path / "d.yaml")
    (tmp_path / "e.yaml").write_text("pretrain: [unclosed\n")
    with pytest.raises(InputError, match=f"{tmp_path / 'e.yaml'}: not a readable YAML file"):
        load_recipe(tmp_path / "e.yaml")


def test_a_file_overrides_its_base_section_by_section(tmp_path):
    path = _recipe(tmp_path, "dataset: nwucla\npretrain:\n  epochs: 7\n")
    cfg = load_recipe(path)
    base = load_recipe(CONFIG_DIR / "_base_" / "small.yaml")
    assert (cfg.dataset, cfg.pretrain.epochs) == ("nwucla", 7)
    assert dataclasses.replace(cfg.pretrain, epochs=base.pretrain.epochs) == base.pretrain
    assert load_recipe(path, "sbu").dataset == "sbu"


# -- flags --------------------------------------------------------------------------------------------------


def test_flags_override_the_recipe_and_the_config_round_trips():
    parser = build_parser()
    args = parser.parse_args(["linear", "--linear-epochs", "7", "--linear-lr-milestones", "3", "5", "--seed", "4"])
    cfg = recipe_config(args, "ntu60-xview")
    assert (cfg.recipe, cfg.linear.epochs, cfg.linear.lr_milestones, cfg.seed) == ("released", 7, (3, 5), 4)
    assert cfg.pretrain.epochs == 451  # another section keeps the recipe's
    args = parser.parse_args(["--linear-epochs", "9", "--memory-bank-size", "128", "--encoder", "stgcn"])
    cfg = recipe_config(args)
    assert (cfg.recipe, cfg.dataset, cfg.linear.epochs, cfg.loss.memory_bank_size, cfg.model.encoder) == (
        "small",
        "synthetic",
        9,
        128,
        "stgcn",
    )
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    args = parser.parse_args(["pretrain", "--pretrain-batch-size", "auto", "--pretrain-epochs", "auto"])
    cfg = recipe_config(args)
    assert (cfg.pretrain.batch_size, cfg.pretrain.epochs) == (AUTO, AUTO)


def test_preset_is_an_alias_of_recipe_and_config_reads_a_file(tmp_path):
    parser = build_parser()
    paper = recipe_config(parser.parse_args(["--preset", "paper", "--dataset", "nwucla"]))
    assert paper == recipe_config(parser.parse_args(["--recipe", "released", "--dataset", "nwucla"]))
    assert paper.recipe == "released" and paper.model.hidden_size == 1024
    cpu = recipe_config(parser.parse_args(["--preset", "cpu", "--dataset", "ntu60-xsub"]))
    assert cpu.recipe == "small" and cpu.dataset == "ntu60-xsub"
    path = _recipe(tmp_path, "pretrain:\n  epochs: 7\n  lr: 0.2\n")
    cfg = recipe_config(parser.parse_args(["--config", str(path), "--pretrain-lr", "0.3", "--dataset", "sbu"]))
    assert (cfg.pretrain.epochs, cfg.pretrain.lr, cfg.dataset) == (7, 0.3, "sbu")  # the flag beats the file


@pytest.mark.parametrize("command", ["pretrain", "linear", "semi", "supervised"])
@pytest.mark.parametrize("flag", ["--epochs", "--batch-size", "--lr", "--queue-size", "--ratio", "--subset", "--key-momentum"])
def test_no_flag_means_one_setting_here_and_another_there(command, flag):
    """A setting's flag carries its section (--pretrain-epochs, --linear-epochs): the bare names are gone."""
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, flag, "3"])


def test_each_command_has_the_flags_of_its_sections():
    args = build_parser().parse_args(
        ["semi", "--semi-ratio", "0.5", "--semi-subset", "released", "--finetune-epochs", "2", "--init-from", "x"]
    )
    assert (vars(args)["semi.ratio"], vars(args)["semi.subset"], vars(args)["finetune.epochs"]) == (0.5, "released", 2)
    args = build_parser().parse_args(["pretrain", "--pretrain-epochs", "3", "--memory-bank-size", "auto"])
    assert (vars(args)["pretrain.epochs"], vars(args)["loss.memory_bank_size"]) == (3, AUTO)


# -- fitting a recipe to the training set -------------------------------------------------------------------


def _auto(steps=100):
    cfg = load_recipe(recipe_path("small", "synthetic"))
    cfg.pretrain.batch_size = cfg.pretrain.epochs = cfg.loss.memory_bank_size = cfg.loss.halp_start_epoch = AUTO
    cfg.pretrain.steps = steps
    return cfg


@pytest.mark.parametrize(
    "num_train, world_size, batch, queue",
    [
        (1000, 1, 128, 500),  # a quarter of the set, at most 128; the queue half of the set
        (227, 1, 56, 113),  # SBU fold 1
        (227, 4, 56, 113),  # a multiple of the ranks
        (230, 4, 56, 115),
        (40_000, 1, 128, 4096),  # at most 128 and 4096
        (10, 1, 2, 5),  # at least 2
        (2, 1, 2, 2),  # the queue at least one batch
        (11, 2, 4, 5),  # at least 2 per rank
    ],
)
def test_auto_batch_and_queue(num_train, world_size, batch, queue):
    cfg = _auto()
    notes = fit_to_dataset(cfg, num_train, world_size)
    assert (cfg.pretrain.batch_size, cfg.loss.memory_bank_size) == (batch, queue)
    batches = num_train // batch
    assert cfg.pretrain.epochs == math.ceil(100 / batches)
    assert cfg.loss.halp_start_epoch == round(cfg.pretrain.epochs / 2)
    assert notes == cfg.adapted and len(notes) >= 4
    assert any(note.startswith("pretrain.batch_size auto: ") for note in notes)
    assert any(note.startswith("loss.memory_bank_size auto: ") for note in notes)
    assert any(note.startswith(f"pretrain.epochs auto: {cfg.pretrain.epochs} ({batches} batches") for note in notes)


def test_explicit_batches_larger_than_the_set_are_clamped_and_recorded():
    cfg = load_recipe(recipe_path("small", "synthetic"))
    cfg.pretrain.batch_size, cfg.pretrain.epochs, cfg.loss.memory_bank_size, cfg.loss.halp_start_epoch = 128, 100, 1024, 50
    assert (cfg.linear.batch_size, cfg.supervised.batch_size) == (64, 64)
    notes = fit_to_dataset(cfg, 50)
    assert (cfg.pretrain.batch_size, cfg.linear.batch_size, cfg.finetune.batch_size) == (50, 50, 50)
    assert "pretrain.batch_size 128 -> 50: the training set holds 50" in notes
    assert "linear.batch_size 64 -> 50: the training set holds 50" in notes
    assert cfg.loss.memory_bank_size == 1024 and cfg.pretrain.epochs == 100  # explicit values stay
    cfg = load_recipe(recipe_path("released", "ntu60"))
    assert fit_to_dataset(cfg, 5000) == [] and cfg.adapted == []  # nothing to adapt


def test_the_planar_view_change_is_recorded_off_for_three_dimensional_data():
    """What a 3-D run's config.json says its views do: no mirror, no shrink (they never draw them); 2-D keeps both."""
    for num_coords, expected in ((3, (0.0, 0.0)), (2, (0.5, 0.5)), (None, (0.5, 0.5))):
        cfg = load_recipe(recipe_path("small", "custom"))
        notes = fit_to_dataset(cfg, 1000, num_coords=num_coords)
        assert (cfg.augment.mirror_prob, cfg.augment.foreshorten) == expected
        planar = [note for note in notes if note.startswith("augment.")]
        assert planar == (
            ["augment.mirror_prob and augment.foreshorten -> 0: the planar view change is for 2-D keypoints, and this "
             "data is 3-D"] if num_coords == 3 else []
        )  # fmt: skip
    cfg = load_recipe(recipe_path("released", "ntu60"))
    assert fit_to_dataset(cfg, 5000, num_coords=3) == []  # off already: nothing to say


@pytest.mark.parametrize("num_train, world_size", [(1, 1), (0, 1), (3, 2)])
def test_fewer_than_two_sequences_per_rank_are_refused(num_train, world_size):
    with pytest.raises(InputError, match=f"the training set holds {num_train} sequence.*at least {2 * world_size}"):
        fit_to_dataset(_auto(), num_train, world_size)


def test_auto_epochs_need_steps():
    cfg = _auto(steps=None)
    with pytest.raises(InputError, match="pretrain.epochs auto needs pretrain.steps"):
        fit_to_dataset(cfg, 1000)


def test_a_three_sequence_custom_folder_runs_end_to_end_and_records_what_was_adapted(tmp_path, capsys):
    data = write_custom_folder(tmp_path / "data", num_joints=25, num_bodies=1, classes=3, per_class=1, frames=24)
    out = tmp_path / "run"
    argv = ["--dataset", "custom", "--data-root", str(data), "--device", "cpu", "--out", str(out),
            "--pretrain-batch-size", "auto", "--memory-bank-size", "auto", "--pretrain-epochs", "auto",
            "--pretrain-steps", "2", "--tcn-width", "4", "--clip-frames", "8", "--halp-start-epoch", "1",
            "--num-prototypes", "2", "--num-positives", "4", "--prototype-window", "8", "--prototype-every", "1",
            "--pretrain-knn-every", "0", "--linear-epochs", "1"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())
    assert (saved["pretrain"]["batch_size"], saved["loss"]["memory_bank_size"], saved["pretrain"]["epochs"]) == (2, 2, 2)
    assert saved["linear"]["batch_size"] == 3
    adapted = "\n".join(saved["adapted"])
    for expected in ("pretrain.batch_size auto: 2", "loss.memory_bank_size auto: 2",
                     "pretrain.epochs auto: 2", "linear.batch_size 64 -> 3"):  # fmt: skip
        assert expected in adapted, adapted
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_classes"] == 3 and len(metrics["pretrain_history"]) == 2
    assert 0.0 <= metrics["knn_top1"] <= 1.0 and 0.0 <= metrics["linear_top1"] <= 1.0


def test_an_unreadable_recipe_file_is_one_line_naming_the_file_and_line(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("recipe: small\n  model: [\n")
    assert main(["--config", str(broken), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{broken}: not a readable YAML file at line 2" in err
    assert main(["--config", str(tmp_path), "--print-config"]) == 2
    assert f"config file {tmp_path} is a folder" in capsys.readouterr().err

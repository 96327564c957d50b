"""Evaluation protocols and the shared training pieces: chunked 1-NN, labelled subsets, classifier
training (frozen vs fine-tuned), the step schedule and the resumable sampler."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skeleton.config import ClassifierConfig, load_recipe, recipe_path
from skeleton.data.datasets import load_dataset
from skeleton.data.layouts import KINECT_V1
from skeleton.data.synthetic import SyntheticConfig
from skeleton.models.encoders import build_encoder
from skeleton.training import evaluation
from skeleton.training.evaluation import ClassifierTraining, knn_top1, labelled_subset, nearest_neighbors
from skeleton.training.loop import EpochSampler, Precision, lr_at

RELEASED_LINEAR = load_recipe(recipe_path("released", "ntu60")).linear


def protocol(**settings) -> ClassifierConfig:
    """The released linear protocol (step schedule, raw features, crops), scored every epoch, with ``settings``."""
    return dataclasses.replace(RELEASED_LINEAR, **{"eval_every": 1, **settings})


SMALL = SyntheticConfig(num_classes=4, num_performers=4, num_cameras=2, repetitions=4, max_frames=48, min_frames=24)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
def test_nearest_neighbors_matches_brute_force(chunk_size):
    torch.manual_seed(0)
    memory = F.normalize(torch.randn(150, 16), dim=1)
    queries = F.normalize(torch.randn(70, 16), dim=1)
    expected = (queries @ memory.T).argmax(dim=1)
    assert torch.equal(nearest_neighbors(memory, queries, chunk_size), expected)


def test_knn_top1_on_separated_clusters():
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(5, 32), dim=1)
    labels = torch.arange(5).repeat_interleave(20)
    features = F.normalize(centres[labels] + 0.05 * torch.randn(100, 32), dim=1)
    assert knn_top1(features[::2], labels[::2], features[1::2], labels[1::2], chunk_size=16) == 1.0
    shuffled = labels[torch.randperm(100)]
    assert knn_top1(features[::2], shuffled[::2], features[1::2], labels[1::2]) < 0.6


def test_nearest_neighbors_empty_memory():
    with pytest.raises(ValueError, match="empty"):
        nearest_neighbors(torch.zeros(0, 4), torch.zeros(3, 4))


def test_labelled_subset_is_per_class_and_reproducible():
    labels = np.repeat(np.arange(3), [100, 50, 7])
    chosen = labelled_subset(labels, 0.1, seed=3)
    assert np.bincount(labels[chosen]).tolist() == [10, 5, 1]
    assert np.array_equal(chosen, labelled_subset(labels, 0.1, seed=3, sampling="per-class"))
    assert not np.array_equal(chosen, labelled_subset(labels, 0.1, seed=4))
    with pytest.raises(ValueError, match="ratio"):
        labelled_subset(labels, 0.0, seed=0)
    with pytest.raises(ValueError, match=r"sampling must be one of \('released', 'per-class'\), got 'stratified'"):
        labelled_subset(labels, 0.1, seed=0, sampling="stratified")


@pytest.mark.parametrize("size, ratio", [(157, 0.1), (100, 0.29), (40091, 0.01), (1000, 1.0)])
def test_released_subset_is_cmd_draw_seeded(size, ratio):
    labels = np.repeat(np.arange(3), [size - size // 3, size // 6, size // 3 - size // 6])
    chosen = labelled_subset(labels, ratio, seed=7, sampling="released")
    assert len(chosen) == int(size * ratio)  # truncated: 100 x 0.29 = 28.999... gives 28, as in CMD
    assert len(np.unique(chosen)) == len(chosen) and np.array_equal(chosen, np.sort(chosen))  # no replacement
    assert np.array_equal(chosen, labelled_subset(labels, ratio, seed=7, sampling="released"))
    # CMD's feeder: np.random.shuffle(np.arange(N)) on the global generator, then the first int(N * ratio).
    saved = np.random.get_state()
    try:
        np.random.seed(7)
        order = np.arange(size)
        np.random.shuffle(order)
    finally:
        np.random.set_state(saved)
    assert np.array_equal(chosen, np.sort(order[: int(size * ratio)]))


def test_released_subset_is_unstratified():
    labels = np.repeat(np.arange(3), [100, 50, 7])
    draws = [labelled_subset(labels, 0.1, seed=seed, sampling="released") for seed in range(20)]
    counts = np.array([np.bincount(labels[chosen], minlength=3) for chosen in draws])
    assert (counts.sum(axis=1) == 15).all()
    assert (counts[:, 2] == 0).any() and len({tuple(row) for row in counts}) > 3  # the rare class can be missing
    assert len({tuple(chosen) for chosen in draws}) == 20  # every seed its own draw
    with pytest.raises(ValueError, match=r"ratio 0.01 of 50 samples selects int\(0.5\) = 0"):
        labelled_subset(labels[:50], 0.01, seed=0, sampling="released")


def test_lr_steps():
    assert lr_at(0.01, (351,), 350) == 0.01
    assert lr_at(0.01, (351,), 351) == pytest.approx(0.001)
    assert lr_at(0.005, (50, 70), 75) == pytest.approx(0.00005)


def test_epoch_sampler_shards_and_skips():
    ranks = [EpochSampler(50, batch_size=4, seed=1, rank=r, world_size=2) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(3)
    shards = [list(sampler) for sampler in ranks]
    assert len(shards[0]) == len(shards[1]) == 6 * 4  # 50 // 8 = 6 global batches, whole batches only
    assert not set(shards[0]) & set(shards[1])
    ranks[0].set_epoch(3, skip_batches=2)
    assert list(ranks[0]) == shards[0][8:]
    assert len(ranks[0]) == 16
    ranks[0].set_epoch(4)
    assert list(ranks[0]) != shards[0]
    with pytest.raises(ValueError, match="no full batch"):
        EpochSampler(5, batch_size=4, seed=0, world_size=2)


def _classifier(encoder, finetune, epochs=3, **options):
    cfg = protocol(epochs=epochs, batch_size=16, lr=0.1, lr_milestones=(2,), **options)
    return ClassifierTraining(
        encoder,
        4,
        cfg,
        finetune=finetune,
        device=torch.device("cpu"),
        precision=Precision("none", torch.device("cpu")),
        progress=False,
    )


def test_linear_probe_keeps_the_encoder_frozen():
    torch.manual_seed(0)
    train, val = load_dataset("synthetic", "train", synthetic=SMALL), load_dataset("synthetic", "val", synthetic=SMALL)
    encoder = build_encoder("gru", hidden_size=16, num_layers=1)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    result = _classifier(encoder, finetune=False).fit(train, val)
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, before[name]), name  # weights and BatchNorm statistics
    assert len(result.history) == 3
    assert result.best_top1 == max(row["val_top1"] for row in result.history)
    assert result.last_top1 == result.history[-1]["val_top1"]
    assert all(0.0 <= row["val_top1"] <= 1.0 for row in result.history)
    assert result.history[-1]["lr"] == pytest.approx(0.01)


def test_finetuning_trains_the_encoder():
    torch.manual_seed(0)
    train, val = load_dataset("synthetic", "train", synthetic=SMALL), load_dataset("synthetic", "val", synthetic=SMALL)
    encoder = build_encoder("gru", hidden_size=16, num_layers=1)
    before = encoder.input_norm.weight.clone()
    training = _classifier(encoder, finetune=True, epochs=1)
    training.fit(train, val)
    assert not torch.equal(encoder.input_norm.weight, before)


class _Scaled(torch.nn.Module):
    """An encoder whose features are another's times a constant."""

    def __init__(self, encoder, scale):
        super().__init__()
        self.encoder, self.scale, self.feature_dim = encoder, scale, encoder.feature_dim

    def forward(self, x):
        return self.scale * self.encoder(x)


def test_standardized_linear_probe_ignores_the_feature_scale():
    """With feature_norm="batchnorm" the head sees standardized features: features 1000 times larger train the
    probe as features 10 times larger do; without it they do not."""
    train, val = load_dataset("synthetic", "train", synthetic=SMALL), load_dataset("synthetic", "val", synthetic=SMALL)
    torch.manual_seed(0)
    encoder = build_encoder("gru", hidden_size=16, num_layers=1)
    results = {}
    for norm in ("batchnorm", "none"):
        for scale in (10.0, 1000.0):
            training = _classifier(_Scaled(encoder, scale), finetune=False, feature_norm=norm)
            assert isinstance(training.head[0], torch.nn.BatchNorm1d if norm == "batchnorm" else torch.nn.Identity)
            results[norm, scale] = [row["train_loss"] for row in training.fit(train, val).history]
    # equal up to BatchNorm's eps, which still counts for the few nearly constant features at scale 10
    assert results["batchnorm", 10.0] == pytest.approx(results["batchnorm", 1000.0], rel=0.02)
    assert results["none", 1000.0][0] > 10 * results["none", 10.0][0]  # raw features: the logits blow up


TINY = SyntheticConfig(num_classes=4, num_performers=4, num_cameras=2, repetitions=1, max_frames=16, min_frames=8)


def _scripted_fit(monkeypatch, finetune, scores, eval_every, **options):
    """Fit a tiny classifier whose validation top-1 at epoch e is ``scores[e - 1]``; returns the result and the
    epochs that were scored."""
    epochs, original = [], evaluation.lr_at

    def lr_at(*args):  # called once per epoch, with the 0-based epoch as third argument
        epochs.append(args[2] + 1)
        return original(*args)

    monkeypatch.setattr(evaluation, "lr_at", lr_at)
    scored = []

    def val_top1(self, val_set, cached):
        scored.append(epochs[-1])
        return scores[epochs[-1] - 1]

    monkeypatch.setattr(ClassifierTraining, "_val_top1", val_top1)
    train, val = load_dataset("synthetic", "train", synthetic=TINY), load_dataset("synthetic", "val", synthetic=TINY)
    cfg = protocol(epochs=len(scores), batch_size=len(train), lr=0.01, eval_every=eval_every)
    torch.manual_seed(0)
    training = ClassifierTraining(
        build_encoder("tcn", tcn_width=4),
        4,
        cfg,
        finetune=finetune,
        device=torch.device("cpu"),
        precision=Precision("none", torch.device("cpu")),
        progress=False,
        clip_frames=8,
        **options,
    )
    return training.fit(train, val), scored


SCORES = [0.5] * 80
SCORES[2], SCORES[34], SCORES[78], SCORES[79] = 0.95, 0.7, 0.8, 0.6  # best at 3 and 79, off the schedule


@pytest.mark.parametrize("finetune", [False, True])
def test_best_is_taken_over_every_fifth_epoch_and_the_last(monkeypatch, finetune):
    result, scored = _scripted_fit(monkeypatch, finetune, SCORES, eval_every=5)
    counted = list(range(5, 81, 5))  # the released script's 16 evaluations; the last, 80, is one of them
    assert (result.best_top1, result.best_epoch, result.last_top1) == (0.7, 35, 0.6)
    # The linear probe scores every epoch (cached features) for its history; fine-tuning only the counted ones.
    assert scored == (counted if finetune else list(range(1, 81)))
    assert [row["val_top1"] is not None for row in result.history] == [e in scored for e in range(1, 81)]


def test_best_over_every_epoch_and_a_last_epoch_off_the_schedule(monkeypatch):
    result, _ = _scripted_fit(monkeypatch, False, SCORES, eval_every=1)
    assert (result.best_top1, result.best_epoch, result.last_top1) == (0.95, 3, 0.6)
    result, scored = _scripted_fit(monkeypatch, True, SCORES[:12], eval_every=5)
    assert scored == [5, 10, 12] and (result.best_top1, result.best_epoch) == (0.5, 5)
    result, scored = _scripted_fit(monkeypatch, True, SCORES, eval_every=5, max_steps=7)  # stops after epoch 7
    assert scored == [5, 7] and len(result.history) == 7 and result.last_top1 == 0.5


def test_classifier_training_clips_use_the_pretraining_views_on_request():
    x = torch.randn(6, 3, 30, 20, 1, generator=torch.Generator().manual_seed(0))
    num_frames = torch.tensor([30, 20, 10, 5, 1, 30])
    views = {"crop_min_ratio": 0.5, "crop_min_frames": 1, "shear": 1.0, "corrupt_prob": 0.0, "rotate_degrees": 17.0}
    encoder = build_encoder("tcn", layout=KINECT_V1, num_bodies=1, tcn_width=4)
    kwargs = dict(finetune=True, device=torch.device("cpu"), precision=Precision("none", torch.device("cpu")), seed=3)
    augmented = ClassifierTraining(encoder, 4, protocol(), clip_frames=8, view_augment=views, **kwargs)
    expected = evaluation.pretrain_view(
        x, num_frames, out_frames=8, generator=torch.Generator().manual_seed(3), **views
    )
    assert torch.equal(augmented._training_clip(x, num_frames), expected)
    plain = ClassifierTraining(encoder, 4, protocol(), clip_frames=8, **kwargs)
    cropped = evaluation.temporal_crop_resize(
        x, num_frames, evaluation.TRAIN_CROP_RATIOS, 8, 8, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(plain._training_clip(x, num_frames), cropped)

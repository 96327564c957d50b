"""Checkpoints: a run stopped (step cap or Ctrl-C) and resumed ends exactly where an uninterrupted run
does — same queue, prototypes, weights and history; a step cap is not kept by --resume; the two-phase recipe
with --init-from."""

import json
import os
import signal

import pytest
import torch
from skeleton.cli import main
from skeleton.training.checkpoint import load_checkpoint
from skeleton.training.pretrain import Pretraining
from test_skeleton_pipeline import TINY, tiny_config, tiny_run


def _train(cfg, out, resume_from=None, max_steps=None):
    run = tiny_run(cfg, out, max_steps)
    if resume_from is not None:
        run.resume(load_checkpoint(resume_from))
    return run, run.run()


def _assert_same_state(a: Pretraining, b: Pretraining):
    """The same criterion (queue of keys, prototype bank), weights, position and history (times aside)."""
    assert a.criterion.bank.ready and b.criterion.bank.ready
    assert a.criterion.queue.num_seen == b.criterion.queue.num_seen
    for (name, x), (other, y) in zip(a.criterion.state_dict().items(), b.criterion.state_dict().items()):
        assert name == other
        assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y, name
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name
    assert a.position == b.position
    assert a.history == [dict(row, seconds=r["seconds"], samples_per_s=r["samples_per_s"])
                         for row, r in zip(b.history, a.history)]  # fmt: skip


def _config():
    return tiny_config(epochs=2, halp_start_epoch=1)  # 6 steps of plain MoCo, then 6 with HaLP


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    torch.set_num_threads(1)
    run, status = _train(_config(), tmp_path_factory.mktemp("full"))
    assert status == "done" and run.position.step == 12
    return run


def test_resume_after_step_cap_equals_uninterrupted(uninterrupted, tmp_path):
    first, status = _train(_config(), tmp_path / "part", max_steps=4)  # stops in the middle of the first epoch
    assert status == "max_steps"
    checkpoint = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert checkpoint["position"] == {"epoch": 0, "batch": 4, "step": 4}
    assert checkpoint["first_epoch"] == 0 and checkpoint["input"]["num_bodies"] == 2
    resumed, status = _train(_config(), tmp_path / "part", resume_from=tmp_path / "part" / "checkpoints" / "last.pt")
    assert status == "done"
    _assert_same_state(uninterrupted, resumed)


class InterruptingDataset(torch.utils.data.Dataset):
    """Sends this process SIGINT (as Ctrl-C does) when sample number ``at`` is read."""

    def __init__(self, dataset, at):
        self.dataset, self.at, self.reads = dataset, at, 0
        self.num_classes = dataset.num_classes

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.dataset[index]


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(uninterrupted, tmp_path):
    run = tiny_run(_config(), tmp_path / "part")
    run.loader = torch.utils.data.DataLoader(
        InterruptingDataset(run.train_set, at=16 * 7 + 3), batch_size=16, sampler=run.sampler, drop_last=True
    )
    handler = signal.getsignal(signal.SIGINT)
    assert run.run() == "interrupted"
    checkpoint = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert checkpoint["position"] == {"epoch": 1, "batch": 2, "step": 8}  # the step in flight was finished
    assert signal.getsignal(signal.SIGINT) is handler  # the handler of the caller is back
    resumed, status = _train(_config(), tmp_path / "part", resume_from=tmp_path / "part" / "checkpoints" / "last.pt")
    assert status == "done"
    _assert_same_state(uninterrupted, resumed)


def test_max_steps_does_not_stick_to_resume(tmp_path):
    """Issue 19, item 6: after `pretrain --max-steps 4`, a plain --resume runs to the end of the schedule."""
    out = tmp_path / "run"
    argv = ["pretrain", *TINY, "--pretrain-epochs", "2", "--halp-start-epoch", "1", "--out", str(out)]
    assert main([*argv, "--max-steps", "4"]) == 0
    last = out / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["position"]["step"] == 4
    assert "max_steps" not in json.dumps(load_checkpoint(last)["config"])
    assert main(["pretrain", "--resume", str(last)]) == 0
    checkpoint = load_checkpoint(last)
    assert checkpoint["position"] == {"epoch": 2, "batch": 0, "step": 12}
    assert [row["epoch"] for row in checkpoint["history"]] == [1, 2]


def test_two_phase_recipe_with_init_from(tmp_path):
    moco = tiny_config(epochs=1, halp_start_epoch=5)
    first, _ = _train(moco, tmp_path / "moco")
    assert not first.criterion.active and not first.criterion.bank.ready  # still warming up at epoch 1 of 5
    assert first.criterion.queue.num_seen == 6 * 16

    second = tiny_run(tiny_config(epochs=2, halp_start_epoch=1), tmp_path / "halp")
    second.init_from(load_checkpoint(tmp_path / "moco" / "checkpoints" / "last.pt"))
    for (name, x), y in zip(second.model.state_dict().items(), first.model.state_dict().values()):
        assert torch.equal(x, y), name
    assert second.criterion.queue.num_seen == 0  # the loss starts afresh
    assert second.position.epoch == 1 and second.first_epoch == 1
    assert second.run() == "done"
    assert [row["phase"] for row in second.history] == ["moco", "halp"]
    assert second.history[-1]["halp"] != 0 and second.criterion.bank.ready
    assert load_checkpoint(tmp_path / "halp" / "checkpoints" / "last.pt")["first_epoch"] == 1

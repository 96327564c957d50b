"""Checkpoints: a run stopped (step cap or Ctrl-C) and resumed ends exactly where an uninterrupted run
does — same queue, prototypes, weights and history; the two-phase recipe with --init-from."""

import os
import signal

import pytest
import torch
from skeleton.training.checkpoint import load_checkpoint
from skeleton.training.pretrain import Pretraining
from test_skeleton_pipeline import tiny_config

CPU = torch.device("cpu")


def _train(cfg, out, resume_from=None):
    run = Pretraining(cfg, out, CPU, progress=False)
    if resume_from is not None:
        run.resume(load_checkpoint(resume_from))
    return run, run.run()


def _assert_same_state(a: Pretraining, b: Pretraining):
    assert torch.equal(a.model.queue, b.model.queue)
    assert int(a.model.queue_ptr) == int(b.model.queue_ptr)
    assert a.criterion.bank.ready and b.criterion.bank.ready
    assert torch.equal(a.criterion.bank.prototypes, b.criterion.bank.prototypes)
    assert torch.equal(a.criterion.bank.keys, b.criterion.bank.keys)
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
    capped = _config()
    capped.max_steps = 4  # stops in the middle of the first epoch
    first, status = _train(capped, tmp_path / "part")
    assert status == "max_steps"
    checkpoint = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert checkpoint["position"] == {"epoch": 0, "batch": 4, "step": 4}
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
    run = Pretraining(_config(), tmp_path / "part", CPU, progress=False)
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


def test_two_phase_recipe_with_init_from(tmp_path):
    moco = tiny_config(epochs=1, halp_start_epoch=5)
    first, _ = _train(moco, tmp_path / "moco")
    assert not first.criterion.bank.ready  # plain MoCo never feeds the bank

    halp = tiny_config(epochs=2, halp_start_epoch=1)
    second = Pretraining(halp, tmp_path / "halp", CPU, progress=False)
    second.init_from(load_checkpoint(tmp_path / "moco" / "checkpoints" / "last.pt"))
    assert torch.equal(second.model.queue, first.model.queue)
    assert second.position.epoch == 1
    assert second.run() == "done"
    assert [row["phase"] for row in second.history] == ["moco", "halp"]
    assert second.criterion.bank.ready

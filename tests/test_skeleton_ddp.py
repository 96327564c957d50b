"""DDP pretraining with two gloo processes on the CPU: every rank ends with the same queue, prototypes and
weights, and rank 0's checkpoint holds both ranks' RNG states."""

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from skeleton.training.checkpoint import load_checkpoint
from test_skeleton_pipeline import tiny_config, tiny_run

WORLD = 2
STEPS = 5


def _worker(rank: int, init_file: str, out_dir: str, key_bn: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        cfg = tiny_config(epochs=1, halp_start_epoch=0, batch_size=16, key_bn=key_bn)
        run = tiny_run(cfg, Path(out_dir), max_steps=STEPS)
        status = run.run()
        torch.save(
            {
                "status": status,
                "queue": run.criterion.queue.keys,
                "queue_seen": run.criterion.queue.num_seen,
                "prototypes": run.criterion.bank.prototypes,
                "bank_ready": run.criterion.bank.ready,
                "query": run.model.query.state_dict(),
                "last": run.criterion.last,
            },
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_ranks_stay_identical(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), "shuffle"), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    assert all(r["status"] == "max_steps" for r in ranks)
    assert all(r["bank_ready"] for r in ranks)
    assert ranks[0]["last"]["kept_fraction"] > 0  # the HaLP term was computed
    for name in ("queue", "prototypes"):
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    for name, value in ranks[0]["query"].items():
        if "running" not in name and "num_batches" not in name:  # BatchNorm statistics are per rank
            torch.testing.assert_close(value, ranks[1]["query"][name], rtol=0, atol=1e-6, msg=name)
    assert ranks[0]["queue_seen"] == ranks[1]["queue_seen"] == STEPS * 16  # both ranks' keys, gathered once
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert len(checkpoint["rng"]) == WORLD
    assert checkpoint["position"]["step"] == STEPS

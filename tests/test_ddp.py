"""DistributedDataParallel on CPU: two gloo processes, as ``torchrun --nproc_per_node 2`` would start them."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

WORLD_SIZE = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, tmp: str) -> None:
    """One rank: the environment torchrun sets, then a tiny run; saves what the test compares."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
    )
    torch.set_num_threads(1)
    from facerec.config import load_config
    from facerec.training import TrainConfig, Trainer

    config = load_config(
        TrainConfig,
        None,
        [
            "model.name=resnet18",
            "model.input_size=32",
            "data.kind=sample",
            "data.val_fraction=0.2",
            "data.val_pairs=20",
            "data.augment=light",
            "loss.kind=contrastive",
            "epochs=1",
            "batch_size=4",
            "steps_per_epoch=2",
            "num_workers=0",
            "device=cpu",
            "val_batch_size=40",
            f"output={tmp}/runs",
            "run_name=ddp",
        ],
    )
    trainer = Trainer(config)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    first_batch = torch.tensor(next(iter(trainer.batches.sampler)), dtype=torch.int64)
    result = trainer.fit()
    torch.save(
        {"initial": initial, "final": trainer.model.state_dict(), "batch": first_batch, "metrics": len(result.metrics)},
        Path(tmp) / f"rank{rank}.pt",
    )


@pytest.mark.slow
def test_two_cpu_processes_train_in_lockstep(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    assert not torch.equal(ranks[0]["batch"], ranks[1]["batch"])  # each rank trains on its own share
    final = [r["final"] for r in ranks]
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])  # gradients were all-reduced
    assert any(not torch.equal(ranks[0]["initial"][k], final[0][k]) for k in final[0])  # and applied
    assert ranks[0]["metrics"] > 0 and ranks[1]["metrics"] == 0  # only rank 0 validates and reports
    run_dir = tmp_path / "runs" / "ddp"
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "model" / "weights.pt").is_file()

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["facerec-train"])
    assert len(runs) == 1 and runs["params.run.world_size"][0] == "2"

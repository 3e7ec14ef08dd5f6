"""Mixed precision: which dtype a run trains in on which device, and bf16 training on the CPU."""

from __future__ import annotations

import pytest
import torch

from facerec.config import load_config
from facerec.training import precision
from facerec.training.config import TrainConfig
from facerec.training.precision import autocast_dtype, precision_name
from facerec.training.trainer import Trainer, run_params

TINY = [
    "model.name=resnet18",
    "model.pretrained=none",
    "model.input_size=32",
    "data.kind=sample",
    "data.val_fraction=0.2",
    "data.val_pairs=40",
    "data.augment=none",
    "data.augmented_fraction=0",
    "loss.kind=supcon",
    "loss.P=4",
    "loss.K=2",
    "optim.lr=0.003",
    "optim.head_lr=0.003",
    "optim.warmup=0",
    "epochs=20",
    "steps_per_epoch=1",
    "num_workers=0",
    "device=cpu",
    "val_batch_size=40",
    "run_name=tiny",
]


def test_amp_off_trains_in_fp32_on_every_device():
    assert autocast_dtype(torch.device("cpu"), False) is None
    assert autocast_dtype(torch.device("cuda"), False) is None
    assert precision_name(None) == "fp32"


@pytest.mark.parametrize("native", [True, False])
def test_amp_on_the_cpu_is_bf16_only_where_the_cpu_computes_bf16_natively(monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    expected = torch.bfloat16 if native else None
    assert precision.native_cpu_bf16() is native
    assert autocast_dtype(torch.device("cpu"), True) is expected
    assert precision_name(expected) == ("bf16" if native else "fp32")


def test_bf16_steps_lower_the_loss_keep_fp32_weights_and_give_the_loss_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)  # emulated where not native: slower, same maths
    trainer = Trainer(load_config(TrainConfig, None, [*TINY, "amp=true", f"output={tmp_path}"]))
    assert trainer.amp_dtype is torch.bfloat16 and not trainer.scaler.is_enabled()
    assert run_params(trainer)["run"]["precision"] == "bf16"
    seen: list[torch.dtype] = []
    trainer.loss_fn.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    batch = next(trainer.batches.epoch(1))

    def loss() -> float:
        with torch.no_grad():
            return trainer.loss_fn(trainer.network(batch.images), batch).item()

    trainer.network.train()
    before = loss()
    for _ in range(8):
        trainer._step(batch)
    assert loss() < 0.8 * before
    assert set(seen) == {torch.float32}  # the network ran in bf16, the loss in fp32
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())

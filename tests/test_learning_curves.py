"""benchmarks/learning_curves.py: validation curves of finished runs against training images seen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facerec.config import load_config, to_dict
from facerec.training.config import TrainConfig


@pytest.fixture
def curves(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import learning_curves

    return learning_curves


def fake_run(folder: Path, history: list[dict], *overrides: str, best_epoch: int | None = None) -> Path:
    """A run folder as the trainer leaves it: checkpoint.pt (config, history) and model/model.json."""
    config = load_config(TrainConfig, None, ["loss.kind=distill", "loss.P=8", "loss.K=1", *overrides])
    folder.mkdir(parents=True)
    torch.save({"config": to_dict(config), "history": history}, folder / "checkpoint.pt")
    (folder / "model").mkdir()
    (folder / "model" / "model.json").write_text(json.dumps({"best_epoch": best_epoch}))
    return folder


def rows(aucs: list[float], **extra: list[float]) -> list[dict]:
    return [{"epoch": i, "val_auc": a, **{k: v[i] for k, v in extra.items()}} for i, a in enumerate(aucs)]


def test_a_run_started_from_another_runs_model_continues_its_curve_from_the_best_epoch(curves, tmp_path):
    parent = fake_run(tmp_path / "a", rows([0.5, 0.7, 0.9, 0.8]), "steps_per_epoch=10", best_epoch=2)
    child = fake_run(tmp_path / "b", rows([0.9, 0.92]), "steps_per_epoch=5", f"model.name={parent / 'model'}")
    assert [r["images"] for r in curves.run_curve(parent)] == [0, 80, 160, 240]  # 10 steps x 8 images
    assert [r["images"] for r in curves.run_curve(child)] == [160, 200]  # from the parent's epoch 2


def test_a_run_from_a_registry_model_starts_at_zero_images(curves, tmp_path):
    run = fake_run(tmp_path / "a", rows([0.5, 0.6]), "steps_per_epoch=10")
    assert [r["images"] for r in curves.run_curve(run)] == [0, 80]


def test_live_weights_get_their_own_curve_beside_the_weight_average(curves, tmp_path, capsys):
    run = fake_run(tmp_path / "a", rows([0.5, 0.7, 0.8], live_val_auc=[0.5, 0.65, 0.72]), "steps_per_epoch=10")
    plain = fake_run(tmp_path / "b", rows([0.5, 0.6]), "steps_per_epoch=10")
    out = tmp_path / "curves.png"
    assert curves.main([str(run), str(plain), "--label", "ema", "--label", "plain", "--live", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ema (live weights): val_auc by epoch 0.500, 0.650, 0.720; best 0.720 at 160 images" in printed
    assert "plain (live weights)" not in printed and out.stat().st_size > 0


def test_a_folder_without_a_checkpoint_is_a_one_line_error(curves, tmp_path, capsys):
    assert curves.main([str(tmp_path), "--out", str(tmp_path / "x.png")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path} has no checkpoint.pt: not a training run folder"

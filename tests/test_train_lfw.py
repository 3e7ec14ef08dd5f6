"""The LFW protocol on the training path: with ``data.kind=lfw`` the trainer reads View 1
``peopleDevTrain`` only, so training, validation and threshold calibration never see a
DevTest identity. Runs on a small fake LFW tree in the official file formats, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facerec.config import load_config
from facerec.data.datasets import LFW, lfw_image_path
from facerec.training.config import TrainConfig
from facerec.training.trainer import Trainer

# name -> number of photos; DevTest identities live in the same image folder, as in real LFW
DEV_TRAIN = {
    **{f"Train_Person_{i:02d}": 3 + i % 2 for i in range(14)},
    **{f"Train_Single_{i:02d}": 1 for i in range(4)},
}
DEV_TEST = {f"Test_Person_{i:02d}": 2 + i % 3 for i in range(8)}


def _people(people: dict[str, int]) -> str:
    return f"{len(people)}\n" + "".join(f"{name}\t{n}\n" for name, n in people.items())


def _dev_pairs(people: dict[str, int], n: int) -> str:
    """``pairsDev*.txt``: header ``n``, ``n`` matched ``name i j`` lines, ``n`` mismatched ``a i b j`` lines."""
    multi = [name for name, count in people.items() if count >= 2]
    names = list(people)
    matched = [f"{multi[k % len(multi)]}\t1\t2\n" for k in range(n)]
    mismatched = [f"{names[k % len(names)]}\t1\t{names[(k + 1) % len(names)]}\t1\n" for k in range(n)]
    return f"{n}\n" + "".join(matched + mismatched)


def _write_photos(images_dir: Path, people: dict[str, int], rng: np.random.Generator) -> None:
    for name, count in people.items():
        base = rng.integers(40, 215, 3)  # one colour per identity, so the identities differ
        for number in range(1, count + 1):
            path = lfw_image_path(images_dir, name, number)
            path.parent.mkdir(parents=True, exist_ok=True)
            noise = rng.integers(-40, 40, (48, 48, 3))
            Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=90)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster than two fighting over a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fake_lfw(tmp_path_factory) -> tuple[Path, Path]:
    """(LFW root with View 1 protocol files and ``lfw-deepfunneled/``, a crops tree of every identity)."""
    root = tmp_path_factory.mktemp("lfw")
    rng = np.random.default_rng(0)
    everyone = {**DEV_TRAIN, **DEV_TEST}
    _write_photos(root / "lfw-deepfunneled", everyone, rng)
    _write_photos(root.parent / "crops", everyone, rng)  # what the crop stage writes: all 13,233 sources
    (root / "peopleDevTrain.txt").write_text(_people(DEV_TRAIN))
    (root / "peopleDevTest.txt").write_text(_people(DEV_TEST))
    (root / "pairsDevTrain.txt").write_text(_dev_pairs(DEV_TRAIN, 6))
    (root / "pairsDevTest.txt").write_text(_dev_pairs(DEV_TEST, 4))
    return root, root.parent / "crops"


def test_the_fake_tree_reads_like_lfw(fake_lfw):
    lfw = LFW.at(fake_lfw[0])
    assert {r.identity for r in lfw.dev_train()} == set(DEV_TRAIN)
    assert {r.identity for r in lfw.dev_test()} == set(DEV_TEST)
    assert len(lfw.pairs("pairsDevTest.txt")) == 8 and len(lfw.pairs("pairsDevTrain.txt")) == 12


@pytest.mark.parametrize("use_crops", [False, True], ids=["photos", "crops"])
def test_training_validation_and_calibration_never_open_a_dev_test_image(
    fake_lfw, use_crops, tmp_path, mlflow_store, monkeypatch
):
    root, crops = fake_lfw
    opened: list[Path] = []
    original_open = Image.open

    def recording_open(fp, *args, **kwargs):  # every decode path goes through PIL
        opened.append(Path(fp))
        return original_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", recording_open)
    config = load_config(
        TrainConfig,
        None,
        [
            "model.name=resnet18",
            "model.input_size=32",
            "data.kind=lfw",
            f"data.root={root}",
            f"data.crops={crops if use_crops else 'null'}",
            "data.val_fraction=0.25",
            "data.val_pairs=20",
            "data.augment=light",
            "loss.kind=supcon",
            "loss.P=4",
            "loss.K=2",
            "epochs=2",
            "steps_per_epoch=2",
            "num_workers=0",  # decoding in this process, where the recorder sees it
            "device=cpu",
            "val_batch_size=32",
            f"output={tmp_path}",
            "run_name=fake-lfw",
        ],
    )
    trainer = Trainer(config)
    result = trainer.fit()

    identities = {p.parent.name for p in opened}
    assert identities and not identities & set(DEV_TEST)  # nothing of DevTest was ever decoded
    assert identities <= set(DEV_TRAIN)
    assert {p.parent.parent for p in opened} == {crops if use_crops else root / "lfw-deepfunneled"}
    train_ids = {r.identity for r in trainer.train_records}
    val_ids = {r.identity for r in trainer.val_records}
    assert train_ids | val_ids == set(DEV_TRAIN) and not train_ids & val_ids
    calibrated_on = {Path(p).parent.name for pair in trainer.val_pairs for p in (pair.path1, pair.path2)}
    assert calibrated_on <= val_ids  # the threshold comes from held-out DevTrain identities only
    assert "peopleDevTrain" in trainer.data_source and result.model_dir.is_dir()

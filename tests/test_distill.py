"""Distillation: the loss on hand-made teacher vectors, centring, margin-loss recipes, the teacher
cache (hit, miss, invalidation), online targets on each view, and a few real distillation steps.
Tiny seeded models, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facerec.data.datasets import read_identity_folder
from facerec.errors import ConfigError
from facerec.models import create_embedder
from facerec.training.distill import (
    DistillConfig,
    DistillLoss,
    DistillObjective,
    off_diagonal_cosines,
    teacher_targets,
)
from facerec.training.losses import MARGIN_LOSSES, SupConLoss, margin_loss
from facerec.training.online_teacher import OnlineTeacher, build_online_objective
from facerec.training.teacher import INDEX_FILE, TeacherCache


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def unit_rows(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def random_rotation(d: int, seed: int = 1) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q


# ------------------------------------------------------------------ loss
def test_a_student_with_the_teachers_geometry_has_zero_distillation_loss():
    t = unit_rows(12, 8)
    rotated = t @ random_rotation(8)  # same cosines, another basis: relational matching ignores the basis
    assert DistillLoss(8, 8, "relational")(rotated, t).item() == pytest.approx(0.0, abs=1e-10)

    cosine = DistillLoss(8, 8, "cosine")
    with torch.no_grad():
        cosine.projection.weight.copy_(random_rotation(8))  # z @ W.T = t Q Q.T = t: undoes the rotation
    assert cosine(rotated, t).item() == pytest.approx(0.0, abs=1e-6)
    both = DistillLoss(8, 8, "both")
    both.projection.load_state_dict(cosine.projection.state_dict())
    assert both(rotated, t).item() == pytest.approx(0.0, abs=1e-6)


def test_a_student_with_another_geometry_pays_a_positive_loss_with_a_gradient():
    t, z = unit_rows(12, 8, seed=0), unit_rows(12, 16, seed=5).requires_grad_(True)
    for mode in ("cosine", "relational", "both"):
        z.grad = None
        loss = DistillLoss(16, 8, mode)(z, t)
        loss.backward()
        assert loss.item() > 0.05 and z.grad.abs().sum() > 0


def test_relational_loss_is_the_mean_squared_difference_of_the_off_diagonal_cosines():
    z = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    t = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    # student cosines (0, .707, .707) vs teacher (1, 0, 0): each counted twice in the symmetric matrix
    expected = ((0 - 1) ** 2 + 0.5 + 0.5) / 3
    assert DistillLoss(2, 2, "relational")(z, t).item() == pytest.approx(expected, rel=1e-5)


def test_an_unknown_mode_and_a_mix_without_parts_are_refused():
    with pytest.raises(ValueError, match="mode"):
        DistillLoss(4, 4, "kl")
    with pytest.raises(ValueError, match="weight"):
        DistillObjective(DistillLoss(4, 4), torch.zeros(3, 2, 4), weight=-1.0)


class LabelLoss(torch.nn.Module):
    """A base objective on a batch's labels (what the trainer wraps SupCon in)."""

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, embeddings, batch):
        return self.loss(embeddings, batch.labels)


def test_the_objective_picks_each_views_target_and_adds_the_weighted_parts():
    z = unit_rows(8, 6, seed=2)
    targets = torch.stack([unit_rows(10, 4, seed=3), unit_rows(10, 4, seed=4)], dim=1)  # 10 records x 2 views
    batch = SimpleNamespace(
        index=torch.tensor([9, 0, 3, 3, 5, 1, 2, 7]),
        flipped=torch.tensor([0, 1, 0, 1, 0, 0, 1, 1], dtype=torch.bool),
        labels=torch.arange(4).repeat_interleave(2),
    )
    distill, supcon = DistillLoss(6, 4, "relational"), SupConLoss(0.1)
    objective = DistillObjective(distill, targets, weight=2.0, base=LabelLoss(supcon))
    seen = targets[batch.index, batch.flipped.long()]
    expected = 2.0 * distill(z, seen) + supcon(z, batch.labels)
    assert objective(z, batch).item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(objective.last) == {"distill_loss", "metric_loss"}
    assert not any(k.startswith("targets") for k in objective.state_dict())  # rebuilt from the cache, not saved


# ------------------------------------------------------------------ centring
def test_centring_removes_the_direction_every_teacher_vector_shares():
    # a teacher like dlib: a common direction plus a small per-person part -> high cosine between anyone
    common = F.normalize(torch.ones(16), dim=0)
    vectors = F.normalize(3 * common + unit_rows(200, 16, seed=4), dim=-1).numpy()
    assert off_diagonal_cosines(torch.from_numpy(vectors)).item() > 0.8
    targets, mean = teacher_targets(vectors, centre=True)
    assert targets.shape == (200, 2, 16)
    assert abs(off_diagonal_cosines(targets[:, 0]).item()) < 0.01
    assert torch.allclose(targets.norm(dim=-1), torch.ones(200, 2), atol=1e-5)
    assert F.cosine_similarity(mean, common, dim=0).item() > 0.95

    raw, zero = teacher_targets(vectors, centre=False)
    assert torch.equal(zero, torch.zeros(16)) and off_diagonal_cosines(raw[:, 0]).item() > 0.8


def test_a_mirrored_view_gets_the_mirror_images_vector_or_the_average_of_both():
    v, f = unit_rows(5, 4, seed=6), unit_rows(5, 4, seed=7)
    matched, _ = teacher_targets(v.numpy(), f.numpy(), centre=False, flip="match")
    assert torch.allclose(matched[:, 0], v, atol=1e-6) and torch.allclose(matched[:, 1], f, atol=1e-6)
    averaged, _ = teacher_targets(v.numpy(), f.numpy(), centre=False, flip="average")
    assert torch.allclose(averaged[:, 0], F.normalize(v + f, dim=-1), atol=1e-6)
    assert torch.equal(averaged[:, 0], averaged[:, 1])
    own, _ = teacher_targets(v.numpy(), None, centre=False)  # mirror vectors not computed
    assert torch.equal(own[:, 0], own[:, 1])


# ------------------------------------------------------------------ margin recipes
@pytest.mark.parametrize("kind", sorted(MARGIN_LOSSES))
def test_a_margin_loss_recipe_builds_and_its_class_weights_train_with_the_model(kind):
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 6)
    loss_fn = margin_loss(kind, num_classes=5, embedding_dim=6)
    optimizer = torch.optim.SGD([*model.parameters(), *loss_fn.parameters()], lr=0.5)
    x, labels = torch.randn(20, 10), torch.arange(5).repeat(4)
    weights = loss_fn.W.detach().clone()
    losses = []
    for _ in range(15):
        loss = loss_fn(F.normalize(model(x), dim=-1), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert not torch.equal(weights, loss_fn.W.detach())  # the class weights are in the optimizer


def test_a_margin_loss_with_an_unknown_name_or_one_class_is_refused():
    with pytest.raises(ValueError, match="unknown"):
        margin_loss("sphereface", 5, 8)
    with pytest.raises(ValueError, match="classes"):
        margin_loss("arcface", 1, 8)


# ------------------------------------------------------------------ teacher cache
class CountingTeacher:
    """A real (tiny, seeded) embedder that counts how many images it was asked to embed."""

    def __init__(self, seed: int = 0) -> None:
        self.model = create_embedder("resnet18", pretrained="none", input_size=32, seed=seed)
        self.calls = 0

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    def embed_images(self, images):
        self.calls += len(images)
        return self.model.embed_images(images)


@pytest.fixture()
def crops(tmp_path: Path, sample_dir: Path) -> list[Path]:
    """Six sample photos copied to a writable folder (the test edits one)."""
    out = []
    for record in read_identity_folder(sample_dir)[:6]:
        dest = tmp_path / "crops" / record.identity / Path(record.path).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(record.path, dest)
        out.append(dest)
    return out


def test_teacher_vectors_are_computed_once_then_read_from_the_cache(tmp_path, crops):
    cache, teacher = TeacherCache(tmp_path / "cache"), CountingTeacher()
    first = cache.vectors(teacher, crops, spec="resnet18", progress=False)
    assert first.computed == 6 and teacher.calls == 12  # each crop and its mirror image
    assert first.vectors.shape == first.flipped.shape == (6, 512)
    assert not np.allclose(first.vectors, first.flipped)
    np.testing.assert_allclose(first.vectors, teacher.model.embed_images([Image.open(p) for p in crops]), atol=1e-5)

    again = TeacherCache(tmp_path / "cache").vectors(teacher, crops, progress=False)  # a new run, same teacher
    assert again.computed == 0 and teacher.calls == 12
    np.testing.assert_array_equal(again.vectors, first.vectors)
    np.testing.assert_array_equal(again.flipped, first.flipped)
    index = json.loads((tmp_path / "cache" / INDEX_FILE).read_text())
    assert index["teachers"][teacher.fingerprint]["count"] == 6
    with np.load(tmp_path / "cache" / index["teachers"][teacher.fingerprint]["file"], allow_pickle=False) as data:
        assert data["hashes"].dtype.kind == "U"  # plain arrays only: no pickle needed to read it


def test_a_changed_crop_is_recomputed_and_the_others_are_not(tmp_path, crops):
    cache, teacher = TeacherCache(tmp_path / "cache"), CountingTeacher()
    before = cache.vectors(teacher, crops, progress=False)
    Image.open(crops[2]).rotate(20).save(crops[2])  # the crop stage wrote a different crop at the same path
    after = cache.vectors(teacher, crops, progress=False)
    assert after.computed == 1 and teacher.calls == 12 + 2
    assert not np.allclose(after.vectors[2], before.vectors[2])
    np.testing.assert_array_equal(np.delete(after.vectors, 2, 0), np.delete(before.vectors, 2, 0))


def test_another_teacher_or_changed_teacher_weights_miss_the_cache(tmp_path, crops):
    cache, teacher = TeacherCache(tmp_path / "cache"), CountingTeacher(seed=0)
    cache.vectors(teacher, crops, progress=False)
    other = CountingTeacher(seed=1)
    assert cache.vectors(other, crops, progress=False).computed == 6
    with torch.no_grad():
        next(teacher.model.parameters()).add_(0.1)
    teacher.model.invalidate_fingerprint()
    assert cache.vectors(teacher, crops, progress=False).computed == 6
    assert len(json.loads((tmp_path / "cache" / INDEX_FILE).read_text())["teachers"]) == 3


# ------------------------------------------------------------------ learning
def test_a_few_distillation_steps_lower_the_loss(tmp_path, crops):
    teacher = CountingTeacher(seed=3)
    cached = TeacherCache(tmp_path / "cache").vectors(teacher, crops, progress=False)
    targets, _ = teacher_targets(cached.vectors, cached.flipped, centre=True)
    student = create_embedder("resnet18", pretrained="none", input_size=32, embedding_dim=64, seed=0)
    loss_fn = DistillObjective(DistillLoss(64, targets.shape[-1], "both"), targets)
    images = torch.stack([student.preprocess(Image.open(p).convert("RGB")) for p in crops])
    batch = SimpleNamespace(index=torch.arange(len(crops)), flipped=torch.zeros(len(crops), dtype=torch.bool))
    optimizer = torch.optim.Adam([*student.parameters(), *loss_fn.parameters()], lr=1e-3)
    student.train()
    losses = []
    for _ in range(12):
        loss = loss_fn(student(images), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_mirror_vectors_skipped_for_a_slow_teacher_are_computed_later_and_only_they(tmp_path, crops):
    cache, teacher = TeacherCache(tmp_path / "cache"), CountingTeacher()
    plain = cache.vectors(teacher, crops, flip=False, progress=False)
    assert plain.flipped is None and plain.computed == 6 and teacher.calls == 6
    full = cache.vectors(teacher, crops, flip=True, progress=False)
    assert full.computed == 6 and teacher.calls == 12  # the six mirror images, not the crops again
    np.testing.assert_array_equal(full.vectors, plain.vectors)
    assert np.isfinite(full.flipped).all()


# ------------------------------------------------------------------ through the trainer
TINY_KD = [
    "model.name=resnet18",
    "model.pretrained=none",
    "model.input_size=32",
    "model.embedding_dim=64",
    "data.kind=sample",
    "data.val_fraction=0.2",
    "data.val_pairs=40",
    "data.augment=light",
    "loss.P=4",
    "loss.K=2",
    "loss.distill.teacher=resnet18?input_size=32&seed=7",
    "loss.distill.pretrained=none",
    "optim.lr=0.001",
    "epochs=1",
    "steps_per_epoch=2",
    "num_workers=0",
    "device=cpu",
    "amp=false",
    "val_batch_size=40",
    "run_name=kd",
]


def tiny_kd(tmp_path: Path, *overrides: str):
    from facerec.config import load_config
    from facerec.training.config import TrainConfig

    return load_config(
        TrainConfig,
        None,
        [*TINY_KD, f"output={tmp_path / 'runs'}", f"loss.distill.cache={tmp_path / 'cache'}", *overrides],
    )


def test_a_distilled_model_directory_records_its_teacher_and_a_second_run_reuses_the_cache(tmp_path, mlflow_store):
    from facerec.training.trainer import Trainer, train

    result = train(tiny_kd(tmp_path, "loss.kind=distill", "loss.distill.mode=both"))
    meta = json.loads((result.model_dir / "model.json").read_text())
    teacher = meta["teacher"]
    assert teacher["spec"].startswith("resnet18") and teacher["fingerprint"].startswith("resnet18/32px/512d/")
    assert teacher["mode"] == "both" and teacher["centred"] is True
    assert abs(teacher["mean_cosine_targets"]) < 0.05  # centred on the training crops
    assert np.isfinite(result.history[-1]["train_loss"])

    # another student, mixed with SupCon: every training crop is a cache hit
    again = Trainer(tiny_kd(tmp_path, "loss.kind=supcon", "run_name=kd-supcon"))
    assert again.teacher["fingerprint"] == teacher["fingerprint"]
    assert again.teacher["cache_hits"] == again.teacher["training_crops"] == len(again.train_records)
    index = json.loads((tmp_path / "cache" / INDEX_FILE).read_text())
    assert list(index["teachers"]) == [teacher["fingerprint"]]


@pytest.mark.parametrize("kind", sorted(MARGIN_LOSSES))
def test_a_margin_loss_trains_through_the_trainer_with_its_class_weights_in_the_optimizer(tmp_path, kind):
    from facerec.training.trainer import Trainer

    trainer = Trainer(tiny_kd(tmp_path, f"loss.kind={kind}", "loss.distill.teacher=null"))
    weights = trainer.loss_fn.loss.W
    assert any(p is weights for group in trainer.optimizer.param_groups for p in group["params"])
    before = weights.detach().clone()
    batch = next(iter(trainer.batches.epoch(1)))
    loss = trainer._step(batch)
    assert np.isfinite(loss) and not torch.equal(before, weights.detach())


def test_the_kd_experiment_gives_every_backbone_a_valid_distillation_config_within_its_budget():
    from facerec.config import from_dict
    from facerec.model_benchmark import load_benchmark_config, model_train_config
    from facerec.training.config import TrainConfig, problems

    experiment = load_benchmark_config(Path(__file__).resolve().parents[1] / "experiments" / "lfw-view1-kd.yaml")
    assert len(experiment.models) == 6
    for entry in experiment.models:
        config = from_dict(TrainConfig, model_train_config(experiment, entry))
        assert not problems(config)
        assert config.loss.kind == "distill" and config.loss.distill.teacher == "dlib-resnet"
        assert config.data.kind == "lfw"  # peopleDevTrain only
        assert config.max_minutes <= (60 if entry.name == "clip-vit-b-32" else 20)


# ------------------------------------------------------------------ online targets
def test_an_online_teacher_gives_each_view_its_own_target_centred_on_the_training_views():
    teacher = create_embedder("resnet18", pretrained="none", input_size=32, embedding_dim=16, seed=3)
    online = OnlineTeacher(teacher)
    pixels = (torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    online.prepare(pixels, amp_dtype=None)
    raw = torch.from_numpy(teacher.embed(pixels.float() / 255.0))
    assert torch.allclose(online.mean, raw.mean(dim=0), atol=1e-5)
    assert abs(online.mean_cosine["mean_cosine_targets"]) < 0.05

    views = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    batch = SimpleNamespace(views=torch.cat([views, views.flip(-1)]))
    targets = online(batch)
    expected = F.normalize(torch.from_numpy(teacher.embed(batch.views)) - online.mean, dim=-1)
    assert torch.allclose(targets, expected, atol=1e-5)
    assert not torch.allclose(targets[:4], targets[4:], atol=1e-3)  # a mirrored view has its own target
    online.train()  # the trainer's per-epoch call must not put the frozen teacher's BatchNorm in training mode
    assert not teacher.training and list(online.parameters()) == [] and not targets.requires_grad
    assert not online.state_dict()  # named by its fingerprint, not checkpointed
    with pytest.raises(RuntimeError, match="views"):
        online(SimpleNamespace(views=None))


def test_only_a_torch_teacher_can_run_online():
    with pytest.raises(ConfigError, match="torch teacher"):
        build_online_objective(DistillConfig(teacher="dlib-resnet", online=True), CountingTeacher(), None, 8)


def test_mixup_is_refused_where_no_target_describes_a_blend(tmp_path):
    from facerec.training.config import problems

    found = problems(tiny_kd(tmp_path, "loss.kind=distill", "data.mixup=0.2"))
    assert any("data.mixup blends two faces" in p for p in found)
    assert any("data.mixup blends" in p for p in problems(tiny_kd(tmp_path, "loss.kind=supcon", "data.mixup=0.2")))
    assert any("data.mixup must be >= 0" in p for p in problems(tiny_kd(tmp_path, "data.mixup=-1")))
    online = tiny_kd(tmp_path, "loss.kind=distill", "loss.distill.online=true", "data.mixup=0.2")
    assert problems(online) == []


def test_online_distillation_trains_the_student_on_views_at_the_teachers_size(tmp_path, mlflow_store):
    from facerec.data.transforms import resize_batch
    from facerec.training.trainer import Trainer

    overrides = ("loss.kind=distill", "loss.distill.online=true", "loss.distill.teacher=resnet18?input_size=48&seed=7")
    trainer = Trainer(tiny_kd(tmp_path, *overrides, "data.mixup=0.4", "loss.distill.mode=both"))
    batch = next(iter(trainer.batches.epoch(1)))
    assert batch.images.shape[-1] == 32 and batch.views.shape[-1] == 48
    assert torch.allclose(batch.images, resize_batch(batch.views, 32))  # one view, two sizes
    result = trainer.fit()
    teacher = json.loads((result.model_dir / "model.json").read_text())["teacher"]
    assert teacher["online"] is True and teacher["input_size"] == 48
    assert teacher["fingerprint"].startswith("resnet18/48px/512d/")
    assert abs(teacher["mean_cosine_targets"]) < 0.05 and np.isfinite(result.history[-1]["train_loss"])
    assert not (tmp_path / "cache").exists()  # nothing cached: every target came from its own view

    # a teacher that sees other inputs (aligned chips) than the student cannot describe the student's view
    with pytest.raises(ConfigError, match="align"):
        Trainer(
            tiny_kd(
                tmp_path,
                *overrides[:2],
                "loss.distill.teacher=resnet18?input_size=48&align=dlib-chip",
                "run_name=kd-chips",
            )
        )

"""Pair and P x K batch sampling: balance, identities, determinism, sharding; decoded pixels and augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facerec.data.datasets import ImageRecord
from facerec.data.sampling import PairBatchSampler, PixelDataset, PKBatchSampler, decode, decode_all
from facerec.data.transforms import (
    BatchAugment,
    apply,
    eval_transform,
    mixup,
    resize_batch,
    seed_transform,
    train_transform,
)
from facerec.errors import ConfigError, DataError


def make_records(counts: dict[str, int], root: Path = Path("/nowhere")) -> list[ImageRecord]:
    return [
        ImageRecord(root / name / f"{name}_{i:04d}.jpg", name) for name, n in counts.items() for i in range(1, n + 1)
    ]


COUNTS = {**{f"multi{i}": 2 + i % 4 for i in range(12)}, **{f"single{i}": 1 for i in range(20)}}


def identity(records, index):
    return records[index].identity


def test_pair_batches_hold_the_configured_balance():
    records = make_records(COUNTS)
    sampler = PairBatchSampler(records, batch_size=20, steps=30, positive_fraction=0.4, augmented_fraction=0.25, seed=1)
    assert len(sampler) == 30
    for batch in sampler:
        assert len(batch) == 20
        positives = [(a, b) for a, b, same in batch if same]
        negatives = [(a, b) for a, b, same in batch if not same]
        assert len(positives) == 8 and len(negatives) == 12  # exactly round(20 * 0.4)
        assert all(identity(records, a) == identity(records, b) for a, b in positives)
        assert all(identity(records, a) != identity(records, b) for a, b in negatives)
        augmented = [(a, b) for a, b in positives if a == b]
        assert len(augmented) == 2  # round(8 * 0.25): one photo twice, from single-image identities
        assert all(identity(records, a).startswith("single") for a, _ in augmented)
        assert all(a != b for a, b in positives if (a, b) not in augmented)


def test_pair_sampling_is_seeded_per_epoch():
    records = make_records(COUNTS)
    sampler = PairBatchSampler(records, batch_size=8, steps=3, seed=5)
    first = list(sampler)
    assert list(sampler) == first  # same epoch, same batches
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(PairBatchSampler(records, batch_size=8, steps=3, seed=6)) != first


def test_ranks_draw_different_shares_of_the_same_global_stream():
    records = make_records(COUNTS)
    ranks = [list(PairBatchSampler(records, 8, steps=4, seed=2, rank=r, world_size=2)) for r in (0, 1)]
    stream = list(PairBatchSampler(records, 8, steps=8, seed=2))  # the same stream, one process
    assert ranks[0] != ranks[1]
    for step in range(4):  # step s of rank r is batch 2s + r of the stream: disjoint shares
        assert [ranks[r][step] for r in (0, 1)] == stream[2 * step : 2 * step + 2]
    for batches in ranks:
        assert all(sum(same for _, _, same in b) == 4 for b in batches)


def test_pair_sampler_needs_identities_that_can_form_pairs():
    with pytest.raises(DataError):
        PairBatchSampler(make_records({"a": 3}), batch_size=4, steps=1)
    singles = make_records({"a": 1, "b": 1, "c": 1})
    with pytest.raises(DataError, match="augmented_fraction"):
        PairBatchSampler(singles, batch_size=4, steps=1, augmented_fraction=0.5)
    only_augmented = PairBatchSampler(singles, batch_size=4, steps=2, augmented_fraction=1.0)
    assert all(a == b for batch in only_augmented for a, b, same in batch if same)
    with pytest.raises(ConfigError):
        PairBatchSampler(singles, batch_size=4, steps=1, positive_fraction=1.5)


def test_pk_batches_hold_p_identities_with_k_images_each():
    records = make_records(COUNTS)
    sampler = PKBatchSampler(records, P=6, K=4, steps=10, augmented_fraction=0.34, seed=3)
    for batch in sampler:
        assert len(batch) == 24
        labels = [label for _, label in batch]
        assert len(set(labels)) == 6 and all(labels.count(label) == 4 for label in set(labels))
        names = {label: {identity(records, i) for i, lab in batch if lab == label} for label in set(labels)}
        assert all(len(n) == 1 for n in names.values())  # a label is one identity
        singles = [n for n in names.values() if next(iter(n)).startswith("single")]
        assert len(singles) == 2  # round(6 * 0.34)
        for label in set(labels):
            images = [i for i, lab in batch if lab == label]
            available = COUNTS[identity(records, images[0])]
            assert len(set(images)) == min(4, available)  # distinct photos first, then repeats


def test_pk_sampler_checks_its_shape_against_the_data():
    records = make_records(COUNTS)
    with pytest.raises(ConfigError):
        PKBatchSampler(records, P=1, K=4, steps=1)
    with pytest.raises(ConfigError):
        PKBatchSampler(records, P=4, K=0, steps=1)
    with pytest.raises(DataError, match="2\\+ images"):
        PKBatchSampler(records, P=20, K=2, steps=1, augmented_fraction=0.0)


# ------------------------------------------------------------------ datasets
@pytest.fixture()
def photo_records(tmp_path) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    records = make_records({"a": 2, "b": 1}, tmp_path)
    for record in records:
        record.path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(record.path)
    return records


def paths(records) -> list[str]:
    return [str(r.path) for r in records]


def test_a_photo_drawn_twice_gets_two_different_strong_augmentations(photo_records):
    dataset = PixelDataset(paths(photo_records), 32, transform=train_transform(32, "strong"))
    seed_transform(dataset.transform, 0)
    a, b = dataset[2], dataset[2]
    assert a.shape == b.shape == (3, 32, 32) and a.dtype == torch.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert not torch.equal(a, b)


def test_strong_augmentation_is_reproducible_from_its_seed(photo_records):
    dataset = PixelDataset(paths(photo_records), 32, transform=train_transform(32, "strong"))
    seed_transform(dataset.transform, 7)
    first = [dataset[i] for i in range(3)]
    seed_transform(dataset.transform, 7)
    assert all(torch.equal(x, y) for x, y in zip(first, [dataset[i] for i in range(3)]))


def test_crops_decoded_once_hold_the_pixels_the_embedder_sees(photo_records):
    from facerec.data.images import load_image
    from facerec.models import create_embedder

    model = create_embedder("resnet18", input_size=32)
    cache = decode_all(paths(photo_records), 32, progress=False)
    assert cache.shape == (3, 3, 32, 32) and cache.dtype == torch.uint8
    for i, record in enumerate(photo_records):
        assert torch.equal(cache[i].float() / 255.0, model.preprocess(load_image(record.path)))
        assert torch.equal(decode(str(record.path), 32), cache[i])
    from_cache = PixelDataset(paths(photo_records), 32, cache=cache)
    from_files = PixelDataset(paths(photo_records), 32)
    assert all(torch.equal(from_cache[i], from_files[i]) for i in range(3))


def test_batch_augmentation_reports_which_images_it_mirrored():
    images = torch.rand(64, 3, 16, 16)
    out, flipped = BatchAugment(affine=False, jitter=False)(images, torch.Generator().manual_seed(0))
    assert 10 < int(flipped.sum()) < 54
    assert torch.equal(out[flipped], images[flipped].flip(-1)) and torch.equal(out[~flipped], images[~flipped])


def test_light_batch_augmentation_draws_each_image_anew_and_repeats_from_its_seed():
    image = torch.rand(1, 3, 32, 32)
    batch = image.expand(8, -1, -1, -1).contiguous()  # one photo drawn 8 times (single-image identity)
    augment = BatchAugment.for_augment("light")
    out, _ = augment(batch, torch.Generator().manual_seed(3))
    assert out.shape == batch.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert len({tuple(x.flatten()[:50].tolist()) for x in out}) == 8  # eight different views
    again, _ = augment(batch, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    unchanged, flipped = BatchAugment.for_augment("none")(batch, torch.Generator().manual_seed(3))
    assert torch.equal(unchanged, batch) and not flipped.any()


def test_eval_transform_matches_the_embedder_preprocessing(photo_records):
    from facerec.data.images import load_image

    image = load_image(photo_records[0].path)
    x = apply(eval_transform(24), image)
    assert x.shape == (3, 24, 24)
    assert torch.equal(apply(train_transform(24, "none"), image), x)  # "none" = plain resize


def test_a_flip_folded_into_the_affine_grid_mirrors_exactly():
    images = torch.rand(16, 3, 8, 8)
    still = BatchAugment(jitter=False, scale=(1.0, 1.0), translate=0.0, rotate=0.0)  # an affine of flips only
    out, flipped = still(images, torch.Generator().manual_seed(1))
    assert 0 < int(flipped.sum()) < 16
    assert torch.allclose(out[flipped], images[flipped].flip(-1), atol=1e-5)
    assert torch.allclose(out[~flipped], images[~flipped], atol=1e-5)


def test_colour_jitter_matches_brightness_then_contrast_then_saturation():
    images = torch.rand(32, 3, 8, 8)
    out, _ = BatchAugment(flip=False, affine=False)(images, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)  # the same draws, in the same order: mask, b, c, s
    apply = torch.rand(32, generator=generator) < 0.8
    b, c, s = (torch.where(apply, 1 - v + 2 * v * torch.rand(32, generator=generator), 1.0) for v in (0.25, 0.25, 0.2))
    b, c, s = (f[:, None, None, None] for f in (b, c, s))
    weights = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]
    x = images * b
    mean = (x * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (x - mean) * c + mean
    grey = (x * weights).sum(1, keepdim=True)
    x = (x - grey) * s + grey
    assert torch.allclose(out, x.clamp(0, 1), atol=1e-5)
    assert not torch.allclose(out, images)


def test_mixup_blends_each_image_with_another_of_its_batch_and_repeats_from_its_seed():
    images = torch.arange(8, dtype=torch.float32)[:, None, None, None].expand(8, 3, 4, 4).contiguous()
    out = mixup(images, 0.4, np.random.default_rng(0))
    values = out[:, 0, 0, 0]
    assert torch.equal(out, values[:, None, None, None].expand_as(out))  # a blend of two flat images is flat
    assert values.min() >= 0.0 and values.max() <= 7.0
    assert int((values != images[:, 0, 0, 0]).sum()) >= 4  # most images took part of another one
    assert torch.equal(out, mixup(images, 0.4, np.random.default_rng(0)))
    assert not torch.equal(out, mixup(images, 0.4, np.random.default_rng(1)))


def test_a_batch_resized_for_the_student_keeps_its_range_and_an_equal_size_is_left_alone():
    views = torch.rand(2, 3, 48, 48)
    small = resize_batch(views, 32)
    assert small.shape == (2, 3, 32, 32) and small.min() >= 0.0 and small.max() <= 1.0
    assert resize_batch(views, 48) is views
    flat = torch.full((1, 3, 48, 48), 0.25)
    assert torch.allclose(resize_batch(flat, 16), torch.full((1, 3, 16, 16), 0.25), atol=1e-6)

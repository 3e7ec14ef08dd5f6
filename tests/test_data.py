"""Identity folders and the LFW protocol files (fixtures, and the real files when LFW is available)."""

from __future__ import annotations

from collections import Counter

import pytest

from facerec.data.datasets import (
    LFW,
    generate_pairs,
    group_by_identity,
    read_identity_folder,
    read_pairs,
    read_people,
    resolve_data_root,
    split_by_identity,
)
from facerec.errors import DataError


def make_tree(root, people: dict[str, int]):
    for name, count in people.items():
        (root / name).mkdir(parents=True)
        for i in range(1, count + 1):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(b"x")
    return root


def test_sample_is_50_identities_of_4(sample_dir):
    records = read_identity_folder(sample_dir)
    groups = group_by_identity(records)
    assert len(groups) == 50 and {len(v) for v in groups.values()} == {4}


def test_view1_pairs_fixture(tmp_path):
    images = make_tree(tmp_path / "img", {"Ann": 2, "Bob": 1})
    f = tmp_path / "pairsDevTest.txt"
    f.write_text("1\nAnn\t1\t2\nAnn\t1\tBob\t1")
    pairs = read_pairs(f, images)
    assert [p.same for p in pairs] == [True, False]
    assert pairs[1].path2.name == "Bob_0001.jpg" and {p.fold for p in pairs} == {0}


def test_view2_pairs_folds(tmp_path):
    images = make_tree(tmp_path / "img", {"Ann": 2, "Bob": 1})
    f = tmp_path / "pairs.txt"
    f.write_text("2\t1\nAnn\t1\t2\nAnn\t2\tBob\t1\nAnn\t2\t1\nBob\t1\tAnn\t1\n")
    pairs = read_pairs(f, images)
    assert [(p.same, p.fold) for p in pairs] == [(True, 0), (False, 0), (True, 1), (False, 1)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("1\nAnn\t1\nAnn\t1\tBob\t1", ":2: expected a matched"),
        ("1\nAnn\t1\t2\nAnn\tx\tBob\t1", ":3: expected an integer"),
        ("2\nAnn\t1\t2\nAnn\t1\tBob\t1", "promises 4 pairs"),
        ("1\nAnn\t1\t3\nAnn\t1\tBob\t1", ":2: image not found"),
        ("", "empty"),
    ],
)
def test_malformed_pairs_name_file_and_line(tmp_path, text, message):
    images = make_tree(tmp_path / "img", {"Ann": 2, "Bob": 1})
    f = tmp_path / "pairs.txt"
    f.write_text(text)
    with pytest.raises(DataError, match=message):
        read_pairs(f, images)


def test_people_files(tmp_path):
    view1 = tmp_path / "peopleDevTrain.txt"
    view1.write_text("2\nAnn\t2\nBob\t1")
    assert [(e.name, e.count, e.fold) for e in read_people(view1)] == [("Ann", 2, 0), ("Bob", 1, 0)]
    view2 = tmp_path / "people.txt"
    view2.write_text("2\n1\nAnn\t2\n2\nBob\t1\nCid\t3\n")
    assert [(e.name, e.fold) for e in read_people(view2)] == [("Ann", 0), ("Bob", 1), ("Cid", 1)]
    view1.write_text("3\nAnn\t2\nBob\t1")
    with pytest.raises(DataError, match="ends early"):
        read_people(view1)


def test_data_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEREC_DATA", raising=False)
    with pytest.raises(DataError, match="FACEREC_DATA"):
        resolve_data_root(None)
    monkeypatch.setenv("FACEREC_DATA", str(tmp_path))
    assert resolve_data_root(None) == tmp_path
    with pytest.raises(DataError, match="not a directory"):
        resolve_data_root(tmp_path / "nope")


def test_split_is_identity_disjoint_and_seeded(sample_dir):
    records = read_identity_folder(sample_dir)
    train, val = split_by_identity(records, 0.2, seed=1)
    assert not {r.identity for r in train} & {r.identity for r in val}
    assert len({r.identity for r in val}) == 10
    assert split_by_identity(records, 0.2, seed=1) == (train, val)


def test_generated_pairs_balanced_unique_and_seeded(sample_dir):
    records = read_identity_folder(sample_dir)
    pairs = generate_pairs(records, 200, seed=3, n_folds=10)
    assert Counter(p.same for p in pairs) == {True: 100, False: 100}
    assert len({frozenset((p.path1, p.path2)) for p in pairs}) == 200
    assert all((p.path1.parent == p.path2.parent) == p.same for p in pairs)
    assert Counter(p.fold for p in pairs) == {k: 20 for k in range(10)}
    assert generate_pairs(records, 200, seed=3, n_folds=10) == pairs


@pytest.mark.lfw
def test_real_lfw_protocol_files(lfw_root):
    lfw = LFW.at(lfw_root)
    pairs = lfw.pairs("pairs.txt")
    assert len(pairs) == 6000 and sum(p.same for p in pairs) == 3000
    assert sorted(Counter(p.fold for p in pairs).values()) == [600] * 10
    assert len(lfw.pairs("pairsDevTrain.txt")) == 2200 and len(lfw.pairs("pairsDevTest.txt")) == 1000
    train, test = lfw.dev_train(), lfw.dev_test()
    assert len(train) == 9525 and len({r.identity for r in train}) == 4038
    assert len(test) == 3708 and len({r.identity for r in test}) == 1711
    assert not {r.identity for r in train} & {r.identity for r in test}
    view2 = read_people(lfw_root / "people.txt")
    assert {e.fold for e in view2} == set(range(10))


def test_generate_pairs_refuses_more_pairs_than_the_data_holds(sample_dir):
    records = [r for r in read_identity_folder(sample_dir) if r.identity in {"Aaron_Peirsol", "Al_Sharpton"}]
    # 2 identities x 4 images: 12 distinct matched pairs at most.
    assert sum(p.same for p in generate_pairs(records, 24, seed=0)) == 12
    with pytest.raises(DataError, match="distinct matched pairs"):
        generate_pairs(records, 40, seed=0)

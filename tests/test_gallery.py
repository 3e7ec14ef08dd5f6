"""facerec.gallery with synthetic embeddings: transactions, duplicates, erasure, index cache, locking, crashes."""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from facerec import faults
from facerec.errors import GalleryError, ModelMismatchError
from facerec.gallery import gallery as gallery_module
from facerec.gallery import index as faiss_index
from facerec.gallery.gallery import Gallery, ModelRecord, NewImage, check_name, default_gallery_dir
from facerec.gallery.index_cache import IndexCache
from facerec.gallery.rows import GalleryRows

DIM = 16
MODEL = ModelRecord("toy/16d/aaaa", DIM, {"model": "toy", "pretrained": "none"})
OTHER = ModelRecord("toy/16d/bbbb", DIM, {"model": "toy", "pretrained": "other"})


def vector(seed: int | str) -> np.ndarray:
    rng = np.random.default_rng(int(hashlib.sha256(str(seed).encode()).hexdigest()[:8], 16))
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def image(key: str) -> NewImage:
    return NewImage(f"/photos/{key}.jpg", hashlib.sha256(key.encode()).hexdigest(), vector(key), {"policy": "central"})


def snapshot(path: Path) -> dict:
    """What must not change when an operation fails: rows, generation, index file bytes."""
    with Gallery(path) as g:
        state = {"ids": g.identities(), "stats": {k: g.stats()[k] for k in ("images", "generation")}}
    index = path / gallery_module.INDEX_FILE
    state["index"] = hashlib.sha256(index.read_bytes()).hexdigest() if index.exists() else None
    return state


@pytest.fixture()
def gallery(tmp_path) -> Path:
    path = tmp_path / "gallery"
    with Gallery(path, create=True) as g:
        g.enroll([("alice", [image("a1"), image("a2")]), ("bob", [image("b1")])], MODEL)
    return path


def test_enroll_list_show_stats(gallery):
    with Gallery(gallery) as g:
        assert [(i["name"], i["images"]) for i in g.identities()] == [("alice", 2), ("bob", 1)]
        shown = g.show("alice")
        assert [im["source"] for im in shown["images"]] == ["/photos/a1.jpg", "/photos/a2.jpg"]
        assert shown["images"][0]["sha256"] == hashlib.sha256(b"a1").hexdigest()
        np.testing.assert_array_equal(g.embeddings("alice"), np.stack([vector("a1"), vector("a2")]))
        stats = g.stats()
        assert stats["identities"] == 2 and stats["images"] == 3 and stats["embedding_dim"] == DIM
        assert stats["model_fingerprint"] == MODEL.fingerprint and stats["model"] == MODEL.spec
        assert stats["index_fresh"] and stats["schema_version"] == gallery_module.SCHEMA_VERSION
        assert g.model() == MODEL


def test_search_aggregates_per_identity_exactly(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "g"
    with Gallery(path, create=True) as g:
        names = [f"person{i:02d}" for i in range(30)]
        g.enroll([(n, [image(f"{n}-{j}") for j in range(int(rng.integers(1, 6)))]) for n in names], MODEL)
        queries = np.stack([vector(f"q{i}") for i in range(20)])
        results = g.search(queries, top_k=4)
        for q, matches in zip(queries, results):
            best = {n: float(max(g.embeddings(n) @ q)) for n in names}  # brute force: max over images
            want = sorted(best, key=best.get, reverse=True)[:4]
            assert [m.identity for m in matches] == want
            np.testing.assert_allclose([m.score for m in matches], [best[n] for n in want], atol=1e-5)


def test_duplicate_image_is_skipped_and_changes_nothing(gallery):
    before = snapshot(gallery)
    with Gallery(gallery) as g:
        outcome = g.enroll([("carol", [image("a1")])], MODEL)[0]
    assert outcome.added == () and "already enrolled as 'alice'" in outcome.skipped[0][1]
    assert snapshot(gallery) == before  # no duplicate vector, no empty 'carol', same index file


def test_other_model_is_refused(gallery):
    before = snapshot(gallery)
    with Gallery(gallery) as g, pytest.raises(ModelMismatchError, match="--model toy --pretrained none"):
        g.enroll([("carol", [image("c1")])], OTHER)
    assert snapshot(gallery) == before


def test_identity_is_all_or_nothing(gallery, monkeypatch):
    before = snapshot(gallery)
    original = GalleryRows.insert_identity

    def failing(self, name, images):
        result = original(self, name, images)
        if name == "dave":
            raise RuntimeError("disk on fire")  # after carol's and dave's rows were inserted
        return result

    monkeypatch.setattr(GalleryRows, "insert_identity", failing)
    with Gallery(gallery) as g, pytest.raises(RuntimeError):
        g.enroll([("carol", [image("c1")]), ("dave", [image("d1"), image("d2")])], MODEL)
    assert snapshot(gallery) == before


def test_remove_erases_rows_and_vectors(gallery):
    with Gallery(gallery) as g:
        secret = g.embeddings("alice")
        assert g.remove("alice") == 2
        assert [i["name"] for i in g.identities()] == ["bob"]
        matches = g.search(secret, top_k=5)
        assert all(m.identity == "bob" for row in matches for m in row)
        assert g.stats()["index_fresh"]
    # right to erasure: the embedding bytes are in no file of the gallery any more
    for row in secret:
        for f in gallery.iterdir():
            assert row.astype("<f4").tobytes() not in f.read_bytes(), f.name
    with Gallery(gallery) as g, pytest.raises(GalleryError, match="no identity named 'alice'"):
        g.show("alice")


def test_remove_unknown_changes_nothing(gallery):
    before = snapshot(gallery)
    with Gallery(gallery) as g, pytest.raises(GalleryError, match="no identity named 'zoe'"):
        g.remove("zoe")
    assert snapshot(gallery) == before


@pytest.mark.parametrize("damage", ["delete", "garbage", "stale-sidecar", "bad-sidecar"])
def test_index_cache_is_rebuilt(gallery, damage):
    index, sidecar = gallery / gallery_module.INDEX_FILE, gallery / gallery_module.INDEX_META_FILE
    with Gallery(gallery) as g:
        want = [[m.identity for m in row] for row in g.search(g.embeddings("bob"), 2)]
    if damage == "delete":
        index.unlink()
    elif damage == "garbage":
        index.write_bytes(b"\0garbage")
    elif damage == "stale-sidecar":  # as if killed between the commit and the index write
        meta = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**meta, "generation": meta["generation"] - 1}))
    else:
        sidecar.write_text("{not json")
    with Gallery(gallery) as g:
        assert not g.stats()["index_fresh"]
        assert [[m.identity for m in row] for row in g.search(g.embeddings("bob"), 2)] == want
        assert g.stats()["index_fresh"]  # and the rebuilt index was saved


def test_crash_after_commit_before_index(gallery, monkeypatch):
    monkeypatch.setattr(IndexCache, "update", lambda self, previous, change, write=True: None)
    with Gallery(gallery) as g:
        g.enroll([("carol", [image("c1")])], MODEL)  # committed; index left behind (stale)
    monkeypatch.undo()
    with Gallery(gallery) as g:
        assert not g.index_is_fresh()
        assert g.search(vector("c1")[None], 1)[0][0].identity == "carol"


def test_auto_kind_is_recorded_and_reports_the_index_it_built(gallery):
    with Gallery(gallery) as g:
        report = g.rebuild_index("auto")
        assert report["kind"] == "auto" and report["index"]["kind"] == "flat"  # a small gallery: exact search
        assert report["index"]["vectors"] == report["vectors"] > 0
        g.enroll([("carol", [image("c1")])], MODEL)
        assert g.search(vector("c1")[None], 1)[0][0].identity == "carol"
        assert g.stats()["index_kind"] == "auto"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_follow_changes(gallery, kind):
    with Gallery(gallery) as g:
        assert g.rebuild_index(kind)["kind"] == kind
        g.enroll([("carol", [image("c1"), image("c2")])], MODEL)  # incremental add
        assert g.search(vector("c2")[None], 1)[0][0].identity == "carol"
        g.remove("carol")  # hnsw cannot delete in place: rebuilt
        assert all(m.identity != "carol" for m in g.search(vector("c2")[None], 5)[0])
        assert g.stats()["index_kind"] == kind and g.index_is_fresh()
    with pytest.raises(GalleryError, match="unknown index kind"), Gallery(gallery) as g:
        g.rebuild_index("lsh")


def test_ivf_trains_once_there_are_vectors(tmp_path):
    with Gallery(tmp_path / "g", create=True) as g:
        g.rebuild_index("ivf")  # empty and without a model: nothing to build
        g.enroll([("a", [image("x")])], MODEL)
        assert g.search(vector("x")[None], 1)[0][0].identity == "a"


def test_missing_foreign_and_corrupt_galleries(tmp_path):
    with pytest.raises(GalleryError, match="no gallery at"):
        Gallery(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()  # reading creates nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(GalleryError, match="is a file"):
        Gallery(tmp_path / "file", create=True)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(GalleryError, match="not a facerec gallery"):
        Gallery(foreign, create=True)
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"]

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "gallery.sqlite").write_bytes(b"this is not sqlite" * 100)
    for create in (False, True):
        with pytest.raises(GalleryError, match="corrupt or not a gallery"):
            Gallery(corrupt, create=create)
    assert (corrupt / "gallery.sqlite").read_bytes() == b"this is not sqlite" * 100

    other_app = tmp_path / "other"
    other_app.mkdir()
    with sqlite3.connect(other_app / "gallery.sqlite") as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    before = (other_app / "gallery.sqlite").read_bytes()
    with pytest.raises(GalleryError, match="another application"):
        Gallery(other_app, create=True)
    assert (other_app / "gallery.sqlite").read_bytes() == before


def test_newer_schema_is_refused(gallery):
    with sqlite3.connect(gallery / "gallery.sqlite") as conn:
        conn.execute(f"PRAGMA user_version = {gallery_module.SCHEMA_VERSION + 1}")
    with pytest.raises(GalleryError, match="upgrade facerec"):
        Gallery(gallery)


def test_names_and_default_location(monkeypatch, tmp_path):
    assert check_name("  Ada Lovelace ") == "Ada Lovelace"
    for bad in ("", "   ", "a\nb", "x" * 201):
        with pytest.raises(GalleryError):
            check_name(bad)
    monkeypatch.setenv("FACEREC_HOME", str(tmp_path / "home"))
    assert default_gallery_dir() == tmp_path / "home" / "gallery"
    monkeypatch.delenv("FACEREC_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_gallery_dir() == tmp_path / "xdg" / "facerec" / "gallery"


# ---------------------------------------------------------------- processes
def _enroll_many(path: str, prefix: str, count: int, images: int) -> None:
    with Gallery(path, create=True) as g:
        for i in range(count):
            name = f"{prefix}{i:03d}"
            g.enroll([(name, [image(f"{name}-{j}") for j in range(images)])], MODEL)


def test_four_processes_enroll_at_once(tmp_path):
    path = str(tmp_path / "g")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_enroll_many, args=(path, f"p{p}-", 15, 3)) for p in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    with Gallery(path) as g:
        ids = g.identities()
        assert len(ids) == 60 and all(i["images"] == 3 for i in ids)
        assert g.index_is_fresh()
        assert g.search(vector("p3-014-2")[None], 1)[0][0].identity == "p3-014"


def _remove(path: str, name: str) -> None:
    with Gallery(path) as g:
        g.remove(name)


def _hold_lock(path: str, ready: str) -> None:
    """Hold the gallery's exclusive lock (as a writer stuck in a long step would) until killed."""
    fd = os.open(Path(path) / gallery_module.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    Path(ready).touch()
    time.sleep(120)


def run_killed(monkeypatch, fault: str, target, *args) -> None:
    """Run ``target(*args)`` in a fresh process armed with ``FACEREC_FAULT=fault``; it must die by SIGKILL."""
    monkeypatch.setenv(faults.ENV, fault)  # read by the child's facerec.faults at import
    proc = mp.get_context("spawn").Process(target=target, args=args)
    proc.start()
    proc.join(120)
    monkeypatch.delenv(faults.ENV)
    assert proc.exitcode == -signal.SIGKILL, f"the child was not killed at {fault} (exit code {proc.exitcode})"


def leftover_temp_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob(".*.tmp"))


def assert_intact(path: Path, expected: dict[str, int]) -> None:
    """The database passes integrity_check and holds exactly ``expected`` (name: images); after one search
    the index file is fresh again and holds exactly the database's image ids, each finding its identity."""
    with sqlite3.connect(path / gallery_module.DB_FILE) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db_ids = [r[0] for r in conn.execute("SELECT id FROM images ORDER BY id")]
    with Gallery(path) as g:
        assert {i["name"]: i["images"] for i in g.identities()} == expected
        for name in expected:
            assert g.search(g.embeddings(name)[-1:], 1)[0][0].identity == name
        assert g.index_is_fresh()
    on_disk = faiss_index.read_index(path / gallery_module.INDEX_FILE)
    assert faiss_index.index_ids(on_disk).tolist() == db_ids


# (fault point, identities committed when the 3rd enrollment dies there, index file fresh after the kill)
KILLS = [
    ("enroll-in-transaction", 2, True),  # rolled back: the index of the 2nd commit still matches
    ("enroll-committed", 3, False),  # committed, index not updated
    ("index-save", 3, False),  # temporary index file written, not renamed: left behind
    ("index-sidecar", 3, False),  # new index renamed in, old sidecar: it does not vouch for it
]


@pytest.mark.parametrize(("fault", "committed", "fresh"), KILLS, ids=[k[0] for k in KILLS])
def test_a_sigkill_at_any_point_of_an_enrollment_loses_nothing_committed(
    tmp_path, monkeypatch, fault, committed, fresh
):
    path = tmp_path / "g"
    run_killed(monkeypatch, f"{fault}:3", _enroll_many, str(path), "p", 10, 4)
    with Gallery(path) as g:
        assert g.index_is_fresh() == fresh
    temp = leftover_temp_files(path)  # the dead writer's .index.faiss.PID.tmp, only when killed while saving
    assert [name.split(".")[1] for name in temp] == (["index"] if fault == "index-save" else [])
    assert_intact(path, {f"p{i:03d}": 4 for i in range(committed)})
    # the next writer enrolls as usual and sweeps the dead writer's temporary file
    with Gallery(path) as g:
        g.enroll([("next", [image("next-1")])], MODEL)
    assert leftover_temp_files(path) == []
    assert_intact(path, {**{f"p{i:03d}": 4 for i in range(committed)}, "next": 1})


def test_a_sigkill_mid_removal_keeps_the_identity_whole(gallery, monkeypatch):
    run_killed(monkeypatch, "remove-in-transaction", _remove, str(gallery), "alice")
    assert_intact(gallery, {"alice": 2, "bob": 1})


def test_a_stale_temporary_index_file_is_cleaned_and_data_kept(gallery):
    stale = [gallery / f".{gallery_module.INDEX_FILE}.424242.tmp", gallery / f".{gallery_module.INDEX_META_FILE}.1.tmp"]
    for f in stale:
        f.write_bytes(b"half a file from a killed writer")
    with Gallery(gallery) as g:
        g.enroll([("carol", [image("c1")])], MODEL)
    assert not any(f.exists() for f in stale)
    assert_intact(gallery, {"alice": 2, "bob": 1, "carol": 1})


def test_a_held_lock_times_out_with_a_clear_error_and_is_freed_when_its_holder_dies(gallery, tmp_path):
    before = snapshot(gallery)
    ready = tmp_path / "ready"
    holder = mp.get_context("spawn").Process(target=_hold_lock, args=(str(gallery), str(ready)))
    holder.start()
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        with pytest.raises(GalleryError, match=r"locked by another process for over 0.3 s"):
            Gallery(gallery, lock_timeout=0.3)
        assert time.monotonic() - started < 5
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # flock dies with its process: no stale lock to clear by hand
        holder.join()
    assert snapshot(gallery) == before
    with Gallery(gallery, lock_timeout=5) as g:
        g.enroll([("carol", [image("c1")])], MODEL)
    assert_intact(gallery, {"alice": 2, "bob": 1, "carol": 1})


def test_fault_points_are_named_and_counted():
    assert faults._parse(None) == (None, 0)
    assert faults._parse("index-save:2") == ("index-save", 2)
    with pytest.raises(ValueError, match="unknown fault point"):
        faults._parse("index-sav")


def test_deferred_index_for_bulk_enrollment(gallery):
    with Gallery(gallery) as g:
        before = (gallery / gallery_module.INDEX_FILE).read_bytes()
        g.enroll([("carol", [image("c1")])], MODEL, defer_index=True)
        g.enroll([("dave", [image("d1")])], MODEL, defer_index=True)
        assert (gallery / gallery_module.INDEX_FILE).read_bytes() == before and not g.index_is_fresh()
        assert g.search(vector("d1")[None], 1)[0][0].identity == "dave"  # the index in memory is current
        with Gallery(gallery) as other:  # another reader: the stale file is rebuilt from the database
            assert other.search(vector("c1")[None], 1)[0][0].identity == "carol"
        g.flush_index()
        assert g.index_is_fresh()

"""The gallery: a directory holding an SQLite database (the truth) and a FAISS index (a cache).

Layout of a gallery directory::

    gallery.sqlite   identities, images (source path, sha256, face, float32 embedding), meta
    index.faiss      faiss index over image row ids, written with faiss.write_index
    index.json       sidecar: the database generation the index was built from
    gallery.lock     fcntl.flock target that serialises writers across processes

Every change happens in one SQLite transaction that also bumps a generation
counter; the index is then updated and renamed into place, and its sidecar last.
A reader uses the index only when the sidecar's generation equals the database's;
otherwise (a process killed between commit and index write, a deleted or corrupt
index) the index is rebuilt from SQLite. Writers hold an exclusive lock for the
commit and the index update only; readers hold a shared one while they load.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from facerec.errors import GalleryError, ModelMismatchError
from facerec.files import atomic_write
from facerec.gallery import index as faiss_index

log = logging.getLogger(__name__)

DB_FILE = "gallery.sqlite"
INDEX_FILE = "index.faiss"
INDEX_META_FILE = "index.json"
LOCK_FILE = "gallery.lock"
HOME_ENV = "FACEREC_HOME"
#: ``PRAGMA application_id`` of a facerec gallery ("FREC"): tells it from other SQLite files.
APPLICATION_ID = 0x46524543
SCHEMA_VERSION = 1
#: Statements that bring the schema from version ``v - 1`` to ``v``.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE identities (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL)""",
        """CREATE TABLE images (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
            source_path TEXT NOT NULL,
            sha256 TEXT NOT NULL UNIQUE,
            face TEXT NOT NULL,
            embedding BLOB NOT NULL,
            created_at TEXT NOT NULL)""",
        "CREATE INDEX images_by_identity ON images(identity_id)",
    ),
}
LOCK_TIMEOUT_S = 300.0
MAX_NAME_LENGTH = 200


def default_gallery_dir() -> Path:
    """``$FACEREC_HOME/gallery``, else ``$XDG_DATA_HOME/facerec/gallery`` (``~/.local/share``)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "gallery"
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home).expanduser() / "facerec" / "gallery"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ModelRecord:
    """The model a gallery's embeddings come from: fingerprint, dimension, and how to load it again."""

    fingerprint: str
    embedding_dim: int
    spec: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """The ``--model ...`` flags that rebuild this model."""
        flags = [f"--model {self.spec.get('model', '?')}"]
        if self.spec.get("pretrained") is not None:
            flags.append(f"--pretrained {self.spec['pretrained']}")
        if self.spec.get("input_size") is not None:
            flags.append(f"--input-size {self.spec['input_size']}")
        return " ".join(flags)


@dataclass(frozen=True)
class NewImage:
    """One face to enroll: where it came from, its file hash, its embedding and face details."""

    source: str
    sha256: str
    embedding: np.ndarray
    face: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnrollOutcome:
    """What happened to one identity's images: row ids added, (position in the input, reason) skipped."""

    identity: str
    added: tuple[int, ...]
    skipped: tuple[tuple[int, str], ...]
    created: bool


@dataclass(frozen=True)
class Match:
    """One gallery identity matched by a query: its best score and the image that gave it."""

    identity: str
    score: float
    image_id: int


def check_name(name: str) -> str:
    """A valid identity name (stripped, non-empty, printable, at most 200 characters)."""
    clean = (name or "").strip()
    if not clean:
        raise GalleryError("identity name must not be empty")
    if len(clean) > MAX_NAME_LENGTH or not clean.isprintable():
        raise GalleryError(f"invalid identity name {clean[:40]!r}: use at most {MAX_NAME_LENGTH} printable characters")
    return clean


class Gallery:
    """One gallery directory; see the module docstring. Use as a context manager."""

    def __init__(self, path: str | Path, create: bool = False, lock_timeout: float = LOCK_TIMEOUT_S) -> None:
        self.path = Path(path).expanduser()
        self.lock_timeout = lock_timeout
        self._conn: sqlite3.Connection | None = None
        self._index: Any = None
        self._index_generation: int | None = None
        self._per_identity: tuple[int, int] | None = None  # (generation, most images of one identity)
        self._open(create)

    @property
    def db_path(self) -> Path:
        return self.path / DB_FILE

    @property
    def index_path(self) -> Path:
        return self.path / INDEX_FILE

    @property
    def index_meta_path(self) -> Path:
        return self.path / INDEX_META_FILE

    # ------------------------------------------------------------ opening
    def _open(self, create: bool) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise GalleryError(f"gallery path {self.path} is a file, not a directory")
        if not self.db_path.is_file():
            if not create:
                raise GalleryError(f"no gallery at {self.path}: enroll someone first (facerec enroll NAME IMAGE...)")
            ours = {LOCK_FILE, DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm"}
            if self.path.is_dir() and any(p.name not in ours for p in self.path.iterdir()):
                raise GalleryError(f"{self.path} is not empty and holds no {DB_FILE}: it is not a facerec gallery")
            self.path.mkdir(parents=True, exist_ok=True)
        try:
            with self._lock(exclusive=False):
                self._conn = self._connect()
                outdated = self._schema_version() < SCHEMA_VERSION
            if outdated:
                with self._lock(exclusive=True), self._guard():
                    if self._schema_version() < SCHEMA_VERSION:
                        with self._transaction():
                            self._migrate(self._schema_version())
            with self._guard():
                self._conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
        except BaseException:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.db_path, timeout=self.lock_timeout, isolation_level=None)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")  # erased rows are overwritten, not just unlinked
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.db_path} is corrupt or not a gallery database ({exc})") from exc
        return conn

    def _schema_version(self) -> int:
        """Check (read-only) that the database is a facerec gallery; return its schema version."""
        try:
            app_id = self._scalar("PRAGMA application_id")
            version = int(self._scalar("PRAGMA user_version"))
            tables = self._scalar("SELECT count(*) FROM sqlite_master")
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.db_path} is corrupt or not a gallery database ({exc})") from exc
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise GalleryError(f"{self.db_path} is an SQLite database of another application, not a facerec gallery")
        if version > SCHEMA_VERSION:
            raise GalleryError(
                f"gallery {self.path} has schema version {version}; this facerec reads up to {SCHEMA_VERSION}: upgrade facerec"
            )
        return version

    def _migrate(self, version: int) -> None:
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                self._conn.execute(statement)
            log.info("gallery %s: schema version %d", self.path, target)
        if version == 0:
            self._conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            stamp = now()
            self._set_meta(created_at=stamp, updated_at=stamp, generation=0, index_kind="flat", index_params={})
        self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._set_meta(schema_version=SCHEMA_VERSION)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._index = None

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _lock(self, exclusive: bool) -> Iterator[None]:
        """An inter-process lock on ``gallery.lock``: shared for readers, exclusive for writers."""
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + self.lock_timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() > deadline:
                        raise GalleryError(
                            f"gallery {self.path} is locked by another process for over {self.lock_timeout:.0f} s"
                        ) from exc
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock (also when the process dies)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any error."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn SQLite failures (corruption, I/O) into one-line GalleryErrors."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"gallery database {self.db_path}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise GalleryError(f"gallery {self.path} is closed")
        return self._conn

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self._connection().execute(sql, params).fetchone()
        return row[0] if row else None

    def _meta(self, key: str, default: Any = None) -> Any:
        value = self._scalar("SELECT value FROM meta WHERE key = ?", (key,))
        return default if value is None else json.loads(value)

    def _set_meta(self, **values: Any) -> None:
        self._connection().executemany(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    def generation(self) -> int:
        """The database generation: bumped by every committed change."""
        with self._guard():
            return int(self._meta("generation"))

    # ------------------------------------------------------------ model
    def model(self) -> ModelRecord | None:
        """The model this gallery was enrolled with (None before the first enrollment)."""
        with self._guard():
            fingerprint = self._meta("model_fingerprint")
            if fingerprint is None:
                return None
            return ModelRecord(fingerprint, int(self._meta("embedding_dim")), self._meta("model_spec", {}))

    def check_model(self, fingerprint: str) -> None:
        """Raise ModelMismatchError unless embeddings of model ``fingerprint`` belong in this gallery."""
        record = self.model()
        if record is not None and record.fingerprint != fingerprint:
            raise ModelMismatchError(
                f"gallery {self.path} was enrolled with model {record.fingerprint} ({record.describe()}); "
                f"the model in use is {fingerprint}: use that model or another --gallery"
            )

    # ------------------------------------------------------------ writing
    def enroll(
        self, batches: Sequence[tuple[str, Sequence[NewImage]]], model: ModelRecord, defer_index: bool = False
    ) -> list[EnrollOutcome]:
        """Add identities' images in ONE transaction (all or nothing); an image already enrolled is skipped.

        ``defer_index``: update the index in memory only (bulk enrollment); ``flush_index`` writes it.
        Until then the file is stale, which is safe: a reader rebuilds it from the database.
        """
        batches = [(check_name(name), list(images)) for name, images in batches]
        for _, images in batches:
            for image in images:
                if np.shape(image.embedding) != (model.embedding_dim,):
                    raise ValueError(f"embedding of {image.source} has shape {np.shape(image.embedding)}")
        with self._lock(exclusive=True), self._guard():
            previous = int(self._meta("generation"))
            with self._transaction() as conn:
                self.check_model(model.fingerprint)
                if self._meta("model_fingerprint") is None:
                    self._set_meta(
                        model_fingerprint=model.fingerprint, embedding_dim=model.embedding_dim, model_spec=model.spec
                    )
                results = [self._insert_identity(conn, name, images) for name, images in batches]
                ids = [i for outcome, _ in results for i in outcome.added]
                if ids:
                    self._set_meta(generation=previous + 1, updated_at=now())
            if ids:
                vectors = np.stack([v for _, vs in results for v in vs])
                self._update_index(previous, lambda index: self._grow(index, vectors, np.array(ids)), not defer_index)
        return [outcome for outcome, _ in results]

    def _insert_identity(
        self, conn: sqlite3.Connection, name: str, images: list[NewImage]
    ) -> tuple[EnrollOutcome, list[np.ndarray]]:
        stamp = now()
        row = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        identity_id = (
            row[0]
            if row
            else conn.execute(
                "INSERT INTO identities(name, created_at, updated_at) VALUES(?, ?, ?)", (name, stamp, stamp)
            ).lastrowid
        )
        added: list[int] = []
        vectors: list[np.ndarray] = []
        skipped: list[tuple[int, str]] = []
        for position, image in enumerate(images):
            owner = conn.execute(
                "SELECT identities.name FROM images JOIN identities ON identities.id = images.identity_id "
                "WHERE images.sha256 = ?",
                (image.sha256,),
            ).fetchone()
            if owner:
                skipped.append((position, f"duplicate: this image is already enrolled as {owner[0]!r}"))
                continue
            vector = np.ascontiguousarray(image.embedding, dtype="<f4")
            cursor = conn.execute(
                "INSERT INTO images(identity_id, source_path, sha256, face, embedding, created_at) VALUES(?,?,?,?,?,?)",
                (identity_id, image.source, image.sha256, json.dumps(image.face), vector.tobytes(), stamp),
            )
            added.append(cursor.lastrowid)
            vectors.append(vector)
        if added:
            conn.execute("UPDATE identities SET updated_at = ? WHERE id = ?", (stamp, identity_id))
        elif row is None:  # nothing new: leave no empty identity behind
            conn.execute("DELETE FROM identities WHERE id = ?", (identity_id,))
        return EnrollOutcome(name, tuple(added), tuple(skipped), row is None and bool(added)), vectors

    def remove(self, name: str) -> int:
        """Erase an identity: its rows, embeddings and index vectors. Returns the number of images removed."""
        name = check_name(name)
        with self._lock(exclusive=True), self._guard():
            previous = int(self._meta("generation"))
            with self._transaction() as conn:
                row = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
                if row is None:
                    raise GalleryError(f"no identity named {name!r} in gallery {self.path}")
                ids = [r[0] for r in conn.execute("SELECT id FROM images WHERE identity_id = ?", (row[0],))]
                conn.execute("DELETE FROM identities WHERE id = ?", (row[0],))  # cascades to its images
                self._set_meta(generation=previous + 1, updated_at=now())
            # move the erased (zeroed) pages out of the write-ahead log into the database file
            busy = self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if busy:
                log.warning("gallery %s: readers kept the WAL from being truncated", self.path)
            self._update_index(previous, lambda index: faiss_index.remove_vectors(index, np.array(ids)))
        return len(ids)

    def rebuild_index(self, kind: str | None = None, **params: Any) -> dict[str, Any]:
        """Rebuild the index from SQLite, optionally switching its kind (flat, hnsw, ivf) and parameters."""
        with self._lock(exclusive=True), self._guard():
            state = self._index_state()
            if kind is not None:
                if kind not in faiss_index.INDEX_KINDS:
                    raise GalleryError(f"unknown index kind {kind!r}; choose {', '.join(faiss_index.INDEX_KINDS)}")
                state = {**state, "kind": kind, "params": params}
            start = time.perf_counter()
            try:  # bad parameters fail here, before anything is saved
                index = self._build_from_db(state)
            except ValueError as exc:
                raise GalleryError(str(exc)) from exc
            if kind is not None:
                with self._transaction():
                    self._set_meta(index_kind=kind, index_params=params)
            if index is not None:
                self._write_index(index, int(self._meta("generation")))
            seconds = time.perf_counter() - start
        return {
            "kind": state["kind"],
            "params": state["params"],
            "vectors": 0 if index is None else int(index.ntotal),
            "seconds": round(seconds, 3),
        }

    # ------------------------------------------------------------ index cache
    def _grow(self, index: Any, vectors: np.ndarray, ids: np.ndarray) -> None:
        faiss_index.add_vectors(index, vectors, ids)
        inner = faiss_index.inner_index(index)
        if (
            isinstance(inner, faiss_index.faiss.IndexIVF)
            and not self._meta("index_params", {}).get("nlist")
            and faiss_index.default_nlist(index.ntotal) >= 2 * inner.nlist
        ):
            raise ValueError("the gallery outgrew its IVF lists: retrain")

    def _update_index(self, previous: int, change: Any, write: bool = True) -> None:
        """With the exclusive lock held and the change committed: apply it to the index, or rebuild."""
        if self._index is not None and self._index_generation == previous:
            index = self._index  # ours, and nobody committed since
        else:
            index = self._read_index_file(previous)
        if index is not None:
            try:
                change(index)
            except ValueError as exc:  # HNSW cannot delete, IVF untrained or outgrown
                log.info("gallery %s: rebuilding the index (%s)", self.path, exc)
                index = None
        if index is None:
            index = self._build_from_db()
        generation = int(self._meta("generation"))
        if index is not None and write:
            self._write_index(index, generation)
        else:
            self._index, self._index_generation = index, generation

    def flush_index(self) -> None:
        """Write the index kept in memory by ``enroll(defer_index=True)`` (rebuild it if others wrote since)."""
        with self._lock(exclusive=True), self._guard():
            generation = int(self._meta("generation"))
            if self._read_index_file(generation) is not None:
                return
            index = self._index if self._index_generation == generation else self._build_from_db()
            if index is not None:
                self._write_index(index, generation)

    def _index_state(self) -> dict[str, Any]:
        return {
            "kind": self._meta("index_kind"),
            "params": self._meta("index_params", {}),
            "fingerprint": self._meta("model_fingerprint"),
        }

    def _read_index_file(self, generation: int) -> Any:
        """The index file if its sidecar says it matches ``generation`` and the current settings, else None."""
        try:
            sidecar = json.loads(self.index_meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        expected = {"generation": generation, **self._index_state()}
        if not isinstance(sidecar, dict) or any(sidecar.get(k) != v for k, v in expected.items()):
            return None
        try:
            index = faiss_index.read_index(self.index_path)
        except GalleryError as exc:
            log.warning("%s; rebuilding it from the database", exc)
            return None
        return index if index.ntotal == sidecar.get("count") else None

    def _build_from_db(self, state: dict[str, Any] | None = None) -> Any:
        """An index of every stored vector (None while the gallery has no model yet)."""
        state = state or self._index_state()
        dim = self._meta("embedding_dim")
        ids, vectors = self._vectors()
        log.info("gallery %s: building a %s index over %d vectors", self.path, state["kind"], len(ids))
        index = faiss_index.build_index(vectors.reshape(-1, int(dim or 1)), ids, state["kind"], **state["params"])
        return None if dim is None else index

    def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self._connection().execute("SELECT id, embedding FROM images ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").astype(np.float32)
        return ids, vectors

    def _write_index(self, index: Any, generation: int) -> None:
        for stale in self.path.glob(f".{INDEX_FILE}.*.tmp"):  # left by a killed writer; we hold the lock
            stale.unlink(missing_ok=True)
        faiss_index.write_index(index, self.index_path)
        sidecar = {"generation": generation, **self._index_state(), "count": int(index.ntotal), "written_at": now()}
        with atomic_write(self.index_meta_path) as f:  # the sidecar goes last: it vouches for the index
            json.dump(sidecar, f)
        self._index, self._index_generation = index, generation

    def _current_index(self) -> Any:
        """The index for the current generation: cached, read from disk, or rebuilt (and saved)."""
        generation = self.generation()
        if self._index is not None and self._index_generation == generation:
            return self._index
        with self._lock(exclusive=False), self._guard():
            generation = int(self._meta("generation"))
            index = self._read_index_file(generation)
        if index is None:
            with self._lock(exclusive=True), self._guard():
                generation = int(self._meta("generation"))
                index = self._read_index_file(generation)
                if index is None:
                    log.info("gallery %s: index missing or stale; rebuilding it from the database", self.path)
                    index = self._build_from_db()
                    if index is not None:
                        self._write_index(index, generation)
        self._index, self._index_generation = index, generation
        return index

    def index_is_fresh(self) -> bool:
        with self._guard():
            return self._read_index_file(int(self._meta("generation"))) is not None

    # ------------------------------------------------------------ reading
    def search(self, queries: np.ndarray, top_k: int = 5) -> list[list[Match]]:
        """For each query, the ``top_k`` identities by their best image's cosine score, best first."""
        index = self._current_index()
        if index is None or index.ntotal == 0:
            raise GalleryError(f"gallery {self.path} is empty: enroll someone first")
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != index.d:
            raise ModelMismatchError(
                f"queries are {queries.shape[1]}-d but gallery {self.path} holds {index.d}-d vectors"
            )
        with self._guard():
            per_identity = self._most_images_per_identity()
            # the k-th best identity's best image ranks at most (k - 1) * per_identity + 1: exact aggregation
            k = min(int(index.ntotal), max(1, top_k) * per_identity)
            scores, ids = faiss_index.search(index, queries, k)
            names = self._names_of(np.unique(ids[ids >= 0]))
        results = []
        for row_scores, row_ids in zip(scores, ids):
            best: dict[str, Match] = {}
            for score, image_id in zip(row_scores, row_ids):
                name = names.get(int(image_id))
                if name is not None and name not in best:
                    best[name] = Match(name, float(score), int(image_id))
            results.append(sorted(best.values(), key=lambda m: -m.score)[:top_k])
        return results

    def _most_images_per_identity(self) -> int:
        """The largest image count of an identity (cached per generation: it scans the images table)."""
        generation = int(self._meta("generation"))
        if self._per_identity is None or self._per_identity[0] != generation:
            most = self._scalar("SELECT max(n) FROM (SELECT count(*) AS n FROM images GROUP BY identity_id)")
            self._per_identity = (generation, int(most or 1))
        return self._per_identity[1]

    def _names_of(self, image_ids: np.ndarray) -> dict[int, str]:
        names: dict[int, str] = {}
        ids = [int(i) for i in image_ids]
        for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
            chunk = ids[start : start + 900]
            rows = self._connection().execute(
                "SELECT images.id, identities.name FROM images JOIN identities ON identities.id = images.identity_id "
                f"WHERE images.id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            names.update(dict(rows.fetchall()))
        return names

    def identities(self) -> list[dict[str, Any]]:
        """Every identity with its image count and timestamps, by name."""
        with self._guard():
            rows = (
                self._connection()
                .execute(
                    "SELECT identities.name, count(images.id), identities.created_at, identities.updated_at "
                    "FROM identities LEFT JOIN images ON images.identity_id = identities.id "
                    "GROUP BY identities.id ORDER BY identities.name"
                )
                .fetchall()
            )
        return [{"name": n, "images": c, "created_at": a, "updated_at": u} for n, c, a, u in rows]

    def show(self, name: str) -> dict[str, Any]:
        """One identity and its images (source path, sha256, face details, time)."""
        name = check_name(name)
        with self._guard():
            conn = self._connection()
            row = conn.execute("SELECT id, created_at, updated_at FROM identities WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise GalleryError(f"no identity named {name!r} in gallery {self.path}")
            images = [
                {"id": i, "source": s, "sha256": h, "face": json.loads(f), "created_at": c}
                for i, s, h, f, c in conn.execute(
                    "SELECT id, source_path, sha256, face, created_at FROM images WHERE identity_id = ? ORDER BY id",
                    (row[0],),
                )
            ]
        return {"name": name, "created_at": row[1], "updated_at": row[2], "images": images}

    def embeddings(self, name: str) -> np.ndarray:
        """The stored (N, D) float32 embeddings of one identity."""
        show = self.show(name)
        with self._guard():
            blobs = [
                self._scalar("SELECT embedding FROM images WHERE id = ?", (image["id"],)) for image in show["images"]
            ]
        return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1).astype(np.float32)

    def stats(self) -> dict[str, Any]:
        """Counts, model, index state, schema version, timestamps and sizes on disk."""
        with self._guard():
            record = self.model()
            stats = {
                "gallery": str(self.path),
                "identities": int(self._scalar("SELECT count(*) FROM identities")),
                "images": int(self._scalar("SELECT count(*) FROM images")),
                "embedding_dim": record.embedding_dim if record else None,
                "model_fingerprint": record.fingerprint if record else None,
                "model": record.spec if record else None,
                "index_kind": self._meta("index_kind"),
                "index_params": self._meta("index_params", {}),
                "generation": int(self._meta("generation")),
                "index_fresh": self.index_is_fresh(),
                "schema_version": int(self._meta("schema_version")),
                "created_at": self._meta("created_at"),
                "updated_at": self._meta("updated_at"),
            }
        stats["bytes"] = {p.name: p.stat().st_size for p in sorted(self.path.iterdir()) if p.is_file()}
        return stats

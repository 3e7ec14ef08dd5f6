"""The gallery's SQLite store, the truth: the file, schema and migrations, the file lock, transactions, meta.

``gallery.sqlite`` holds identities, images (source path, sha256, face details, float32
embedding) and a ``meta`` table (model, index settings, a generation counter bumped by
every committed change); ``rows.GalleryRows`` reads and writes the first two.
``gallery.lock`` is the ``fcntl.flock`` target that serialises writers across
processes: shared while reading, exclusive while writing. The store knows nothing of
FAISS; ``index_cache.IndexCache`` derives the index from it.
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facerec.errors import GalleryError
from facerec.gallery.records import ModelRecord

log = logging.getLogger(__name__)

DB_FILE = "gallery.sqlite"
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


def default_gallery_dir() -> Path:
    """``$FACEREC_HOME/gallery``, else ``$XDG_DATA_HOME/facerec/gallery`` (``~/.local/share``)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "gallery"
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home).expanduser() / "facerec" / "gallery"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class GalleryStore:
    """The SQLite database of one gallery directory and its file lock."""

    def __init__(self, path: str | Path, create: bool = False, lock_timeout: float = LOCK_TIMEOUT_S) -> None:
        self.path = Path(path).expanduser()
        self.lock_timeout = lock_timeout
        self._conn: sqlite3.Connection | None = None
        self._open(create)

    @property
    def db_path(self) -> Path:
        return self.path / DB_FILE

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
            with self.lock(exclusive=False):
                self._conn = self._connect()
                outdated = self._schema_version() < SCHEMA_VERSION
            if outdated:
                with self.lock(exclusive=True), self.guard():
                    if self._schema_version() < SCHEMA_VERSION:
                        with self.transaction():
                            self._migrate(self._schema_version())
            with self.guard():
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
            app_id = self.scalar("PRAGMA application_id")
            version = int(self.scalar("PRAGMA user_version"))
            tables = self.scalar("SELECT count(*) FROM sqlite_master")
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
            self.set_meta(created_at=stamp, updated_at=stamp, generation=0, index_kind="flat", index_params={})
        self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.set_meta(schema_version=SCHEMA_VERSION)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------ lock, transactions, errors
    @contextlib.contextmanager
    def lock(self, exclusive: bool) -> Iterator[None]:
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
                            f"gallery {self.path} is locked by another process for over {self.lock_timeout:g} s"
                        ) from exc
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock (also when the process dies)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any error."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn SQLite failures (corruption, I/O) into one-line GalleryErrors."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"gallery database {self.db_path}: {exc}") from exc

    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise GalleryError(f"gallery {self.path} is closed")
        return self._conn

    # ------------------------------------------------------------ meta
    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.connection().execute(sql, params).fetchone()
        return row[0] if row else None

    def meta(self, key: str, default: Any = None) -> Any:
        value = self.scalar("SELECT value FROM meta WHERE key = ?", (key,))
        return default if value is None else json.loads(value)

    def set_meta(self, **values: Any) -> None:
        self.connection().executemany(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    def generation(self) -> int:
        """The database generation: bumped by every committed change."""
        return int(self.meta("generation"))

    def bump_generation(self, previous: int) -> None:
        self.set_meta(generation=previous + 1, updated_at=now())

    def model(self) -> ModelRecord | None:
        """The model this gallery was enrolled with (None before the first enrollment)."""
        fingerprint = self.meta("model_fingerprint")
        if fingerprint is None:
            return None
        return ModelRecord(fingerprint, int(self.meta("embedding_dim")), self.meta("model_spec", {}))

    def set_model(self, model: ModelRecord) -> None:
        self.set_meta(model_fingerprint=model.fingerprint, embedding_dim=model.embedding_dim, model_spec=model.spec)

    def index_settings(self) -> dict[str, Any]:
        """What an index of this store is built with: kind, parameters, and the model it indexes."""
        return {
            "kind": self.meta("index_kind"),
            "params": self.meta("index_params", {}),
            "fingerprint": self.meta("model_fingerprint"),
        }

    # ------------------------------------------------------------ maintenance
    def checkpoint(self) -> None:
        """Move committed pages (erased rows' zeroed pages too) out of the write-ahead log into the file."""
        busy = self.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            log.warning("gallery %s: readers kept the WAL from being truncated", self.path)

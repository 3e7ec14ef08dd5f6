"""Files: atomic writes, content hashes, and facerec's per-user cache folder.

Every file facerec writes appears whole or not at all.

One helper for what was written out by hand at each site: write to a temporary file
beside the destination (same file system, so the rename is atomic), flush it to disk,
then rename it over the destination. A killed or failing writer leaves the old file
in place and at most a ``.NAME.PID.tmp`` file, which is removed on failure.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def temporary_path(dest: Path) -> Path:
    """The temporary name used for ``dest``: hidden, per process, in the same folder."""
    return dest.with_name(f".{dest.name}.{os.getpid()}.tmp")


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str | Path) -> None:
    """Make a rename inside ``directory`` durable (the directory entry itself is data)."""
    fsync_file(directory)


@contextmanager
def atomic_path(dest: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``dest`` through; renamed over ``dest`` on success.

    ``durable`` fsyncs the file before the rename and the folder after it (what a
    database-like file needs; crops and caches that can be rebuilt skip it).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(dest)
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(dest.parent)


@contextmanager
def atomic_write(dest: str | Path, mode: str = "w", durable: bool = True, encoding: str | None = None) -> Iterator[IO]:
    """``open(dest, mode)`` that replaces ``dest`` only once the ``with`` block succeeds."""
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(dest, durable=durable) as tmp, open(tmp, mode, encoding=encoding) as handle:
        yield handle
        handle.flush()


#: Root of facerec's caches (fingerprints, teacher vectors); default ``$XDG_CACHE_HOME/facerec``.
CACHE_ENV = "FACEREC_CACHE"


def cache_dir(name: str) -> Path:
    """``$FACEREC_CACHE/<name>``, else ``$XDG_CACHE_HOME/facerec/<name>`` (``~/.cache/facerec/<name>``)."""
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facerec"
    return Path(root).expanduser() / name


def hash_file_into(digest: hashlib._Hash, path: str | Path) -> None:
    """Feed a file's bytes to ``digest`` in 1 MiB blocks (photos, crops and weight files alike)."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    hash_file_into(digest, path)
    return digest.hexdigest()

"""API keys: made once, shown once, stored only as SHA-256 hashes in a JSON file beside the gallery.

Keys are 256-bit random tokens, so a plain SHA-256 (not a slow password hash) is
enough to make the stored file useless to a reader. Writers take an flock on
``FILE.lock`` and replace the file atomically (mode 0600); the server re-reads it
when its size or mtime changes, so ``facerec keys remove`` takes effect at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from facerec.errors import FacerecError
from facerec.files import atomic_write

ROLES = ("read", "write")  # write includes read
KEY_PREFIX = "frk_"
KEYS_SUFFIX = ".keys.json"


def default_keys_path(gallery: str | Path) -> Path:
    """``<gallery>.keys.json``: beside the gallery directory (a gallery directory holds only its own files)."""
    gallery = Path(gallery).expanduser()
    return gallery.with_name(gallery.name + KEYS_SUFFIX)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def allows(role: str, needed: str) -> bool:
    """Whether a key of ``role`` may call an endpoint that needs ``needed``."""
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class KeyRecord:
    name: str
    role: str
    sha256: str
    created_at: str

    def public(self) -> dict[str, str]:
        """What ``keys list`` shows: never the hash."""
        return {"name": self.name, "role": self.role, "created_at": self.created_at}


class KeyStore:
    """The keys file: add / list / remove (CLI) and lookup (server, thread-safe, reloads on change)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._stamp: tuple[int, int] | None = None
        self._by_hash: dict[str, KeyRecord] = {}
        self._mutex = threading.Lock()

    # ------------------------------------------------------------ reading
    def _read(self) -> list[KeyRecord]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise FacerecError(f"cannot read API keys file {self.path}: {exc}") from exc
        try:
            return [KeyRecord(**entry) for entry in data["keys"]]
        except (KeyError, TypeError) as exc:
            raise FacerecError(f"API keys file {self.path} is malformed ({exc})") from exc

    def records(self) -> list[KeyRecord]:
        return self._read()

    def _fresh(self) -> dict[str, KeyRecord]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        with self._mutex:
            if stamp != self._stamp or (stamp is None and self._by_hash):
                self._by_hash = {r.sha256: r for r in self._read()} if stamp else {}
                self._stamp = stamp
            return self._by_hash

    def configured(self) -> bool:
        """Whether any key exists (without keys the server stays on loopback and asks for none)."""
        return bool(self._fresh())

    def lookup(self, key: str) -> KeyRecord | None:
        """The record of a presented key, or None (compared by hash, in constant time)."""
        digest = key_hash(key)
        for stored, record in self._fresh().items():
            if hmac.compare_digest(stored, digest):
                return record
        return None

    # ------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[KeyRecord]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self._read()
        finally:
            os.close(fd)

    def _write(self, records: list[KeyRecord]) -> None:
        with atomic_write(self.path) as f:
            os.chmod(f.name, 0o600)  # before any content: the hashes are nobody else's business
            json.dump({"version": 1, "keys": [asdict(r) for r in records]}, f, indent=2)

    def add(self, name: str, role: str) -> str:
        """Make a key; returns it (the only time it is ever shown)."""
        name = (name or "").strip()
        if not name or not name.isprintable() or len(name) > 100:
            raise FacerecError("key name must be 1-100 printable characters")
        if role not in ROLES:
            raise FacerecError(f"unknown role {role!r}; choose {' or '.join(ROLES)}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._locked() as records:
            if any(r.name == name for r in records):
                raise FacerecError(f"a key named {name!r} exists already in {self.path}: remove it first")
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self._write([*records, KeyRecord(name, role, key_hash(key), stamp)])
        return key

    def remove(self, name: str) -> KeyRecord:
        with self._locked() as records:
            kept = [r for r in records if r.name != name]
            if len(kept) == len(records):
                raise FacerecError(f"no key named {name!r} in {self.path}")
            self._write(kept)
        return next(r for r in records if r.name == name)

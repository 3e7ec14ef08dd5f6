"""The identities and images tables of a gallery store: one identity's rows written, rows read.

Writes run inside the store's transaction (``GalleryStore.transaction``), which the
``Gallery`` facade opens; reads run on the store's connection.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from facerec.errors import GalleryError
from facerec.gallery.records import EnrollOutcome, NewImage
from facerec.gallery.store import GalleryStore, now

#: SQLite's bound-parameter limit, with room to spare.
MAX_PARAMS = 900


class GalleryRows:
    """Rows of ``store``: identities with their images (embeddings, hashes, face details)."""

    def __init__(self, store: GalleryStore) -> None:
        self.store = store
        self._per_identity: tuple[int, int] | None = None  # (generation, most images of one identity)

    # ------------------------------------------------------------ writing (inside the store's transaction)
    def insert_identity(self, name: str, images: list[NewImage]) -> tuple[EnrollOutcome, list[np.ndarray]]:
        """Add ``images`` to identity ``name`` (made if new); an image already stored is skipped."""
        conn = self.store.connection()
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

    def delete_identity(self, name: str) -> list[int]:
        """Delete an identity and its images; returns the image row ids it had."""
        conn = self.store.connection()
        row = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise GalleryError(f"no identity named {name!r} in gallery {self.store.path}")
        ids = [r[0] for r in conn.execute("SELECT id FROM images WHERE identity_id = ?", (row[0],))]
        conn.execute("DELETE FROM identities WHERE id = ?", (row[0],))  # cascades to its images
        return ids

    # ------------------------------------------------------------ reading
    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every image row id (N,) and its embedding, flattened (N * D,) float32, by id."""
        rows = self.store.connection().execute("SELECT id, embedding FROM images ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").astype(np.float32)
        return ids, vectors

    def most_images_per_identity(self) -> int:
        """The largest image count of an identity (cached per generation: it scans the images table)."""
        generation = self.store.generation()
        if self._per_identity is None or self._per_identity[0] != generation:
            most = self.store.scalar("SELECT max(n) FROM (SELECT count(*) AS n FROM images GROUP BY identity_id)")
            self._per_identity = (generation, int(most or 1))
        return self._per_identity[1]

    def names_of(self, image_ids: np.ndarray) -> dict[int, str]:
        """Image row id -> identity name, for the ids that exist."""
        names: dict[int, str] = {}
        ids = [int(i) for i in image_ids]
        for start in range(0, len(ids), MAX_PARAMS):
            chunk = ids[start : start + MAX_PARAMS]
            rows = self.store.connection().execute(
                "SELECT images.id, identities.name FROM images JOIN identities ON identities.id = images.identity_id "
                f"WHERE images.id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            names.update(dict(rows.fetchall()))
        return names

    def identities(self) -> list[dict[str, Any]]:
        """Every identity with its image count and timestamps, by name."""
        rows = (
            self.store.connection()
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
        conn = self.store.connection()
        row = conn.execute("SELECT id, created_at, updated_at FROM identities WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise GalleryError(f"no identity named {name!r} in gallery {self.store.path}")
        images = [
            {"id": i, "source": s, "sha256": h, "face": json.loads(f), "created_at": c}
            for i, s, h, f, c in conn.execute(
                "SELECT id, source_path, sha256, face, created_at FROM images WHERE identity_id = ? ORDER BY id",
                (row[0],),
            )
        ]
        return {"name": name, "created_at": row[1], "updated_at": row[2], "images": images}

    def embeddings(self, name: str) -> np.ndarray:
        """The stored (N, D) float32 embeddings of one identity, by image id."""
        rows = (
            self.store.connection()
            .execute(
                "SELECT images.embedding FROM images JOIN identities ON identities.id = images.identity_id "
                "WHERE identities.name = ? ORDER BY images.id",
                (name,),
            )
            .fetchall()
        )
        if not rows:
            self.show(name)  # raises "no identity named ..."
        return np.frombuffer(b"".join(r[0] for r in rows), dtype="<f4").reshape(len(rows), -1).astype(np.float32)

    def counts(self) -> tuple[int, int]:
        """(identities, images)."""
        return int(self.store.scalar("SELECT count(*) FROM identities")), int(
            self.store.scalar("SELECT count(*) FROM images")
        )

"""Plain records passed between the recognizer, the ``Gallery`` facade and its store and index cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facerec.errors import GalleryError

MAX_NAME_LENGTH = 200


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


def check_name(name: str) -> str:
    """A valid identity name (stripped, non-empty, printable, at most 200 characters)."""
    clean = (name or "").strip()
    if not clean:
        raise GalleryError("identity name must not be empty")
    if len(clean) > MAX_NAME_LENGTH or not clean.isprintable():
        raise GalleryError(f"invalid identity name {clean[:40]!r}: use at most {MAX_NAME_LENGTH} printable characters")
    return clean


@dataclass(frozen=True)
class Match:
    """One gallery identity matched by a query: its best score and the image that gave it."""

    identity: str
    score: float
    image_id: int

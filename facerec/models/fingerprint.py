"""Weight fingerprints, hashed once and then cached where the weights live.

A fingerprint (``name/SIZEpx/DIMd/HASH``) names what an embedder computes: the
hash covers every tensor of its state dict. Hashing CLIP ViT-B/32's 88M
parameters costs a noticeable part of a second in every process, so it is cached:

* **Model directory**: ``model.json`` keeps ``fingerprint`` and ``weights_stamp``
  (size and mtime in ns of ``weights.pt`` right after it was written). A loader
  trusts the stored fingerprint only if ``weights.pt`` still has that size and
  mtime (checked before and after reading it) and the name/size/dim in
  ``model.json`` match the fingerprint's prefix; otherwise it hashes.
* **Anything else with fixed weights** (a registry model with a weights tag or a
  checkpoint file, a model directory from before stamps): one small JSON file
  per key under the user cache. The key holds the spec (name, weights tag,
  input size, dimension, options such as seed and head), the weight file's
  resolved path, size and mtime when there is one, the versions of torch,
  torchvision, open_clip and facerec, and a hash of the builder's source and
  of this package's ``base.py``: whatever changes the outputs changes the key.
  Random initialisation (``pretrained=none``) is not cached.

Every write of ``weights.pt`` (``save_model_dir``, a copy, an edit) makes a new
file with a new mtime, so a stale value is never matched; only a deliberate
rewrite that restores both size and nanosecond mtime would be (the rule make,
rsync and git use). Values are stored only right after the weights were read
from their file, before anyone can change them in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from facerec import files
from facerec.files import atomic_write

log = logging.getLogger(__name__)

CACHE_ENV = files.CACHE_ENV
NO_WEIGHTS = "none"
_LIBRARIES = ("torch", "torchvision", "open_clip_torch", "facerec")


def hash_state(embedder: Any) -> str:
    """The fingerprint computed from scratch: every state-dict tensor, in key order."""
    digest = hashlib.sha256()
    align = embedder.input_align
    if align:  # the same weights see other pixels (absent: the fingerprints from before the option)
        digest.update(f"align={align}".encode())
    for key, tensor in sorted(embedder.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{prefix(embedder.name, embedder.input_size, embedder.embedding_dim)}{digest.hexdigest()[:16]}"


def prefix(name: str, input_size: int, embedding_dim: int) -> str:
    return f"{name}/{input_size}px/{embedding_dim}d/"


def file_stamp(path: str | Path) -> dict[str, int] | None:
    """``{"size", "mtime_ns"}`` of a file, or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_dir() -> Path:
    """``$FACEREC_CACHE/fingerprints``, else ``~/.cache/facerec/fingerprints``."""
    return files.cache_dir("fingerprints")


# ------------------------------------------------------------------ model directory
def stored_dir_fingerprint(meta: dict[str, Any], stamp_before: dict | None, stamp_after: dict | None) -> str | None:
    """The fingerprint in ``model.json`` when it still vouches for ``weights.pt``, else None."""
    stored, stamp = meta.get("fingerprint"), meta.get("weights_stamp")
    if not isinstance(stored, str) or not stamp or stamp != stamp_before or stamp_before != stamp_after:
        return None
    if not stored.startswith(prefix(meta.get("name"), meta.get("input_size"), meta.get("embedding_dim"))):
        return None  # model.json was edited (name, size or dimension) after the weights were hashed
    return stored


# ------------------------------------------------------------------ user cache
def _source_hash(*modules: str) -> str:
    digest = hashlib.sha256()
    for name in modules:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if not path:
            return ""
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def registry_key(spec: Any, builder_module: str) -> dict[str, Any] | None:
    """The cache key of a registry embedder, or None when its weights are random (not cached)."""
    pretrained = spec.pretrained
    if not pretrained or pretrained.lower() == NO_WEIGHTS:
        return None
    weights: dict[str, Any] = {"tag": pretrained}
    path = Path(pretrained).expanduser()
    if path.is_file():
        weights = {"file": str(path.resolve()), **(file_stamp(path) or {})}
    return {
        "kind": "registry",
        "name": spec.name,
        "input_size": spec.input_size,
        "embedding_dim": spec.embedding_dim,
        "weights": weights,
        "options": spec.options,
        "versions": _versions(),
        "code": _source_hash(builder_module, "facerec.models.base"),
    }


def dir_key(meta: dict[str, Any], weights: Path, stamp: dict | None) -> dict[str, Any] | None:
    """The cache key of a model directory's weights (by path, size and mtime)."""
    if stamp is None:
        return None
    return {
        "kind": "model-dir",
        "weights": str(weights.resolve()),
        **stamp,
        "prefix": prefix(meta.get("name"), meta.get("input_size"), meta.get("embedding_dim")),
    }


def _entry_path(key: dict[str, Any]) -> Path:
    blob = json.dumps(key, sort_keys=True, default=str)
    return cache_dir() / f"{hashlib.sha256(blob.encode()).hexdigest()[:32]}.json"


def cached(key: dict[str, Any] | None) -> str | None:
    """The fingerprint cached under ``key`` (None if absent, unreadable, or stored under another key)."""
    if key is None:
        return None
    try:
        entry = json.loads(_entry_path(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = isinstance(entry, dict) and json.loads(json.dumps(key, default=str)) == entry.get("key")
    return entry.get("fingerprint") if same and isinstance(entry.get("fingerprint"), str) else None


def remember(key: dict[str, Any] | None, fingerprint: str) -> None:
    """Store ``fingerprint`` under ``key``; a cache that cannot be written is only logged."""
    if key is None:
        return
    try:
        with atomic_write(_entry_path(key), durable=False) as f:
            json.dump({"key": key, "fingerprint": fingerprint}, f, default=str)
    except OSError as exc:
        log.debug("fingerprint cache not written: %s", exc)


def attach(embedder: Any, key: dict[str, Any] | None) -> None:
    """Give a freshly loaded embedder its fingerprint: from the cache, or hashed now and cached."""
    if key is None:
        return
    fingerprint = cached(key)
    if fingerprint is None:
        fingerprint = hash_state(embedder)  # now: the weights are exactly those just read
        remember(key, fingerprint)
    embedder._fingerprint = fingerprint

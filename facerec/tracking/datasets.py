"""Dataset inputs of MLflow runs: which images a figure comes from (``mlflow.log_input``).

Every train and evaluate run logs one MLflow dataset per role (context ``training``,
``validation`` or ``evaluation``): a name that says the data and the split
(``lfw/peopleDevTrain:train``), the image folder as its source, a profile with the
number of identities, images and pairs and the SHA-256 of the protocol file(s) the
split comes from, and a digest over that file content and the split's members, so two
runs on the same images show the same digest in the UI's Dataset column.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.types import ColSpec, DataType, Schema

from facerec.files import file_sha256

CONTEXTS = ("training", "validation", "evaluation")
#: One row per image of a split: what the dataset's schema describes.
RECORD_SCHEMA = Schema([ColSpec(DataType.string, "path"), ColSpec(DataType.string, "identity")])


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (a protocol file such as ``pairsDevTest.txt``)."""
    return file_sha256(path)


class FaceDataset(MetaDataset):
    """A split of face images: metadata only (the images stay where they are), with a profile."""

    def __init__(self, source: DatasetSource, name: str, digest: str, profile: dict[str, Any]) -> None:
        self._profile = profile
        super().__init__(source, name=name, digest=digest, schema=RECORD_SCHEMA)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        config = super().to_dict()
        config["profile"] = json.dumps(self._profile)
        return config


def face_dataset(
    data: str,
    split: str,
    root: str | Path,
    *,
    images: Iterable[str | Path] = (),
    identities: Iterable[str] = (),
    pairs: int = 0,
    protocol_files: Sequence[str | Path] = (),
    members: Iterable[str] = (),
) -> FaceDataset:
    """The dataset ``<data>/<split>`` under ``root``.

    ``protocol_files`` are hashed into the profile (``protocol_sha256``); the dataset digest
    covers those hashes and ``members`` (the split's image paths relative to ``root``, pair
    lines, ...), so a split carved from one protocol file by a seed gets its own digest.
    """
    root = Path(root)
    image_set = {str(p) for p in images}
    protocols = {Path(p).name: file_digest(p) for p in protocol_files}
    digest = hashlib.sha256()
    for name, value in sorted(protocols.items()):
        digest.update(f"{name}={value}\n".encode())
    for member in sorted(members):
        digest.update(f"{member}\n".encode())
    profile = {
        "split": split,
        "identities": len(set(identities)),
        "images": len(image_set),
        "pairs": pairs,
        "protocol_files": sorted(protocols),
        "protocol_sha256": protocols,
    }
    return FaceDataset(local_source(root), f"{data}/{split}", digest.hexdigest()[:12], profile)


def local_source(root: str | Path) -> DatasetSource:
    """MLflow's local-folder dataset source (source type ``local``; the class is generated at import)."""
    from mlflow.data import get_registered_sources

    for source in get_registered_sources():
        if source._get_source_type() == "local":
            return source(str(root))
    raise RuntimeError("MLflow registers no local dataset source")


def records_dataset(data: str, split: str, root: str | Path, records: Sequence[Any], **kwargs: Any) -> FaceDataset:
    """A dataset of ``ImageRecord``s (identity folders, LFW people files)."""
    root = Path(root)
    return face_dataset(
        data,
        split,
        root,
        images=[r.path for r in records],
        identities=[r.identity for r in records],
        members=[_relative(r.path, root) for r in records],
        **kwargs,
    )


def pairs_dataset(
    data: str, split: str, root: str | Path, pairs: Sequence[Any], records: Sequence[Any] = (), **kwargs: Any
) -> FaceDataset:
    """A dataset of verification ``Pair``s (plus the identification ``records``, if any)."""
    root = Path(root)
    images = [p for pair in pairs for p in (pair.path1, pair.path2)] + [r.path for r in records]
    identities = {_relative(p, root).split("/")[0] for p in images}
    members = [f"{_relative(p.path1, root)} {_relative(p.path2, root)} {int(p.same)}" for p in pairs]
    members += [_relative(r.path, root) for r in records]
    return face_dataset(
        data, split, root, images=images, identities=identities, pairs=len(pairs), members=members, **kwargs
    )


def evaluation_dataset(eval_set: Any, config: Any) -> FaceDataset:
    """The dataset an ``EvalSet`` scores under ``EvalConfig``: the LFW protocol files (hashed) or the
    folder protocol's generated pairs (their digest covers the pair list)."""
    from facerec.data.datasets import resolve_data_root, sample_root

    if config.protocol == "folder":
        root = Path(config.data).expanduser() if config.data else sample_root()
        share = f"held-out-{config.holdout:g}-seed{config.split_seed}" if config.holdout > 0 else "all"
        split = f"{share}:{len(eval_set.pairs)}pairs-seed{config.seed}"
        return pairs_dataset(root.name, split, eval_set.root, eval_set.pairs, eval_set.records)
    lfw_root = resolve_data_root(config.data)
    files = ("pairsDevTest.txt", "peopleDevTest.txt") if config.protocol == "lfw-view1" else ("pairs.txt", "people.txt")
    used = files if eval_set.records else files[:1]
    split = "+".join(Path(f).stem for f in used)
    return pairs_dataset(
        "lfw", split, eval_set.root, eval_set.pairs, eval_set.records, protocol_files=[lfw_root / f for f in used]
    )


def log_dataset(dataset: FaceDataset, context: str) -> None:
    """``mlflow.log_input`` to the active run, with the role as MLflow's context tag."""
    import mlflow

    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    mlflow.log_input(dataset, context=context)


def log_training_inputs(data: Any, train_records: Sequence[Any], val_records: Sequence[Any], val_pairs: int) -> None:
    """The trainer's inputs: its training identities and the identity-disjoint validation split.

    ``data`` is the trainer's ``DataConfig``: ``lfw`` (View 1 ``peopleDevTrain``), ``folder``
    or ``sample``; the records carry the paths actually read (crops when given).
    """
    from facerec.data.datasets import LFW, resolve_data_root, sample_root

    if data.kind == "lfw":
        lfw = LFW.at(data.root)
        name, split, files = "lfw", "peopleDevTrain", [lfw.root / "peopleDevTrain.txt"]
    else:
        folder = sample_root() if data.kind == "sample" else resolve_data_root(data.root)
        name, split, files = folder.name, "identities", []
    root = _common_root([r.path for r in [*train_records, *val_records]])
    log_dataset(records_dataset(name, f"{split}:train", root, train_records, protocol_files=files), "training")
    validation = records_dataset(name, f"{split}:validation", root, val_records, protocol_files=files, pairs=val_pairs)
    log_dataset(validation, "validation")


def _relative(path: str | Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _common_root(paths: Sequence[str | Path]) -> Path:
    """The identity folders' parent: ``root/<identity>/<image>`` for every record."""
    parents = {Path(p).parent.parent for p in paths}
    return parents.pop() if len(parents) == 1 else Path("/")

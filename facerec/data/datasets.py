"""Data sets: identity folders (``root/<identity>/*.jpg``) and the LFW protocol files.

Everything is read into small typed records; malformed protocol lines and
missing images raise DataError naming the file and the line.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from facerec.data.images import is_image_file
from facerec.errors import DataError

DATA_ENV = "FACEREC_DATA"
LFW_IMAGE_DIRS = ("lfw-deepfunneled", "lfw_funneled", "lfw")


@dataclass(frozen=True)
class ImageRecord:
    """One image of one identity."""

    path: Path
    identity: str


@dataclass(frozen=True)
class Pair:
    """A verification pair; ``same`` is the ground truth; ``fold`` counts from 0."""

    path1: Path
    path2: Path
    same: bool
    fold: int = 0


@dataclass(frozen=True)
class PersonEntry:
    """A line of an LFW people file: a name, its image count and its fold."""

    name: str
    count: int
    fold: int = 0


# --------------------------------------------------------------------- roots
def sample_root() -> Path:
    """The embedded LFW sample shipped with the package (50 identities x 4 images)."""
    return Path(str(resources.files("facerec") / "sample_data" / "lfw-sample"))


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The data root from a flag/config value, else ``$FACEREC_DATA``; it must exist."""
    value = explicit or os.environ.get(DATA_ENV)
    if not value:
        raise DataError(f"no data path given: pass --data PATH or set {DATA_ENV}")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DataError(f"data path {root} is not a directory")
    return root


def lfw_images_dir(root: str | Path) -> Path:
    """The folder of identity subfolders inside an LFW root (or the root itself)."""
    root = Path(root)
    for name in LFW_IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    return root


def lfw_image_path(images_dir: Path, name: str, number: int) -> Path:
    return images_dir / name / f"{name}_{number:04d}.jpg"


# ----------------------------------------------------------- identity folders
def read_identity_folder(root: str | Path, min_images: int = 1) -> list[ImageRecord]:
    """All images under ``root/<identity>/``, sorted; identities with fewer than ``min_images`` dropped."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist")
    records: list[ImageRecord] = []
    for identity_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(p for p in identity_dir.iterdir() if p.is_file() and is_image_file(p))
        if len(images) >= min_images:
            records.extend(ImageRecord(p, identity_dir.name) for p in images)
    if not records:
        raise DataError(f"no images found in identity folders under {root}")
    return records


def group_by_identity(records: Iterable[ImageRecord]) -> dict[str, list[ImageRecord]]:
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        groups[record.identity].append(record)
    return dict(sorted(groups.items()))


def split_by_identity(
    records: Sequence[ImageRecord], val_fraction: float, seed: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Identity-disjoint split; the validation part gets identities with 2+ images first."""
    groups = group_by_identity(records)
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    multi = [n for n in names if len(groups[n]) >= 2]
    n_val = max(1, round(len(names) * val_fraction)) if val_fraction > 0 else 0
    val_names = set(multi[:n_val]) if len(multi) >= n_val else set(multi) | set(names[: n_val - len(multi)])
    train = [r for n in sorted(groups) if n not in val_names for r in groups[n]]
    val = [r for n in sorted(groups) if n in val_names for r in groups[n]]
    return train, val


def generate_pairs(
    records: Sequence[ImageRecord], n_pairs: int, seed: int, n_folds: int = 1, positive_fraction: float = 0.5
) -> list[Pair]:
    """Random matched/mismatched pairs with a fixed seed, spread over ``n_folds`` folds.

    Matched pairs need identities with 2+ images; pairs are never repeated.
    """
    rng = random.Random(seed)
    groups = group_by_identity(records)
    multi = [n for n, rs in groups.items() if len(rs) >= 2]
    names = list(groups)
    if not multi or len(names) < 2:
        raise DataError("pair generation needs at least one identity with 2 images and 2 identities")
    n_pos = round(n_pairs * positive_fraction)
    seen: set[tuple[Path, Path]] = set()
    pairs: list[Pair] = []
    for same, wanted in ((True, n_pos), (False, n_pairs - n_pos)):
        made = attempts = 0
        while made < wanted and attempts < 50 * max(wanted, 1):
            attempts += 1
            if same:
                a, b = rng.sample(groups[rng.choice(multi)], 2)
            else:
                n1, n2 = rng.sample(names, 2)
                a, b = rng.choice(groups[n1]), rng.choice(groups[n2])
            key = tuple(sorted((a.path, b.path)))
            if key not in seen:
                seen.add(key)
                pairs.append(Pair(a.path, b.path, same))
                made += 1
        if made < wanted:
            kind = "matched" if same else "mismatched"
            raise DataError(f"only {made} distinct {kind} pairs can be drawn from this data, {wanted} were asked for")
    rng.shuffle(pairs)
    return [Pair(p.path1, p.path2, p.same, i % n_folds) for i, p in enumerate(pairs)]


# ------------------------------------------------------------ protocol files
def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise DataError(f"protocol file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read protocol file {path}: {exc}") from exc


def _int(token: str, path: Path, lineno: int) -> int:
    try:
        return int(token)
    except ValueError as exc:
        raise DataError(f"{path}:{lineno}: expected an integer, got {token!r}") from exc


def _checked(path: Path, source: Path, lineno: int, check: bool) -> Path:
    if check and not path.is_file():
        raise DataError(f"{source}:{lineno}: image not found: {path}")
    return path


def read_pairs(path: str | Path, images_dir: str | Path, check_exists: bool = True) -> list[Pair]:
    """Read ``pairs.txt`` (header ``folds n``) or ``pairsDev*.txt`` (header ``n``).

    Each fold holds ``n`` matched lines (``name i j``) then ``n`` mismatched
    lines (``name1 i name2 j``).
    """
    path, images_dir = Path(path), Path(images_dir)
    lines = _lines(path)
    if not lines:
        raise DataError(f"{path}:1: empty protocol file")
    header = lines[0].split()
    if len(header) == 1:
        folds, per_fold = 1, _int(header[0], path, 1)
    elif len(header) == 2:
        folds, per_fold = _int(header[0], path, 1), _int(header[1], path, 1)
    else:
        raise DataError(f"{path}:1: header must be 'N' or 'FOLDS N', got {lines[0]!r}")
    body = [(i + 2, line) for i, line in enumerate(lines[1:]) if line.strip()]
    expected = folds * 2 * per_fold
    if len(body) != expected:
        raise DataError(f"{path}: header promises {expected} pairs, file has {len(body)}")
    pairs = []
    for index, (lineno, line) in enumerate(body):
        fold, within = divmod(index, 2 * per_fold)
        tokens = line.split()
        matched = within < per_fold
        if matched and len(tokens) == 3:
            name1, i, name2, j = tokens[0], tokens[1], tokens[0], tokens[2]
        elif not matched and len(tokens) == 4:
            name1, i, name2, j = tokens
        else:
            kind = "matched 'name i j'" if matched else "mismatched 'name1 i name2 j'"
            raise DataError(f"{path}:{lineno}: expected a {kind} line, got {line!r}")
        p1 = _checked(lfw_image_path(images_dir, name1, _int(i, path, lineno)), path, lineno, check_exists)
        p2 = _checked(lfw_image_path(images_dir, name2, _int(j, path, lineno)), path, lineno, check_exists)
        pairs.append(Pair(p1, p2, matched, fold))
    return pairs


def read_people(path: str | Path) -> list[PersonEntry]:
    """Read ``peopleDev*.txt`` (header ``n``) or ``people.txt`` (header ``folds``, then per fold ``n``)."""
    path = Path(path)
    lines = [(i + 1, line) for i, line in enumerate(_lines(path)) if line.strip()]
    if not lines:
        raise DataError(f"{path}:1: empty protocol file")
    first = _int(lines[0][1].strip(), path, lines[0][0])
    rest = lines[1:]
    # people.txt starts with the number of folds, each fold with its own count line.
    multi_fold = rest and len(rest[0][1].split()) == 1
    blocks = first if multi_fold else 1
    entries: list[PersonEntry] = []
    cursor = 0
    for fold in range(blocks):
        if multi_fold:
            if cursor >= len(rest):
                raise DataError(f"{path}: expected {blocks} folds, found {fold}")
            lineno, line = rest[cursor]
            count = _int(line.strip(), path, lineno)
            cursor += 1
        else:
            count = first
        for lineno, line in rest[cursor : cursor + count]:
            tokens = line.split()
            if len(tokens) != 2:
                raise DataError(f"{path}:{lineno}: expected 'name count', got {line!r}")
            entries.append(PersonEntry(tokens[0], _int(tokens[1], path, lineno), fold))
        if len(rest[cursor : cursor + count]) != count:
            raise DataError(f"{path}: fold {fold} promises {count} people, file ends early")
        cursor += count
    if cursor != len(rest):
        raise DataError(f"{path}:{rest[cursor][0]}: unexpected line after the last fold")
    return entries


def people_records(
    entries: Iterable[PersonEntry], images_dir: str | Path, check_exists: bool = True, source: Path | None = None
) -> list[ImageRecord]:
    """Every image of every person in a people file."""
    images_dir = Path(images_dir)
    records = []
    for entry in entries:
        for number in range(1, entry.count + 1):
            path = lfw_image_path(images_dir, entry.name, number)
            if check_exists and not path.is_file():
                raise DataError(f"{source or 'people file'}: {entry.name} has no image {path}")
            records.append(ImageRecord(path, entry.name))
    return records


@dataclass(frozen=True)
class LFW:
    """An LFW root: protocol files next to an image folder (``lfw-deepfunneled/``)."""

    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> LFW:
        return cls(resolve_data_root(root))

    @property
    def images_dir(self) -> Path:
        return lfw_images_dir(self.root)

    def pairs(self, name: str = "pairs.txt", images_dir: Path | None = None) -> list[Pair]:
        return read_pairs(self.root / name, images_dir or self.images_dir)

    def people(self, name: str, images_dir: Path | None = None) -> list[ImageRecord]:
        path = self.root / name
        return people_records(read_people(path), images_dir or self.images_dir, source=path)

    def dev_train(self, images_dir: Path | None = None) -> list[ImageRecord]:
        return self.people("peopleDevTrain.txt", images_dir)

    def dev_test(self, images_dir: Path | None = None) -> list[ImageRecord]:
        return self.people("peopleDevTest.txt", images_dir)

"""The crop stage: a folder of photos -> a mirrored folder of face crops plus a manifest.

``run_crop(src, out, config)`` reads every image under ``src`` (through ``load_image``),
detects faces in batches, writes ``out/<same relative path>`` atomically (tmp file +
rename) and appends one JSON line per input to ``out/manifest.jsonl``. The manifest is
the cache: an input whose crop parameters match its last record and whose content is
unchanged is skipped, so an interrupted run resumes. Size and mtime are the fast check;
when only the mtime moved (a copied or re-extracted dataset) the SHA-256 of the file
decides, so the same photo is never detected twice. A torn last line (a kill mid-write) is dropped
and the manifest rewritten on the next run. One run at a time per ``out`` (a lock file).

A manifest record: ``path`` (relative to src), ``status`` (ok | no_face | unreadable |
failed = the crop could not be written), ``fallback`` ("center" or null), ``crop`` (relative
to out, or null), ``n_faces``, ``box`` [x1, y1, x2, y2] and ``prob`` of the chosen face,
``angle`` (degrees rotated to level the eyes), ``error``, ``params`` (hash of the crop
settings) and ``source`` (size, mtime_ns, sha256). Directories are walked, never listed as inputs;
crops of sources deleted since an earlier run are left in place.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from facerec.config import save_config
from facerec.data.images import is_image_file, load_image
from facerec.errors import ConfigError, DataError, ImageError
from facerec.faces.config import CROP_VERSION, CropConfig  # noqa: F401  (re-exported)
from facerec.faces.detect import Detection, FaceDetector
from facerec.files import atomic_path, atomic_write, file_sha256

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
CONFIG_FILE = "crop_config.yaml"
LOCK_FILE = ".crop.lock"

Status = Literal["ok", "no_face", "unreadable", "failed"]


@dataclass(frozen=True)
class CropSummary:
    """Counts over every input of a run (cached ones included); ``skipped`` = cache hits."""

    total: int = 0
    ok: int = 0
    no_face: int = 0
    failed: int = 0
    fallback: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "ok": self.ok,
            "no_face": self.no_face,
            "failed": self.failed,
            "fallback": self.fallback,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
        }


def crop_path_for(src: Path, out: Path, path: Path) -> Path:
    """Where the crop of ``path`` (a file under ``src``) goes: the same relative path under ``out``."""
    return Path(out) / Path(path).relative_to(src)


# ------------------------------------------------------------------ manifest
def source_stamp(path: Path, digest: bool = True) -> dict[str, Any] | None:
    """Size, mtime and (``digest``) SHA-256 of a source file; None when it cannot be read."""
    try:
        st = path.stat()
        stamp: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if digest:
            stamp["sha256"] = file_sha256(path)
    except OSError:
        return None
    return stamp


def read_manifest(out: Path) -> tuple[dict[str, dict], bool]:
    """The last record per input path, and whether the file needs rewriting (torn or duplicate lines)."""
    path = out / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, False
    except OSError as exc:
        raise DataError(f"cannot read manifest {path}: {exc}") from exc
    records: dict[str, dict] = {}
    lines = raw.split(b"\n")
    dirty = bool(raw) and not raw.endswith(b"\n")
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key = record["path"]
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        if key in records:
            dirty = True
        records[key] = record
    if bad:
        log.warning("%s: ignored %d unreadable line(s) (an interrupted run); those inputs are redone", path, bad)
    return records, dirty or bad > 0


def write_manifest(out: Path, records: dict[str, dict]) -> None:
    """Rewrite the manifest atomically with one line per input."""
    with atomic_write(out / MANIFEST) as fh:
        for record in records.values():
            fh.write(json.dumps(record) + "\n")


def cached_record(record: dict | None, path: Path, params: str, out: Path) -> dict | None:
    """The record to keep when ``path`` needs no new crop, else None.

    Valid when the parameters match, the crop exists and the source is unchanged: same size
    and mtime, or same size and SHA-256 (then the record comes back with the new mtime).
    """
    if record is None or record.get("params") != params or record.get("status") == "failed":
        return None  # "failed" = a write error: try again
    crop = record.get("crop")
    if crop is not None and not (out / crop).is_file():
        return None
    old, stamp = record.get("source") or {}, source_stamp(path, digest=False)
    if stamp is None or old.get("size") != stamp["size"]:
        return None
    if old.get("mtime_ns") == stamp["mtime_ns"]:
        return record
    stamp = source_stamp(path)
    if stamp is None or old.get("sha256") != stamp["sha256"]:
        return None
    return {**record, "source": stamp}


# ------------------------------------------------------------------ listing
def list_inputs(src: Path, out: Path, paths: Sequence[Path] | None) -> list[Path]:
    """Image files under ``src`` (sorted, skipping ``out`` if it lies inside), or the given subset."""
    if paths is None:
        out_resolved = out.resolve()
        found = []
        for dirpath, dirnames, filenames in os.walk(src):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if (here / d).resolve() != out_resolved)
            found.extend(here / name for name in filenames if is_image_file(name) and not name.startswith("."))
        return sorted(found)
    chosen = []
    for path in paths:
        path = Path(path) if Path(path).is_absolute() else src / path
        try:
            path.relative_to(src)
        except ValueError as exc:
            raise DataError(f"{path} is not under the source folder {src}") from exc
        chosen.append(path)
    return sorted(set(chosen))


# ------------------------------------------------------------------ writing
def save_atomic(image: Image.Image, dest: Path, jpeg_quality: int) -> None:
    """Write ``image`` to ``dest`` in the format its extension names, via a tmp file + rename."""
    fmt = Image.registered_extensions().get(dest.suffix.lower(), "PNG")
    options = {"quality": jpeg_quality} if fmt in ("JPEG", "WEBP") else {}
    with atomic_path(dest, durable=False) as tmp:  # a lost crop is re-made from its photo
        image.save(tmp, format=fmt, **options)


class _Lock:
    """An exclusive lock on ``out`` so that two runs never interleave manifest lines."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_FILE
        self.fh = None

    def __enter__(self) -> _Lock:
        import fcntl

        self.fh = open(self.path, "a")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.fh.close()
            raise DataError(f"another crop run is writing to {self.path.parent}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


def prepare_out(src: Path, out: Path) -> None:
    if not src.exists():
        raise DataError(f"source folder {src} does not exist")
    if not src.is_dir():
        raise DataError(f"source {src} is not a directory (crop takes a folder of photos)")
    if out.exists() and out.resolve() == src.resolve():
        raise DataError("the output folder must differ from the source folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test.{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise DataError(f"cannot write to output folder {out}: {exc.strerror or exc}") from exc


# ------------------------------------------------------------------ the run
class _Cropper:
    """Turns a batch of input paths into manifest records (and crop files)."""

    def __init__(self, src: Path, out: Path, config: CropConfig, detector: FaceDetector) -> None:
        self.src, self.out, self.config, self.detector = src, out, config, detector
        self.params = config.params_hash()

    def record(self, path: Path, stamp: dict | None, status: Status, **fields: Any) -> dict:
        return {
            "path": path.relative_to(self.src).as_posix(),
            "status": status,
            "fallback": None,
            "crop": None,
            "n_faces": 0,
            "box": None,
            "prob": None,
            "angle": None,
            "error": None,
            **fields,
            "params": self.params,
            "source": stamp,
        }

    def run_batch(self, paths: list[Path]) -> list[dict]:
        records: dict[int, dict] = {}
        images: list[Image.Image] = []
        loaded: list[int] = []
        stamps = [source_stamp(p) for p in paths]
        for i, path in enumerate(paths):
            try:
                images.append(load_image(path))
                loaded.append(i)
            except ImageError as exc:
                records[i] = self.record(path, stamps[i], "unreadable", error=str(exc))
        detections = self.detector.detect(images) if images else []
        for i, image, detection in zip(loaded, images, detections):
            records[i] = self.crop_one(paths[i], stamps[i], image, detection)
        return [records[i] for i in range(len(paths))]

    def crop_one(self, path: Path, stamp: dict | None, image: Image.Image, detection: Detection) -> dict:
        dest = crop_path_for(self.src, self.out, path)
        face = detection.face
        fields: dict[str, Any] = {"n_faces": len(detection.faces)}
        if face is not None:
            crop = self.detector.crop(image, face)
            fields.update(
                box=[round(v, 2) for v in face.box],
                prob=round(face.prob, 5),
                angle=round(face.eye_angle(), 2) if self.config.detector.align else 0.0,
            )
            status: Status = "ok"
        elif self.config.fallback == "center":
            crop, status = self.detector.center_crop(image), "no_face"
            fields["fallback"] = "center"
        else:
            dest.unlink(missing_ok=True)  # a stale crop from other parameters must not linger
            return self.record(path, stamp, "no_face", **fields)
        try:
            save_atomic(crop, dest, self.config.jpeg_quality)
        except (OSError, ValueError) as exc:
            return self.record(path, stamp, "failed", error=f"cannot write {dest}: {exc}", **fields)
        return self.record(path, stamp, status, crop=dest.relative_to(self.out).as_posix(), **fields)


def summarize(records: Iterator[dict], skipped: int, seconds: float) -> CropSummary:
    counts = {"total": 0, "ok": 0, "no_face": 0, "failed": 0, "fallback": 0}
    for record in records:
        counts["total"] += 1
        status = record["status"]
        counts["failed" if status in ("unreadable", "failed") else status] += 1
        counts["fallback"] += record.get("fallback") is not None
    return CropSummary(**counts, skipped=skipped, seconds=seconds)


def run_crop(
    src: Path,
    out: Path,
    config: CropConfig = CropConfig(),
    paths: Sequence[Path] | None = None,
    progress: bool = True,
    detector: FaceDetector | None = None,
) -> CropSummary:
    """Crop every image under ``src`` (or only ``paths``) into ``out``; see the module docstring.

    ``detector`` lets a caller reuse a built detector (it must have ``config.detector``).
    """
    from tqdm import tqdm

    started = time.perf_counter()
    src, out = Path(src), Path(out)
    prepare_out(src, out)
    if detector is None:
        detector = FaceDetector(config.detector)
    elif detector.config != config.detector:
        raise ConfigError("the detector passed to run_crop was built with other settings than config.detector")
    inputs = list_inputs(src, out, paths)
    with _Lock(out):
        save_config(config, out / CONFIG_FILE)
        previous, dirty = read_manifest(out)
        cropper = _Cropper(src, out, config, detector)
        keys = [p.relative_to(src).as_posix() for p in inputs]
        todo = []
        for path, key in zip(inputs, keys):
            kept = cached_record(previous.get(key), path, cropper.params, out)
            if kept is None:
                todo.append(path)
            elif kept is not previous[key]:  # same content, new mtime: remember the new stamp
                previous[key], dirty = kept, True
        if dirty:
            write_manifest(out, previous)
        skipped = len(inputs) - len(todo)
        log.info("crop %s -> %s: %d images, %d cached, %d to do", src, out, len(inputs), skipped, len(todo))
        try:
            with (
                open(out / MANIFEST, "a", encoding="utf-8") as manifest,
                tqdm(total=len(todo), desc="crop", unit="img", disable=not progress, dynamic_ncols=True) as bar,
            ):
                step = config.detector.batch_size
                for start in range(0, len(todo), step):
                    batch = todo[start : start + step]
                    for record in cropper.run_batch(batch):
                        manifest.write(json.dumps(record) + "\n")
                        previous[record["path"]] = record
                    manifest.flush()
                    bar.update(len(batch))
        except OSError as exc:
            raise DataError(f"cannot write the manifest in {out}: {exc.strerror or exc}") from exc
    summary = summarize((previous[k] for k in keys), skipped, time.perf_counter() - started)
    log.info("crop summary: %s", summary.as_dict())
    return summary

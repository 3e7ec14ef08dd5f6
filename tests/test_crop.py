"""facerec.faces.crop / `facerec crop`: tree mirroring, manifest, bad inputs, cache and resume, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from facerec import cli
from facerec.cli.commands import COMMANDS
from facerec.errors import ConfigError, DataError
from facerec.faces.crop import CONFIG_FILE, MANIFEST, CropConfig, CropSummary, crop_path_for, read_manifest, run_crop
from facerec.faces.detect import DetectorConfig, FaceDetector

DETECTOR = DetectorConfig(batch_size=8, threads=1)  # 1 thread: robust on a busy shared CPU
CONFIG = CropConfig(detector=DETECTOR)
JSON_KEYS = {"total", "ok", "no_face", "failed", "fallback", "seconds", "skipped"}


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(DETECTOR)


@pytest.fixture()
def photos(tmp_path, sample_dir) -> Path:
    """src/<identity>/<file>: 2 identities x 3 real LFW photos, plus a text file that is ignored."""
    src = tmp_path / "src"
    for identity in ("Ashanti", "Bob_Hope"):
        (src / identity).mkdir(parents=True)
        for path in sorted((sample_dir / identity).glob("*.jpg"))[:3]:
            shutil.copy2(path, src / identity / path.name)
    (src / "README.txt").write_text("not an image")
    return src


def manifest_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


def by_name(out: Path) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in manifest_lines(out)}


# ------------------------------------------------------------------ the run
def test_crop_mirrors_the_tree_and_writes_the_manifest(photos, tmp_path, detector):
    out = tmp_path / "out"
    summary = run_crop(photos, out, CONFIG, progress=False, detector=detector)
    assert (summary.total, summary.ok, summary.no_face, summary.failed, summary.fallback, summary.skipped) == (
        6,
        6,
        0,
        0,
        0,
        0,
    )
    sources = sorted(p.relative_to(photos) for p in photos.glob("*/*.jpg"))
    assert sorted(p.relative_to(out) for p in out.glob("*/*.jpg")) == sources
    for rel in sources:
        with Image.open(out / rel) as crop:
            assert crop.size == (224, 224) and crop.mode == "RGB" and crop.format == "JPEG"
    records = manifest_lines(out)
    assert sorted(r["path"] for r in records) == [p.as_posix() for p in sources]
    for record in records:
        assert record["status"] == "ok" and record["crop"] == record["path"] and record["fallback"] is None
        assert record["n_faces"] >= 1 and 0.9 < record["prob"] <= 1 and len(record["box"]) == 4
    assert (out / "crop_config.yaml").is_file()


def test_summary_as_dict_has_the_json_keys():
    assert set(CropSummary().as_dict()) == JSON_KEYS


def test_crop_path_for():
    assert crop_path_for(Path("/d/lfw"), Path("/c"), Path("/d/lfw/A_B/A_B_0001.jpg")) == Path("/c/A_B/A_B_0001.jpg")


def make_bad_inputs(src: Path, face_jpg: Path) -> None:
    bad = src / "Bad"
    bad.mkdir()
    data = face_jpg.read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (bad / "text.jpg").write_text("hello, I am not a JPEG\n")
    (bad / "empty.jpg").write_bytes(b"")
    face = Image.open(face_jpg)
    face.convert("L").save(bad / "gray.jpg")
    rgba = face.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(bad / "rgba.png")
    gray16 = (np.asarray(face.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(bad / "gray16.png")
    Image.new("L", (10_000, 10_000), 100).save(bad / "huge.jpg")  # no face, cheap to create and read
    (bad / "x.jpg").mkdir()  # a directory named like an image: walked into, not cropped


def test_bad_inputs_never_stop_the_run(photos, tmp_path, detector, sample_dir):
    make_bad_inputs(photos, sample_dir / "Ashanti" / "Ashanti_0001.jpg")
    out = tmp_path / "out"
    config = CropConfig(detector=DETECTOR, fallback="center")
    summary = run_crop(photos, out, config, progress=False, detector=detector)
    records = by_name(out)
    statuses = {name: r["status"] for name, r in records.items() if r["path"].startswith("Bad/")}
    assert statuses == {
        "truncated.jpg": "unreadable",
        "text.jpg": "unreadable",
        "empty.jpg": "unreadable",
        "gray.jpg": "ok",
        "rgba.png": "ok",
        "gray16.png": "ok",
        "huge.jpg": "no_face",
    }
    assert (summary.total, summary.ok, summary.no_face, summary.failed, summary.fallback) == (13, 9, 1, 3, 1)
    for name in ("truncated.jpg", "text.jpg", "empty.jpg"):
        assert records[name]["crop"] is None and records[name]["error"]
        assert not (out / "Bad" / name).exists()
    assert records["huge.jpg"]["fallback"] == "center" and records["huge.jpg"]["n_faces"] == 0
    with Image.open(out / "Bad" / "huge.jpg") as fallback:
        assert fallback.size == (224, 224)
    with Image.open(out / "Bad" / "rgba.png") as crop:  # the format follows the extension
        assert crop.format == "PNG" and crop.mode == "RGB" and crop.size == (224, 224)
    # the directory named x.jpg is reported when passed explicitly
    run_crop(
        photos, out, config, paths=[Path("Bad/x.jpg"), photos / "Bad/missing.jpg"], progress=False, detector=detector
    )
    records = by_name(out)
    assert records["x.jpg"]["status"] == "unreadable" and "directory" in records["x.jpg"]["error"]
    assert records["missing.jpg"]["status"] == "unreadable"


# ------------------------------------------------------------------ cache and resume
def test_rerun_skips_and_a_changed_parameter_recrops(photos, tmp_path, detector):
    out = tmp_path / "out"
    first = run_crop(photos, out, CONFIG, progress=False, detector=detector)
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/*.jpg")}
    second = run_crop(photos, out, CONFIG, progress=False, detector=detector)
    assert second.skipped == second.total == 6 and second.ok == first.ok
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.jpg")} == before
    assert len(manifest_lines(out)) == 6

    wider = CropConfig(detector=DetectorConfig(batch_size=8, threads=1, margin=0.6))
    crop = next(iter(before))
    old = np.asarray(Image.open(crop))
    third = run_crop(photos, out, wider, progress=False)
    assert third.skipped == 0 and third.ok == 6
    assert not np.array_equal(np.asarray(Image.open(crop)), old)
    records, dirty = read_manifest(out)
    assert len(records) == 6 and dirty  # 12 lines for 6 inputs: compacted by the next run
    run_crop(photos, out, wider, progress=False, detector=FaceDetector(wider.detector))
    assert len(manifest_lines(out)) == 6


def test_device_and_batch_size_do_not_invalidate_the_cache(photos, tmp_path, detector):
    out = tmp_path / "out"
    run_crop(photos, out, CONFIG, progress=False, detector=detector)
    again = run_crop(photos, out, CropConfig(detector=DetectorConfig(batch_size=3, threads=2)), progress=False)
    assert again.skipped == 6


def test_changed_source_or_deleted_crop_is_redone(photos, tmp_path, detector, sample_dir):
    out = tmp_path / "out"
    run_crop(photos, out, CONFIG, progress=False, detector=detector)
    target = sorted(photos.glob("Ashanti/*.jpg"))[0]
    shutil.copyfile(sample_dir / "Bob_Hope" / "Bob_Hope_0004.jpg", target)  # new content, new mtime
    (out / "Bob_Hope" / "Bob_Hope_0001.jpg").unlink()
    summary = run_crop(photos, out, CONFIG, progress=False, detector=detector)
    assert summary.skipped == 4 and summary.ok == 6
    assert (out / "Bob_Hope" / "Bob_Hope_0001.jpg").is_file()


def test_a_copied_dataset_with_new_mtimes_is_not_cropped_again(photos, tmp_path, detector):
    out = tmp_path / "out"
    run_crop(photos, out, CONFIG, progress=False, detector=detector)
    crops = {p: p.stat().st_mtime_ns for p in out.glob("*/*.jpg")}
    for source in photos.glob("*/*.jpg"):  # what a copy without -p or a re-extraction does
        os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    again = run_crop(photos, out, CONFIG, progress=False, detector=detector)
    assert again.skipped == again.total == 6
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.jpg")} == crops
    records = {r["path"]: r for r in manifest_lines(out)}
    assert len(records) == 6  # the new mtimes replace the old stamps, so the next run takes the fast path
    for key, record in records.items():
        assert (
            record["source"]["mtime_ns"] == (photos / key).stat().st_mtime_ns and len(record["source"]["sha256"]) == 64
        )


def test_torn_manifest_line_is_dropped_and_redone(photos, tmp_path, detector):
    out = tmp_path / "out"
    subset = sorted(photos.glob("*/*.jpg"))[:3]
    run_crop(photos, out, CONFIG, paths=subset, progress=False, detector=detector)
    lines = (out / MANIFEST).read_text().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]  # the last record half-written by a kill
    (out / MANIFEST).write_text("".join(lines[:-1]) + torn)
    summary = run_crop(photos, out, CONFIG, progress=False, detector=detector)
    assert summary.total == 6 and summary.skipped == 2 and summary.ok == 6
    records = manifest_lines(out)  # every line parses again
    assert len(records) == 6 and {r["status"] for r in records} == {"ok"}


def test_no_face_without_fallback_removes_a_stale_crop(tmp_path, detector):
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "Nobody").mkdir(parents=True)
    Image.new("RGB", (200, 200), (40, 120, 200)).save(src / "Nobody" / "blank.jpg")
    with_fallback = run_crop(
        src, out, CropConfig(detector=DETECTOR, fallback="center"), progress=False, detector=detector
    )
    assert (with_fallback.no_face, with_fallback.fallback) == (1, 1)
    assert (out / "Nobody" / "blank.jpg").is_file()
    without = run_crop(src, out, CONFIG, progress=False, detector=detector)
    assert (without.total, without.no_face, without.fallback, without.skipped) == (1, 1, 0, 0)
    assert not (out / "Nobody" / "blank.jpg").exists()
    assert by_name(out)["blank.jpg"]["crop"] is None


def test_paths_subset_and_paths_outside_src(photos, tmp_path, detector):
    out = tmp_path / "out"
    subset = [Path("Ashanti") / p.name for p in sorted((photos / "Ashanti").glob("*.jpg"))[:2]]
    summary = run_crop(photos, out, CONFIG, paths=subset, progress=False, detector=detector)
    assert summary.total == 2 and sorted(p.relative_to(out) for p in out.glob("*/*.jpg")) == subset
    with pytest.raises(DataError, match="not under"):
        run_crop(photos, out, CONFIG, paths=[tmp_path / "elsewhere.jpg"], progress=False, detector=detector)


def test_out_inside_src_is_not_cropped_again(photos, detector):
    out = photos / "crops"
    run_crop(photos, out, CONFIG, progress=False, detector=detector)
    again = run_crop(photos, out, CONFIG, progress=False, detector=detector)
    assert again.total == 6 and again.skipped == 6


def test_survives_a_kill_mid_run(tmp_path, sample_dir):
    """SIGKILL a real run after a few batches; the next run keeps its work and finishes the rest."""
    out = tmp_path / "out"
    paths = sorted(sample_dir.glob("*/*.jpg"))[:12]
    script = (
        "import sys; from pathlib import Path; from facerec.faces.crop import CropConfig, run_crop;"
        "from facerec.faces.detect import DetectorConfig;"
        "paths = [Path(p) for p in sys.argv[3:]];"
        "run_crop(Path(sys.argv[1]), Path(sys.argv[2]), CropConfig(DetectorConfig(batch_size=2, threads=1)), paths=paths, progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(sample_dir), str(out), *map(str, paths)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / MANIFEST).is_file() and len((out / MANIFEST).read_bytes().splitlines()) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_manifest(out)[0])
    assert 4 <= done_before < 12, "the run should have been killed part-way"
    summary = run_crop(sample_dir, out, CropConfig(DETECTOR), paths=paths, progress=False)
    assert summary.total == 12 and summary.ok == 12 and summary.skipped == done_before
    crops = sorted(p for p in out.rglob("*.jpg") if not p.name.startswith("."))
    assert crops == sorted(crop_path_for(sample_dir, out, p) for p in paths)
    for path in crops:  # every visible crop is a whole image (atomic writes)
        with Image.open(path) as crop:
            crop.load()


# ------------------------------------------------------------------ errors
def test_missing_or_bad_src_and_unwritable_out(photos, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        run_crop(tmp_path / "missing", tmp_path / "out", CONFIG)
    a_file = photos / "Ashanti" / "Ashanti_0001.jpg"
    with pytest.raises(DataError, match="not a directory"):
        run_crop(a_file, tmp_path / "out", CONFIG)
    with pytest.raises(DataError, match="cannot write"):
        run_crop(photos, a_file / "out", CONFIG)
    with pytest.raises(DataError, match="differ"):
        run_crop(photos, photos, CONFIG)


def test_a_second_concurrent_run_is_refused(photos, tmp_path):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".crop.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DataError, match="another crop run"):
            run_crop(photos, out, CONFIG, progress=False)


def test_detector_must_match_the_config(photos, tmp_path, detector):
    with pytest.raises(ConfigError):
        run_crop(photos, tmp_path / "out", CropConfig(detector=DetectorConfig(margin=0.1)), detector=detector)


# ------------------------------------------------------------------ CLI and pipeline
@pytest.fixture()
def facerec_main(monkeypatch):
    """``facerec`` with only the crop command registered (other commands are other modules' business)."""
    monkeypatch.setattr(cli, "COMMANDS", {"crop": COMMANDS["crop"]})
    return cli.main


def test_cli_json_summary(facerec_main, photos, tmp_path, capsys):
    rc = facerec_main(
        ["crop", str(photos), str(tmp_path / "out"), "--json", "--no-progress", "--batch-size", "8", "--threads", "1"]
    )
    captured = capsys.readouterr()
    assert rc == 0
    payload = json.loads(captured.out)
    assert set(payload) == JSON_KEYS and payload["total"] == 6 and payload["ok"] == 6


def test_cli_exit_zero_when_no_face_is_found(facerec_main, tmp_path, capsys):
    (tmp_path / "src" / "X").mkdir(parents=True)
    Image.new("RGB", (100, 100), (0, 0, 0)).save(tmp_path / "src" / "X" / "dark.jpg")
    rc = facerec_main(
        [
            "crop",
            str(tmp_path / "src"),
            str(tmp_path / "out"),
            "--no-progress",
            "--fallback",
            "center",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    assert "1 without a face (1 centre-cropped)" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing_src", "src_is_file", "unwritable_out", "bad_size"])
def test_cli_errors_are_one_line(facerec_main, photos, tmp_path, capsys, case):
    a_file = photos / "Ashanti" / "Ashanti_0001.jpg"
    argv = {
        "missing_src": ["crop", str(tmp_path / "nope"), str(tmp_path / "out")],
        "src_is_file": ["crop", str(a_file), str(tmp_path / "out")],
        "unwritable_out": ["crop", str(photos), str(a_file / "out")],
        "bad_size": ["crop", str(photos), str(tmp_path / "out"), "--size", "2"],
    }[case]
    rc = facerec_main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("facerec crop: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_command_module_imports_no_heavy_library():
    code = (
        "import sys, facerec.cli.commands.crop;"
        "heavy = [m for m in ('torch', 'facenet_pytorch', 'mlflow', 'faiss') if m in sys.modules];"
        "sys.exit(1 if heavy else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_config_file_then_set_then_flags_with_flags_winning(facerec_main, photos, tmp_path, capsys, monkeypatch):
    """The MLproject's `crop` entry point: an empty SRC is $FACEREC_DATA's image folder, settings from --config."""
    config = tmp_path / "crop.yaml"
    config.write_text("fallback: center\njpeg_quality: 90\ndetector:\n  margin: 0.5\n  batch_size: 8\n  threads: 1\n")
    monkeypatch.setenv("FACEREC_DATA", str(photos))
    out = tmp_path / "out"
    argv = ["crop", "", str(out), "--config", str(config), "--set", "detector.margin=0.4", "--set", "jpeg_quality=80"]
    rc = facerec_main([*argv, "--fallback", "none", "--no-progress", "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["ok"] == 6
    saved = yaml.safe_load((out / CONFIG_FILE).read_text())
    assert saved["detector"]["margin"] == 0.4 and saved["jpeg_quality"] == 80  # --set over the file
    assert saved["fallback"] == "none" and saved["detector"]["batch_size"] == 8  # the flag over the file
    assert facerec_main(["crop", str(photos), str(out), "--set", "detector.margn=0.2", "--set", "jpeg_quality=0"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'detector.margn'" in err and err.count("\n") == 1

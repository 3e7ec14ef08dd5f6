"""The enroll / verify / identify / gallery commands: JSON, exit codes, one-line errors, an unchanged gallery."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from facerec.cli import main
from facerec.gallery.gallery import INDEX_FILE, Gallery

MODEL = ["--model", "resnet18", "--pretrained", "none", "--input-size", "64"]


@pytest.fixture(scope="module", autouse=True)
def reuse_models():
    """In-process commands reuse one embedder per spec and one MTCNN per setting (loading is not under test here;
    the subprocess tests below and benchmarks/cli_latency.py run the real cold path)."""
    import functools

    import facerec.faces.mtcnn
    import facerec.models

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(facerec.models, "load_model", functools.lru_cache(facerec.models.load_model))
        mp.setattr(facerec.faces.mtcnn, "Cascade", functools.lru_cache(facerec.faces.mtcnn.Cascade))
        yield


def run(capsys, *argv: str) -> tuple[int, dict | str, str]:
    """Run ``facerec -q ARGV`` in-process: (exit code, parsed JSON or text stdout, stderr)."""
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out), err
    except ValueError:
        return code, out, err


def photo(sample_dir: Path, name: str, number: int = 1) -> str:
    return str(sample_dir / name / f"{name}_{number:04d}.jpg")


def state(gallery: Path) -> dict:
    """Everything a failed command must leave alone: identities, images, generation, index bytes."""
    with Gallery(gallery) as g:
        stats = g.stats()
        out = {"identities": g.identities(), **{k: stats[k] for k in ("images", "generation", "model_fingerprint")}}
    out["index"] = hashlib.sha256((gallery / INDEX_FILE).read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def base_gallery(tmp_path_factory, sample_dir) -> Path:
    """A gallery with two identities, built once through the CLI."""
    path = tmp_path_factory.mktemp("base") / "gallery"
    for name in ("Aaron_Peirsol", "Ashanti"):
        assert (
            main(
                [
                    "-q",
                    "enroll",
                    name,
                    photo(sample_dir, name, 1),
                    photo(sample_dir, name, 2),
                    "--gallery",
                    str(path),
                    *MODEL,
                ]
            )
            == 0
        )
    return path


@pytest.fixture()
def gallery(base_gallery, tmp_path) -> Path:
    copy = tmp_path / "gallery"
    shutil.copytree(base_gallery, copy)
    return copy


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, sample_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    good = Path(photo(sample_dir, "Bob_Hope"))
    files = {"missing": root / "missing.jpg", "directory": root / "folder"}
    files["directory"].mkdir()
    files["empty"] = root / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["truncated"] = root / "truncated.jpg"
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    files["text"] = root / "text.jpg"
    files["text"].write_text("this is a text file named .jpg\n")
    files["huge"] = root / "huge.png"
    files["huge"].write_bytes(png_claiming(30_000, 30_000))  # 900 Mpx: refused before decoding
    files["no_face"] = root / "wall.png"
    Image.new("RGB", (300, 300), (90, 120, 90)).save(files["no_face"])
    return files


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` pixels (a decompression-bomb stand-in)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]


# ---------------------------------------------------------------- happy paths
def test_enroll_json_and_duplicates(gallery, capsys, sample_dir):
    code, out, _ = run(
        capsys,
        "enroll",
        "Bob Hope",
        photo(sample_dir, "Bob_Hope", 1),
        photo(sample_dir, "Bob_Hope", 2),
        "--gallery",
        str(gallery),
        "--json",
    )  # no --model: the gallery's own model
    assert code == 0
    assert out["face_policy"] == "central" and out["added"] == 2 and out["skipped"] == 0
    identity = out["identities"][0]
    assert identity["identity"] == "Bob Hope" and identity["created"]
    assert identity["added"][0]["faces_found"] >= 1 and identity["added"][0]["policy"] == "central"
    before = state(gallery)
    code, out, _ = run(
        capsys, "enroll", "Bob Hope", photo(sample_dir, "Bob_Hope", 1), "--gallery", str(gallery), "--json"
    )
    assert code == 0 and out["added"] == 0 and out["skipped"] == 1
    assert out["identities"][0]["skipped"][0]["reason"].startswith("duplicate")
    assert state(gallery) == before  # no duplicate vector


def test_identify_json(gallery, capsys, sample_dir):
    code, out, _ = run(
        capsys,
        "identify",
        photo(sample_dir, "Ashanti", 2),
        "--gallery",
        str(gallery),
        "--threshold",
        "0.5",
        "--top-k",
        "3",
        "--json",
    )
    assert code == 0
    assert out["identity"] == "Ashanti" and out["score"] == pytest.approx(1.0, abs=1e-4)  # an enrolled photo
    assert [c["identity"] for c in out["candidates"]] == ["Ashanti", "Aaron_Peirsol"]
    assert out["threshold"] == 0.5 and out["face"]["policy"] == "central" and out["face"]["faces_found"] >= 1
    code, out, _ = run(
        capsys, "identify", photo(sample_dir, "Bob_Hope"), "--gallery", str(gallery), "--threshold", "1.01", "--json"
    )
    assert code == 0 and out["identity"] is None and out["score"] < 1.01  # open set: a stranger
    code, text, _ = run(
        capsys, "identify", photo(sample_dir, "Bob_Hope"), "--gallery", str(gallery), "--threshold", "1.01"
    )
    assert code == 0 and text.startswith("unknown person")


def test_verify_json(capsys, sample_dir):
    code, out, _ = run(
        capsys,
        "verify",
        photo(sample_dir, "Ashanti"),
        photo(sample_dir, "Ashanti"),
        *MODEL,
        "--threshold",
        "0.99",
        "--face",
        "largest",
        "--json",
    )
    assert code == 0 and out["same"] is True and out["threshold"] == 0.99
    assert [f["policy"] for f in out["faces"]] == ["largest", "largest"]
    code, out, _ = run(
        capsys,
        "verify",
        photo(sample_dir, "Ashanti"),
        photo(sample_dir, "Bob_Hope"),
        *MODEL,
        "--threshold",
        "0.9999",
        "--json",
    )
    assert code == 0 and out["same"] is False and set(out) >= {"same", "score", "threshold"}
    code, _, err = run(capsys, "verify", photo(sample_dir, "Ashanti"), photo(sample_dir, "Bob_Hope"), *MODEL)
    assert_one_line_error(code, err, "has no calibrated threshold; pass --threshold")


def test_gallery_subcommands(gallery, capsys):
    g = str(gallery)
    code, out, _ = run(capsys, "gallery", "list", "--gallery", g, "--json")
    assert code == 0 and [(i["name"], i["images"]) for i in out["identities"]] == [("Aaron_Peirsol", 2), ("Ashanti", 2)]
    code, out, _ = run(capsys, "gallery", "--gallery", g, "--json", "show", "Ashanti")  # options before the action too
    assert code == 0 and len(out["images"]) == 2 and len(out["images"][0]["sha256"]) == 64
    code, out, _ = run(capsys, "gallery", "stats", "--gallery", g, "--json")
    assert code == 0 and out["identities"] == 2 and out["images"] == 4 and out["index_fresh"]
    assert out["model"] == {"model": "resnet18", "pretrained": "none", "input_size": 64}
    code, out, _ = run(capsys, "gallery", "rebuild-index", "--kind", "hnsw", "--m", "16", "--gallery", g, "--json")
    assert code == 0 and out["kind"] == "hnsw" and out["vectors"] == 4
    code, out, _ = run(capsys, "gallery", "remove", "Ashanti", "--gallery", g, "--json")
    assert code == 0 and out == {"removed": "Ashanti", "images": 2}
    code, out, _ = run(capsys, "gallery", "stats", "--gallery", g, "--json")
    assert out["identities"] == 1 and out["images"] == 2 and out["index_kind"] == "hnsw" and out["index_fresh"]


def test_default_gallery_location(monkeypatch, tmp_path, capsys, sample_dir):
    monkeypatch.setenv("FACEREC_HOME", str(tmp_path / "home"))
    code, out, _ = run(capsys, "enroll", "Ashanti", photo(sample_dir, "Ashanti"), *MODEL, "--json")
    assert code == 0 and Path(out["gallery"]) == tmp_path / "home" / "gallery"
    assert (tmp_path / "home" / "gallery" / "gallery.sqlite").is_file()


def test_grayscale_and_rgba_photos_are_accepted(tmp_path, capsys, sample_dir):
    gray, rgba = tmp_path / "gray.png", tmp_path / "rgba.png"
    Image.open(photo(sample_dir, "Ashanti")).convert("L").save(gray)
    Image.open(photo(sample_dir, "Ashanti", 2)).convert("RGBA").save(rgba)
    code, out, err = run(
        capsys, "enroll", "Ashanti", str(gray), str(rgba), "--gallery", str(tmp_path / "g"), *MODEL, "--json"
    )
    assert code == 0 and out["added"] == 2, err


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "kind,message",
    [
        ("missing", "no such file"),
        ("directory", "is a directory"),
        ("empty", "is an empty file"),
        ("truncated", "cannot read image"),
        ("text", "cannot read image"),
        ("huge", "pixels"),
        ("no_face", "no face found"),
    ],
)
def test_bad_image_is_a_clean_error_and_changes_nothing(gallery, bad_files, capsys, sample_dir, kind, message):
    before = state(gallery)
    bad = str(bad_files[kind])
    # a good photo next to the bad one is not kept either: an identity is all or nothing
    code, _, err = run(capsys, "enroll", "Bob_Hope", photo(sample_dir, "Bob_Hope"), bad, "--gallery", str(gallery))
    assert_one_line_error(code, err, message)
    code, _, err = run(capsys, "identify", bad, "--gallery", str(gallery), "--threshold", "0.5")
    assert_one_line_error(code, err, message)
    code, _, err = run(capsys, "verify", bad, photo(sample_dir, "Bob_Hope"), *MODEL, "--threshold", "0.5")
    assert_one_line_error(code, err, message)
    assert state(gallery) == before


@pytest.mark.parametrize("action", ["show", "remove"])
def test_unknown_identity(gallery, capsys, action):
    before = state(gallery)
    code, _, err = run(capsys, "gallery", action, "Nobody", "--gallery", str(gallery))
    assert_one_line_error(code, err, "no identity named 'Nobody'")
    assert state(gallery) == before


def test_gallery_of_another_model_is_refused(gallery, capsys, sample_dir):
    before = state(gallery)
    other = ["--model", "resnet18", "--pretrained", "none", "--input-size", "48"]
    code, _, err = run(capsys, "enroll", "Bob_Hope", photo(sample_dir, "Bob_Hope"), "--gallery", str(gallery), *other)
    assert_one_line_error(code, err, "--model resnet18 --pretrained none --input-size 64")
    code, _, err = run(
        capsys, "identify", photo(sample_dir, "Bob_Hope"), "--gallery", str(gallery), *other, "--threshold", "0.5"
    )
    assert_one_line_error(code, err, "was enrolled with model resnet18/64px")
    assert state(gallery) == before


def test_corrupt_and_foreign_gallery_directories(tmp_path, capsys, sample_dir):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "gallery.sqlite").write_bytes(os.urandom(8192))
    before = (corrupt / "gallery.sqlite").read_bytes()
    for argv in (
        ["enroll", "X", photo(sample_dir, "Bob_Hope"), *MODEL],
        ["gallery", "list"],
        ["identify", photo(sample_dir, "Bob_Hope"), "--threshold", "0.5", *MODEL],
    ):
        code, _, err = run(capsys, *argv, "--gallery", str(corrupt))
        assert_one_line_error(code, err, "corrupt or not a gallery database")
    assert (corrupt / "gallery.sqlite").read_bytes() == before

    foreign = tmp_path / "documents"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("chapter 1")
    code, _, err = run(capsys, "enroll", "X", photo(sample_dir, "Bob_Hope"), *MODEL, "--gallery", str(foreign))
    assert_one_line_error(code, err, "not a facerec gallery")
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.txt"]

    code, _, err = run(capsys, "gallery", "stats", "--gallery", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, "no gallery at")
    assert not (tmp_path / "nowhere").exists()


def test_usage_errors(capsys, tmp_path):
    code, _, err = run(capsys, "enroll", "--gallery", str(tmp_path / "g"))
    assert_one_line_error(code, err, "give either NAME IMAGE... or --from-dir DIR")
    code, _, err = run(capsys, "enroll", "Solo", "--gallery", str(tmp_path / "g"))
    assert_one_line_error(code, err, "no images given")
    code, _, err = run(capsys, "gallery", "rebuild-index", "--nlist", "4", "--gallery", str(tmp_path / "g"))
    assert code == 2


# ---------------------------------------------------------------- processes
def test_help_is_fast_and_lazy():
    code = (
        "import sys, facerec.cli; facerec.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'faiss', 'mlflow', 'facenet_pytorch', 'open_clip') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_four_cli_processes_enroll_at_once(tmp_path, sample_dir):
    gallery = str(tmp_path / "g")
    names = ["Aaron_Peirsol", "Ashanti", "Bob_Hope", "Hun_Sen"]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "facerec",
                "-q",
                "enroll",
                name,
                photo(sample_dir, name, 1),
                photo(sample_dir, name, 2),
                "--gallery",
                gallery,
                *MODEL,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    with Gallery(gallery) as g:
        assert {i["name"]: i["images"] for i in g.identities()} == dict.fromkeys(names, 2)
        assert g.index_is_fresh()


def test_build_gallery_pipeline(tmp_path, capsys, sample_dir):
    from pipelines.build_gallery import main as build

    gallery = tmp_path / "built"
    code = build(
        [
            "gallery=" + str(gallery),
            "limit=2",
            "track=false",
            "progress=false",
            "model.name=resnet18",
            "model.pretrained=none",
            "model.input_size=64",
            "index.kind=ivf",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["identities"] == 2 and summary["added"] == 8 and summary["failed"] == 0
    assert summary["gallery"]["index_kind"] == "ivf" and summary["gallery"]["index_fresh"]
    assert build(["gallery=" + str(gallery), "limit=x"]) == 2  # a bad override is a one-line config error


def test_identify_in_an_empty_gallery(tmp_path, capsys, sample_dir):
    Gallery(tmp_path / "empty", create=True).close()
    code, _, err = run(capsys, "identify", photo(sample_dir, "Bob_Hope"), "--gallery", str(tmp_path / "empty"))
    assert_one_line_error(code, err, "is empty: enroll someone first")


# ---------------------------------------------------------------- safety net for the refactoring
@pytest.mark.parametrize("kind,message", [("missing", "no such file"), ("truncated", "cannot read image")])
def test_a_bad_second_image_for_verify_is_a_clean_error(bad_files, capsys, sample_dir, kind, message):
    code, _, err = run(
        capsys, "verify", photo(sample_dir, "Bob_Hope"), str(bad_files[kind]), *MODEL, "--threshold", "0.5"
    )
    assert_one_line_error(code, err, message)
    assert str(bad_files[kind]) in err  # the line names the second image, not the first


@pytest.mark.parametrize(
    "name,message",
    [
        ("", "identity name must not be empty"),
        ("   ", "identity name must not be empty"),
        ("Bob\nHope", "invalid identity name 'Bob\\nHope'"),
        ("Bob\rHope", "invalid identity name"),
    ],
)
def test_empty_or_newline_holding_names_are_refused_and_change_nothing(gallery, capsys, sample_dir, name, message):
    before = state(gallery)
    code, _, err = run(capsys, "enroll", name, photo(sample_dir, "Bob_Hope"), "--gallery", str(gallery))
    assert_one_line_error(code, err, message)
    for action in ("show", "remove"):
        code, _, err = run(capsys, "gallery", action, name, "--gallery", str(gallery))
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert state(gallery) == before


@pytest.mark.parametrize("top_k", ["0", "-3"])
def test_top_k_below_one_is_refused(gallery, capsys, sample_dir, top_k):
    code, _, err = run(
        capsys,
        "identify",
        photo(sample_dir, "Bob_Hope"),
        "--gallery",
        str(gallery),
        "--top-k",
        top_k,
        "--threshold",
        "0.5",
    )
    assert_one_line_error(code, err, "--top-k must be at least 1")


def test_no_detect_embeds_the_whole_image_as_the_crop(bad_files, tmp_path, capsys):
    """A face-less image fails with detection and goes through with --no-detect (it is taken as a crop)."""
    wall = str(bad_files["no_face"])
    code, _, err = run(capsys, "verify", wall, wall, *MODEL, "--threshold", "0.5")
    assert_one_line_error(code, err, "no face found")
    code, out, _ = run(capsys, "verify", wall, wall, *MODEL, "--threshold", "0.5", "--no-detect", "--json")
    assert code == 0 and out["same"] is True and out["score"] == pytest.approx(1.0, abs=1e-4)
    assert [f["faces_found"] for f in out["faces"]] == [None, None]
    gallery = str(tmp_path / "crops-gallery")
    code, out, _ = run(capsys, "enroll", "Wall", wall, "--gallery", gallery, *MODEL, "--no-detect", "--json")
    assert code == 0 and out["face_policy"] == "none" and out["added"] == 1
    code, out, _ = run(capsys, "identify", wall, "--gallery", gallery, "--no-detect", "--threshold", "0.5", "--json")
    assert code == 0 and out["identity"] == "Wall" and out["face"]["faces_found"] is None

"""FaceRecognizer on real photos (embedded LFW sample, MTCNN, resnet18 at 64 px with seeded random weights).

Random weights do not recognise people, so these tests check the machinery
(detection, face policy, exact self-matches, thresholds, fingerprints, atomic
enrollment), not accuracy; accuracy is the evaluation suite's job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerec.errors import ImageError, ModelError, ModelMismatchError, NoFaceError
from facerec.gallery.recognizer import FaceRecognizer
from facerec.models import load_model

MODEL = {"model": "resnet18", "pretrained": "none", "input_size": 64}


@pytest.fixture(scope="module")
def embedder():
    return load_model("resnet18", pretrained="none", input_size=64)


@pytest.fixture(scope="module")
def detector():
    from facerec.faces.detect import DetectorConfig, FaceDetector

    return FaceDetector(DetectorConfig(image_size=64))


@pytest.fixture()
def make(embedder, detector, tmp_path):
    def build(**kwargs) -> FaceRecognizer:
        kwargs.setdefault("gallery", tmp_path / "gallery")
        kwargs.setdefault("detector", detector)
        return FaceRecognizer(kwargs.pop("model", embedder), **kwargs)

    return build


def photo(sample_dir: Path, name: str, number: int) -> Path:
    return sample_dir / name / f"{name}_{number:04d}.jpg"


def test_enroll_identify_and_open_set(make, sample_dir):
    with make() as rec:
        a = rec.enroll("Aaron", [photo(sample_dir, "Aaron_Peirsol", 1), photo(sample_dir, "Aaron_Peirsol", 2)])
        rec.enroll("Ashanti", [photo(sample_dir, "Ashanti", 1)])
        assert a.created and len(a.added) == 2 and a.added[0].faces_found >= 1 and a.added[0].policy == "central"
        # an enrolled photo matches itself exactly: top-1 whatever the weights
        found = rec.identify(photo(sample_dir, "Ashanti", 1), top_k=5, threshold=0.5)
        assert found.identity == "Ashanti" and found.score == pytest.approx(1.0, abs=1e-4)
        assert next(c.identity for c in found.candidates) == "Ashanti" and len(found.candidates) == 2
        assert found.candidates[1].score <= found.candidates[0].score
        # open set: nobody reaches an impossible threshold
        stranger = rec.identify(photo(sample_dir, "Bob_Hope", 1), threshold=1.01)
        assert stranger.identity is None and stranger.score < 1.01 and stranger.candidates
        assert rec.stats()["images"] == 3


def test_verify_uses_given_or_model_threshold(make, embedder, sample_dir):
    one, two = photo(sample_dir, "Aaron_Peirsol", 1), photo(sample_dir, "Ashanti", 1)
    with make() as rec:
        same = rec.verify(one, one, threshold=0.999)
        assert same.same and same.score == pytest.approx(1.0, abs=1e-4)
        other = rec.verify(one, two, threshold=0.999)
        assert not other.same and other.score < 0.999 and other.threshold == 0.999
        with pytest.raises(ModelError, match="no calibrated threshold; pass --threshold"):
            rec.verify(one, two)
        embedder.threshold = 0.25  # as a trained model directory would carry
        try:
            assert rec.verify(one, two).threshold == 0.25
        finally:
            embedder.threshold = None


def test_no_face_and_bad_images_change_nothing(make, sample_dir, tmp_path):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (250, 250), (128, 128, 128)).save(blank)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with make() as rec:
        rec.enroll("Aaron", [photo(sample_dir, "Aaron_Peirsol", 1)])
        before = rec.stats()
        with pytest.raises(NoFaceError, match="no face found in .*wall.png"):
            rec.enroll("Bob", [photo(sample_dir, "Bob_Hope", 1), blank])  # the good photo is not kept either
        with pytest.raises(ImageError):
            rec.enroll("Bob", [photo(sample_dir, "Bob_Hope", 1), text])
        with pytest.raises(NoFaceError):
            rec.identify(blank, threshold=0.5)
        with pytest.raises(NoFaceError):
            rec.verify(blank, photo(sample_dir, "Bob_Hope", 1), threshold=0.5)
        after = rec.stats()
        assert (after["images"], after["identities"], after["generation"]) == (
            before["images"],
            before["identities"],
            before["generation"],
        )


def test_face_policy_central_or_largest(make, sample_dir, tmp_path):
    # a big off-centre face (left) and a smaller face in the middle of a wide canvas
    canvas = Image.new("RGB", (800, 320), (255, 255, 255))
    canvas.paste(Image.open(photo(sample_dir, "Bob_Hope", 1)).resize((320, 320)), (0, 0))
    canvas.paste(Image.open(photo(sample_dir, "Ashanti", 1)).crop((50, 50, 200, 200)), (325, 85))
    group = tmp_path / "group.jpg"
    canvas.save(group)
    reports = {}
    for policy in ("central", "largest"):
        with make(face=policy) as rec:
            _, reports[policy] = rec.embed(group)
    for report in reports.values():
        assert report.faces_found >= 2
    center_x = {p: (r.box[0] + r.box[2]) / 2 for p, r in reports.items()}
    assert abs(center_x["central"] - 400) < 60  # the middle face
    assert center_x["largest"] < 320  # the big face on the left
    assert reports["largest"].policy == "largest"


def test_model_fingerprint_is_enforced(make, sample_dir):
    with make() as rec:
        rec.enroll("Aaron", [photo(sample_dir, "Aaron_Peirsol", 1)])
        before = rec.stats()
    other = load_model("resnet18", pretrained="none", input_size=32)  # another input size: another model
    with make(model=other) as rec:
        with pytest.raises(ModelMismatchError, match="--model resnet18 --pretrained none --input-size 64"):
            rec.enroll("Bob", [photo(sample_dir, "Bob_Hope", 1)])
        with pytest.raises(ModelMismatchError):
            rec.identify(photo(sample_dir, "Bob_Hope", 1), threshold=0.5)
        assert rec.stats()["images"] == before["images"]


def test_gallery_model_is_the_default(make, sample_dir):
    with make() as rec:
        rec.enroll("Aaron", [photo(sample_dir, "Aaron_Peirsol", 1)])
    with make(model=None) as rec:  # no model given: the one the gallery records is rebuilt
        assert rec.identify(photo(sample_dir, "Aaron_Peirsol", 1), threshold=0.9).identity == "Aaron"
        assert rec.embedder.fingerprint == rec.stats()["model_fingerprint"]
    with make(model=None, gallery=Path("/nonexistent/gallery")) as rec:  # no gallery yet: the default model
        assert rec.embedder.name == "dlib-resnet"


def test_enroll_folder_commits_each_identity_and_skips_errors(make, sample_dir, tmp_path):
    root = tmp_path / "people"
    for name in ("Aaron_Peirsol", "Ashanti", "Bob_Hope"):
        (root / name).mkdir(parents=True)
        for n in (1, 2):
            (root / name / f"{n}.jpg").symlink_to(photo(sample_dir, name, n))
    (root / "Bob_Hope" / "3.jpg").write_bytes(photo(sample_dir, "Bob_Hope", 3).read_bytes()[:3000])  # truncated
    with make(batch_size=2) as rec:
        with pytest.raises(ImageError, match="identities enrolled before"):
            rec.enroll_folder(root)
        assert {i["name"] for i in rec.identities()} == {"Aaron_Peirsol", "Ashanti"}  # committed before the bad one
        results, failed = rec.enroll_folder(root, skip_errors=True)
        assert [f["identity"] for f in failed] == ["Bob_Hope"]
        counts = {i["name"]: i["images"] for i in rec.identities()}
        assert counts == {"Aaron_Peirsol": 2, "Ashanti": 2, "Bob_Hope": 2}
        assert sum(len(r.skipped) for r in results) == 4  # the first run's photos: duplicates, not re-added
        vectors = np.stack([rec._open_gallery().embeddings(n)[0] for n in counts])
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)


# ---------------------------------------------------------------- bulk enrollment (enroll --from-dir)
def people_folder(root: Path, sample_dir: Path, photos: dict[str, int]) -> Path:
    """``root/<identity>/<n>.jpg`` linking to the sample's first photos of each identity."""
    for name, count in photos.items():
        (root / name).mkdir(parents=True)
        for n in range(1, count + 1):
            (root / name / f"{n}.jpg").symlink_to(photo(sample_dir, name, n))
    return root


def recording(monkeypatch, owner, method: str) -> list:
    """Wrap ``owner.method`` to record its first argument on each call."""
    calls, original = [], getattr(owner, method)

    def wrapper(self, first, *args, **kwargs):
        calls.append(first)
        return original(self, first, *args, **kwargs)

    monkeypatch.setattr(owner, method, wrapper)
    return calls


def test_enroll_folder_batches_across_identities_with_the_same_results_as_one_identity_at_a_time(
    make, sample_dir, tmp_path, monkeypatch
):
    counts = {"Aaron_Peirsol": 3, "Ashanti": 2, "Bob_Hope": 3, "Colin_Montgomerie": 2}
    root = people_folder(tmp_path / "people", sample_dir, counts)
    batches = recording(monkeypatch, FaceRecognizer, "prepare")
    with make(batch_size=4, gallery=tmp_path / "bulk") as rec:
        results, failed = rec.enroll_folder(root)
        bulk = {name: rec._open_gallery().embeddings(name) for name in counts}
        bulk_faces = {name: [im["face"]["box"] for im in rec.show(name)["images"]] for name in counts}
    assert not failed and [r.identity for r in results] == list(counts)
    # 10 photos in batches of 4: detection and embedding ran on photos of several identities at once
    assert [len(b) for b in batches] == [4, 4, 2]
    assert {Path(p).parent.name for p in batches[0]} == {"Aaron_Peirsol", "Ashanti"}
    with make(gallery=tmp_path / "single") as rec:
        for name in counts:
            rec.enroll(name, sorted((root / name).iterdir()))
        for name in counts:
            np.testing.assert_allclose(rec._open_gallery().embeddings(name), bulk[name], atol=1e-4)
            boxes = [im["face"]["box"] for im in rec.show(name)["images"]]
            np.testing.assert_allclose(boxes, bulk_faces[name], atol=0.5)


def test_enroll_folder_commits_each_identity_in_its_own_transaction(make, sample_dir, tmp_path, monkeypatch):
    from facerec.gallery.gallery import Gallery

    root = people_folder(tmp_path / "people", sample_dir, {"Aaron_Peirsol": 2, "Ashanti": 2, "Bob_Hope": 2})
    commits = recording(monkeypatch, Gallery, "enroll")
    with make(batch_size=32) as rec:  # all six photos in one batch
        rec.enroll_folder(root)
        assert [[name for name, _ in batch] for batch in commits] == [["Aaron_Peirsol"], ["Ashanti"], ["Bob_Hope"]]
        stats = rec.stats()
    assert stats["generation"] == 3 and stats["images"] == 6  # one committed change per identity
    assert stats["index_fresh"]  # written once at the end


def test_a_bad_photo_in_one_identity_does_not_stop_the_others(make, sample_dir, tmp_path):
    root = people_folder(tmp_path / "people", sample_dir, {"Aaron_Peirsol": 2, "Ashanti": 2, "Bob_Hope": 2})
    Image.new("RGB", (250, 250), (128, 128, 128)).save(root / "Ashanti" / "0.jpg")  # a wall: no face
    with make(batch_size=3) as rec:
        results, failed = rec.enroll_folder(root, skip_errors=True)
        assert [(f["identity"], Path(f["image"]).name) for f in failed] == [("Ashanti", "0.jpg")]
        assert "no face found" in failed[0]["error"]
        assert {i["name"]: i["images"] for i in rec.identities()} == {"Aaron_Peirsol": 2, "Ashanti": 2, "Bob_Hope": 2}
        assert [len(r.added) for r in results] == [2, 2, 2]


def test_enroll_from_dir_passes_threads_to_the_detector_and_counts_limited_photos(sample_dir, tmp_path, monkeypatch):
    from facerec.cli import main
    from facerec.faces import detect

    root = people_folder(tmp_path / "people", sample_dir, {"Aaron_Peirsol": 2, "Ashanti": 1, "Bob_Hope": 2})
    configs = recording(monkeypatch, detect.FaceDetector, "__init__")
    model = ["--model", "resnet18", "--pretrained", "none", "--input-size", "64"]
    gallery = ["--gallery", str(tmp_path / "g")]
    code = main(["-q", "enroll", "--from-dir", str(root), "--limit", "2", "--threads", "1", *gallery, *model])
    assert code == 0
    assert [c.threads for c in configs] == [1]
    with FaceRecognizer(gallery=tmp_path / "g") as rec:
        assert {i["name"]: i["images"] for i in rec.identities()} == {"Aaron_Peirsol": 2, "Ashanti": 1}

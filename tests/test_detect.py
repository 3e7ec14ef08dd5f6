"""facerec.detect: face choice on hand-made boxes, crop geometry, and MTCNN on the embedded sample."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from facerec.config import load_config
from facerec.errors import ConfigError, NoFaceError
from facerec.faces.detect import Detection, DetectorConfig, Face, FaceDetector, choose_face, crop_square


def face(x1, y1, x2, y2, prob=0.99, landmarks=None) -> Face:
    return Face((float(x1), float(y1), float(x2), float(y2)), prob, landmarks)


# ------------------------------------------------------------ choose_face (pure)
@pytest.mark.parametrize("policy", ["central", "largest", "probable"])
def test_no_faces_gives_none(policy):
    assert choose_face([], (250, 250), policy) is None


def test_central_prefers_centred_face_over_bigger_bystander():
    # like LFW Julianne_Moore_0001: a bigger, more confident face up and to the right
    bystander = face(133, 20, 234, 149, prob=1.0)
    subject = face(74, 62, 162, 192, prob=0.99)
    faces = [bystander, subject]
    assert choose_face(faces, (250, 250), "central") == 1
    assert choose_face(faces, (250, 250), "largest") == 0
    assert choose_face(faces, (250, 250), "probable") == 0


def test_central_ignores_tiny_face_in_the_middle():
    tiny_centre = face(115, 115, 135, 135, prob=1.0)
    big_near = face(60, 70, 160, 190)
    assert choose_face([tiny_centre, big_near], (250, 250), "central") == 1


def test_central_uses_image_size_not_a_fixed_centre():
    left, right = face(0, 0, 100, 100), face(300, 0, 400, 100)
    assert choose_face([left, right], (400, 100), "central") in (0, 1)  # symmetric: a tie
    assert choose_face([left, right], (200, 100), "central") == 0
    assert choose_face([left, right], (800, 100), "central") == 1


def test_probable_and_ties():
    faces = [face(0, 0, 10, 10, 0.8), face(0, 0, 10, 10, 0.95), face(0, 0, 10, 10, 0.95)]
    assert choose_face(faces, (100, 100), "probable") == 1
    assert choose_face(faces, (100, 100), "largest") == 0


def test_unknown_policy():
    with pytest.raises(ConfigError, match="policy"):
        choose_face([face(0, 0, 1, 1)], (10, 10), "biggest")


def test_detection_face_property():
    faces = (face(0, 0, 1, 1), face(2, 2, 3, 3))
    assert Detection(faces, 1).face == faces[1]
    assert Detection(faces, None).face is None
    assert Detection().face is None


# ------------------------------------------------------------ config
def test_config_validation():
    with pytest.raises(ConfigError, match="margin"):
        DetectorConfig(margin=-0.1)
    with pytest.raises(ConfigError, match="policy"):
        DetectorConfig(policy="first")
    with pytest.raises(ConfigError, match="batch_size"):
        DetectorConfig(batch_size=0)


def test_config_from_overrides_and_geometry():
    config = load_config(DetectorConfig, overrides=["margin=0.5", "thresholds=[0.5, 0.6, 0.7]", "policy=largest"])
    assert config.margin == 0.5 and config.thresholds == (0.5, 0.6, 0.7) and config.policy == "largest"
    assert config.geometry() == dataclasses.replace(config, device="cuda", batch_size=4).geometry()
    assert config.geometry() != dataclasses.replace(config, margin=0.1).geometry()
    with pytest.raises(ConfigError):
        load_config(DetectorConfig, overrides=["policy=nearest"])


# ------------------------------------------------------------ crop geometry (no MTCNN)
def dots_image(left: tuple[int, int], right: tuple[int, int]) -> Image.Image:
    """A grey image with a red dot (left eye) and a blue dot (right eye)."""
    image = Image.new("RGB", (200, 200), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    for (x, y), color in ((left, (255, 0, 0)), (right, (0, 0, 255))):
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=color)
    return image


def centroid(array: np.ndarray, channel: int) -> tuple[float, float]:
    others = [c for c in range(3) if c != channel]
    mask = (array[..., channel] > 180) & (array[..., others].max(axis=-1) < 90)
    ys, xs = np.nonzero(mask)
    assert len(xs) > 0
    return float(xs.mean()), float(ys.mean())


def test_crop_levels_the_eyes_and_applies_the_margin():
    # eyes 40 px apart, tilted by 30 degrees, centred on (100, 100)
    angle = np.radians(30)
    dx, dy = 20 * np.cos(angle), 20 * np.sin(angle)
    left, right = (round(100 - dx), round(100 - dy)), (round(100 + dx), round(100 + dy))
    marks = (left, right, (100, 110), (90, 120), (110, 120))
    subject = face(70, 70, 130, 130, landmarks=marks)  # 60 px box centred on (100, 100)
    detector = FaceDetector(DetectorConfig(image_size=120, margin=0.5, align=True))
    crop = detector.crop(dots_image(left, right), subject)
    assert crop.size == (120, 120) and crop.mode == "RGB"
    array = np.asarray(crop)
    (lx, ly), (rx, ry) = centroid(array, 0), centroid(array, 2)
    assert abs(ly - ry) < 1.5  # level
    # margin 0.5 -> crop side 120 px of source = 2x the box; output is 120 px, so scale 1
    assert abs((rx - lx) - 40) < 2 and abs((lx + rx) / 2 - 60) < 2

    unaligned_detector = FaceDetector(dataclasses.replace(detector.config, align=False))
    unaligned = np.asarray(unaligned_detector.crop(dots_image(left, right), subject))
    (_, ly), (_, ry) = centroid(unaligned, 0), centroid(unaligned, 2)
    assert ry - ly > 15  # still tilted


def test_crop_square_outside_the_image_is_black():
    image = Image.new("RGB", (50, 50), (255, 255, 255))
    patch = np.asarray(crop_square(image, (0.0, 0.0), 50.0, 0.0, 50))
    assert patch[5, 5].max() == 0 and patch[45, 45].min() == 255


def test_center_crop():
    image = Image.new("RGB", (300, 200), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((100, 50, 199, 149), fill=(255, 255, 255))  # centred 100 px square
    detector = FaceDetector(DetectorConfig(image_size=64, center_fraction=0.5))
    crop = np.asarray(detector.center_crop(image))
    assert crop.shape == (64, 64, 3)
    assert crop.min() > 200  # 0.5 x 200 px = the white square exactly


# ------------------------------------------------------------ MTCNN on real photos
@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(DetectorConfig(batch_size=8, threads=1))  # 1 thread: robust on a busy shared CPU


@pytest.fixture(scope="module")
def sample_images(sample_dir: Path) -> dict[str, Image.Image]:
    paths = sorted(sample_dir.glob("*/*.jpg"))[:16]
    paths.append(sample_dir / "Julianne_Moore" / "Julianne_Moore_0001.jpg")
    return {p.name: Image.open(p).convert("RGB") for p in paths}


def test_mtcnn_is_built_lazily():
    assert FaceDetector()._mtcnn is None


def test_detect_finds_the_central_face(detector, sample_images):
    detections = detector.detect(list(sample_images.values()))
    assert len(detections) == len(sample_images)
    for name, detection in zip(sample_images, detections):
        assert detection.face is not None, name
        cx, cy = detection.face.center
        assert abs(cx - 125) < 40 and abs(cy - 125) < 40, (name, detection.face.box)
        assert 0.9 <= detection.face.prob <= 1.0
        assert len(detection.face.landmarks) == 5


def test_our_cascade_finds_exactly_what_facenet_pytorchs_mtcnn_finds(detector, sample_images):
    from facenet_pytorch import MTCNN

    reference = MTCNN(keep_all=True, post_process=False, select_largest=False).eval()
    photo = sample_images["Julianne_Moore_0001.jpg"]
    images = [*sample_images.values(), photo.resize((520, 400)), photo.resize((97, 131))]
    for image in images:  # several faces, upsampled, small
        boxes, probs, points = reference.detect(image, landmarks=True)
        (ours,) = detector.detect([image])
        if boxes is None:
            assert ours.faces == ()
            continue
        assert len(ours.faces) == len(boxes)
        np.testing.assert_allclose([f.box for f in ours.faces], boxes.astype(float), atol=1e-3)
        np.testing.assert_allclose([f.prob for f in ours.faces], np.asarray(probs, float), atol=1e-5)
        np.testing.assert_allclose([f.landmarks for f in ours.faces], points.astype(float), atol=1e-3)


def test_detection_never_imports_torchvision(sample_dir):
    import subprocess
    import sys

    photo = next(sample_dir.glob("*/*.jpg"))
    code = (
        "import sys; from PIL import Image; from facerec.faces.detect import FaceDetector;"
        f"assert FaceDetector().detect([Image.open({str(photo)!r}).convert('RGB')])[0].face is not None;"
        "print('torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_multi_face_photo_policies(detector, sample_images):
    image = sample_images["Julianne_Moore_0001.jpg"]
    central = detector.detect([image])[0]
    assert len(central.faces) >= 2
    assert abs(central.face.center[0] - 125) < 25
    by_prob = detector.detect([image], policy="probable")[0]
    assert by_prob.face.center[0] > 160  # the man on the right


def test_batched_equals_one_by_one(detector, sample_images):
    images = list(sample_images.values())[:4]
    batched = detector.detect(images)
    for image, detection in zip(images, batched):
        single = detector.detect([image])[0]
        assert len(single.faces) == len(detection.faces)
        assert np.allclose(single.face.box, detection.face.box, atol=1.0)


def test_mixed_sizes_tiny_and_blank_images(detector, sample_images):
    photo = next(iter(sample_images.values()))
    small = photo.resize((200, 200))
    images = [photo, Image.new("RGB", (10, 10)), small, Image.new("RGB", (120, 90), (90, 90, 90)), photo]
    detections = detector.detect(images)
    assert [d.face is not None for d in detections] == [True, False, True, False, True]
    assert detections[0].faces == detections[4].faces
    assert np.allclose(np.array(detections[2].face.box), np.array(detections[0].face.box) * 0.8, atol=6)


def test_threads_setting_is_restored(detector, sample_images):
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        detector.detect([next(iter(sample_images.values()))])  # runs with threads=1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)


def test_crop_face(detector, sample_images):
    crop, detection = detector.crop_face(next(iter(sample_images.values())))
    assert crop.size == (224, 224) and crop.mode == "RGB"
    assert detection.face is not None
    with pytest.raises(NoFaceError):
        detector.crop_face(Image.new("RGB", (160, 160), (200, 180, 160)))


def test_alignment_levels_a_rotated_face(detector, sample_images):
    rotated = next(iter(sample_images.values())).rotate(20, resample=Image.Resampling.BICUBIC)
    found = detector.detect([rotated])[0].face
    assert found is not None and abs(found.eye_angle() + 20) < 8  # PIL rotates counter-clockwise
    aligned, _ = detector.crop_face(rotated)
    again = detector.detect([aligned])[0].face
    assert again is not None and abs(again.eye_angle()) < 6


def test_unavailable_cuda_is_a_config_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="CUDA"):
        FaceDetector(DetectorConfig(device="cuda")).detect([Image.new("RGB", (64, 64))])

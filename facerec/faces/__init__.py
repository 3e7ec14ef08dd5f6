"""Faces: MTCNN detection, the choice of the photo's subject, crop geometry and the cached crop stage."""

from facerec._lazy import lazy_exports

_EXPORTS = {
    "Policy": "config",
    "POLICIES": "config",
    "FaceChoice": "config",
    "FACE_CHOICES": "config",
    "Fallback": "config",
    "FALLBACKS": "config",
    "CENTER_WEIGHT": "detect",
    "DetectorConfig": "config",
    "Face": "detect",
    "Detection": "detect",
    "choose_face": "detect",
    "crop_square": "detect",
    "FaceDetector": "detect",
    "MANIFEST": "crop",
    "CONFIG_FILE": "crop",
    "LOCK_FILE": "crop",
    "CROP_VERSION": "config",
    "CropConfig": "config",
    "CropSummary": "crop",
    "crop_path_for": "crop",
    "source_stamp": "crop",
    "read_manifest": "crop",
    "write_manifest": "crop",
    "cached_record": "crop",
    "list_inputs": "crop",
    "save_atomic": "crop",
    "prepare_out": "crop",
    "summarize": "crop",
    "run_crop": "crop",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

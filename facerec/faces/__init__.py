"""Faces: MTCNN detection, the choice of the photo's subject, crop geometry and the cached crop stage."""

from facerec._lazy import lazy_exports

_EXPORTS = {
    "POLICIES": "detect",
    "CENTER_WEIGHT": "detect",
    "DetectorConfig": "detect",
    "Face": "detect",
    "Detection": "detect",
    "choose_face": "detect",
    "crop_square": "detect",
    "FaceDetector": "detect",
    "MANIFEST": "crop",
    "CONFIG_FILE": "crop",
    "LOCK_FILE": "crop",
    "CROP_VERSION": "crop",
    "CropConfig": "crop",
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

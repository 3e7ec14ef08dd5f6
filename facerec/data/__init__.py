"""Data: identity folders, the LFW protocol files, image loading, augmentation, batch sampling."""

from facerec._lazy import lazy_exports

_EXPORTS = {
    "DATA_ENV": "datasets",
    "LFW_IMAGE_DIRS": "datasets",
    "ImageRecord": "datasets",
    "Pair": "datasets",
    "PersonEntry": "datasets",
    "sample_root": "datasets",
    "resolve_data_root": "datasets",
    "lfw_images_dir": "datasets",
    "lfw_image_path": "datasets",
    "read_identity_folder": "datasets",
    "group_by_identity": "datasets",
    "split_by_identity": "datasets",
    "generate_pairs": "datasets",
    "read_pairs": "datasets",
    "read_people": "datasets",
    "people_records": "datasets",
    "LFW": "datasets",
    "IMAGE_EXTENSIONS": "images",
    "MAX_PIXELS": "images",
    "MAX_SIDE": "images",
    "is_image_file": "images",
    "load_image": "images",
    "to_rgb": "images",
    "eval_transform": "transforms",
    "train_transform": "transforms",
    "apply": "transforms",
    "seed_transform": "transforms",
    "Augment": "transforms",
    "BatchAugment": "transforms",
    "IdentityIndex": "sampling",
    "PairBatchSampler": "sampling",
    "PKBatchSampler": "sampling",
    "PixelDataset": "sampling",
    "decode": "sampling",
    "decode_all": "sampling",
    "seed_worker": "sampling",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

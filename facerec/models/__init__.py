"""Embedders: one registry, one protocol, one small module per backbone family; frozen face models; the resolver."""

from facerec._lazy import lazy_exports

_EXPORTS = {
    "NO_WEIGHTS": "base",
    "ONNX_PREFIX": "base",
    "Embedder": "base",
    "EmbedderSpec": "base",
    "available_embedders": "base",
    "create_embedder": "base",
    "is_frozen": "base",
    "is_model_dir": "base",
    "load_model": "base",
    "load_model_dir": "base",
    "register_embedder": "base",
    "save_model_dir": "base",
    "split_options": "base",
    "FrozenEmbedder": "frozen",
    "DEFAULT_MODEL": "resolve",
    "ModelChoice": "resolve",
    "resolve_model": "resolve",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

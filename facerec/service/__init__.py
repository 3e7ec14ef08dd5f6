"""``facerec serve``: a REST API over the recognizer (FastAPI + uvicorn), with API keys and metrics.

One module per concept: ``settings`` (what a worker is started with), ``keys`` (hashed
API keys beside the gallery), ``auth`` (Bearer check per role), ``uploads`` (size and
decompression-bomb limits, decoding), ``batching`` (micro-batching of embeddings),
``engine`` (model, detector and gallery threads), ``errors`` (4xx/5xx JSON bodies),
``metrics`` (Prometheus), ``schemas`` (response models for the OpenAPI docs) and
``app`` (the routes).
"""

from facerec._lazy import lazy_exports

_EXPORTS = {
    "create_app": "app",
    "ServiceSettings": "settings",
    "KeyStore": "keys",
    "MicroBatcher": "batching",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

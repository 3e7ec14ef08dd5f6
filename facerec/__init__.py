"""facerec: face verification and recognition (MTCNN crops, CLIP/torchvision embedders, FAISS gallery)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["FaceRecognizer", "__version__"]


def __getattr__(name: str):  # lazy: ``import facerec`` must not pull in torch
    if name == "FaceRecognizer":
        from facerec.gallery.recognizer import FaceRecognizer

        return FaceRecognizer
    raise AttributeError(name)

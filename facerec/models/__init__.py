"""Embedders: one registry, one protocol, one small module per backbone family."""

from facerec.models.base import (
    NO_WEIGHTS,
    Embedder,
    EmbedderSpec,
    available_embedders,
    create_embedder,
    is_model_dir,
    load_model,
    load_model_dir,
    register_embedder,
    save_model_dir,
)

__all__ = [
    "NO_WEIGHTS",
    "Embedder",
    "EmbedderSpec",
    "available_embedders",
    "create_embedder",
    "is_model_dir",
    "load_model",
    "load_model_dir",
    "register_embedder",
    "save_model_dir",
]

"""User-facing errors: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class FacerecError(Exception):
    """Base class for errors caused by the user's input, data or environment."""

    exit_code = 2


class ConfigError(FacerecError):
    """A config file or override is malformed or names an unknown key.

    It holds every problem found (``problems``), joined into its one-line message, so a
    user fixes a config in one go rather than one error per run.
    """

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems
        super().__init__("; ".join(problems))


class DataError(FacerecError):
    """A data set or protocol file is missing or malformed."""


class ImageError(FacerecError):
    """An image file cannot be read or decoded."""


class NoFaceError(FacerecError):
    """No face was detected where one is required."""


class ModelError(FacerecError):
    """A model spec cannot be resolved or its weights cannot be loaded."""


class ModelMismatchError(FacerecError):
    """Embeddings were made by another model than the one in use."""


class GalleryError(FacerecError):
    """A gallery is missing, corrupt, locked or asked for an unknown identity."""


class TrainingError(FacerecError):
    """Training cannot go on (e.g. the loss diverged)."""

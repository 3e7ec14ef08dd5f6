"""What a service worker is started with: gallery, model, limits and batching (one frozen dataclass).

``facerec serve --workers N`` starts N processes; each rebuilds its settings from the
JSON in ``$FACEREC_SERVE_SETTINGS`` (``to_env`` / ``from_env``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

SETTINGS_ENV = "FACEREC_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServiceSettings:
    gallery: str
    model: str | None = None  # None: the model the gallery was enrolled with
    pretrained: str | None = None
    input_size: int | None = None
    device: str = "cpu"
    face: str = "central"
    detect: bool = True
    threshold: float | None = None
    keys_file: str | None = None  # None: beside the gallery (see keys.default_keys_path)
    max_upload_bytes: int = 10 * 1024 * 1024  # per image
    max_files: int = 64  # per enrollment request
    max_pixels: int = 40_000_000  # decoded size an upload may declare (decompression-bomb guard)
    request_timeout_s: float = 30.0
    batch_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_batch: int = 32  # photos per detection batch, crops per embedding batch; 1 turns micro-batching off
    detect_threads: int = 2  # threads decoding uploads and cropping faces
    torch_threads: int | None = None  # None: torch's default (one per core)

    @property
    def gallery_path(self) -> Path:
        return Path(self.gallery).expanduser()

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServiceSettings:
        return cls(**json.loads(os.environ[SETTINGS_ENV]))

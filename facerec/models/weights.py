"""Pretrained weights: one checkpoint reader and loader for every backbone family, and
downloads that fail in seconds when they cannot succeed.

``read_checkpoint`` reads a state dict (``torch.load(weights_only=True)`` or safetensors,
through open_clip's reader, which knows both), unwrapping ``{"state_dict": ...}`` and DDP's
``module.`` prefix; ``load_checkpoint`` loads it into a module and names what does not fit.
The families only say which keys are theirs (as timm's ``_helpers.load_checkpoint`` and
open_clip's ``load_checkpoint`` serve every architecture).

Offline, huggingface_hub and urllib can wait for connection timeouts and retries
(about 50 s for CLIP's ``openai`` weights here) before giving up. Before downloading,
backbones call ``check_download``: it fails at once when ``HF_HUB_OFFLINE`` /
``TRANSFORMERS_OFFLINE`` is set, and after at most ``REACH_TIMEOUT_S`` when the host
cannot be reached (DNS and TCP connect in a daemon thread, so a hanging resolver
cannot hold the command). Files already in a local cache never get here.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from facerec.errors import ModelError

log = logging.getLogger(__name__)

REACH_TIMEOUT_S = 3.0
OFFLINE_ENVS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_requested() -> str | None:
    """The offline variable that is set (1/true/yes/on), if any."""
    for name in OFFLINE_ENVS:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return name
    return None


def reachable(host: str, port: int = 443, timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (DNS included)."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def check_download(url: str, what: str, hint: str) -> None:
    """ModelError (in seconds) when ``url`` cannot be downloaded now; ``hint`` says what to do instead."""
    variable = offline_requested()
    if variable:
        raise ModelError(f"cannot download {what}: {variable} is set (offline): {hint}")
    host = urlparse(url).hostname or url
    if not reachable(host):
        raise ModelError(f"cannot download {what}: {host} is unreachable (offline?): {hint}")


#: Key prefixes of a facerec embedder's state dict (a model directory's ``weights.pt``).
EMBEDDER_PARTS = ("backbone.", "head.")


def local_checkpoint(pretrained: str) -> Path | None:
    """The file of local start weights: a checkpoint file, or a facerec model directory's ``weights.pt``."""
    from facerec.models.base import WEIGHTS_FILE

    path = Path(pretrained).expanduser()
    if path.is_dir() and (path / WEIGHTS_FILE).is_file():
        return path / WEIGHTS_FILE
    return path if path.is_file() else None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's state dict (weights only: never unpickles code); one-line ModelError otherwise.

    A facerec embedder's weights (a model directory: a distilled student as the start of a
    fine-tune) give their backbone's entries; the head belongs to the new model.
    """
    from open_clip.factory import load_state_dict

    from facerec.models.base import error_reason

    try:
        state = load_state_dict(str(path), device="cpu", weights_only=True)
    except Exception as exc:  # torch.load / safetensors / zip / EOF raise many types for a bad file
        raise ModelError(
            f"cannot read checkpoint {path} as a state dict ({type(exc).__name__}: {error_reason(exc)})"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ModelError(f"checkpoint {path} is not a state dict")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if all(key.startswith(EMBEDDER_PARTS) for key in state):
        state = {key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")}
    return state


def load_checkpoint(
    module: Any, state: dict[str, Any], path: str | Path, what: str, ignore_unexpected: Sequence[str] = ()
) -> None:
    """``module.load_state_dict(state)``; a ModelError names missing and unexpected keys.

    ``ignore_unexpected``: key prefixes of parts the module dropped (a removed classifier).
    """
    from facerec.models.base import error_reason

    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {path} does not fit {what}: {error_reason(exc)}") from exc
    unexpected = [k for k in result.unexpected_keys if not any(k.startswith(p) for p in ignore_unexpected)]
    if result.missing_keys or unexpected:
        raise ModelError(
            f"checkpoint {path} does not fit {what}: missing {result.missing_keys[:3]}, unexpected {unexpected[:3]}"
        )
    log.info("loaded %s weights from %s", what, path)

"""Downloads of pretrained weights that fail in seconds when they cannot succeed.

Offline, huggingface_hub and urllib can wait for connection timeouts and retries
(about 50 s for CLIP's ``openai`` weights here) before giving up. Before downloading,
backbones call ``check_download``: it fails at once when ``HF_HUB_OFFLINE`` /
``TRANSFORMERS_OFFLINE`` is set, and after at most ``REACH_TIMEOUT_S`` when the host
cannot be reached (DNS and TCP connect in a daemon thread, so a hanging resolver
cannot hold the command). Files already in a local cache never get here.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

from facerec.errors import ModelError

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

"""Fault injection for crash tests: die by SIGKILL at a named point of the code.

``FACEREC_FAULT=<point>`` (or ``<point>:<n>``, the n-th time the point is reached)
makes the process kill itself with SIGKILL when it reaches ``point(<point>)``, as a
power cut or the OOM killer would: no ``finally``, no ``atexit``, no flush. Tests use
it to land a crash exactly where it hurts (inside a transaction, between writing an
index file and renaming it) instead of sleeping and hoping. The variable is read once
at import; unset, ``point`` is a comparison with None.
"""

from __future__ import annotations

import os
import signal

ENV = "FACEREC_FAULT"

#: The named points, where they are, and what a crash there must not break.
POINTS = {
    "enroll-in-transaction": "rows inserted and the generation bumped, COMMIT not yet run",
    "enroll-committed": "the enrollment committed, the index not yet updated",
    "remove-in-transaction": "an identity's rows deleted, COMMIT not yet run",
    "index-save": "faiss wrote the temporary index file, not yet renamed over index.faiss",
    "index-sidecar": "index.faiss renamed into place, its sidecar (index.json) not yet written",
}


def _parse(value: str | None) -> tuple[str | None, int]:
    if not value:
        return None, 0
    name, _, count = value.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={value!r}: unknown fault point; known: {', '.join(POINTS)}")
    return name, int(count or 1)


_ARMED, _COUNTDOWN = _parse(os.environ.get(ENV))


def point(name: str) -> None:
    """SIGKILL this process if ``$FACEREC_FAULT`` names ``name`` (and this is the n-th time here)."""
    global _COUNTDOWN
    if _ARMED is None or name != _ARMED:
        return
    _COUNTDOWN -= 1
    if _COUNTDOWN <= 0:
        os.kill(os.getpid(), signal.SIGKILL)

"""``Authorization: Bearer KEY`` on every request, per role: read (verify, identify, list, show, metrics)
or write (enroll, delete; write keys may also read).

With no key configured the API is open, which ``facerec serve`` allows only on a
loopback address.
"""

from __future__ import annotations

from fastapi import Depends, Request

from facerec.service.errors import ApiError
from facerec.service.keys import allows


def require(role: str):
    """A FastAPI dependency checking the request's key for ``role``."""

    async def check(request: Request) -> None:
        store = request.app.state.keys
        if not store.configured():
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer KEY'", "Unauthorized")
        record = store.lookup(key.strip())
        if record is None:
            raise ApiError(401, "invalid API key", "Unauthorized")
        if not allows(record.role, role):
            raise ApiError(403, f"key {record.name!r} has the {record.role} role; this needs {role}", "Forbidden")
        request.state.key_name = record.name

    return Depends(check)


READ = require("read")
WRITE = require("write")

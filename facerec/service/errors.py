"""Every failure becomes a JSON body ``{"error": ..., "type": ...}`` with a 4xx/5xx status; never a traceback.

User errors (``FacerecError`` subclasses, the ones the CLI prints as one line) map to
4xx by type; anything unexpected is logged here with its traceback and answered with
a bare 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from facerec.errors import (
    ConfigError,
    DataError,
    FacerecError,
    GalleryError,
    ImageError,
    ModelError,
    ModelMismatchError,
    NoFaceError,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status (auth, limits, unknown identity, timeouts)."""

    def __init__(self, status: int, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind or type(self).__name__


class IdentityNotFound(ApiError):
    def __init__(self, name: str) -> None:
        super().__init__(404, f"no identity named {name!r} in the gallery", "IdentityNotFound")


#: The first matching class wins (subclasses before their bases).
STATUS: tuple[tuple[type[FacerecError], int], ...] = (
    (NoFaceError, 422),  # a readable image without a face
    (ImageError, 400),
    (ModelMismatchError, 409),  # the gallery holds another model's embeddings
    (GalleryError, 409),  # e.g. identify on an empty gallery, a gallery locked too long
    (ModelError, 400),  # e.g. no calibrated threshold: the request may pass one
    (ConfigError, 400),
    (DataError, 400),
    (FacerecError, 400),
)


def status_of(exc: FacerecError) -> int:
    return next(code for cls, code in STATUS if isinstance(exc, cls))


def error_response(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "type": kind}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, str(exc), exc.kind, headers)

    @app.exception_handler(FacerecError)
    async def user_error(request: Request, exc: FacerecError) -> JSONResponse:
        return error_response(status_of(exc), str(exc), type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}" for e in exc.errors()
        ]
        return error_response(422, "; ".join(problems) or "invalid request", "RequestValidationError")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), "HTTPException", getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error (details are in the server log)", "InternalError")

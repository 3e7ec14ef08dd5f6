"""The FastAPI application: routes under ``/v1``, ``/healthz``, ``/metrics``, docs at ``/docs``.

``create_app(settings)`` builds one worker's app; the model loads in its lifespan
(once per worker). ``app_from_env`` is the factory ``facerec serve --workers N`` hands
to uvicorn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, File, Form, Path, Request, UploadFile
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from facerec import __version__
from facerec.service import errors
from facerec.service.auth import READ, WRITE
from facerec.service.engine import Engine
from facerec.service.errors import ApiError, error_response
from facerec.service.keys import KeyStore, default_keys_path
from facerec.service.metrics import Metrics, MetricsMiddleware
from facerec.service.schemas import (
    ERRORS,
    EnrollBody,
    HealthBody,
    IdentifyBody,
    IdentityBody,
    IdentityListBody,
    RemovedBody,
    VerifyBody,
)
from facerec.service.settings import ServiceSettings
from facerec.service.uploads import read_upload

T = TypeVar("T")
MAX_TOP_K = 100
NAME = Annotated[str, Path(description="identity name (URL-encoded)")]


class RequestSizeLimit:
    """413 before reading a body whose declared Content-Length exceeds the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if length.isdigit() and int(length) > self.limit:
                message = f"request body of {int(length)} bytes exceeds the {self.limit}-byte limit"
                await error_response(413, message, "PayloadTooLarge")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: ServiceSettings) -> FastAPI:
    metrics = Metrics()
    engine = Engine(settings, metrics)
    keys = KeyStore(settings.keys_file or default_keys_path(settings.gallery_path))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if engine.model is None:  # not loaded before the server started (facerec serve does, to fail in one line)
            await asyncio.to_thread(engine.load)
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()
            engine.close()

    app = FastAPI(
        title="facerec",
        version=__version__,
        lifespan=lifespan,
        description="Face verification and recognition. Send `Authorization: Bearer KEY` "
        "(make keys with `facerec keys add NAME --role read|write`).",
    )
    app.state.engine, app.state.keys, app.state.metrics, app.state.settings = engine, keys, metrics, settings
    errors.install(app)
    # a whole enrollment request: every file at the limit, plus the multipart overhead
    app.add_middleware(RequestSizeLimit, limit=settings.max_upload_bytes * settings.max_files + (1 << 20))
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last = outermost: it sees every answer

    async def bounded(work: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(work, settings.request_timeout_s)
        except TimeoutError as exc:
            raise ApiError(504, f"the request took longer than {settings.request_timeout_s:g} s", "Timeout") from exc

    async def upload(file: UploadFile):
        return await read_upload(file, settings.max_upload_bytes)

    @app.post("/v1/verify", response_model=VerifyBody, responses=ERRORS, dependencies=[READ], tags=["recognition"])
    async def verify(
        file1: Annotated[UploadFile, File(description="first photo")],
        file2: Annotated[UploadFile, File(description="second photo")],
        threshold: Annotated[float | None, Form(description="cosine threshold (default: the model's)")] = None,
    ) -> Any:
        """Whether two photos show the same person (cosine score of their faces against the threshold)."""
        return await bounded(_verify(file1, file2, threshold))

    async def _verify(file1: UploadFile, file2: UploadFile, threshold: float | None) -> dict[str, Any]:
        return await engine.verify(await upload(file1), await upload(file2), threshold)

    @app.post("/v1/identify", response_model=IdentifyBody, responses=ERRORS, dependencies=[READ], tags=["recognition"])
    async def identify(
        file: Annotated[UploadFile, File(description="the photo")],
        top_k: Annotated[int, Form(ge=1, le=MAX_TOP_K, description="candidate identities to list")] = 5,
        threshold: Annotated[float | None, Form(description="cosine threshold (default: the model's)")] = None,
    ) -> Any:
        """Who the photo shows (open set: ``identity`` is null for a stranger)."""
        return await bounded(_identify(file, top_k, threshold))

    async def _identify(file: UploadFile, top_k: int, threshold: float | None) -> dict[str, Any]:
        return await engine.identify(await upload(file), top_k, threshold)

    @app.post(
        "/v1/identities/{name}/faces",
        response_model=EnrollBody,
        responses=ERRORS,
        dependencies=[WRITE],
        tags=["gallery"],
    )
    async def enroll(
        name: NAME, files: Annotated[list[UploadFile], File(description="photos (repeat the field)")]
    ) -> Any:
        """Enroll photos of one person, all or nothing (a photo already enrolled is skipped and reported)."""
        if len(files) > settings.max_files:
            raise ApiError(413, f"{len(files)} files in one request; the limit is {settings.max_files}", "TooManyFiles")
        return await bounded(_enroll(name, files))

    async def _enroll(name: str, files: list[UploadFile]) -> dict[str, Any]:
        return await engine.enroll(name, [await upload(f) for f in files])

    @app.get("/v1/identities", response_model=IdentityListBody, responses=ERRORS, dependencies=[READ], tags=["gallery"])
    async def identities() -> Any:
        """Every identity with its image count."""
        return await bounded(engine.identities())

    @app.get(
        "/v1/identities/{name}", response_model=IdentityBody, responses=ERRORS, dependencies=[READ], tags=["gallery"]
    )
    async def show(name: NAME) -> Any:
        """One identity and its images."""
        return await bounded(engine.show(name))

    @app.delete(
        "/v1/identities/{name}", response_model=RemovedBody, responses=ERRORS, dependencies=[WRITE], tags=["gallery"]
    )
    async def remove(name: NAME) -> Any:
        """Erase an identity: rows, embeddings and index vectors."""
        return await bounded(engine.remove(name))

    @app.get("/healthz", response_model=HealthBody, tags=["operations"])
    async def healthz() -> Any:
        """Liveness (no key needed): the model is loaded."""
        return {"status": "ok", "model": engine.model.fingerprint, "embedding_dim": engine.model.embedding_dim}

    @app.get("/metrics", dependencies=[READ], tags=["operations"], response_class=Response)
    async def metrics_endpoint(request: Request) -> Response:
        """Prometheus text format: request counts and latency histograms, embedding batch sizes."""
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for ``--workers N``: settings from ``$FACEREC_SERVE_SETTINGS``."""
    return create_app(ServiceSettings.from_env())

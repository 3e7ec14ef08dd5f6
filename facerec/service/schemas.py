"""Response bodies, for the OpenAPI docs at ``/docs``: the same JSON as the CLI's ``--json``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class FaceReportBody(BaseModel):
    image: str
    faces_found: int | None  # None: detection skipped (the server runs with --no-detect)
    policy: str
    box: tuple[float, float, float, float] | None = None
    prob: float | None = None


class VerifyBody(BaseModel):
    same: bool
    score: float
    threshold: float
    faces: list[FaceReportBody]
    model: str


class CandidateBody(BaseModel):
    identity: str
    score: float


class IdentifyBody(BaseModel):
    identity: str | None  # None: the best score is under the threshold (a stranger)
    score: float
    threshold: float
    candidates: list[CandidateBody]
    face: FaceReportBody


class SkippedBody(BaseModel):
    image: str
    reason: str


class EnrolledIdentityBody(BaseModel):
    identity: str
    created: bool
    added: list[FaceReportBody]
    skipped: list[SkippedBody]


class EnrollBody(BaseModel):
    gallery: str
    model: str
    face_policy: str
    identities: list[EnrolledIdentityBody]
    added: int
    skipped: int
    failed: list[dict[str, str]]
    seconds: float
    images_per_second: float | None


class IdentitySummaryBody(BaseModel):
    name: str
    images: int
    created_at: str
    updated_at: str


class IdentityListBody(BaseModel):
    gallery: str
    identities: list[IdentitySummaryBody]


class ImageBody(BaseModel):
    id: int
    source: str
    sha256: str
    face: dict[str, Any]
    created_at: str


class IdentityBody(BaseModel):
    name: str
    created_at: str
    updated_at: str
    images: list[ImageBody]


class RemovedBody(BaseModel):
    removed: str
    images: int


class HealthBody(BaseModel):
    status: str
    model: str
    embedding_dim: int


class ErrorBody(BaseModel):
    error: str
    type: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "bad input (not an image, bad name, no threshold)"),
        (401, "missing or invalid API key"),
        (403, "the key's role does not allow this"),
        (404, "unknown identity"),
        (409, "the gallery's state forbids it (empty, other model)"),
        (413, "upload or image too large"),
        (422, "no face in a photo, or a malformed request"),
        (504, "the request took longer than the server's timeout"),
    )
}

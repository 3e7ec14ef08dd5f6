"""Uploaded images: a size limit while reading, a pixel limit before decoding, then ``load_image``.

The pixel limit (decompression-bomb guard) reads only the header: a small file that
declares a huge image is refused before a single pixel is decoded. Decoding itself
is ``facerec.data.images.load_image`` (the CLI's), run on a private temporary file
so that every format quirk is handled the same way.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass

from fastapi import UploadFile
from PIL import Image, UnidentifiedImageError

from facerec.data.images import load_image
from facerec.errors import ImageError
from facerec.service.errors import ApiError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its client-side name and its bytes."""

    filename: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


async def read_upload(upload: UploadFile, limit: int) -> Upload:
    """The file's bytes; 413 as soon as it exceeds ``limit``, 400 when it is empty."""
    name = os.path.basename(upload.filename or "") or "upload"
    chunks, size = [], 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"{name} is larger than the {limit / 2**20:.1f} MiB upload limit", "PayloadTooLarge")
        chunks.append(chunk)
    if size == 0:
        raise ImageError(f"{name} is an empty file")
    return Upload(name, b"".join(chunks))


def decode(upload: Upload, max_pixels: int) -> Image.Image:
    """An 8-bit RGB image, or ImageError (not an image) / 413 (declares too many pixels)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(upload.data)) as header:
                width, height = header.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{upload.filename} is not a readable image ({reason})") from exc
    if width * height > max_pixels:
        raise ApiError(
            413,
            f"{upload.filename} declares {width}x{height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels",
            "ImageTooLarge",
        )
    suffix = os.path.splitext(upload.filename)[1][:10]
    with tempfile.NamedTemporaryFile(prefix="facerec-upload-", suffix=suffix) as tmp:
        tmp.write(upload.data)
        tmp.flush()
        try:
            return load_image(tmp.name)
        except ImageError as exc:  # name the upload, not our temporary file
            raise ImageError(str(exc).replace(tmp.name, upload.filename)) from exc

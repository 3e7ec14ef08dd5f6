"""Robust image loading: every stage reads photos through ``load_image``.

Any file a user may hand us (truncated JPEG, text named .jpg, grayscale, RGBA,
palette, 16-bit, CMYK, huge) becomes an 8-bit RGB PIL image or an ImageError
with a one-line reason; nothing else escapes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facerec.errors import ImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
#: Largest decoded image we accept (pixels); beyond this the file is refused.
MAX_PIXELS = 250_000_000
#: Images larger than this (longest side) are downscaled right after decoding.
MAX_SIDE = 2048


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_image(path: str | Path, max_side: int = MAX_SIDE) -> Image.Image:
    """Read ``path`` as an 8-bit RGB image, at most ``max_side`` pixels on its longest side."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"no such file: {path}")
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageError(f"{path} is an empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ImageError(f"{path} is too large ({width}x{height} pixels)")
                if img.format == "JPEG" and max(width, height) > 2 * max_side:
                    img.draft("RGB", (max_side, max_side))  # decode at reduced scale
                img.load()
                img = ImageOps.exif_transpose(img)
                img = _reduce(img, max_side)
                rgb = to_rgb(img)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"cannot read image {path}: {reason}") from exc
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return rgb


def _reduce(img: Image.Image, max_side: int) -> Image.Image:
    """Box-downscale a huge image by an integer factor before colour conversion (saves memory and time)."""
    factor = max(img.size) // max_side
    if factor < 2:
        return img
    try:
        return img.reduce(factor)
    except ValueError:  # modes without reduce ("1", "P", "I;16"): converted at full size
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha is composited over white)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 257.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 1.0
        arr = np.clip(arr / scale, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img.copy()

"""Images ↔ PNG data URLs (`data:image/png;base64,…`), the form in which images travel between page and server."""

from __future__ import annotations

import base64
import binascii
import io
import re

import torch
from PIL import Image

from nextscale.errors import UsageError
from nextscale.images import to_pil

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,(?P<payload>.*)", re.DOTALL)
MAX_PIXELS = 4096 * 4096  # larger uploads are refused before decoding (and PIL's bomb check stays on)


class ImageDecodeError(UsageError):
    """An upload that is not a readable image."""


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pil_to_data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def tensors_to_data_urls(images_B3HW: torch.Tensor) -> list[str]:
    """(B, 3, H, W) in [0, 1] → B PNG data URLs (8-bit, rounded as `nextscale.images.to_pil`, so as the CLI's files)."""
    return [pil_to_data_url(image) for image in to_pil(images_B3HW)]


def data_url_to_pil(text: str, what: str = "image") -> Image.Image:
    """A base64 data URL of an image file (PNG, JPEG, WebP, …) → an RGB PIL image. Raises ImageDecodeError."""
    if not isinstance(text, str):
        raise ImageDecodeError(f"{what} must be a data URL string (data:image/png;base64,…)")
    match = _DATA_URL.fullmatch(text.strip())
    if match is None:
        raise ImageDecodeError(f"{what} is not a base64 data URL (data:image/png;base64,…)")
    try:
        payload = base64.b64decode(match["payload"], validate=True)
    except (binascii.Error, ValueError):
        raise ImageDecodeError(f"{what}: the base64 data is damaged") from None
    try:
        with Image.open(io.BytesIO(payload)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageDecodeError(f"{what} is {width}×{height}; images up to {MAX_PIXELS} pixels are accepted")
            return image.convert("RGB")
    except Image.DecompressionBombError:  # PIL refuses to decode it at all: far beyond MAX_PIXELS
        raise ImageDecodeError(f"{what} is too large; images up to {MAX_PIXELS} pixels are accepted") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, ImageDecodeError):
            raise
        mime = match["mime"] or "unknown type"
        raise ImageDecodeError(f"{what} ({mime}) is not an image this server can read") from None

"""Safe image decoding: only JPEG/PNG/WebP, pixel limit before decode, RGB out.

`decode_image` is the one place where training images become pixels; the embed job and
any direct call of an embedder on image bytes go through it, so their preprocessing
agrees exactly.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: larger than any LAION image worth keeping

_SIMPLE_RGB_MODES = {"RGB", "L", "1", "CMYK", "YCbCr", "LAB", "HSV", "F", "P", "RGBX"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WIDE_GRAY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


class SkipSample(Exception):
    """A sample that cannot be used; `reason` is the stats counter it is counted under."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image ready for model preprocessing.

    `width` and `height` are the original size in pixels after EXIF orientation.
    """

    image: Image.Image
    width: int
    height: int


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode image bytes to an 8-bit RGB PIL image, or raise `SkipSample`.

    Reasons: `empty_member` (no bytes), `not_an_image` (not JPEG/PNG/WebP),
    `decompression_bomb` (width*height > max_pixels, checked from the header before
    any pixel is decoded), `corrupt_image` (truncated or broken pixel data),
    `unreadable_mode` (a pixel format we cannot turn into RGB).
    """
    if not data:
        raise SkipSample("empty_member")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise SkipSample("decompression_bomb", str(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise SkipSample("not_an_image", str(exc)) from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise SkipSample("corrupt_image", f"size {w}x{h}")
    if w * h > max_pixels:
        raise SkipSample("decompression_bomb", f"{w}x{h} > {max_pixels} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
    except Image.DecompressionBombError as exc:
        raise SkipSample("decompression_bomb", str(exc)) from None
    except (OSError, ValueError, SyntaxError, struct.error) as exc:
        raise SkipSample("corrupt_image", str(exc)) from None
    img = _apply_exif_orientation(img)
    rgb = to_rgb(img)
    return DecodedImage(rgb, rgb.width, rgb.height)


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - broken EXIF must not cost the image
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any decodable mode to 8-bit RGB.

    Alpha is composited over white (transparent logo backgrounds are white when shown on
    the web); 16/32-bit greyscale is rescaled, not clipped; CMYK, palette and the rest go
    through Pillow's conversions. Raises `SkipSample('unreadable_mode')` otherwise.
    """
    mode = img.mode
    try:
        if mode == "RGB":
            return img
        if mode == "P" and "transparency" in img.info:
            img, mode = img.convert("RGBA"), "RGBA"
        if mode in _ALPHA_MODES:
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        if mode in _WIDE_GRAY_MODES:
            arr = np.asarray(img).astype(np.float64)
            peak = 65535.0 if arr.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
            gray = np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
            return Image.fromarray(gray, "L").convert("RGB")
        if mode in _SIMPLE_RGB_MODES:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise SkipSample("unreadable_mode", f"{mode}: {exc}") from None
    raise SkipSample("unreadable_mode", mode)


def encode_png(image: Image.Image) -> bytes:
    """Lossless PNG bytes of an image (generated images are stored this way)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()

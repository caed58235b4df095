"""Images: decoding with Pillow (any format it reads, WebP included), then LLaMA-Factory's pixel-budget rule.

The rule (``mm_plugin._preprocess_image``): an image with more than ``max_pixels`` is scaled by
``sqrt(max_pixels / (w*h))``, one with fewer than ``min_pixels`` by ``sqrt(min_pixels / (w*h))``, each new side
truncated to an integer (never below 1 here). Images come out RGB; transparency is composited on white.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

from lmchat.media.kinds import FORMAT_HINTS, media_error
from lmchat.media.sources import MediaBytes

# The Pillow plugins untrusted files may reach: common raster formats only. EPS (which runs Ghostscript), WMF,
# PSD, FITS and the other rare plugins stay out.
SAFE_IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "DIB", "TIFF", "ICO", "PPM", "TGA", "AVIF", "QOI")


def pil() -> Any:
    """The PIL.Image module, or a MissingDependencyError naming the extra."""
    from lmchat.errors import require

    require("PIL", "media")
    from PIL import Image

    return Image


def is_array(value: Any) -> bool:
    """A numpy array, or anything else exposing ``__array_interface__`` / ``__array__``."""
    return not isinstance(value, (bytes, bytearray, memoryview, str)) and (
        hasattr(value, "__array_interface__") or hasattr(value, "__array__"))


def is_image_object(value: Any) -> bool:
    """A PIL image or an array."""
    if is_array(value):
        return True
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(value, Image.Image)


def decode_image(blob: MediaBytes, max_decoded_pixels: int, param: str | None = None) -> Any:
    """A fully decoded PIL image (its first frame), EXIF-rotated; broken, truncated or huge files are refused."""
    Image = pil()
    from PIL import ImageOps, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
        try:
            image = Image.open(io.BytesIO(blob.data), formats=_available_formats(Image))
            _check_size(image.size, max_decoded_pixels, blob.origin, param)
            image.load()
            return ImageOps.exif_transpose(image)
        except UnidentifiedImageError:
            raise media_error(param, f"{_cap(blob.origin)} is not an image Pillow can read. {FORMAT_HINTS['image']}") from None
        except Image.DecompressionBombError:
            raise media_error(param, f"{_cap(blob.origin)} has too many pixels to decode safely; send a smaller "
                                     "image.") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise media_error(param, f"{_cap(blob.origin)} is broken or truncated ({exc}); send the complete "
                                     "file.") from None


def _available_formats(Image: Any) -> list[str]:
    Image.init()
    return [name for name in SAFE_IMAGE_FORMATS if name in Image.OPEN]


def image_from_object(value: Any, param: str | None = None) -> Any:
    """A PIL image from a PIL image (copied) or an array: HxW, HxWxC or CxHxW; uint8, or float in [0, 1]."""
    Image = pil()
    if isinstance(value, Image.Image):
        return value.copy()
    import numpy as np

    array = np.asarray(value)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW (torch's layout) -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise media_error(param, f"An image array must be HxW, HxWx3/4 or 3/4xHxW, not shape {array.shape}.")
    if array.dtype != np.uint8:
        array = _to_uint8(array, param)
    return Image.fromarray(array)


def _to_uint8(array: Any, param: str | None) -> Any:
    import numpy as np

    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise media_error(param, "A float image array must hold values in [0, 1]; scale it or send uint8.")
        return np.round(array * 255).astype(np.uint8)
    if array.dtype.kind in "iub" and array.size and array.min() >= 0 and array.max() <= 255:
        return array.astype(np.uint8)
    raise media_error(param, f"An image array of {array.dtype} values must be uint8 (0-255) or float in [0, 1].")


def to_rgb(image: Any) -> Any:
    """RGB; an image with transparency is composited on white first (not on black, as a plain convert does)."""
    Image = pil()
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def fitted_size(width: int, height: int, max_pixels: int, min_pixels: int) -> tuple[int, int]:
    """LLaMA-Factory's size for a ``width`` x ``height`` image under the pixel budget (no side below 1)."""
    if width * height > max_pixels:
        factor = math.sqrt(max_pixels / (width * height))
        width, height = max(1, int(width * factor)), max(1, int(height * factor))
        if width * height > max_pixels:  # a side was held at 1: the other one takes what the budget leaves
            width, height = (max_pixels // height, height) if height < width else (width, max_pixels // width)
    if width * height < min_pixels:
        factor = math.sqrt(min_pixels / (width * height))
        width, height = max(1, int(width * factor)), max(1, int(height * factor))
    return width, height


def fit_pixels(image: Any, max_pixels: int, min_pixels: int) -> Any:
    """``image`` resized (bicubic, Pillow's default) to :func:`fitted_size`; unchanged when it already fits."""
    size = fitted_size(image.width, image.height, max_pixels, min_pixels)
    return image if size == image.size else image.resize(size)


def _check_size(size: tuple[int, int], max_decoded_pixels: int, origin: str, param: str | None) -> None:
    width, height = size
    if width * height > max_decoded_pixels:
        raise media_error(param, f"{_cap(origin)} is {width}x{height} pixels, more than the {max_decoded_pixels:,} "
                                 "decoded at most (max_decoded_pixels); send a smaller image.")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]

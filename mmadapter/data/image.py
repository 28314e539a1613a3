"""Image bytes to RGB PIL images, with the pixel count checked from the header before any decoding.

Only a few formats are opened at all (Pillow's rarer plugins are where its decompression-bomb and parser
bugs live), truncated files are errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone), and Pillow's
own decompression-bomb warning becomes our ``too_large_image`` without touching its global limit.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from mmadapter.data.skips import BadSample
from mmadapter.limits import MAX_PIXELS

__all__ = ["IMAGE_EXTENSIONS", "IMAGE_FORMATS", "MAX_PIXELS", "decode_image"]

IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
# Pillow format ids tried, whatever the file is called (JPEG covers camera MPO files too).
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP")


def decode_image(data: bytes, name: str, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """Decode JPEG/PNG/WebP bytes to a fully loaded RGB image.

    The header is parsed first and an image of more than ``max_pixels`` pixels is rejected before its
    pixels are decompressed, so a tiny file claiming 30 000 × 30 000 pixels costs no memory. Alpha is
    dropped (``convert("RGB")``, as LLaVA and open_clip do); animated files give their first frame.

    Args:
        data: The encoded file, exactly as stored.
        name: The file or member name, for errors (the format is detected from the bytes).
        max_pixels: The largest width × height accepted; ``None`` leaves only Pillow's own limit, whose
            decompression-bomb warning or error is reported as ``too_large_image`` too.

    Raises:
        BadSample: ``too_large_image`` above the pixel limit, ``corrupt_image`` for anything that does not
            decode completely as one of :data:`IMAGE_FORMATS`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # header only
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise BadSample("too_large_image", None, str(e), name) from e
        except Exception as e:  # Pillow raises many types on malformed headers (OSError, SyntaxError, ...)
            raise BadSample("corrupt_image", None, f"not a readable {'/'.join(IMAGE_FORMATS)} file: {e}", name) from e
        with image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise BadSample("too_large_image", None, f"{width}×{height} pixels > {max_pixels}", name)
            try:
                image.load()
                return image.convert("RGB")
            except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
                raise BadSample("too_large_image", None, str(e), name) from e
            except Exception as e:  # truncated data, bad chunks, codec errors
                raise BadSample("corrupt_image", None, f"cannot decode its pixels: {e}", name) from e

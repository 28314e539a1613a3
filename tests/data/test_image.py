from __future__ import annotations

import io
import resource
import time
import warnings

import pytest
from media_samples import image_bytes, png_header
from PIL import Image, ImageFile

from mmadapter.data.image import decode_image
from mmadapter.data.skips import BadSample


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [(f, m) for f in ("JPEG", "PNG", "WEBP") for m in ("RGB", "RGBA", "L") if (f, m) != ("JPEG", "RGBA")],
)
def test_decodes_to_rgb(fmt: str, mode: str) -> None:
    image = decode_image(image_bytes((40, 30), fmt, mode), f"x.{fmt.lower()}")
    assert (image.mode, image.size) == ("RGB", (40, 30))


def test_pixels_survive() -> None:
    data = image_bytes((8, 8), "PNG")
    with Image.open(io.BytesIO(data)) as original:
        assert decode_image(data, "x.png").tobytes() == original.convert("RGB").tobytes()


def test_huge_header_rejected_without_allocating() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    with pytest.raises(BadSample) as info:
        decode_image(png_header(30000, 30000), "bomb.png")
    assert info.value.reason == "too_large_image" and info.value.source == "bomb.png"
    assert time.perf_counter() - start < 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # a decode would take 2.7 GB


def test_our_limit_and_pillows_warning() -> None:
    with pytest.raises(BadSample, match=r"too_large_image: 100×100 pixels > 5000"):
        decode_image(image_bytes((100, 100)), "x.png", max_pixels=5000)
    # Without our limit, Pillow's decompression-bomb *warning* (10 000² > 89 M) is our error too ...
    filters, limit = list(warnings.filters), Image.MAX_IMAGE_PIXELS
    with pytest.raises(BadSample) as info:
        decode_image(png_header(10000, 10000), "big.png", max_pixels=None)
    assert info.value.reason == "too_large_image"
    # ... without changing global settings.
    assert warnings.filters == filters
    assert limit == Image.MAX_IMAGE_PIXELS


def test_corrupt_images() -> None:
    jpeg = image_bytes((64, 64), "JPEG")
    tiff = image_bytes((8, 8), "TIFF")
    for name, data in [("noise.jpg", b"\x13\x37" * 500), ("cut.jpg", jpeg[: len(jpeg) // 2]), ("x.tif", tiff)]:
        with pytest.raises(BadSample) as info:
            decode_image(data, name)
        assert info.value.reason == "corrupt_image", name
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False

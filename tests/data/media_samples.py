"""Media made on the fly for the data tests: encoded audio, images, PNG headers, graph archives, a canary pickle.

Not a ``conftest.py``: a second, package-less conftest would replace ``tests/conftest.py`` as the module
``conftest`` that other test files import helpers from.
"""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

SUBTYPES = {"MP3": "MPEG_LAYER_III", "OGG": "VORBIS"}


def audio_bytes(
    seconds: float = 0.5, rate: int = 16000, channels: int = 1, freq: float = 440.0, fmt: str = "FLAC"
) -> bytes:
    """A sine at ``freq`` Hz, amplitude 0.4 on the first channel and 0.2 on the others."""
    t = np.arange(round(seconds * rate)) / rate
    wave = np.sin(2 * np.pi * freq * t)
    data = np.stack([wave * (0.4 if c == 0 else 0.2) for c in range(channels)], axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=fmt, subtype=SUBTYPES.get(fmt))
    return buf.getvalue()


def image_bytes(size: tuple[int, int] = (32, 24), fmt: str = "PNG", mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width`` × ``height`` RGB pixels: the bytes of a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def graph_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def good_graph() -> dict[str, np.ndarray]:
    return {
        "edge_index": np.array([[0, 1, 2], [1, 2, 0]], dtype=np.int64),
        "x": np.arange(12, dtype=np.float32).reshape(3, 4),
    }


class Canary:
    """Unpickling it creates a file: proof that something unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (Path.touch, (self.path,))


def canary_pickle(path: Path) -> bytes:
    return pickle.dumps(Canary(path))

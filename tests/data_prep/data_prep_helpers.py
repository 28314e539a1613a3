"""Helpers for the dataset-preparation tests: load a ``data/prepare_*.py`` script, write tiny media, check output.

Not a ``conftest.py``: a second, package-less conftest would replace ``tests/conftest.py`` as the module
``conftest`` that other test files import helpers from.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

from mmadapter.data.writer import write_shards

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
SUBTYPES = {"MP3": "MPEG_LAYER_III"}


def load_script(name: str) -> ModuleType:
    """Import ``data/<name>.py`` (``data/`` is no package) under a module name of its own."""
    module_name = f"mmadapter_data_prep_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, DATA_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def write_audio(path: Path, fmt: str = "FLAC", seed: int = 0, seconds: float = 0.25) -> Path:
    """A short 16 kHz tone with a little noise, encoded as ``fmt`` (FLAC, WAV, MP3)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    wave = (0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, 16000, format=fmt, subtype=SUBTYPES.get(fmt))
    return path


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (24, 16)) -> Path:
    """A tiny random RGB image; the format follows the suffix (JPEG for ``.jpg``)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def read_manifest(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(line.strip() for line in lines), "no blank lines"
    return [json.loads(line) for line in lines]


def resolve(manifest: Path, ref: str) -> Path:
    """Where a manifest's media path points: relative paths are relative to the manifest's folder."""
    assert not Path(ref).is_absolute(), f"{ref} should be relative"
    return (manifest.parent / ref).resolve()


def assert_shards_accept(manifest: Path, out_dir: Path, expected: int) -> None:
    """The shard writer takes every line: ``expected`` written, nothing skipped."""
    stats = write_shards(manifest, out_dir)
    assert stats["skipped"] == {}
    assert stats["written"] == expected

"""Shared fixtures: the tiny recipe, random audio and images, and a GPU skip helper."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmadapter.config import Recipe, load_recipe
from mmadapter.data.espeak import espeak_available

ROOT = Path(__file__).parents[1]
TINY_RECIPE = ROOT / "recipes" / "test" / "tiny.yaml"

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# espeak-ng: the system program or the espeakng-loader wheel (a dependency where it has wheels)
requires_espeak = pytest.mark.skipif(
    not espeak_available(), reason="no espeak-ng: neither the system program nor the espeakng-loader wheel"
)


def tiny_recipe(*overrides: str) -> Recipe:
    return load_recipe(TINY_RECIPE, list(overrides))


def nudged_artefact(directory: Path, *overrides: str, seed: int = 0) -> Path:
    """The tiny model of ``tiny_recipe(*overrides)`` saved in ``directory``, its trainable weights moved off their
    init (no training) so that greedy answers are not empty."""
    from mmadapter.model import MultimodalLM

    model = MultimodalLM.from_recipe(tiny_recipe(*overrides))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn(p.shape, generator=gen))
    return model.save(directory)


def infer_cli(artefact: Path, *argv: str | Path) -> int:
    """``mmadapter infer --checkpoint ARTEFACT --max-new-tokens 4 ARGV...``; its exit code."""
    import argparse

    from mmadapter import inference

    parser = argparse.ArgumentParser()
    inference.add_arguments(parser)
    return inference.run(parser.parse_args(["--checkpoint", str(artefact), "--max-new-tokens", "4", *map(str, argv)]))


def tar_cut_in_last_sample(path: Path) -> None:
    """A shard of three audio samples (``s0`` .. ``s2``: JSON, then FLAC), cut inside ``s2.flac``'s data."""
    audio = (ROOT / "tests" / "assets" / "media" / "tone.flac").read_bytes()
    with tarfile.open(path, "w") as tar:
        for i in range(3):
            meta = json.dumps({"prompt": "Transcribe <audio>", "response": str(i)}).encode()
            for name, data in ((f"s{i}.json", meta), (f"s{i}.flac", audio)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        last = tar.getmember("s2.flac")
    path.write_bytes(path.read_bytes()[: last.offset_data + 100])


def random_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """A 16 kHz mono float32 waveform of noise and a tone."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def random_image(seed: int = 0, size: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def random_graph(
    seed: int = 0, nodes: int = 7, features: int = 16, edge_dim: int | None = None, target: int | None = None
) -> dict[str, np.ndarray]:
    """A decoded graph (:func:`mmadapter.data.graph.decode_graph`'s arrays): a ring plus random chords."""
    rng = np.random.default_rng(seed)
    ring = np.stack([np.arange(nodes), (np.arange(nodes) + 1) % nodes])
    chords = rng.integers(0, nodes, (2, nodes))
    edges = np.concatenate([ring, ring[::-1], chords], 1).astype(np.int64)
    out = {"x": rng.standard_normal((nodes, features)).astype(np.float32), "edge_index": edges}
    if edge_dim is not None:
        out["edge_attr"] = rng.standard_normal((edges.shape[1], edge_dim)).astype(np.float32)
    if target is not None:
        out["target"] = np.int64(target)
    return out

"""``mmadapter bench data``: samples/s and tokens/s of the shard → batch pipeline on a generated shard set.

The shards hold real encoded media (FLAC speech-like tones at 22.05 kHz, so every sample is resampled, and
PNG images) and text-only chats; the model side is the tiny test recipe, so the figure measures decoding,
resampling, log-mel, image transforms, tokenization and packing — not the encoders.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mmadapter.config import DataConfig, ShardSet, load_recipe
from mmadapter.data.pipeline import ShardStream, StreamPosition
from mmadapter.data.writer import write_shards
from mmadapter.model import MultimodalLM

__all__ = ["add_arguments", "bench_data", "make_bench_shards", "run"]

TINY = Path(__file__).parents[2] / "recipes" / "test" / "tiny.yaml"


def make_bench_shards(out: Path, samples: int, seed: int = 0) -> Path:
    """Write ``samples`` mixed samples (½ audio 1–6 s, ¼ image, ¼ text) as shards under ``out``."""
    rng = np.random.default_rng(seed)
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(samples):
        kind = ("audio", "audio", "image", "text")[i % 4]
        digits = " ".join(str(d) for d in rng.integers(0, 10, rng.integers(3, 7)))
        line = {"key": f"b{i:06d}", "response": digits, "task": "asr" if kind == "audio" else "chat", "lang": "en"}
        if kind == "audio":
            t = np.arange(int(rng.uniform(1, 6) * 22050)) / 22050
            wave = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * t) + 0.02 * rng.standard_normal(t.size)
            buf = io.BytesIO()
            sf.write(buf, wave.astype(np.float32), 22050, format="FLAC")
            (media / f"{i}.flac").write_bytes(buf.getvalue())
            line["audio"] = f"media/{i}.flac"
        elif kind == "image":
            Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(media / f"{i}.png")
            line |= {"image": f"media/{i}.png", "task": "caption"}
        else:
            line["prompt"] = "Repeat the digits " + digits
        lines.append(line)
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_shards(manifest, out / "shards", max_count=max(1, samples // 8))
    return out / "shards"


def bench_data(shards: Path, batches: int, workers: int, max_tokens: int) -> dict[str, float]:
    """Pull ``batches`` batches through the pipeline; returns samples/s, tokens/s and the setup."""
    model = MultimodalLM.from_recipe(load_recipe(TINY))
    data = DataConfig(max_tokens=max_tokens, num_workers=workers)
    urls = sorted(str(p) for p in shards.glob("shard-*.tar"))
    stream = ShardStream(
        [ShardSet(shards=urls)], model.prepare_decoded, data, model.tokenizer.pad_token_id, StreamPosition()
    )
    loader = DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_as_is)
    it = iter(loader)
    next(it)  # start-up (workers, first shard) is not what we measure
    samples = tokens = 0
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        samples += batch.num_samples
        tokens += batch.num_tokens()
    seconds = time.perf_counter() - start
    return {
        "samples_per_s": samples / seconds,
        "tokens_per_s": tokens / seconds,
        "batches": batches,
        "workers": workers,
        "max_tokens": max_tokens,
        "torch_threads": torch.get_num_threads(),
    }


def _as_is(batch: object) -> object:
    return batch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=400, help="generated samples")
    parser.add_argument("--batches", type=int, default=40, help="batches to time")
    parser.add_argument("--workers", type=int, default=2, help="data-loader workers")
    parser.add_argument("--max-tokens", type=int, default=4096, help="data.max_tokens")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_bench_shards(Path(tmp), args.samples)
        result = bench_data(shards, args.batches, args.workers, args.max_tokens)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"data pipeline: {result['samples_per_s']:.1f} samples/s, {result['tokens_per_s']:,.0f} tokens/s "
            f"({args.workers} workers, max_tokens {args.max_tokens}, {args.batches} batches)"
        )
    return 0

"""Demo data: how much synthetic speech, how many images and graphs the full and the quick demo make."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmadapter.data.synthetic import LANGUAGES, DataSizes, SyntheticData, synthesize_data
from mmadapter.data.synthetic_graphs import synthesize_graphs
from mmadapter.data.writer import STATS_FILE
from mmadapter.demo.steps import mmadapter_command, timed

__all__ = ["FULL_GRAPHS", "FULL_SIZES", "QUICK_GRAPHS", "QUICK_SIZES", "make_demo_data", "shard_command"]

FULL_SIZES = DataSizes(
    speech={lang: 1500 if lang == "en" else 500 for lang in LANGUAGES},
    # 100 held out per language leaves 400 (≤ 500) to teach the projector a new language with.
    speech_test={lang: 200 if lang == "en" else 100 for lang in LANGUAGES},
    # 4000 to train on: on 1800, step 2's image projector drove its training loss to 0.004 and held-out
    # captions after alignment ranged over 90–95.5% from run to run (2026-12-02).
    images=4200,
    images_test=200,
    instruct=("speech_en", "images"),
)
QUICK_SIZES = DataSizes(
    speech={lang: 200 if lang == "en" else 60 for lang in LANGUAGES},
    speech_test={lang: 40 if lang == "en" else 20 for lang in LANGUAGES},
    images=240,
    images_test=40,
    instruct=("speech_en", "images"),
)

# (train, test) community graphs, one question each (the target node's topic, or how many communities)
FULL_GRAPHS = (1000, 200)
QUICK_GRAPHS = (120, 40)


def shard_command(manifest: Path, shard_dir: Path) -> Mapping[str, Any]:
    """``mmadapter shard MANIFEST SHARD_DIR``, every sample in one shard; the ``stats.json`` it wrote."""
    mmadapter_command("shard", manifest, shard_dir, "--max-count", 1_000_000, "--overwrite")
    return json.loads((shard_dir / STATS_FILE).read_text())


def make_demo_data(out_dir: Path | str, quick: bool = False, seed: int = 0, workers: int = 2) -> SyntheticData:
    """Synthesise the demo's speech, images and graphs into ``out_dir`` (manifests and shards; see
    :mod:`mmadapter.data.synthetic` and :mod:`mmadapter.data.synthetic_graphs`; the graphs are set ``graphs``),
    printing the time it took.

    Raises:
        EspeakMissing: espeak-ng is not installed (the message says how to install it).
    """
    sizes, graphs = (QUICK_SIZES, QUICK_GRAPHS) if quick else (FULL_SIZES, FULL_GRAPHS)
    with timed("data: synthesise speech (espeak-ng), images and graphs, write shards"):
        data = synthesize_data(out_dir, sizes, seed=seed, workers=workers, shard=shard_command)
        made = synthesize_graphs(
            out_dir, train=graphs[0], test=graphs[1], seed=seed, features="text", shard=shard_command
        )
        data.manifests["graphs"], data.shards["graphs"] = made.manifests, made.shards
    minutes = sum(data.seconds.values()) / 60
    print(
        f"[demo] data: {sum(sizes.speech.values())} utterances ({minutes:.1f} min of audio), {sizes.images} images, "
        f"{sum(graphs)} graphs"
    )
    return data

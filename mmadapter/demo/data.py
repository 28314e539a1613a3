"""Demo data: the synthetic speech, images and graphs that ``recipes/demo/demo.yaml``'s ``data`` asks for,
each manifest sharded by the ``mmadapter shard`` command."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmadapter.data.synthetic import SyntheticData, synthesize_data
from mmadapter.data.synthetic_graphs import synthesize_graphs
from mmadapter.data.writer import STATS_FILE
from mmadapter.demo.settings import DemoSettings
from mmadapter.demo.steps import mmadapter_command, timed

__all__ = ["make_demo_data", "shard_command"]


def shard_command(manifest: Path, shard_dir: Path) -> Mapping[str, Any]:
    """``mmadapter shard MANIFEST SHARD_DIR``, every sample in one shard; the ``stats.json`` it wrote."""
    mmadapter_command("shard", manifest, shard_dir, "--max-count", 1_000_000, "--overwrite")
    return json.loads((shard_dir / STATS_FILE).read_text())


def make_demo_data(out_dir: Path | str, settings: DemoSettings, seed: int = 0, workers: int = 2) -> SyntheticData:
    """Synthesise the demo's speech, images and graphs into ``out_dir`` (manifests and shards; see
    :mod:`mmadapter.data.synthetic` and :mod:`mmadapter.data.synthetic_graphs`; the graphs are set ``graphs``),
    printing the time it took.

    Raises:
        EspeakMissing: espeak-ng is not installed (the message says how to install it).
    """
    sizes, (train_graphs, test_graphs) = settings.sizes, settings.graphs
    with timed("data: synthesise speech (espeak-ng), images and graphs; mmadapter shard"):
        data = synthesize_data(out_dir, sizes, seed=seed, workers=workers, shard=shard_command)
        made = synthesize_graphs(
            out_dir, train=train_graphs, test=test_graphs, seed=seed, features="text", shard=shard_command
        )
        data.manifests["graphs"], data.shards["graphs"] = made.manifests, made.shards
    minutes = sum(data.seconds.values()) / 60
    print(
        f"[demo] data: {sum(sizes.speech.values())} utterances ({minutes:.1f} min of audio), {sizes.images} images, "
        f"{train_graphs + test_graphs} graphs"
    )
    return data

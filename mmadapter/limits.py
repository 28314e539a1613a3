"""Size limits on the media of one sample, the same wherever a sample is read.

``mmadapter shard`` takes them as ``--max-pixels``, ``--max-audio-seconds``, ``--max-graph-nodes`` and
``--max-graph-edges``; the training reader takes them from the recipe's ``data.limits``, so that a stage
can be stricter than the shards it reads (``data.limits.max_audio_seconds: 30`` drops longer clips from a
speech stage, counted as ``too_long``) or admit what ``mmadapter shard`` was told to admit (bigger graphs).
``mmadapter infer`` and ``mmadapter eval`` take the same flags and otherwise keep the defaults, which only
guard against decompression bombs and runaway graphs; a training run's ``train.val_metric`` scores read the
validation shards within the stage's ``data.limits``, as its validation loss does.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_GRAPH_BYTES",
    "MAX_GRAPH_EDGES",
    "MAX_GRAPH_NODES",
    "MAX_PIXELS",
    "MediaLimits",
    "add_limit_arguments",
    "limits_from_args",
    "positive",
]

# 8192 × 8192; below Pillow's own limit (``Image.MAX_IMAGE_PIXELS``, ~89 M) so that ours speaks first.
MAX_PIXELS = 8192 * 8192
# Uncompressed size of all arrays of a graph together, checked from the zip directory before anything is
# inflated. Not a recipe key: above it a graph is no longer one sample.
MAX_GRAPH_BYTES = 1 << 30
# Per sample. Molecules and ego subgraphs are far below; even all of ogbn-arxiv (169,343 nodes, 1,166,243
# edges) fits. Above them a GNN layer's (E, hidden) messages alone pass 5 GB at width 256, so bigger graphs
# belong split into subgraphs (data/make_ego_subgraphs.py), not in one sample.
MAX_GRAPH_NODES = 500_000
MAX_GRAPH_EDGES = 5_000_000


class MediaLimits(BaseModel):
    """The largest media a sample may carry; ``None`` lifts a limit. Above one, a sample is skipped and counted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_pixels: int | None = Field(MAX_PIXELS, gt=0, description="image width × height at most (too_large_image)")
    max_audio_seconds: float | None = Field(None, gt=0, description="audio length at most (too_long)")
    max_graph_nodes: int | None = Field(MAX_GRAPH_NODES, gt=0, description="nodes per graph at most (too_large_graph)")
    max_graph_edges: int | None = Field(MAX_GRAPH_EDGES, gt=0, description="edges per graph at most (too_large_graph)")


# The defaults, shared as the default argument of every reader (the model is frozen, so one instance serves all).
DEFAULT_LIMITS = MediaLimits()


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line form of :class:`MediaLimits` (``--max-pixels`` …); read back with :func:`limits_from_args`."""
    pos_int, pos_float = positive(int), positive(float)
    group = parser.add_argument_group("media limits (above them an item is skipped, or fails, and is counted)")
    group.add_argument(
        "--max-pixels", type=pos_int, default=MAX_PIXELS, help="largest image width × height (default: %(default)s)"
    )
    group.add_argument(
        "--max-audio-seconds",
        type=pos_float,
        default=None,
        help="longest audio in seconds (too_long; default: no limit)",
    )
    group.add_argument(
        "--max-graph-nodes", type=pos_int, default=MAX_GRAPH_NODES, help="most nodes per graph (default: %(default)s)"
    )
    group.add_argument(
        "--max-graph-edges", type=pos_int, default=MAX_GRAPH_EDGES, help="most edges per graph (default: %(default)s)"
    )


def limits_from_args(args: argparse.Namespace) -> MediaLimits:
    """The limits that :func:`add_limit_arguments`' flags set."""
    return MediaLimits(
        max_pixels=args.max_pixels,
        max_audio_seconds=args.max_audio_seconds,
        max_graph_nodes=args.max_graph_nodes,
        max_graph_edges=args.max_graph_edges,
    )


def positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse type: a number of ``kind`` above 0 (a limit or a count of 0 would leave nothing)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse

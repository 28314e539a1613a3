"""Size limits on the media of one sample, the same wherever a sample is read.

``mmadapter shard`` takes them as ``--max-pixels``, ``--max-audio-seconds``, ``--max-graph-nodes`` and
``--max-graph-edges``; the training reader takes them from the recipe's ``data.limits``, so that a stage
can be stricter than the shards it reads (``data.limits.max_audio_seconds: 30`` drops longer clips from a
speech stage, counted as ``too_long``) or admit what ``mmadapter shard`` was told to admit (bigger graphs).
Inference keeps the defaults: they only guard against decompression bombs and runaway graphs.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_LIMITS", "MAX_GRAPH_BYTES", "MAX_GRAPH_EDGES", "MAX_GRAPH_NODES", "MAX_PIXELS", "MediaLimits"]

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

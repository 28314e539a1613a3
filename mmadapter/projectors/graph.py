"""``graph`` projector: node embeddings of a GNN to LLM tokens, one token per node, pooled tokens, or a target
node plus its pooled neighbourhood (GraphGPT / LLaGA style node and graph tokens).

Each item is a graph's node sequence ``(s, i)`` with ``s`` valid nodes, as :mod:`mmadapter.encoders.gnn` makes
it: node 0 is the target node when the graph names one. Modes:

- ``nodes``: ``Linear(i, o)`` of each of the first ``max_nodes`` nodes; ``output_length(n) = min(n, max_nodes)``.
  Follows the node order, so relabelling the nodes permutes the tokens the same way.
- ``pool``: ``k`` tokens pooled over all valid nodes, then ``Linear(i, o)``; ``output_length(n) = k``.
  ``mean`` / ``max`` give one token (``k = 1``); ``attention`` gives one token per learned query
  (``softmax_nodes(x·q_j / sqrt(i))``-weighted sum of the nodes, as in Set Transformer's PMA,
  https://arxiv.org/abs/1810.00825). All three are permutation invariant.
- ``target``: the target node's (node 0's) token followed by ``k`` ``pool`` tokens of the whole neighbourhood
  (every valid node, the target included, so a lone node still has a neighbourhood);
  ``output_length(n) = 1 + k``.

Shape letters: n items, s nodes, i ``in_dim``, o ``out_dim``, k pooled tokens.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import PositiveInt, model_validator
from torch import Tensor, nn

from mmadapter.projectors.base import PROJECTORS, Projector
from mmadapter.projectors.padding import clean_batch, frame_mask, zero_padding
from mmadapter.registry import ComponentSpec

__all__ = ["GraphProjector", "GraphSpec", "NodePooling", "graph"]

Mode = Literal["nodes", "pool", "target"]
Pooling = Literal["mean", "max", "attention"]


class NodePooling(nn.Module):
    """Permutation-invariant pooling of each item's valid nodes into ``k`` vectors.

    Args:
        in_dim: Node width i.
        pooling: ``mean`` or ``max`` (``k = 1``), or ``attention`` (``k`` learned queries, parameter ``queries``).
        k: Pooled vectors per item.
    """

    def __init__(self, in_dim: int, pooling: Pooling, k: int) -> None:
        super().__init__()
        if pooling != "attention" and k != 1:
            raise ValueError(f"pooling={pooling!r} makes one token; k={k} needs pooling='attention'")
        self.pooling, self.k = pooling, k
        self.queries = nn.Parameter(torch.randn(k, in_dim) / math.sqrt(in_dim)) if pooling == "attention" else None

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Pool ``(n, s, i)`` nodes, zero past ``lengths``, into ``(n, k, i)``."""
        valid = frame_mask(lengths, x.shape[1])  # (n, s)
        if self.pooling == "mean":
            return (x.sum(1) / lengths[:, None].to(x.dtype))[:, None]
        if self.pooling == "max":
            return x.masked_fill(~valid[..., None], float("-inf")).amax(1)[:, None]
        assert self.queries is not None
        scores = torch.einsum("nsi,ki->nks", x, self.queries) / math.sqrt(x.shape[-1])  # (n, k, s)
        weights = scores.masked_fill(~valid[:, None], float("-inf")).softmax(-1)
        return weights @ x  # (n, k, i)


class GraphProjector(Projector):
    """Graph tokens in one of three modes (see the module docstring). Parameters: ``proj.*`` (``Linear(i, o)``)
    and, with attention pooling, ``pool.queries`` ``(k, i)``.

    Args:
        in_dim: Node width i.
        out_dim: LLM width o.
        mode: ``nodes``, ``pool`` or ``target``.
        max_nodes: Cap on the tokens of ``nodes`` mode.
        pooling: Pooling of ``pool`` and ``target`` modes.
        k: Pooled tokens of ``pool`` and ``target`` modes.
    """

    def __init__(self, in_dim: int, out_dim: int, mode: Mode, max_nodes: int, pooling: Pooling, k: int) -> None:
        super().__init__()
        self.mode, self.max_nodes = mode, max_nodes
        self.pool = NodePooling(in_dim, pooling, k) if mode != "nodes" else None
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Project ``(n, s, i)`` node embeddings to ``(n, max output_length, o)`` tokens, zero past each item's
        ``output_length(lengths[i])``."""
        x, lengths = clean_batch(x, lengths)
        if self.mode == "nodes":
            out_lengths = lengths.clamp(max=self.max_nodes)
            return zero_padding(self.proj(x[:, : self.max_nodes]), out_lengths), out_lengths
        assert self.pool is not None
        tokens = self.pool(x, lengths)  # (n, k, i)
        if self.mode == "target":
            tokens = torch.cat([x[:, :1], tokens], 1)  # (n, 1 + k, i)
        out = self.proj(tokens)
        return out, torch.full_like(lengths, out.shape[1])

    def output_length(self, n: int) -> int:
        if self.mode == "nodes":
            return min(n, self.max_nodes)
        assert self.pool is not None
        return self.pool.k + (self.mode == "target")


class GraphSpec(ComponentSpec):
    """Options of ``graph``.

    Attributes:
        mode: ``nodes`` (one token per node), ``pool`` (k pooled tokens) or ``target`` (target node + k pooled).
        max_nodes: Token cap of ``nodes`` mode; nodes past it are dropped (the target, node 0, always stays).
        pooling: ``mean``, ``max`` (k = 1 only) or ``attention`` (k learned queries).
        k: Pooled tokens.
    """

    mode: Mode = "pool"
    max_nodes: PositiveInt = 64
    pooling: Pooling = "mean"
    k: PositiveInt = 1

    @model_validator(mode="after")
    def _k_needs_attention(self) -> GraphSpec:
        if self.pooling != "attention" and self.k != 1:
            raise ValueError(f"graph projector: pooling={self.pooling!r} makes one token; k={self.k} needs attention")
        return self


@PROJECTORS.register(spec=GraphSpec)
def graph(spec: GraphSpec, in_dim: int, out_dim: int) -> GraphProjector:
    """Build a :class:`GraphProjector` from ``spec``."""
    return GraphProjector(in_dim, out_dim, spec.mode, spec.max_nodes, spec.pooling, spec.k)

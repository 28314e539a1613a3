"""``prefix`` projector: one summary vector of the item (its first token, e.g. a ViT's class token, or the mean of
its frames) mapped by an MLP to a fixed number of LLM tokens (ClipCap's MLP mapping network,
https://arxiv.org/abs/2111.09734). ``output_length(n) = length`` for every item, however many frames it has.

Each output token gets its own slice of the last layer, so the tokens can carry different parts of what the
summary holds (the left and the right object of a picture, say) — which attention with shared values, as in
a Q-Former, has to learn to pull apart.

Shape letters: n items, s frames, i ``in_dim``, h ``hidden``, o ``out_dim``, k ``length``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import PositiveInt
from torch import Tensor

from mmadapter.projectors.base import PROJECTORS, Projector
from mmadapter.projectors.mlp import Activation, two_layer_mlp
from mmadapter.projectors.padding import clean_batch, frame_mask
from mmadapter.registry import ComponentSpec

__all__ = ["PrefixProjector", "PrefixSpec", "prefix"]


class PrefixProjector(Projector):
    """``summary (n, i) → Linear(i, h) → activation → Linear(h, k·o) → (n, k, o)`` (parameters ``mlp.0.*``,
    ``mlp.2.*``).

    Args:
        in_dim: Encoder width i.
        out_dim: LLM width o.
        length: Tokens k per item.
        hidden: Width h of the middle layer.
        summary: ``first``: the item's first frame (a class token); ``mean``: the mean of its valid frames.
        activation: Of the middle layer.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        length: int,
        hidden: int,
        summary: Literal["first", "mean"] = "first",
        activation: Activation = "gelu",
    ) -> None:
        super().__init__()
        self.length = length
        self.summary = summary
        self.mlp = two_layer_mlp(in_dim, hidden, length * out_dim, activation)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Project ``(n, s, i)`` frames to ``(n, k, o)`` tokens; every item gets all k."""
        x, lengths = clean_batch(x, lengths)
        if self.summary == "first":
            summary = x[:, 0]
        else:
            mask = frame_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (n, s, 1)
            summary = (x * mask).sum(1) / mask.sum(1).clamp(min=1)
        tokens = self.mlp(summary).unflatten(-1, (self.length, -1))  # (n, k, o)
        return tokens, torch.full_like(lengths, self.length)

    def output_length(self, n: int) -> int:
        return self.length


class PrefixSpec(ComponentSpec):
    """Options of ``prefix``: ``length`` tokens per item (ClipCap's 10), ``hidden`` (default: the LLM width),
    ``summary`` (``first``: the class token; ``mean``: mean-pooled frames), ``activation``."""

    length: PositiveInt = 10
    hidden: PositiveInt | None = None
    summary: Literal["first", "mean"] = "first"
    activation: Activation = "gelu"


@PROJECTORS.register(spec=PrefixSpec)
def prefix(spec: PrefixSpec, in_dim: int, out_dim: int) -> PrefixProjector:
    """Build a :class:`PrefixProjector` from ``spec``."""
    return PrefixProjector(in_dim, out_dim, spec.length, spec.hidden or out_dim, spec.summary, spec.activation)

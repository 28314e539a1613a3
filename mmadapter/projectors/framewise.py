"""Projectors that map every frame on its own, one token per frame (``linear``, ``mlp``).

Shape letters: n items, s frames, i ``in_dim``, o ``out_dim``.
"""

from __future__ import annotations

from torch import Tensor, nn

from mmadapter.projectors.base import Projector
from mmadapter.projectors.padding import clean_batch, zero_padding

__all__ = ["FramewiseProjector"]


class FramewiseProjector(Projector):
    """Applies ``net`` (``(..., i) -> (..., o)``) to each valid frame; ``output_length(n) == n``.

    Args:
        net: The per-frame module; subclasses choose it.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Project ``(n, s, i)`` frames to ``(n, max(lengths), o)`` tokens, zero past each item's length."""
        x, lengths = clean_batch(x, lengths)
        return zero_padding(self.net(x), lengths), lengths

    def output_length(self, n: int) -> int:
        return n

"""``linear`` projector: one Linear per frame, the simplest connector (LLaVA v1, SLAM-LLM's single layer).

Shape letters: n items, s frames, i ``in_dim``, o ``out_dim``.
"""

from __future__ import annotations

from torch import nn

from mmadapter.projectors.base import PROJECTORS
from mmadapter.projectors.framewise import FramewiseProjector
from mmadapter.registry import ComponentSpec

__all__ = ["LinearProjector", "linear"]


class LinearProjector(FramewiseProjector):
    """``(n, s, i) -> (n, s, o)`` through a single ``nn.Linear(i, o)`` (parameters ``net.weight``, ``net.bias``)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, out_dim))


@PROJECTORS.register
def linear(spec: ComponentSpec, in_dim: int, out_dim: int) -> LinearProjector:
    """Build a :class:`LinearProjector`; it takes no options."""
    return LinearProjector(in_dim, out_dim)

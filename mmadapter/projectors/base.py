"""The projector interface: a small trainable module from encoder features to LLM embeddings.

Shape letters: n items, s input frames, s' output tokens, i ``in_dim``, o ``out_dim``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

from mmadapter.registry import Registry

__all__ = ["PROJECTORS", "Projector"]


class Projector(nn.Module, ABC):
    """Maps ``(n, s, i)`` encoder features with ``(n,)`` valid lengths to ``(n, s', o)`` LLM-space tokens.

    Builders are called as ``builder(spec, in_dim, out_dim)``. Padded positions of the input (beyond each
    item's length) must not influence the valid outputs.
    """

    @abstractmethod
    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Project a batch; returns tokens ``(n, s', o)`` and ``(n,)`` output lengths equal to
        ``output_length(lengths[i])``."""

    @abstractmethod
    def output_length(self, n: int) -> int:
        """Number of tokens produced from ``n`` valid input frames."""


PROJECTORS: Registry[Any] = Registry("projector")

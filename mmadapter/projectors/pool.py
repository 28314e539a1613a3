"""``pool`` projector: average k adjacent frames, then a Linear (Qwen2-Audio's ``AvgPool1d(2)`` + projector,
https://arxiv.org/abs/2407.10759). Pooling is in ceil mode: the last partial window averages only its real
frames, so ``output_length(n) = ceil(n / k)``.

Shape letters: n items, s frames, i ``in_dim``, o ``out_dim``, g = ceil(s / k) windows.
"""

from __future__ import annotations

from pydantic import PositiveInt
from torch import Tensor, nn

from mmadapter.projectors.base import PROJECTORS, Projector
from mmadapter.projectors.padding import ceil_div, clean_batch, frame_mask, pad_frames, zero_padding
from mmadapter.registry import ComponentSpec

__all__ = ["PoolProjector", "PoolSpec", "pool"]


class PoolProjector(Projector):
    """Mean of frames ``[j·k, min((j+1)·k, n))`` for each window j, then ``Linear(i, o)`` (parameters
    ``proj.*``).

    Args:
        in_dim: Encoder width i.
        out_dim: LLM width o.
        k: Window and stride, the downsampling factor.
    """

    def __init__(self, in_dim: int, out_dim: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Project ``(n, s, i)`` frames to ``(n, ceil(max(lengths) / k), o)`` tokens, zero past each item's
        ``ceil(lengths[i] / k)``."""
        x, lengths = clean_batch(x, lengths)
        n, s, i = x.shape
        g = ceil_div(s, self.k)
        sums = pad_frames(x, g * self.k).reshape(n, g, self.k, i).sum(2)  # (n, g, i)
        counts = frame_mask(lengths, g * self.k).reshape(n, g, self.k).sum(2, keepdim=True)  # (n, g, 1)
        means = sums / counts.clamp(min=1).to(sums.dtype)  # windows wholly in padding are zeroed below
        out_lengths = ceil_div(lengths, self.k)
        return zero_padding(self.proj(means), out_lengths), out_lengths

    def output_length(self, n: int) -> int:
        return ceil_div(n, self.k)


class PoolSpec(ComponentSpec):
    """Options of ``pool``: ``k`` frames per window (Qwen2-Audio's 2)."""

    k: PositiveInt = 2


@PROJECTORS.register(spec=PoolSpec)
def pool(spec: PoolSpec, in_dim: int, out_dim: int) -> PoolProjector:
    """Build a :class:`PoolProjector` from ``spec``."""
    return PoolProjector(in_dim, out_dim, spec.k)

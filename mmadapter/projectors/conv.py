"""``conv`` projector: a strided Conv1d downsampler, then a Linear to the LLM width (SLAM-LLM's
``cov1d-linear``, with windows allowed to overlap).

Output token j reads frames ``[j·k, j·k + kernel)``; frames past an item's length read as zeros, and the count is
``output_length(n) = ceil(n / k)`` so the tail of every item is kept.

Shape letters: n items, s frames, i ``in_dim``, h ``hidden``, o ``out_dim``, g = ceil(s / k) output tokens.
"""

from __future__ import annotations

from pydantic import PositiveInt, model_validator
from torch import Tensor, nn

from mmadapter.projectors.base import PROJECTORS, Projector
from mmadapter.projectors.mlp import ACTIVATIONS, Activation
from mmadapter.projectors.padding import ceil_div, clean_batch, pad_frames, zero_padding
from mmadapter.registry import ComponentSpec

__all__ = ["ConvProjector", "ConvSpec", "conv"]


class ConvProjector(Projector):
    """``Conv1d(i, h, kernel, stride=k) → activation → Linear(h, o)``.

    Args:
        in_dim: Encoder width i.
        out_dim: LLM width o.
        k: Stride, the downsampling factor.
        kernel: Frames each output reads, at least ``k`` so that no frame is skipped.
        hidden: Channels h of the convolution.
        activation: Non-linearity after the convolution.
    """

    def __init__(
        self, in_dim: int, out_dim: int, k: int, kernel: int, hidden: int, activation: Activation = "gelu"
    ) -> None:
        super().__init__()
        if kernel < k:
            raise ValueError(f"conv kernel ({kernel}) must be at least the stride k ({k}) or frames are skipped")
        self.k = k
        self.kernel = kernel
        self.conv = nn.Conv1d(in_dim, hidden, kernel, stride=k)
        self.act = ACTIVATIONS[activation]()
        self.proj = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Project ``(n, s, i)`` frames to ``(n, ceil(max(lengths) / k), o)`` tokens, zero past each item's
        ``ceil(lengths[i] / k)``."""
        x, lengths = clean_batch(x, lengths)  # windows reaching past an item must see zeros
        g = ceil_div(x.shape[1], self.k)
        x = pad_frames(x, (g - 1) * self.k + self.kernel)  # exactly g windows, the last one starting at (g-1)·k
        h = self.act(self.conv(x.transpose(1, 2)).transpose(1, 2))  # (n, g, h)
        out_lengths = ceil_div(lengths, self.k)
        return zero_padding(self.proj(h), out_lengths), out_lengths

    def output_length(self, n: int) -> int:
        return ceil_div(n, self.k)


class ConvSpec(ComponentSpec):
    """Options of ``conv``: stride ``k`` (default 2), ``kernel`` (default ``k``: non-overlapping windows; must be
    ``>= k``), ``hidden`` channels (default: the LLM width), ``activation`` (default GELU)."""

    k: PositiveInt = 2
    kernel: PositiveInt | None = None
    hidden: PositiveInt | None = None
    activation: Activation = "gelu"

    @model_validator(mode="after")
    def _kernel_covers_stride(self) -> ConvSpec:
        if self.kernel is not None and self.kernel < self.k:
            raise ValueError(f"kernel ({self.kernel}) must be at least k ({self.k}) or frames are skipped")
        return self


@PROJECTORS.register(spec=ConvSpec)
def conv(spec: ConvSpec, in_dim: int, out_dim: int) -> ConvProjector:
    """Build a :class:`ConvProjector` from ``spec``."""
    return ConvProjector(in_dim, out_dim, spec.k, spec.kernel or spec.k, spec.hidden or out_dim, spec.activation)

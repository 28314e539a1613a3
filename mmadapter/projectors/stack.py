"""``stack`` projector: concatenate k adjacent frames, then an MLP (SLAM-LLM https://arxiv.org/abs/2402.08846,
Ultravox). Unlike SLAM-LLM, which drops the frames left over after the last full group, the last group is
completed with zero frames so that no audio is lost: ``output_length(n) = ceil(n / k)``.

Shape letters: n items, s frames, i ``in_dim``, h ``hidden``, o ``out_dim``, g = ceil(s / k) groups.
"""

from __future__ import annotations

from pydantic import PositiveInt
from torch import Tensor

from mmadapter.projectors.base import PROJECTORS, Projector
from mmadapter.projectors.mlp import Activation, two_layer_mlp
from mmadapter.projectors.padding import ceil_div, clean_batch, pad_frames, zero_padding
from mmadapter.registry import ComponentSpec

__all__ = ["StackProjector", "StackSpec", "stack"]


class StackProjector(Projector):
    """Groups frames ``[j·k, (j+1)·k)`` into one ``k·i`` vector (frame-major: frame ``j·k`` first), then applies
    ``Linear(k·i, h) → activation → Linear(h, o)`` (parameters ``net.0.*``, ``net.2.*``).

    Args:
        in_dim: Encoder width i.
        out_dim: LLM width o.
        k: Frames per group, the downsampling factor.
        hidden: Width h of the middle layer.
        activation: Non-linearity between the layers.
    """

    def __init__(self, in_dim: int, out_dim: int, k: int, hidden: int, activation: Activation = "relu") -> None:
        super().__init__()
        self.k = k
        self.net = two_layer_mlp(k * in_dim, hidden, out_dim, activation)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Project ``(n, s, i)`` frames to ``(n, ceil(max(lengths) / k), o)`` tokens, zero past each item's
        ``ceil(lengths[i] / k)``."""
        x, lengths = clean_batch(x, lengths)  # the last partial group must see zeros
        n, s, i = x.shape
        g = ceil_div(s, self.k)
        x = pad_frames(x, g * self.k).reshape(n, g, self.k * i)  # (n, g, k·i)
        out_lengths = ceil_div(lengths, self.k)
        return zero_padding(self.net(x), out_lengths), out_lengths

    def output_length(self, n: int) -> int:
        return ceil_div(n, self.k)


class StackSpec(ComponentSpec):
    """Options of ``stack``: ``k`` frames per group (SLAM-LLM's default 5), ``hidden`` (default: the LLM width),
    ``activation`` (SLAM-LLM and Ultravox-style ReLU)."""

    k: PositiveInt = 5
    hidden: PositiveInt | None = None
    activation: Activation = "relu"


@PROJECTORS.register(spec=StackSpec)
def stack(spec: StackSpec, in_dim: int, out_dim: int) -> StackProjector:
    """Build a :class:`StackProjector` from ``spec``."""
    return StackProjector(in_dim, out_dim, spec.k, spec.hidden or out_dim, spec.activation)
